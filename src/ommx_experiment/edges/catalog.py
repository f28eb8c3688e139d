"""Listings of a Local Registry: experiments, checkpoints, artifacts, image names.

Every listing is one SQL query over OMMX's ``refs`` joined with its cache tables
``artifact_manifests`` and ``experiment_configs`` (§4.3); the CAS is the source
of truth behind those caches:

- a missing cache row is back-filled from the CAS (exact bytes, in one
  ``BEGIN IMMEDIATE`` transaction at the end of the listing, only for refs that
  still point to the same manifest);
- an invalid cached row (bytes not hashing to the digest, wrong
  ``artifact_type``/``config_digest``) is repaired from the CAS with a
  ``RuntimeWarning`` "... repaired from CAS ...";
- a ref that cannot be read is skipped with a ``RuntimeWarning``.

With ``strict=True`` the first problem raises a ``RuntimeError`` instead.
Parsed manifests and configs are kept in-process keyed by digest (content
addressed, so never stale): a warm listing decodes no JSON.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.clock import parse_timestamp
from ..engine.digest import sha256_digest
from ..engine.manifest_links import LISTING, parse_manifest_links
from ..engine.names import ImageName, checkpoint_name, checkpoint_repository
from ..engine.oci import FrozenMap
from ..errors import InvalidArtifactError, InvalidInputError, OmmxExperimentError, RegistryError
from ..format.journal import checkpoint_ref, draft_config, read_journal

if TYPE_CHECKING:
    import pandas as pd

    from ..engine.registry import LocalRegistry

CHECKPOINT_STATUSES = ("draft", "failed", "interrupted")
_CHECKPOINT_TAG_RE = re.compile(r"[0-9a-f]{64}")
_CACHE_LIMIT = 200_000

_LISTING_SQL = (
    "SELECT r.name, r.reference, r.manifest_digest, r.updated_at, "
    "m.manifest_json, m.artifact_type, m.config_digest, c.config_json "
    "FROM refs r "
    "LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
    "LEFT JOIN experiment_configs c ON c.config_digest = m.config_digest "
    "ORDER BY r.name, r.reference"
)


# --- public value types -----------------------------------------------------------------------


def _decode(data: bytes) -> dict[str, Any]:
    return json.loads(data)


class _ExperimentCounts:
    """What :class:`ExperimentRef` and :class:`ExperimentCheckpointRef` share: ``config`` and the repr tail."""

    __slots__ = ()
    status: str
    run_count: int
    solve_count: int
    sampling_count: int
    config_json: bytes

    @property
    def config(self) -> dict[str, Any]:
        """The full config JSON, decoded afresh on every access."""
        return _decode(self.config_json)

    def _counts_repr(self) -> str:
        return (
            f"status={self.status!r}, runs={self.run_count}, solves={self.solve_count}, "
            f"samplings={self.sampling_count})"
        )


@dataclass(frozen=True, slots=True)
class ExperimentRef(_ExperimentCounts):
    """One experiment ref of a Local Registry (§1.13).

    ``config`` is the full config JSON (unknown extension fields included),
    decoded afresh on every access so callers may mutate it freely.
    """

    image_name: str
    manifest_digest: str
    config_digest: str
    updated_at: str
    status: str
    run_count: int
    solve_count: int
    sampling_count: int
    annotations: Mapping[str, str]
    config_json: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"ExperimentRef(image_name={self.image_name!r}, {self._counts_repr()}"


@dataclass(frozen=True, slots=True)
class ExperimentCheckpointRef(_ExperimentCounts):
    """One experiment checkpoint (§1.13): an OMMX-format checkpoint ref or a journal draft.

    A *journal draft* (``from_journal=True``) is a session held only in our SQLite
    checkpoint journal, newer than any OMMX-format checkpoint of its name (or
    without one): ``status`` is ``draft``; ``checkpoint_image_name`` is the
    OMMX-format checkpoint ref that a published draft (and OMMX's restore) would
    use; ``manifest_digest`` and ``config_digest`` are None, since no manifest or
    config blob exists (the journal's pin manifest is GC bookkeeping, not an
    Experiment artifact); ``updated_at`` is the journal's (newest write or Run
    close); ``config`` is the exact config a draft published now would carry;
    ``annotations`` are the session's manifest annotations.
    """

    checkpoint_image_name: str
    requested_image_name: str
    manifest_digest: str | None
    config_digest: str | None
    updated_at: str
    status: str
    run_count: int
    solve_count: int
    sampling_count: int
    annotations: Mapping[str, str]
    config_json: bytes = field(repr=False)
    from_journal: bool = False
    slot_copy: str | None = field(default=None, repr=False, compare=False)
    """Journal drafts: the OMMX-format slot our autosave last copied from this journal (never preferred to it)."""

    def __repr__(self) -> str:
        return f"ExperimentCheckpointRef(requested_image_name={self.requested_image_name!r}, {self._counts_repr()}"


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """One OMMX artifact ref, generic or experiment (§1.14). ``manifest`` is decoded on access."""

    image_name: str
    manifest_digest: str
    updated_at: str
    artifact_type: str
    config_digest: str
    annotations: Mapping[str, str]
    manifest_json: bytes = field(repr=False)

    @property
    def manifest(self) -> dict[str, Any]:
        return _decode(self.manifest_json)

    def __repr__(self) -> str:
        return (
            f'ArtifactRef(image_name="{self.image_name}", artifact_type="{self.artifact_type}", '
            f'manifest_digest="{self.manifest_digest}")'
        )


# --- in-process caches (content addressed) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ManifestInfo:
    raw: bytes
    artifact_type: str
    config_digest: str
    annotations: FrozenMap[str, str]


@dataclass(frozen=True, slots=True)
class _ConfigInfo:
    raw: bytes
    status: str
    run_count: int
    solve_count: int
    sampling_count: int
    requested_image_name: str | None


_MANIFESTS: dict[str, _ManifestInfo] = {}
_CONFIGS: dict[str, _ConfigInfo] = {}
_NAMES: dict[tuple[str, str], ImageName | str] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _warn(message: str) -> None:
    """``RuntimeWarning`` attributed to the first caller outside this module."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, RuntimeWarning, stacklevel=level)


