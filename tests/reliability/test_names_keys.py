"""Names and keys: odd image names, control characters in annotations, NUL/unicode parameter
names, attachment names with ``/``, NUL, huge lengths: rejected clearly (ValueError/TypeError
of our tree) or stored and read back exactly through commit → fresh-process load → archive →
import into another root (fresh process).

Issue 8, "Names and keys".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ommx_experiment import Experiment
from ommx_experiment.errors import InvalidImageNameError, OmmxExperimentError

from . import _support as sup

VALID_NAMES = [
    "example.com/a__b/c-d.e:v_1.2-3",
    "localhost:5000/x/y:tag",
    "127.0.0.1:5000/deep/er/path:T",
    "example.com/x/y:" + "t" * 128,
    "example.com/x/y@sha256:" + "a" * 64,
]
INVALID_NAMES = [
    "example.com/UPPER/x:v1",
    "example.com/a b:v1",
    "example.com/a/b:ta\x00g",
    "example.com/a/b:" + "t" * 129,
    "example.com/\u00e4/b:v1",
    "example.com/a/b:-lead",
    "example.com//b:v1",
    "",
    "example.com/a/b:v1\n",
    "example.com/a/../b:v1",
]

ANNOTATIONS = {
    "com.example.ctrl\x01key": "v\x00al\nue\t\x7f",
    "com.example.unicode.\u00e9\u2603": "\U0001f600 \u202e rtl",
    "com.example.empty": "",
    "com.example.long": "x" * 100_000,
}
PARAMS = {"nul\x00name": 1, "\u00e9t\u00e9": 2.5, "\U0001f600": "emoji \x00 value", "": True, "a/b": -1, "k" * 5000: 3}
ATTACHMENTS = ["dir/name", "nul\x00inside", "n" * 5000, "\u00fcnicode/\u2603", "..", "../../etc/passwd", " "]


def _roundtrip(tmp_path: Path, registry_root: Path, name: str) -> tuple[dict, dict, dict]:
    """(in-process content, fresh-process load, fresh-process import into another root)."""
    from workers.reliability_worker import content

    sealed = Experiment.load(name)
    here = content(sealed)
    loaded = sup.run_json(registry_root, "dump", name)
    archive = tmp_path / "rt.ommx"
    sealed.save(archive)
    imported = sup.run_json(tmp_path / "other-root", "import-dump", str(archive))
    return here, loaded, imported


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_odd_image_names_round_trip(tmp_path: Path, registry_root: Path, name: str) -> None:
    exp = Experiment(name)
    with exp.run() as run:
        run.log_parameter("p", 1)
    exp.commit()  # a digest reference is stored as given, as OMMX 3.0.0b7 does (not checked against the manifest)
    here, loaded, imported = _roundtrip(tmp_path, registry_root, name)
    assert here == loaded == imported


@pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
def test_invalid_image_names_are_rejected_clearly(name: str) -> None:
    with pytest.raises(InvalidImageNameError, match="Invalid image reference"):
        Experiment(name)
    with pytest.raises(InvalidImageNameError):
        Experiment.load(name)


def test_annotations_params_attachment_names_stored_exactly_or_rejected(tmp_path: Path, registry_root: Path) -> None:
    name = "example.com/rel/keys:v1"
    exp = Experiment(name)
    stored_annotations = {}
    for key, value in ANNOTATIONS.items():
        try:
            exp.set_annotation(key, value)
            stored_annotations[key] = value
        except OmmxExperimentError as exc:
            assert isinstance(exc, ValueError | TypeError), repr(exc)
    stored_attachments = {}
    for i, att in enumerate(ATTACHMENTS):
        try:
            exp.log_attachment(att, "application/octet-stream", b"payload %d" % i)
            stored_attachments[att] = b"payload %d" % i
        except OmmxExperimentError as exc:
            assert isinstance(exc, ValueError | TypeError), repr(exc)
    stored_params = {}
    with exp.run() as run:
        for key, value in PARAMS.items():
            try:
                run.log_parameter(key, value)
                stored_params[key] = value
            except OmmxExperimentError as exc:
                assert isinstance(exc, ValueError | TypeError), repr(exc)
    exp.commit()
    here, loaded, imported = _roundtrip(tmp_path, registry_root, name)
    assert here == loaded == imported
    assert here["annotations"] == stored_annotations
    assert {k: bytes.fromhex(v) for k, v in here["attachments"].items()} == stored_attachments
    assert here["params"] == {"0": stored_params}
    # the parameter table and the parquet layer agree on the exact names (NUL, emoji, empty)
    assert sorted(Experiment.load(name).run_parameters_df().columns) == sorted(stored_params)


@pytest.mark.parametrize("bad", [b"bytes-name", 7, None])
def test_non_string_keys_are_type_errors(bad: object) -> None:
    exp = Experiment("example.com/rel/types:v1")
    with pytest.raises(TypeError):
        exp.set_annotation(bad, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        exp.log_attachment(bad, "application/octet-stream", b"x")  # type: ignore[arg-type]
    with exp.run() as run, pytest.raises(TypeError):
        run.log_parameter(bad, 1)  # type: ignore[arg-type]


# --- lone surrogates and non-UTF-8 file names (issue 16, fault 5) --------------------------------------------

# Each case runs inside `with exp.run() as run:` (or on `exp`) with `d` a scratch folder holding `f`.
SURROGATE_CASES = {
    "parameter name": 'run.log_parameter("\\ud800", 1)',
    "parameter value": 'run.log_parameter("p", "x\\ud800")',
    "run attachment name": 'run.log_json("\\ud800", 1)',
    "run attachment media type": 'run.log_attachment("a", "text/\\udcff", b"x")',
    "log_file filename": 'run.log_file("f", os.path.join(d, "f"), filename="\\ud800.txt")',
    "experiment attachment name": 'exp.log_json("\\ud800", 1)',
    "annotation value": 'exp.set_annotation("k", "\\ud800")',
    "annotation key": 'exp.set_annotation("\\ud800", "v")',
}

_SURROGATE_SCRIPT = """
import json, os, sys, tempfile
from {module} import Experiment
d = tempfile.mkdtemp()
open(os.path.join(d, "f"), "w").write("x")
open(os.path.join(d.encode(), b"a\\xff.txt"), "w").write("x")
exp = Experiment("example.com/nk/poison:v1")
for i in range(3):
    with exp.run() as run:
        run.log_parameter("i", i)
