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