class _Problem(Exception):
    """A ref the listing cannot use; ``step`` names where it failed."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(detail)
        self.step = step
        self.detail = detail


def _parse_manifest(raw: bytes, digest: str) -> _ManifestInfo:
    try:
        links = parse_manifest_links(raw, digest, LISTING)
    except InvalidArtifactError as exc:
        raise _Problem("manifest backfill", str(exc)) from exc
    if links.artifact_type not in mt.OMMX_ARTIFACT_TYPES:
        raise _Problem(
            "manifest backfill",
            f"Manifest `artifactType` must be one of `{mt.GENERIC_ARTIFACT_TYPE}` or "
            f"`{mt.EXPERIMENT_ARTIFACT_TYPE}`, got `{links.artifact_type}`",
        )
    return _ManifestInfo(raw, links.artifact_type, links.config_digest, links.annotations)


def _parse_config(raw: bytes, digest: str) -> _ConfigInfo:
    from ..format.codec import ExperimentConfig

    try:
        config = ExperimentConfig.parse(raw)
    except InvalidArtifactError as exc:
        raise _Problem("experiment config parse", f"Experiment config {digest} is invalid: {exc}") from exc
    return _ConfigInfo(
        raw,
        config.status,
        len(config.runs),
        config.solve_count,
        config.sampling_count,
        config.requested_image_name,
    )


# --- the scan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    image: ImageName
    canonical: str
    manifest_digest: str
    updated_at: str
    manifest: _ManifestInfo
    config: _ConfigInfo | None


@dataclass(slots=True)
class _Backfill:
    name: str
    reference: str
    manifest_digest: str
    manifest: _ManifestInfo
    config_digest: str | None = None
    config_raw: bytes | None = None


class _Scan:
    """One listing pass over ``refs`` with cache validation, back-fill and repair."""

    def __init__(self, registry: LocalRegistry, *, strict: bool, experiments: bool) -> None:
        self.registry = registry
        self.strict = strict
        self.experiments = experiments
        self.pending: dict[str, _Backfill] = {}

    def rows(self, keep: Callable[[ImageName, str], bool]) -> list[_Row]:
        """Rows whose ref passes ``keep(image, canonical)`` and whose content is readable."""
        out: list[_Row] = []
        for row in self.registry.db.query(_LISTING_SQL):
            name, reference, digest, updated = str(row[0]), str(row[1]), str(row[2]), str(row[3])
            image = self._image(name, reference)
            if image is None:
                continue
            canonical = str(image)
            if not keep(image, canonical):
                continue
            try:
                out.extend(self._row(image, canonical, name, reference, digest, updated, row[4:]))
            except _Problem as problem:
                self._report(f"{canonical} ({digest})", problem)
        self._flush()
        return out

    def _row(
        self, image: ImageName, canonical: str, name: str, reference: str, digest: str, updated: str,
        cached: Sequence[Any],
    ) -> list[_Row]:
        manifest = self._manifest(canonical, name, reference, digest, cached[0], cached[1], cached[2])
        config = None
        if self.experiments:
            if manifest.artifact_type != mt.EXPERIMENT_ARTIFACT_TYPE:
                return []
            config = self._config(canonical, name, reference, digest, manifest, cached[3], joined=cached[0] is not None)
        return [_Row(image, canonical, digest, updated, manifest, config)]

    def _image(self, name: str, reference: str) -> ImageName | None:
        key = (name, reference)
        hit = _NAMES.get(key)
        if hit is None:
            try:
                hit = ImageName.from_row(name, reference)
            except InvalidInputError as exc:
                hit = f"Invalid Local Registry image ref with name {name!r} and reference {reference!r}: {exc}"
            _remember(_NAMES, key, hit)
        if isinstance(hit, str):
            self._report(f"{name} {reference}", _Problem("ref parse", hit))
            return None
        return hit

    def _manifest(
        self, canonical: str, name: str, reference: str, digest: str,
        cached: bytes | None, cached_type: str | None, cached_config: str | None,
    ) -> _ManifestInfo:
        hit = _MANIFESTS.get(digest)
        if cached is not None:
            if hit is not None and hit.raw == cached and cached_type == hit.artifact_type and (
                cached_config == hit.config_digest
            ):
                return hit
            info = self._valid_cached_manifest(digest, bytes(cached), cached_type, cached_config)
            if info is not None:
                return info
            self._invalid_cache(
                canonical, digest, "manifest cache repair",
                f"Invalid cached Manifest was repaired from CAS: Cached Manifest JSON does not match {digest}",
            )
        info = hit or self._manifest_from_cas(digest)
        self._queue(name, reference, digest, info)
        return info

    @staticmethod
    def _valid_cached_manifest(
        digest: str, cached: bytes, cached_type: str | None, cached_config: str | None
    ) -> _ManifestInfo | None:
        if sha256_digest(cached) != digest:
            return None
        try:
            info = _parse_manifest(cached, digest)
        except _Problem:
            return None
        if info.artifact_type != cached_type or info.config_digest != cached_config:
            return None
        _remember(_MANIFESTS, digest, info)
        return info

    def _manifest_from_cas(self, digest: str) -> _ManifestInfo:
        try:
            raw = self.registry.blobs.get(digest)
        except OmmxExperimentError as exc:
            raise _Problem("manifest backfill", str(exc)) from exc
        info = _parse_manifest(raw, digest)
        _remember(_MANIFESTS, digest, info)
        return info

    def _config(
        self, canonical: str, name: str, reference: str, digest: str, manifest: _ManifestInfo,
        cached: bytes | None, *, joined: bool,
    ) -> _ConfigInfo:
        """``joined``: the manifest cache row existed, so the listing's join already looked up the config row."""
        config_digest = manifest.config_digest
        hit = _CONFIGS.get(config_digest)
        if cached is not None:
            if hit is not None and hit.raw == cached:
                return hit
            if sha256_digest(cached) == config_digest:
                info = _parse_config(bytes(cached), config_digest)
                _remember(_CONFIGS, config_digest, info)
                return info
            self._invalid_cache(
                canonical, digest, "experiment config cache repair",
                "Invalid cached Experiment projection was repaired from CAS: "
                f"Cached Experiment Config JSON does not match {config_digest}",
            )
        if hit is None and not joined:
            hit = self._stored_config(config_digest)
            if hit is not None:
                return hit
        if hit is None:
            try:
                raw = self.registry.blobs.get(config_digest)
            except OmmxExperimentError as exc:
                raise _Problem("experiment config backfill", str(exc)) from exc
            hit = _parse_config(raw, config_digest)
            _remember(_CONFIGS, config_digest, hit)
        entry = self._queue(name, reference, digest, manifest)
        entry.config_digest, entry.config_raw = config_digest, hit.raw
        return hit

    def _stored_config(self, config_digest: str) -> _ConfigInfo | None:
        """A valid ``experiment_configs`` row the join could not reach (its manifest row was missing)."""
        rows = self.registry.db.query(
            "SELECT config_json FROM experiment_configs WHERE config_digest = ?", (config_digest,)
        )
        if not rows or not isinstance(rows[0][0], bytes) or sha256_digest(rows[0][0]) != config_digest:
            return None
        info = _parse_config(rows[0][0], config_digest)
        _remember(_CONFIGS, config_digest, info)
        return info

    def _queue(self, name: str, reference: str, digest: str, manifest: _ManifestInfo) -> _Backfill:
        entry = self.pending.get(digest)
        if entry is None:
            entry = self.pending[digest] = _Backfill(name, reference, digest, manifest)
        return entry

    def _invalid_cache(self, canonical: str, digest: str, step: str, detail: str) -> None:
        message = f"Local Registry listing issue for {canonical} ({digest}) during {step}: {detail}"
        if self.strict:
            raise RegistryError(message)
        _warn(message)

    def _report(self, where: str, problem: _Problem) -> None:
        message = f"Local Registry listing issue for {where} during {problem.step}: {problem.detail}"
        if self.strict:
            raise RegistryError(message) from problem
        _warn(message)

    def _flush(self) -> None:
        if not self.pending:
            return
        try:
            with self.registry.db.write("listing cache back-fill") as conn:
                for entry in self.pending.values():
                    _write_backfill(conn, entry)
        except (RegistryError, OSError) as exc:
            # Caches are optional: a read-only or busy index still lists correctly.
            _warn(f"Local Registry listing could not back-fill caches in {self.registry.root}: {exc}")
        self.pending.clear()