out = {{}}
try:
    with exp.run() as run:
        run.log_parameter("i", 3)
        {stmt}
    out["logged"] = "accepted"
except Exception as exc:
    out["logged"] = [c.__name__ for c in type(exc).__mro__]
try:
    exp.commit()
    out["commit"] = "ok"
except Exception as exc:
    out["commit"] = type(exc).__name__ + ": " + str(exc)[:100]
out["runs"] = len(Experiment.load("example.com/nk/poison:v1").runs) if out["commit"] == "ok" else None
print(json.dumps(out))
"""

_NON_UTF8_FILE = 'run.log_file("g", os.path.join(d.encode(), b"a\\xff.txt").decode("utf-8", "surrogateescape"))'


@pytest.mark.parametrize("case", [*SURROGATE_CASES, "non-UTF-8 file name"])
def test_lone_surrogates_rejected_when_logged(case: str, registry_root: Path) -> None:
    """As OMMX 3: the string is refused when it is logged (UnicodeEncodeError; for a file whose
    name is not UTF-8, RuntimeError), the session keeps its good runs and commits them."""
    import json
    import subprocess
    import sys

    stmt = SURROGATE_CASES.get(case, _NON_UTF8_FILE)
    proc = subprocess.run(
        [sys.executable, "-c", _SURROGATE_SCRIPT.format(module="ommx_experiment", stmt=stmt)],
        env=sup.env(registry_root), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if case == "non-UTF-8 file name":
        assert out["logged"][:2] == ["LifecycleError", "OmmxExperimentError"] and "RuntimeError" in out["logged"]
    else:
        assert out["logged"][0] == "InvalidTextError"
        assert {"UnicodeEncodeError", "ValueError", "OmmxExperimentError"} <= set(out["logged"])
    # the failed run is recorded as failed (its body raised); the three good runs commit and load
    assert out["commit"] == "ok" and out["runs"] == 4, out


@pytest.mark.ommx3
@pytest.mark.parametrize("case", [*SURROGATE_CASES, "non-UTF-8 file name"])
def test_lone_surrogates_same_exception_family_as_ommx3(case: str, ommx3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    stmt = SURROGATE_CASES.get(case, _NON_UTF8_FILE)
    theirs = ommx3.run_json(_SURROGATE_SCRIPT.format(module="ommx.experiment", stmt=stmt), root=tmp_path / "theirs")
    expected = "RuntimeError" if case == "non-UTF-8 file name" else "UnicodeEncodeError"
    assert theirs["logged"] != "accepted" and expected in theirs["logged"], theirs
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _SURROGATE_SCRIPT.format(module="ommx_experiment", stmt=stmt)],
        env=sup.env(tmp_path / "ours"), capture_output=True, text=True, timeout=120,
    )
    ours = json.loads(proc.stdout.strip().splitlines()[-1])
    assert expected in ours["logged"], ours
    assert ours["commit"] == theirs["commit"] == "ok"


def test_watcher_reports_a_non_utf8_file_name(tmp_path: Path) -> None:
    """A file in a watched folder whose name is not UTF-8 is not attached; stop() reports it as
    WatcherError; the other files are attached and the experiment commits."""
    import os

    from ommx_experiment.errors import WatcherError

    folder = tmp_path / "watched"
    folder.mkdir()
    exp = Experiment("example.com/nk/watch:v1")
    run = exp.run()
    watcher = run.watch(folder)
    watcher.start()
    with open(os.path.join(bytes(folder), b"bad\xff.txt"), "wb") as fh:
        fh.write(b"bad name")
    (folder / "good.txt").write_bytes(b"good name")
    with pytest.raises(WatcherError, match="valid UTF-8 file name"):
        watcher.stop()
    run.finish()
    exp.commit()
    names = set(exp.runs[0].attachment_names) | set(exp.attachment_names)
    assert "good.txt" in names and not any("bad" in n for n in names)


def test_poison_in_a_journal_row_of_an_older_version_is_named_and_discardable(registry_root: Path) -> None:
    """A journal row written by a version that did not check text (a JSON ``\\ud800`` escape in a
    parameter) makes commit() raise InvalidTextError naming the run and ``discard_run``, never a raw
    UnicodeEncodeError; restore carries the poison, and after ``discard_run`` the good runs commit."""
    from ommx_experiment import Experiment, LocalRegistry
    from ommx_experiment.errors import InvalidTextError

    name = "example.com/nk/old-poison:v1"
    exp = Experiment(name)
    for i in range(100):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_parameter("label", "POISON" if i == 42 else "ok")
    registry = LocalRegistry.default()
    with registry.db.write("inject an older version's row") as conn:
        changed = conn.execute(
            "UPDATE oxe_journal_runs SET body = replace(body, '\"POISON\"', '\"x\\ud800\"') WHERE body LIKE '%POISON%'"
        ).rowcount
    assert changed == 1
    for attempt in (exp, Experiment.restore_from_checkpoint(name)):
        with pytest.raises(InvalidTextError) as info:
            attempt.commit()
        message = str(info.value)
        assert "parameter 'label' of run 42" in message and "discard_run(42)" in message, message
        assert isinstance(info.value, UnicodeEncodeError) and registry.resolve(name) is None
    restored = Experiment.restore_from_checkpoint(name)
    restored.discard_run(42)
    art = restored.commit()
    runs = Experiment.load(art.image_name).runs
    assert [r.run_id for r in runs] == [i for i in range(100) if i != 42]
