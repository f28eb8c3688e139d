"""The Experiment config blob (§2.3) and its validation (§5).

The *config records* (:class:`ExperimentConfig`, :class:`RunRecord`, ...) are
what the config JSON says: LayerRefs are integer indexes into the manifest's
``layers``. ``ExperimentConfig.to_bytes()`` reproduces OMMX's bytes exactly
(fixed field order, compact, UTF-8, no ASCII escaping); :meth:`ExperimentConfig.parse`
reads with OMMX's defaults. :func:`validate_experiment` runs the §5 checks that
need no blob I/O; :func:`validate_experiment_artifact` runs all of them (the one
validator of archive imports and remote pulls); our Parquet layer of a received
artifact is compared with its MessagePack table on first read (:mod:`~ommx_experiment.format.parquet_trust`).

The same tree holding descriptors (``ExperimentContent``, ``build_experiment``,
``content_from_artifact``) lives in :mod:`ommx_experiment.format.content`, which
builds on this module.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import operator
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import media_types as mt
from ..engine.oci import EMPTY_MAP, FrozenMap, json_type, load_json_bounded
from ..errors import InvalidArtifactError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from ..engine.oci import Descriptor, Manifest
    from .run_params import ParameterTable

DRAFT = "draft"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
EXPERIMENT_STATUSES = (FINISHED, DRAFT, FAILED, INTERRUPTED)
SEALED_STATUSES = (FINISHED, FAILED, INTERRUPTED)
CHECKPOINT_STATUSES = (DRAFT, FAILED, INTERRUPTED)
RUN_STATUSES = (FINISHED, FAILED, INTERRUPTED)
_REASON_STATUSES = (FAILED, INTERRUPTED)

MAX_CONFIG_BYTES = 256 * 1024 * 1024
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

_new = object.__new__
_set = object.__setattr__  # frozen dataclasses' own way to set a field

RUN_ID_KEY = operator.attrgetter("run_id")
"""Sort key of runs and run records (C speed: a lambda costs ~1 ms per 10,000 runs)."""


# --- config records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentTable:
    """One attachment namespace: ``name -> LayerRef`` and ``name -> export basename``."""

    entries: Mapping[str, int] = field(default=EMPTY_MAP)
    filenames: Mapping[str, str] = field(default=EMPTY_MAP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", FrozenMap(self.entries))
        object.__setattr__(self, "filenames", FrozenMap(self.filenames))

    def to_obj(self) -> dict[str, Any]:
        """JSON object: ``entries`` (always) and ``filenames`` (when non-empty), keys sorted."""
        obj: dict[str, Any] = {"entries": {name: self.entries[name] for name in sorted(self.entries)}}
        if self.filenames:
            obj["filenames"] = {name: self.filenames[name] for name in sorted(self.filenames)}
        return obj


@dataclass(frozen=True, slots=True)
class SolveRecord:
    """One ``log_solve``/``open_solve`` result as stored in the config."""

    solve_id: int
    status: str
    input: int
    output: int | None
    adapter: str
    adapter_options: str = "{}"
    diagnostics: int | None = None

    def to_obj(self) -> dict[str, Any]:
        """JSON object in OMMX's field order."""
        return _call_obj("solve_id", self.solve_id, self)


@dataclass(frozen=True, slots=True)
class SamplingRecord:
    """One ``log_sample`` result as stored in the config."""

    sampling_id: int
    status: str
    input: int
    output: int | None
    adapter: str
    adapter_options: str = "{}"
    diagnostics: int | None = None

    def to_obj(self) -> dict[str, Any]:
        """JSON object in OMMX's field order."""
        return _call_obj("sampling_id", self.sampling_id, self)


def _call_obj(id_key: str, call_id: int, rec: SolveRecord | SamplingRecord) -> dict[str, Any]:
    obj: dict[str, Any] = {id_key: call_id, "status": rec.status, "input": rec.input}
    if rec.output is not None:
        obj["output"] = rec.output
    obj["adapter"] = rec.adapter
    obj["adapter_options"] = rec.adapter_options
    if rec.diagnostics is not None:
        obj["diagnostics"] = rec.diagnostics
    return obj