def _write_backfill(conn: Any, entry: _Backfill) -> None:
    still = conn.execute(
        "SELECT 1 FROM refs WHERE name = ? AND reference = ? AND manifest_digest = ?",
        (entry.name, entry.reference, entry.manifest_digest),
    ).fetchone()
    if still is None:
        return
    conn.execute(
        "INSERT INTO artifact_manifests(manifest_digest, manifest_json, artifact_type, config_digest) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(manifest_digest) DO UPDATE SET "
        "manifest_json = excluded.manifest_json, artifact_type = excluded.artifact_type, "
        "config_digest = excluded.config_digest",
        (entry.manifest_digest, entry.manifest.raw, entry.manifest.artifact_type, entry.manifest.config_digest),
    )
    if entry.config_raw is not None:
        conn.execute(
            "INSERT INTO experiment_configs(config_digest, config_json) VALUES (?, ?) "
            "ON CONFLICT(config_digest) DO UPDATE SET config_json = excluded.config_json",
            (entry.config_digest, entry.config_raw),
        )


# --- opening ------------------------------------------------------------------------------------


def _open(root: str | Path | None) -> LocalRegistry:
    from ..engine.registry import LocalRegistry

    return LocalRegistry.default() if root is None else LocalRegistry.at(root)


def _check_prefix(prefix: object) -> str | None:
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidInputError(f"prefix must be a string or None, got {type(prefix).__name__}")
    return prefix


def _prefix_ok(prefix: str | None, canonical: str) -> bool:
    return prefix is None or canonical.startswith(prefix)


# --- public listings ------------------------------------------------------------------------------


def list_experiments(
    prefix: str | None = None, *, root: str | Path | None = None, strict: bool = False
) -> list[ExperimentRef]:
    """Every experiment ref (any status) except this registry's checkpoints.

    ``prefix`` is a plain string prefix of the canonical ref. Sorted by
    repository, then reference. ``root=None`` is the default registry; a path
    opens (and creates) the registry there.
    """
    prefix = _check_prefix(prefix)
    registry = _open(root)
    internal = checkpoint_repository(registry.registry_id)

    def keep(image: ImageName, canonical: str) -> bool:
        return image.repository != internal and _prefix_ok(prefix, canonical)

    return [_experiment_ref(row) for row in _Scan(registry, strict=strict, experiments=True).rows(keep)]


def _experiment_ref(row: _Row) -> ExperimentRef:
    config = row.config
    assert config is not None
    return ExperimentRef(
        row.canonical, row.manifest_digest, row.manifest.config_digest, row.updated_at, config.status,
        config.run_count, config.solve_count, config.sampling_count, row.manifest.annotations, config.raw,
    )


def _check_statuses(statuses: Iterable[str] | None) -> frozenset[str]:
    if statuses is None:
        return frozenset()
    if isinstance(statuses, str):
        statuses = [statuses]
    chosen = list(statuses)
    for status in chosen:
        if status not in CHECKPOINT_STATUSES:
            raise InvalidInputError(
                f"Unknown Experiment checkpoint status `{status}`; expected `draft`, `failed`, or `interrupted`"
            )
    return frozenset(chosen)