def _outcome(obj: dict[str, Any], status: str, reason: str | None) -> None:
    if status in _REASON_STATUSES and reason is not None:
        obj["outcome"] = {"reason": reason}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One closed Run as stored in the config."""

    run_id: int
    status: str = FINISHED
    reason: str | None = None
    attachments: AttachmentTable = field(default_factory=AttachmentTable)
    trace: int | None = None
    solves: tuple[SolveRecord, ...] = ()
    samplings: tuple[SamplingRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "solves", tuple(self.solves))
        object.__setattr__(self, "samplings", tuple(self.samplings))

    @classmethod
    def bare(cls, run_id: int, status: str, reason: str | None, attachments: AttachmentTable | None = None) -> RunRecord:
        """``RunRecord(run_id, status, reason, attachments)`` of a run without trace or calls, built
        about twice as fast as through the dataclass ``__init__`` (a commit builds one per run)."""
        record = _new(cls)
        _set(record, "run_id", run_id)
        _set(record, "status", status)
        _set(record, "reason", reason)
        _set(record, "attachments", EMPTY_TABLE if attachments is None else attachments)
        _set(record, "trace", None)
        _set(record, "solves", ())
        _set(record, "samplings", ())
        return record

    def to_obj(self) -> dict[str, Any]:
        """JSON object in OMMX's field order (solves/samplings sorted by id)."""
        obj: dict[str, Any] = {"run_id": self.run_id, "status": self.status}
        _outcome(obj, self.status, self.reason)
        obj["attachments"] = self.attachments.to_obj()
        if self.trace is not None:
            obj["trace"] = self.trace
        obj["solves"] = [s.to_obj() for s in sorted(self.solves, key=lambda s: s.solve_id)]
        obj["samplings"] = [s.to_obj() for s in sorted(self.samplings, key=lambda s: s.sampling_id)]
        return obj


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """The ``application/org.ommx.v1.experiment.config+json`` blob.

    ``extra`` holds unknown top-level fields found by :meth:`parse` (for listings);
    it is never serialised, exactly like OMMX drops them on re-commit.
    """

    status: str
    reason: str | None
    requested_image_name: str | None
    attachments: AttachmentTable
    runs: tuple[RunRecord, ...]
    run_parameters: int
    extra: Mapping[str, Any] = field(default=EMPTY_MAP, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "extra", FrozenMap(self.extra))

    def to_obj(self) -> dict[str, Any]:
        """JSON object in OMMX's field order (runs sorted by ``run_id``)."""
        obj = self._head_obj()
        obj["runs"] = [r.to_obj() for r in sorted(self.runs, key=lambda r: r.run_id)]
        obj["run_parameters"] = self.run_parameters
        return obj

    def _head_obj(self) -> dict[str, Any]:
        """The fields before ``runs``, in OMMX's order."""
        obj: dict[str, Any] = {"status": self.status}
        _outcome(obj, self.status, self.reason)
        if self.requested_image_name is not None:
            obj["requested_image_name"] = self.requested_image_name
        obj["attachments"] = self.attachments.to_obj()
        return obj

    def runs_json(self) -> str:
        """The text of the ``runs`` array's items in :meth:`to_bytes` (what a caller may keep for another
        config with the very same ``runs``, e.g. a commit's after its draft's: ``format.content.LayoutMemo``)."""
        return ",".join(map(_run_json, sorted(self.runs, key=RUN_ID_KEY)))

    def to_bytes(self, *, runs_json: str | None = None) -> bytes:
        """OMMX's exact config bytes: ``to_obj()`` as compact JSON (runs without attachments,
        trace or calls are formatted from a template, ~10x faster than through ``json.dumps``).

        ``runs_json``: :meth:`runs_json` of a config with these very ``runs``, rendered before.
        """
        head = self._head_obj()
        runs = self.runs_json() if runs_json is None else runs_json
        text = f'{_dumps(head)[:-1]},"runs":[{runs}],"run_parameters":{self.run_parameters}}}'
        return text.encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> ExperimentConfig:
        """Parse config bytes with OMMX's reader defaults; ``InvalidArtifactError`` on defects.

        Configs as OMMX and we write them (known fields only, no escapes) take a fast path
        (:func:`_parse_plain`); anything else, and every defect, the strict one.
        """
        if isinstance(data, bytes) and len(data) >= _CACHE_FROM_BYTES:
            return _parse_cached(data)  # an import validates it, then the loaded Experiment reads it again
        return _parse(data)

    @property
    def solve_count(self) -> int:
        """Total number of solves over all runs."""
        return sum(len(r.solves) for r in self.runs)

    @property
    def sampling_count(self) -> int:
        """Total number of samplings over all runs."""
        return sum(len(r.samplings) for r in self.runs)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


_BARE_RUN_JSON = {
    status: '{"run_id":%d,"status":"' + status + '","attachments":{"entries":{}},"solves":[],"samplings":[]}'
    for status in RUN_STATUSES
}


_RUN_WITH_TABLE_JSON = {
    status: ('{"run_id":%d,"status":"' + status + '","attachments":', ',"solves":[],"samplings":[]}')
    for status in RUN_STATUSES
}
_json_str = json.encoder.encode_basestring  # what ``_dumps`` writes for a str (ensure_ascii=False)


def _run_json(run: RunRecord) -> str:
    template = _BARE_RUN_JSON.get(run.status)
    if (
        template is not None
        and run.trace is None
        and not run.solves
        and not run.samplings
        and (run.reason is None or run.status not in _REASON_STATUSES)
        and type(run.run_id) is int
    ):
        table = run.attachments
        if table is EMPTY_TABLE or not (table.entries or table.filenames):
            return template % run.run_id
        text = _table_json(table)  # a run with attachments only (the common case after bare runs)
        if text is not None:
            head, tail = _RUN_WITH_TABLE_JSON[run.status]
            return f"{head % run.run_id}{text}{tail}"
    return _dumps(run.to_obj())