def list_experiment_checkpoints(
    prefix: str | None = None,
    *,
    statuses: Iterable[str] | None = None,
    root: str | Path | None = None,
    strict: bool = False,
    include_journal: bool = False,
) -> list[ExperimentCheckpointRef]:
    """Experiment checkpoints of this registry: its OMMX-format checkpoint refs, as OMMX lists them.

    ``statuses`` (``draft``/``failed``/``interrupted``; empty = all) is checked
    before the registry is opened. ``prefix`` matches the *requested* image
    name. Sorted by requested name, then checkpoint ref. Refs in the
    checkpoint repository that are not checkpoints (a non-64-hex tag, or a
    generic artifact such as our journal pins) are skipped silently;
    inconsistent checkpoints are skipped with a warning (``strict``: RuntimeError).

    ``include_journal=True`` adds the drafts held only in our checkpoint journal
    (``from_journal=True``), one entry per requested name: when both an
    OMMX-format checkpoint and a journal draft exist, the one
    ``restore_from_checkpoint`` would use (the checkpoint only if strictly
    newer); an unreadable journal is skipped like an inconsistent checkpoint.
    """
    prefix = _check_prefix(prefix)
    wanted = _check_statuses(statuses)
    registry = _open(root)
    repository = checkpoint_repository(registry.registry_id)

    def keep(image: ImageName, canonical: str) -> bool:
        return image.repository == repository and _CHECKPOINT_TAG_RE.fullmatch(image.reference) is not None

    scan = _Scan(registry, strict=strict, experiments=True)
    refs = [ref for row in scan.rows(keep) if (ref := _checkpoint_ref(scan, row)) is not None]
    if include_journal:
        refs = _newest_per_name([*refs, *_journal_drafts(scan, prefix)])
    selected = [
        r for r in refs if _prefix_ok(prefix, r.requested_image_name) and (not wanted or r.status in wanted)
    ]
    return sorted(selected, key=lambda r: (r.requested_image_name, r.checkpoint_image_name))


def _checkpoint_ref(scan: _Scan, row: _Row) -> ExperimentCheckpointRef | None:
    config = row.config
    assert config is not None
    where = f"{row.canonical} ({row.manifest_digest})"
    requested = config.requested_image_name
    try:
        if requested is None:
            raise _Problem("checkpoint projection", "checkpoint config has no `requested_image_name`")
        try:
            requested_image = ImageName.parse(requested)
        except InvalidInputError as exc:
            raise _Problem("checkpoint projection", f"invalid `requested_image_name` {requested!r}: {exc}") from exc
        if config.status not in CHECKPOINT_STATUSES:
            raise _Problem("checkpoint projection", f"checkpoint has status `{config.status}`")
        if row.image.reference != checkpoint_name(scan.registry.registry_id, requested_image).reference:
            raise _Problem(
                "checkpoint projection", f"ref does not match the checkpoint ref derived from {requested_image}"
            )
    except _Problem as problem:
        scan._report(where, problem)
        return None
    return ExperimentCheckpointRef(
        row.canonical, str(requested_image), row.manifest_digest, row.manifest.config_digest, row.updated_at,
        config.status, config.run_count, config.solve_count, config.sampling_count, row.manifest.annotations,
        config.raw,
    )


def _journal_drafts(scan: _Scan, prefix: str | None) -> list[ExperimentCheckpointRef]:
    """Drafts held in our SQLite checkpoint journal; an unreadable journal is reported like a bad ref."""
    def report(name: str, exc: Exception) -> None:
        scan._report(f"journal of {name}", _Problem("journal draft", f"{type(exc).__name__}: {exc}"))

    return list(list_journal_drafts(scan.registry, prefix=prefix, on_error=report))


def _newest_per_name(refs: list[ExperimentCheckpointRef]) -> list[ExperimentCheckpointRef]:
    """One entry per requested name: the one ``restore_from_checkpoint`` would use.

    Restore's rule: the OMMX-format checkpoint only when its ref is strictly newer
    than the journal (a tie goes to the journal).
    """
    best: dict[str, ExperimentCheckpointRef] = {}
    for ref in refs:
        other = best.get(ref.requested_image_name)
        if other is None:
            best[ref.requested_image_name] = ref
        elif ref.from_journal != other.from_journal:
            journal, slot = (ref, other) if ref.from_journal else (other, ref)
            copy = journal.slot_copy is not None and journal.slot_copy == slot.manifest_digest
            newer_slot = not copy and parse_timestamp(slot.updated_at) > parse_timestamp(journal.updated_at)
            best[ref.requested_image_name] = slot if newer_slot else journal
    return list(best.values())


def list_artifacts(
    prefix: str | None = None,
    *,
    root: str | Path | None = None,
    include_internal: bool = False,
    strict: bool = False,
) -> list[ArtifactRef]:
    """Every OMMX artifact ref (generic and experiment), sorted by repository then reference.

    This registry's checkpoint repository is listed only with
    ``include_internal=True`` (a checkpoint-shaped name of another registry is
    an ordinary ref).
    """
    prefix = _check_prefix(prefix)
    registry = _open(root)
    internal = checkpoint_repository(registry.registry_id)

    def keep(image: ImageName, canonical: str) -> bool:
        return (include_internal or image.repository != internal) and _prefix_ok(prefix, canonical)

    return [
        ArtifactRef(
            row.canonical, row.manifest_digest, row.updated_at, row.manifest.artifact_type,
            row.manifest.config_digest, row.manifest.annotations, row.manifest.raw,
        )
        for row in _Scan(registry, strict=strict, experiments=False).rows(keep)
    ]


def get_images(*, root: str | Path | None = None) -> list[str]:
    """Every ref's canonical name (checkpoints and anonymous refs included), sorted.

    A stored ref that does not parse raises ``RuntimeError`` "Invalid Local
    Registry image ref ...".
    """
    registry = _open(root)
    return [str(record.image_name) for record in registry.list_refs()]


DEFAULT_DF_ANNOTATIONS: tuple[str, ...] = ()