def _table_json(table: AttachmentTable) -> str | None:
    """``_dumps(table.to_obj())`` for str names, int refs and str filenames, without building the
    object (None for anything else: the caller falls back to ``json.dumps``)."""
    entries, filenames = table.entries, table.filenames
    parts = []
    for name in sorted(entries):
        ref = entries[name]
        if type(name) is not str or type(ref) is not int:
            return None
        parts.append(f"{_json_str(name)}:{ref}")
    text = '{"entries":{' + ",".join(parts) + "}"
    if filenames:
        parts = []
        for name in sorted(filenames):
            value = filenames[name]
            if type(name) is not str or type(value) is not str:
                return None
            parts.append(f"{_json_str(name)}:{_json_str(value)}")
        text += ',"filenames":{' + ",".join(parts) + "}"
    return text + "}"


# --- parsing ----------------------------------------------------------------------------------------

_CACHE_FROM_BYTES = 64 * 1024


def _parse(data: bytes) -> ExperimentConfig:
    plain = _parse_plain(data)
    if plain is not None:
        return plain
    obj = load_json_bounded(
        data, what="experiment config", max_bytes=MAX_CONFIG_BYTES, object_pairs_hook=_remember_duplicates
    )
    return _config_from_obj(obj)


@functools.lru_cache(maxsize=4)
def _parse_cached(data: bytes) -> ExperimentConfig:
    return _parse(data)  # configs are immutable; a failure is not cached (it raises)



class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers which keys occurred more than once."""

    duplicates: frozenset[str] = frozenset()


def _remember_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _JsonObject(pairs)  # last occurrence wins, like serde for map types
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.duplicates = frozenset(key for key, n in counts.items() if n > 1)
    return obj


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArtifactError(f"experiment config {path}: expected an object, got {json_type(value)}")
    return value


def _struct(value: Any, path: str, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON object read as a struct: a known field given twice is an error (serde's
    ``duplicate field``); unknown fields, even repeated, are ignored."""
    obj = _object(value, path)
    repeated = fields & getattr(obj, "duplicates", frozenset())
    if repeated:
        raise InvalidArtifactError(f"experiment config {path}: duplicate field `{min(repeated)}`")
    return obj


_TOP_FIELDS = frozenset({"status", "outcome", "requested_image_name", "attachments", "runs", "run_parameters"})
_TABLE_FIELDS = frozenset({"entries", "filenames"})
_OUTCOME_FIELDS = frozenset({"reason"})
_RUN_FIELDS = frozenset({"run_id", "status", "outcome", "attachments", "trace", "solves", "samplings"})
_CALL_FIELDS = frozenset({"status", "input", "output", "adapter", "adapter_options", "diagnostics"})