def experiments_df(
    prefix: str | None = None,
    annotations: Sequence[str] = DEFAULT_DF_ANNOTATIONS,
    *,
    root: str | Path | None = None,
    strict: bool = False,
) -> pd.DataFrame:
    """The experiments of :func:`list_experiments` as a pandas DataFrame, one row each.

    Columns: ``image_name``, ``status``, ``runs``, ``solves``, ``samplings``
    (``Int64``), ``updated_at`` (UTC ``datetime64``), ``manifest_digest``, then
    one ``string`` column per requested annotation key (``<NA>`` when absent).
    """
    if isinstance(annotations, str):
        annotations = (annotations,)
    keys = list(annotations)
    if not all(isinstance(k, str) for k in keys):
        raise InvalidInputError(f"annotation keys must be strings, got {keys!r}")
    refs = list_experiments(prefix, root=root, strict=strict)
    return _frame(refs, keys)


def _frame(refs: list[ExperimentRef], keys: list[str]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {
        "image_name": pd.array([r.image_name for r in refs], dtype="string"),
        "status": pd.array([r.status for r in refs], dtype="string"),
        "runs": pd.array([r.run_count for r in refs], dtype="Int64"),
        "solves": pd.array([r.solve_count for r in refs], dtype="Int64"),
        "samplings": pd.array([r.sampling_count for r in refs], dtype="Int64"),
        "updated_at": pd.to_datetime([r.updated_at for r in refs], utc=True, format="ISO8601"),
        "manifest_digest": pd.array([r.manifest_digest for r in refs], dtype="string"),
    }
    for key in keys:
        data[key] = pd.array([r.annotations.get(key, pd.NA) for r in refs], dtype="string")
    return pd.DataFrame(data, columns=list(data))


def _clear_caches() -> None:
    """Forget parsed manifests/configs/names (tests and benchmarks: a cold listing)."""
    _MANIFESTS.clear()
    _CONFIGS.clear()
    _NAMES.clear()


__all__ = [
    "ArtifactRef",
    "ExperimentCheckpointRef",
    "ExperimentRef",
    "experiments_df",
    "get_images",
    "list_artifacts",
    "list_experiment_checkpoints",
    "list_experiments",
]


# --- journal drafts (unsealed sessions in our SQLite journal) -------------------------------------


def journal_draft(registry: LocalRegistry, requested: ImageName) -> ExperimentCheckpointRef | None:
    """The journal of ``requested`` as a ``draft`` listing entry, or None when there is none.

    See :class:`~ommx_experiment.edges.catalog.ExperimentCheckpointRef` for the fields of
    a journal draft (no manifest: ``manifest_digest``/``config_digest`` are None).
    """
    snapshot = read_journal(registry, requested)
    if snapshot is None:
        return None
    config = draft_config(snapshot, requested)
    return ExperimentCheckpointRef(
        str(checkpoint_ref(registry, requested)), str(requested), None, None, snapshot.updated_at, "draft",
        len(config.runs), config.solve_count, config.sampling_count, snapshot.header.annotations,
        config.to_bytes(), from_journal=True, slot_copy=snapshot.slot_digest,
    )


def list_journal_drafts(
    registry: LocalRegistry,
    *,
    prefix: str | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> Iterator[ExperimentCheckpointRef]:
    """Every journaled session whose requested name starts with ``prefix``, as a ``draft`` entry.

    Sorted by requested name. A journal that cannot be read is passed to
    ``on_error(requested name, exception)`` and skipped; without ``on_error`` the
    exception propagates. Whether an OMMX-format checkpoint of the same name is
    newer is the caller's concern (:func:`ommx_experiment.edges.catalog.list_experiment_checkpoints`).
    """
    rows = registry.db.query("SELECT requested_name FROM oxe_journal_sessions WHERE sealing IS NULL ORDER BY requested_name")
    for (name,) in rows:
        if prefix is not None and not str(name).startswith(prefix):
            continue
        try:
            draft = journal_draft(registry, ImageName.parse(str(name)))
        except (OmmxExperimentError, ValueError, KeyError, TypeError) as exc:
            if on_error is None:
                raise
            on_error(str(name), exc)
            continue
        if draft is not None:
            yield draft