def _required(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise InvalidArtifactError(f"experiment config {path}: missing required field `{key}`")
    return obj[key]


def _uint(value: Any, path: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidArtifactError(
            f"experiment config {path}: expected an integer in [0, {maximum}], got {value!r}"
        )
    return value


def _layer_ref(value: Any, path: str) -> int:
    return _uint(value, path, _U32_MAX)


def _opt_layer_ref(obj: dict[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    return None if value is None else _layer_ref(value, f"{path}.{key}")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidArtifactError(f"experiment config {path}: expected a string, got {json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArtifactError(f"experiment config {path}: string is not valid Unicode") from exc
    return value


def _status(obj: dict[str, Any], path: str, allowed: Sequence[str], default: str | None) -> str:
    if "status" not in obj and default is not None:
        return default
    status = _string(_required(obj, "status", path), f"{path}.status")
    if status not in allowed:
        raise InvalidArtifactError(
            f"experiment config {path}.status: unknown status {status!r}, expected one of {', '.join(allowed)}"
        )
    return status


def _reason(obj: dict[str, Any], status: str, path: str) -> str | None:
    outcome = obj.get("outcome")
    if outcome is None:
        return None
    if status not in _REASON_STATUSES:
        raise InvalidArtifactError(f"experiment config {path}.outcome is not allowed for status {status}")
    outcome = _struct(outcome, f"{path}.outcome", _OUTCOME_FIELDS)
    reason = outcome.get("reason")
    return None if reason is None else _string(reason, f"{path}.outcome.reason")


def _attachment_table(value: Any, path: str) -> AttachmentTable:
    obj = _struct(value, path, _TABLE_FIELDS)
    entries = _object(_required(obj, "entries", path), f"{path}.entries")
    filenames_value = obj.get("filenames")
    filenames = {} if filenames_value is None else _object(filenames_value, f"{path}.filenames")
    return AttachmentTable(
        entries={_string(k, f"{path}.entries"): _layer_ref(v, f"{path}.entries[{k!r}]") for k, v in entries.items()},
        filenames={
            _string(k, f"{path}.filenames"): _string(v, f"{path}.filenames[{k!r}]") for k, v in filenames.items()
        },
    )


def _call_fields(obj: dict[str, Any], path: str) -> dict[str, Any]:
    options = obj.get("adapter_options", "{}")
    return {
        "status": _status(obj, path, RUN_STATUSES, FINISHED),
        "input": _layer_ref(_required(obj, "input", path), f"{path}.input"),
        "output": _opt_layer_ref(obj, "output", path),
        "adapter": _string(_required(obj, "adapter", path), f"{path}.adapter"),
        "adapter_options": _string(options, f"{path}.adapter_options"),
        "diagnostics": _opt_layer_ref(obj, "diagnostics", path),
    }


def _solve(value: Any, path: str) -> SolveRecord:
    obj = _struct(value, path, _CALL_FIELDS | {"solve_id"})
    solve_id = _uint(_required(obj, "solve_id", path), f"{path}.solve_id", _U64_MAX)
    return SolveRecord(solve_id=solve_id, **_call_fields(obj, path))


def _sampling(value: Any, path: str) -> SamplingRecord:
    obj = _struct(value, path, _CALL_FIELDS | {"sampling_id"})
    sampling_id = _uint(_required(obj, "sampling_id", path), f"{path}.sampling_id", _U64_MAX)
    return SamplingRecord(sampling_id=sampling_id, **_call_fields(obj, path))


def _array(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise InvalidArtifactError(f"experiment config {path}.{key}: expected an array, got {json_type(value)}")
    return value


def _run(value: Any, path: str) -> RunRecord:
    obj = _struct(value, path, _RUN_FIELDS)
    status = _status(obj, path, RUN_STATUSES, FINISHED)
    return RunRecord(
        run_id=_uint(_required(obj, "run_id", path), f"{path}.run_id", _U64_MAX),
        status=status,
        reason=_reason(obj, status, path),
        attachments=_attachment_table(_required(obj, "attachments", path), f"{path}.attachments"),
        trace=_opt_layer_ref(obj, "trace", path),
        solves=tuple(_solve(s, f"{path}.solves[{i}]") for i, s in enumerate(_array(obj, "solves", path))),
        samplings=tuple(
            _sampling(s, f"{path}.samplings[{i}]") for i, s in enumerate(_array(obj, "samplings", path))
        ),
    )


def _config_from_obj(value: Any) -> ExperimentConfig:
    obj = _struct(value, "(top level)", _TOP_FIELDS)
    status = _status(obj, "(top level)", EXPERIMENT_STATUSES, None)
    runs = _required(obj, "runs", "(top level)")
    if not isinstance(runs, list):
        raise InvalidArtifactError(f"experiment config runs: expected an array, got {json_type(runs)}")
    requested = obj.get("requested_image_name")
    return ExperimentConfig(
        status=status,
        reason=_reason(obj, status, "(top level)"),
        requested_image_name=None if requested is None else _string(requested, "requested_image_name"),
        attachments=_attachment_table(_required(obj, "attachments", "(top level)"), "attachments"),
        runs=tuple(_run(r, f"runs[{i}]") for i, r in enumerate(runs)),
        run_parameters=_layer_ref(_required(obj, "run_parameters", "(top level)"), "run_parameters"),
        extra={k: v for k, v in obj.items() if k not in _TOP_FIELDS},
    )


# --- the fast path -----------------------------------------------------------------------------------

EMPTY_TABLE = AttachmentTable()


class _Decline(Exception):
    """Not a plain config: let the strict parser decide (and name the defect, if any)."""


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as the C decoder hands it over: its ``(key, value)`` pairs, duplicates kept
    (a distinct type, so a JSON array of two-element arrays can never pass for an object)."""

    __slots__ = ()


def _parse_plain(data: bytes) -> ExperimentConfig | None:
    """The config, if it is *plain*: valid UTF-8 without ``\\u`` escapes, every object free of
    duplicate keys and holding only known fields of the right types. None otherwise.

    First tries: the config in the exact bytes OMMX and we write, read as if every run were
    bare (no attachments, trace or calls: the runs by pattern), then with objects decoded
    as dicts (the C decoder's fastest form). Either guess is kept only if re-encoding it
    gives the input back byte for byte, which rules out what a dict no longer shows
    (duplicate keys) and any other layout. Otherwise objects are decoded as lists of pairs
    (so duplicate keys stay visible) and turned into records directly. What is accepted
    here is exactly what the strict parser accepts for the same bytes
    (``tests/format/test_codec.py`` checks both agree).
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_CONFIG_BYTES or b"\\u" in data:
        return None
    try:
        text = bytes(data).decode("utf-8")
    except ValueError:
        return None
    for guess in (_plain_by_layout, _plain_dicts):
        try:
            config = guess(text)
            if config.to_bytes() == data:
                return config
        except (_Decline, ValueError, TypeError, RecursionError):
            pass
    try:
        return _plain_config(json.loads(text, parse_constant=_decline_constant, object_pairs_hook=_Pairs))
    except (_Decline, ValueError, TypeError, RecursionError):
        return None


def _plain_dicts(text: str) -> ExperimentConfig:
    return _plain_config(json.loads(text, parse_constant=_decline_constant))


def _decline_constant(name: str) -> Any:
    raise _Decline(name)


_OBJECT_TYPES = (_Pairs, dict)  # one or the other in one decoded tree: pairs (checked here) or dicts (re-encoded)


def _pairs(value: Any, fields: frozenset[str]) -> dict[str, Any]:
    kind = type(value)
    if kind is dict:
        if not value.keys() <= fields:
            raise _Decline
        return value
    if kind is not _Pairs:
        raise _Decline
    obj = dict(value)
    if len(obj) != len(value) or not obj.keys() <= fields:
        raise _Decline
    return obj


def _plain_uint(value: Any, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise _Decline
    return value


def _plain_str(value: Any) -> str:
    if type(value) is not str:
        raise _Decline
    return value


def _plain_status(obj: dict[str, Any], allowed: Sequence[str], default: str | None) -> str:
    status = obj.get("status", default)
    if type(status) is not str or status not in allowed:
        raise _Decline
    return status


def _plain_reason(obj: dict[str, Any], status: str) -> str | None:
    outcome = obj.get("outcome")
    if outcome is None:
        return None
    if status not in _REASON_STATUSES:
        raise _Decline
    reason = _pairs(outcome, _OUTCOME_FIELDS).get("reason")
    return None if reason is None else _plain_str(reason)


def _plain_table(value: Any) -> AttachmentTable:
    obj = _pairs(value, _TABLE_FIELDS)
    entries: Any = obj.get("entries")
    names: Any = obj.get("filenames")
    if type(entries) not in _OBJECT_TYPES or (names is not None and type(names) not in _OBJECT_TYPES):
        raise _Decline
    if not entries and not names:
        return EMPTY_TABLE
    refs = dict(entries)
    filenames = {} if names is None else dict(names)
    if len(refs) != len(entries) or (names is not None and len(filenames) != len(names)):
        raise _Decline
    for name, ref in refs.items():
        _plain_str(name)
        _plain_uint(ref, _U32_MAX)
    for name, filename in filenames.items():
        _plain_str(name)
        _plain_str(filename)
    return AttachmentTable(refs, filenames)


def _plain_ref(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return None if value is None else _plain_uint(value, _U32_MAX)


def _plain_call(value: Any, id_key: str) -> dict[str, Any]:
    obj = _pairs(value, _CALL_FIELDS | {id_key})
    if "input" not in obj or "adapter" not in obj or id_key not in obj:
        raise _Decline
    return {
        id_key: _plain_uint(obj[id_key], _U64_MAX),
        "status": _plain_status(obj, RUN_STATUSES, FINISHED),
        "input": _plain_uint(obj["input"], _U32_MAX),
        "output": _plain_ref(obj, "output"),
        "adapter": _plain_str(obj["adapter"]),
        "adapter_options": _plain_str(obj.get("adapter_options", "{}")),
        "diagnostics": _plain_ref(obj, "diagnostics"),
    }


def _plain_list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if type(value) is not list:
        raise _Decline
    return value


_EMPTY_RUN_KEYS = ("run_id", "status", "attachments", "solves", "samplings")
_EMPTY_TABLE_OBJ: dict[str, Any] = {"entries": {}}


def _bare_run(run_id: int, status: str) -> RunRecord:
    """``RunRecord(run_id, status, None, EMPTY_TABLE)`` through its slots, without the dataclass
    ``__init__`` and ``__post_init__`` (a third of the cost, for 10,000s of runs)."""
    record = _new_record(RunRecord)
    _set_run_id(record, run_id)
    _set_status(record, status)
    _set_reason(record, None)
    _set_attachments(record, EMPTY_TABLE)
    _set_trace(record, None)
    _set_solves(record, ())
    _set_samplings(record, ())
    return record


_new_record = object.__new__
_slot_setters: dict[str, Any] = {name: vars(RunRecord)[name].__set__ for name in RunRecord.__slots__}
_set_run_id = _slot_setters["run_id"]
_set_status = _slot_setters["status"]
_set_reason = _slot_setters["reason"]
_set_attachments = _slot_setters["attachments"]
_set_trace = _slot_setters["trace"]
_set_solves = _slot_setters["solves"]
_set_samplings = _slot_setters["samplings"]


def _plain_run(value: Any) -> RunRecord:
    if type(value) is dict and len(value) == 5:  # a run without attachments, trace or calls (re-encoded later)
        run_id = value.get("run_id")
        status = value.get("status")
        if (
            type(run_id) is int
            and 0 <= run_id <= _U64_MAX
            and status in RUN_STATUSES
            and value.get("attachments") == _EMPTY_TABLE_OBJ
            and value.get("solves") == []
            and value.get("samplings") == []
        ):
            return _bare_run(run_id, status)
    elif type(value) is _Pairs and len(value) == 5:  # a run without attachments, trace or calls, as written
        (k0, run_id), (k1, status), (k2, table), (k3, solves), (k4, samplings) = value
        if (
            (k0, k1, k2, k3, k4) == _EMPTY_RUN_KEYS
            and type(run_id) is int
            and 0 <= run_id <= _U64_MAX
            and type(status) is str
            and status in RUN_STATUSES
            and type(table) is _Pairs
            and len(table) == 1
            and table[0][0] == "entries"
            and type(table[0][1]) is _Pairs
            and not table[0][1]
            and type(solves) is list
            and not solves
            and type(samplings) is list
            and not samplings
        ):
            return _bare_run(run_id, status)
    obj = _pairs(value, _RUN_FIELDS)
    if "run_id" not in obj or "attachments" not in obj:
        raise _Decline
    status = _plain_status(obj, RUN_STATUSES, FINISHED)
    solves = _plain_list(obj, "solves")
    samplings = _plain_list(obj, "samplings")
    return RunRecord(
        _plain_uint(obj["run_id"], _U64_MAX),
        status,
        _plain_reason(obj, status),
        _plain_table(obj["attachments"]),
        _plain_ref(obj, "trace"),
        tuple(SolveRecord(**_plain_call(c, "solve_id")) for c in solves) if solves else (),
        tuple(SamplingRecord(**_plain_call(c, "sampling_id")) for c in samplings) if samplings else (),
    )


def _plain_config(tree: Any) -> ExperimentConfig:
    obj = _pairs(tree, _TOP_FIELDS)
    if "runs" not in obj or "run_parameters" not in obj:
        raise _Decline
    runs = obj["runs"]
    if type(runs) is not list:
        raise _Decline
    return _plain_head(obj, tuple([_plain_run(r) for r in runs]), obj["run_parameters"])


def _plain_head(obj: dict[str, Any], runs: tuple[RunRecord, ...], run_parameters: Any) -> ExperimentConfig:
    if "status" not in obj or "attachments" not in obj:
        raise _Decline
    status = _plain_status(obj, EXPERIMENT_STATUSES, None)
    requested = obj.get("requested_image_name")
    return ExperimentConfig(
        status,
        _plain_reason(obj, status),
        None if requested is None else _plain_str(requested),
        _plain_table(obj["attachments"]),
        runs,
        _plain_uint(run_parameters, _U32_MAX),
    )


_RUNS_KEY = ',"runs":['
_RUNS_TAIL = re.compile(r'\],"run_parameters":(0|[1-9][0-9]{0,9})\}\Z')
_LAYOUT_RUN = re.compile(  # a bare run, or one with attachments only (entries, no filenames, names without escapes)
    r'\{"run_id":(0|[1-9][0-9]{0,19}),"status":"(finished|failed|interrupted)",'
    r'"attachments":\{"entries":\{((?:"[^"\\\x00-\x1f]*":(?:0|[1-9][0-9]{0,9}),?)*)\}\},"solves":\[\],"samplings":\[\]\}'
)
_LAYOUT_ENTRY = re.compile(r'"([^"\\\x00-\x1f]*)":(0|[1-9][0-9]{0,9})')


def _plain_by_layout(text: str) -> ExperimentConfig:
    """The config read as laid out when every run is bare or has attachments only (entries without
    filenames, names without escapes): the fields before ``runs`` as JSON, the runs by pattern, no
    object per run decoded. Only a guess: :func:`_parse_plain` keeps it only if it re-encodes to the
    input (any other run, or any other layout, does not); a ref over u32 is refused here (re-encoding
    would write it back as it was)."""
    start = text.find(_RUNS_KEY)
    tail = _RUNS_TAIL.search(text)
    if start < 0 or tail is None or tail.start() < start + len(_RUNS_KEY):
        raise _Decline
    head = json.loads(text[:start] + "}", parse_constant=_decline_constant)
    if type(head) is not dict or not head.keys() <= _TOP_FIELDS - {"runs", "run_parameters"}:
        raise _Decline
    runs = []
    for match in _LAYOUT_RUN.finditer(text, start + len(_RUNS_KEY), tail.start()):
        run_id_text, status, entries = match.groups()
        run_id = int(run_id_text)
        if run_id > _U64_MAX:
            raise _Decline
        if not entries:
            runs.append(_bare_run(run_id, status))
            continue
        refs = {name: int(ref) for name, ref in _LAYOUT_ENTRY.findall(entries)}
        if max(refs.values()) > _U32_MAX:
            raise _Decline
        table = _new(AttachmentTable)  # AttachmentTable(refs) over the fresh dict (FrozenMap.wrapping: no copy)
        _set(table, "entries", FrozenMap.wrapping(refs))
        _set(table, "filenames", EMPTY_MAP)
        runs.append(RunRecord.bare(run_id, status, None, table))
    return _plain_head(head, tuple(runs), int(tail.group(1)))


# --- validation (§5, the checks that need no blob I/O) ------------------------------------------


def is_valid_basename(name: str) -> bool:
    """An export filename OMMX accepts: non-empty, no ``/`` or ``\\``, not ``.`` or ``..``."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _status_message(status: str, allowed: Sequence[str]) -> str:
    return f"Experiment config status is {status}, expected {' or '.join(allowed)}"


def layer_for_ref(layers: Sequence[Descriptor], ref: int, what: str) -> Descriptor:
    """The manifest layer a LayerRef names; ``InvalidArtifactError`` naming ``what`` if out of range."""
    if ref >= len(layers):
        raise InvalidArtifactError(f"Experiment {what} refers to layer {ref}, but the manifest has {len(layers)} layers")
    return layers[ref]


class _Validator:
    def __init__(self, manifest: Manifest) -> None:
        self.layers = manifest.layers

    def layer(self, ref: int, what: str) -> Descriptor:
        return layer_for_ref(self.layers, ref, what)

    def typed(self, ref: int, what: str, allowed: Collection[str]) -> None:
        media_type = self.layer(ref, what).media_type
        if media_type not in allowed:
            expected = " or ".join(sorted(allowed))
            raise InvalidArtifactError(f"Experiment {what} layer has media type {media_type}, expected {expected}")

    def attachments(self, table: AttachmentTable, where: str) -> None:
        for name, ref in table.entries.items():
            desc = self.layer(ref, f"{where} attachment {name!r}")
            _check_compression(desc, f"{where} attachment {name!r}")
        for name, filename in table.filenames.items():
            if name not in table.entries:
                raise InvalidArtifactError(f"Experiment {where} filename entry {name!r} has no attachment")
            if not is_valid_basename(filename):
                raise InvalidArtifactError(
                    f"Experiment {where} attachment {name!r} has invalid export filename {filename!r}"
                )

    def calls(self, records: Sequence[SolveRecord | SamplingRecord], where: str, outputs: Collection[str]) -> None:
        seen: set[int] = set()
        for rec in records:
            call_id = rec.solve_id if isinstance(rec, SolveRecord) else rec.sampling_id
            kind = "solve" if isinstance(rec, SolveRecord) else "sampling"
            what = f"{where} {kind} {call_id}"
            if call_id in seen:
                raise InvalidArtifactError(f"Experiment {where} has duplicate {kind} id {call_id}")
            seen.add(call_id)
            self.typed(rec.input, f"{what} input", mt.INSTANCE_TYPES)
            if (rec.status == FINISHED) != (rec.output is not None):
                state = "has no output" if rec.output is None else "has an output"
                raise InvalidArtifactError(f"Experiment {what} is {rec.status} but {state}")
            if rec.output is not None:
                self.typed(rec.output, f"{what} output", outputs)
            if rec.diagnostics is not None:
                self.typed(rec.diagnostics, f"{what} diagnostics", (mt.DIAGNOSTICS,))

    def run(self, run: RunRecord) -> None:
        if run.attachments is EMPTY_TABLE and run.trace is None and not run.solves and not run.samplings:
            return  # nothing that refers to a layer
        where = f"run {run.run_id}"
        self.attachments(run.attachments, where)
        if run.trace is not None:
            self.typed(run.trace, f"{where} trace", (mt.TRACE_OTLP_PROTOBUF,))
        self.calls(run.solves, where, mt.SOLUTION_TYPES)
        self.calls(run.samplings, where, mt.SAMPLE_SET_TYPES)


def _check_compression(desc: Descriptor, what: str) -> None:
    compression = desc.annotations.get(mt.COMPRESSION_ANNOTATION)
    if compression is None:
        return
    if compression != mt.COMPRESSION_ZSTD:
        raise InvalidArtifactError(f"Experiment {what} has unsupported compression annotation {compression!r}")
    base = desc.media_type.removesuffix(mt.ZSTD_SUFFIX)
    if base == desc.media_type or not base:
        raise InvalidArtifactError(
            f"Experiment {what} is zstd-compressed but its media type {desc.media_type!r} "
            f"does not end with a non-empty prefix plus {mt.ZSTD_SUFFIX}"
        )


def check_experiment_manifest(manifest: Manifest) -> None:
    """§5 checks 1-2: the artifact type and the config media type; ``InvalidArtifactError`` otherwise."""
    if manifest.artifact_type != mt.EXPERIMENT_ARTIFACT_TYPE:
        raise InvalidArtifactError(
            f"Experiment artifact type is {manifest.artifact_type}, expected {mt.EXPERIMENT_ARTIFACT_TYPE}"
        )
    if manifest.config.media_type != mt.EXPERIMENT_CONFIG:
        raise InvalidArtifactError(
            f"Experiment config media type is {manifest.config.media_type}, expected {mt.EXPERIMENT_CONFIG}"
        )


def validate_experiment(
    manifest: Manifest, config: ExperimentConfig, *, allowed_statuses: Sequence[str] = EXPERIMENT_STATUSES
) -> None:
    """Run the §5 checks 1-9 that need no blob I/O; raise ``InvalidArtifactError`` on the first failure.

    Not checked here (need blobs): the run-parameter msgpack content, the
    diagnostics blobs, and layer blob presence.
    """
    check_experiment_manifest(manifest)
    if config.status not in allowed_statuses:
        raise InvalidArtifactError(_status_message(config.status, allowed_statuses))
    validator = _Validator(manifest)
    validator.attachments(config.attachments, "experiment")
    seen: set[int] = set()
    for run in config.runs:
        if run.run_id in seen:
            raise InvalidArtifactError(f"Experiment config has duplicate run id {run.run_id}")
        seen.add(run.run_id)
        validator.run(run)
    validator.typed(config.run_parameters, "run parameters", (mt.RUN_PARAMETERS,))


class ValidatedExperiment(NamedTuple):
    """What :func:`validate_received_experiment` read and checked."""

    config_bytes: bytes
    config: ExperimentConfig
    table: ParameterTable


def validate_experiment_artifact(manifest: Manifest, read_blob: Callable[[Descriptor], bytes]) -> bytes:
    """Full §5 validation of an experiment artifact whose blobs ``read_blob`` returns; the config bytes.

    See :func:`validate_received_experiment`, which also returns what it decoded.
    """
    return validate_received_experiment(manifest, read_blob).config_bytes


def validate_received_experiment(
    manifest: Manifest, read_blob: Callable[[Descriptor], bytes]
) -> ValidatedExperiment:
    """Full §5 validation of an experiment artifact whose blobs ``read_blob`` returns.

    Checks the config size bound, parses the config, runs :func:`validate_experiment`
    (any status), decodes the run-parameter MessagePack table against the run ids and
    checks that every diagnostics layer is a MessagePack array. ``read_blob`` must
    return verified bytes (a staged or stored blob). Raises ``InvalidArtifactError``
    naming the first defect; callers add where the artifact came from. The one
    validator of archive imports and remote pulls, which then call
    :func:`~ommx_experiment.format.parquet_trust.note_received_parquet`: our Parquet
    run-parameter layer, which OMMX never reads, is compared with the MessagePack
    table on its first read instead, so an import needs neither pandas nor pyarrow.
    Returns the config bytes, the parsed config and the table (an import opens the
    Experiment it stored from them without reading them again).
    """
    from .run_params import decode_msgpack

    if manifest.config.size > MAX_CONFIG_BYTES:
        raise InvalidArtifactError(f"experiment config is {manifest.config.size} bytes; limit {MAX_CONFIG_BYTES}")
    config_bytes = read_blob(manifest.config)
    config = ExperimentConfig.parse(config_bytes)
    validate_experiment(manifest, config, allowed_statuses=EXPERIMENT_STATUSES)
    table = decode_msgpack(read_blob(manifest.layers[config.run_parameters]), {run.run_id for run in config.runs})
    for run in config.runs:
        calls: tuple[SolveRecord | SamplingRecord, ...] = (*run.solves, *run.samplings)
        for call in calls:
            if call.diagnostics is not None:
                _check_diagnostics(read_blob(manifest.layers[call.diagnostics]), run.run_id)
    return ValidatedExperiment(config_bytes, config, table)


def check_parquet_layers(
    manifest: Manifest, config: ExperimentConfig, table: ParameterTable, read_blob: Callable[[Descriptor], bytes]
) -> None:
    """Every Parquet run-parameter layer of ``manifest`` decodes and equals ``table`` (the
    MessagePack layer's): ``InvalidArtifactError`` otherwise."""
    layers = [
        d for d in manifest.layers
        if d.media_type == mt.PARQUET and d.annotations.get(mt.TITLE_ANNOTATION) == mt.PARQUET_RUN_PARAMS_TITLE
    ]
    if not layers:
        return
    from . import run_params as rp

    expected = rp.table_to_dataframe(table, [run.run_id for run in config.runs])
    for layer in layers:
        got = rp.decode_parquet(read_blob(layer))
        same = (
            list(got.columns) == list(expected.columns)
            and list(got.index) == list(expected.index)
            and [str(t) for t in got.dtypes] == [str(t) for t in expected.dtypes]
            and got.equals(expected)
        )
        if not same:
            raise InvalidArtifactError(
                f"Parquet run-parameter layer {layer.digest} disagrees with the MessagePack run-parameter layer"
            )


def _check_diagnostics(data: bytes, run_id: int) -> None:
    import msgpack

    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise InvalidArtifactError(f"Diagnostics layer of run {run_id} is not valid MessagePack: {exc}") from exc
    if not isinstance(value, list):
        raise InvalidArtifactError(f"Diagnostics layer of run {run_id} must be a MessagePack array")
