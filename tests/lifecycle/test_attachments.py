"""Attachments at experiment and run level (§1.11, §6 "Attachments")."""

from __future__ import annotations

import json

import pytest

from ommx_experiment import Experiment
from ommx_experiment import media_types as mt
from ommx_experiment.errors import DigestMismatchError
from ommx_experiment.format.payload import sniff_media_type
from ommx_experiment.lifecycle.attachments import safe_basename

NAME = "example.com/team/att:v1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class Upper:
    media_type = "application/x-upper"

    @staticmethod
    def encode(value: str) -> bytes:
        return value.upper().encode()

    @staticmethod
    def decode(data: bytes) -> str:
        return data.decode().lower()


class Other(Upper):
    media_type = "application/x-other"


def _instance():
    from ommx.v1 import DecisionVariable, Instance

    x = DecisionVariable.binary(0)
    inst = Instance.from_components(decision_variables=[x], objective=x, constraints=[], sense=Instance.MAXIMIZE)
    inst.add_user_annotation("author", "alice")
    return inst


def _both(exp: Experiment):
    """(experiment-level reader, run-level reader) after commit and load."""
    exp.commit()
    loaded = Experiment.load(NAME)
    return loaded, loaded.runs[0]


def test_json_and_bytes_round_trip_both_levels() -> None:
    exp = Experiment(NAME)
    exp.log_json("cfg", {"b": 1, "a": [1, 2], "é": float("nan")})
    exp.log_attachment("raw", "application/x-unknown", b"\x00\x01")
    with exp.run() as run:
        run.log_json("r", [1, "x"])
        run.log_attachment("rb", "application/octet-stream", b"run bytes")
    top, run_view = _both(exp)
    assert top.attachment_names == ["cfg", "raw"]
    cfg = top.get_attachment("cfg")
    assert list(cfg) == ["b", "a", "é"] and cfg["a"] == [1, 2]
    assert top.get_blob("cfg") == json.dumps({"b": 1, "a": [1, 2], "é": float("nan")}).encode()
    assert top.get_attachment("raw") == b"\x00\x01"
    assert run_view.get_json("r") == [1, "x"] and run_view.get_attachment("rb") == b"run bytes"
    with pytest.raises(ValueError, match="Expected media type 'application/json', got 'application/x-unknown'"):
        top.get_json("raw")
    with pytest.raises(ValueError, match="Expected an OMMX Instance attachment"):
        top.get_instance("cfg")


def test_duplicate_names_rejected_per_namespace() -> None:
    exp = Experiment(NAME)
    exp.log_json("same", 1)
    with pytest.raises(RuntimeError, match="Attachment `same` already exists"):
        exp.log_json("same", 2)
    with exp.run() as run:
        run.log_json("same", 3)  # other namespace: fine
        with pytest.raises(RuntimeError, match="already exists"):
            run.log_attachment("same", "a/b", b"")
    assert exp.runs[0].get_json("same") == 3


def test_missing_name_is_key_error_for_every_reader(tmp_path) -> None:
    exp = Experiment(NAME)
    with exp.run():
        pass
    top, run_view = _both(exp)
    for reader in (top, run_view):
        for call in (
            reader.attachment_media_type,
            reader.get_attachment,
            reader.get_json,
            reader.get_instance,
            reader.get_solution,
            reader.get_parametric_instance,
            reader.get_sample_set,
            reader.get_blob,
            lambda n: reader.write_attachment(n, tmp_path),
            lambda n: reader.get_with_codec(Upper, n),
        ):
            with pytest.raises(KeyError, match="nope"):
                call("nope")


def test_codec_round_trip_and_media_type_check_before_read(registry_root) -> None:
    exp = Experiment(NAME)
    exp.log_with_codec(Upper, "c", "hello")
    with exp.run() as run:
        run.log_with_codec(Upper, "c", "run", compression="zstd")
    top, run_view = _both(exp)
    assert top.attachment_media_type("c") == Upper.media_type
    assert top.get_blob("c") == b"HELLO" and top.get_with_codec(Upper, "c") == "hello"
    assert run_view.get_with_codec(Upper, "c") == "run"
    digest = top._descriptor("c").digest
    (registry_root / "blobs" / "sha256" / digest.split(":")[1]).unlink()
    with pytest.raises(ValueError, match="Expected media type"):
        top.get_with_codec(Other, "c")
    with pytest.raises(RuntimeError, match="Failed to read blob"):
        top.get_with_codec(Upper, "c")


def test_codec_protocol_violations() -> None:
    exp = Experiment(NAME)

    class NoMediaType:
        encode = staticmethod(lambda v: b"")
        decode = staticmethod(lambda b: b)

    class BadMediaType(Upper):
        media_type = 3

    class NotBytes(Upper):
        @staticmethod
        def encode(value: str) -> str:
            return value

    class NoDecode:
        media_type = "a/b"
        encode = staticmethod(lambda v: b"")

    class Boom(Upper):
        @staticmethod
        def encode(value: str) -> bytes:
            raise ZeroDivisionError("codec")

    class Meta(type):
        @property
        def media_type(cls) -> str:
            raise AttributeError("from property")

    class PropertyCodec(metaclass=Meta):
        encode = staticmethod(lambda v: b"")
        decode = staticmethod(lambda b: b)

    with pytest.raises(TypeError, match="codec must be a class"):
        exp.log_with_codec(Upper(), "x", "v")
    with pytest.raises(TypeError, match="string `media_type`"):
        exp.log_with_codec(NoMediaType, "x", "v")
    with pytest.raises(TypeError, match="string `media_type`"):
        exp.log_with_codec(BadMediaType, "x", "v")
    with pytest.raises(TypeError, match="must return bytes"):
        exp.log_with_codec(NotBytes, "x", "v")
    with pytest.raises(TypeError, match="callable `decode`"):
        exp.log_with_codec(NoDecode, "x", "v")
    with pytest.raises(ZeroDivisionError, match="codec"):
        exp.log_with_codec(Boom, "x", "v")
    with pytest.raises(AttributeError, match="from property"):
        exp.log_with_codec(PropertyCodec, "x", "v")


def test_zstd_compression_is_transparent() -> None:
    exp = Experiment(NAME)
    exp.log_json("j", {"k": "v" * 100}, compression="zstd")
    exp.log_attachment("plus", "application/x+zstd", b"already", compression="none")
    exp.log_attachment("plus2", "application/x+zstd", b"twice", compression="zstd")
    with pytest.raises(ValueError, match="expected `none` or `zstd`"):
        exp.log_json("g", 1, compression="gzip")
    exp.commit()
    layer = {d.media_type: d for d in exp.artifact.layers}
    assert layer["application/json+zstd"].annotations == {mt.COMPRESSION_ANNOTATION: "zstd"}
    assert exp.attachment_media_type("j") == "application/json"
    assert exp.get_json("j") == {"k": "v" * 100}
    assert exp.attachment_media_type("plus") == "application/x+zstd" and exp.get_blob("plus") == b"already"
    assert exp.attachment_media_type("plus2") == "application/x+zstd" and exp.get_blob("plus2") == b"twice"


def test_log_file_sniffs_and_exports(tmp_path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(PNG)
    data = tmp_path / "data.json"
    data.write_text('{"a": 1}')
    exp = Experiment(NAME)
    exp.log_file("img", source)
    exp.log_file("data", data, media_type="application/json", compression="zstd")
    with exp.run() as run:
        run.log_file("bin", data, filename="result.bin")
        with pytest.raises(RuntimeError, match="not a regular file"):
            run.log_file("dir", tmp_path)
        with pytest.raises(RuntimeError, match="Invalid attachment filename"):
            run.log_file("bad", data, filename="../x")
    top, run_view = _both(exp)
    assert top.attachment_media_type("img") == "image/png"
    out = tmp_path / "out"
    out.mkdir()
    assert top.write_attachment("img", out) == out / "source.png"
    with pytest.raises(RuntimeError, match="already exists"):
        top.write_attachment("img", out)
    assert top.write_attachment("img", out, overwrite=True).read_bytes() == PNG
    assert top.get_json("data") == {"a": 1}
    assert top.write_attachment("data", out / "plain.json").read_bytes() == b'{"a": 1}'
    assert run_view.write_attachment("bin", out) == out / "result.bin"
    assert run_view.write_attachment("bin", out / "explicit.bin") == out / "explicit.bin"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("../../x", "x"), ("/etc/passwd", "passwd"), ("a\\b\\c", "c"), ("..", "attachment"), ("", "attachment"), ("dir/", "attachment")],
)
def test_safe_basename(stored: str, expected: str) -> None:
    assert safe_basename(stored) == expected


def test_hostile_names_never_escape_folder(tmp_path) -> None:
    exp = Experiment(NAME)
    for name in ("../../escape", "/etc/passwd", "..", "a/../../b"):
        exp.log_attachment(name, "a/b", name.encode())
    exp.log_attachment("nul\x00name", "a/b", b"x")
    exp.commit()
    out = tmp_path / "out"
    out.mkdir()
    for name in ("../../escape", "/etc/passwd", "..", "a/../../b"):
        written = exp.write_attachment(name, out, overwrite=True)
        assert written.parent == out
    with pytest.raises(ValueError, match="NUL"):
        exp.write_attachment("nul\x00name", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "registry"]


def test_hostile_stored_filename_from_a_crafted_config(tmp_path) -> None:
    from ommx_experiment.engine.oci import Descriptor
    from ommx_experiment.lifecycle.attachments import AttachmentReader

    exp = Experiment(NAME)
    exp.log_attachment("x", "a/b", b"payload")
    blobs, descriptors, _ = exp._attachment_view()

    class Crafted(AttachmentReader):
        def __init__(self, filenames):
            self.filenames = filenames

        def _attachment_view(self):
            return blobs, {"x": descriptors["x"]}, self.filenames

    assert isinstance(descriptors["x"], Descriptor)
    out = tmp_path / "dest"
    out.mkdir()
    assert Crafted({"x": "../../../evil"}).write_attachment("x", out) == out / "evil"
    with pytest.raises(ValueError, match="NUL"):
        Crafted({"x": "a\x00b"}).write_attachment("x", out)


def test_sniff_table() -> None:
    assert sniff_media_type(PNG) == "image/png"
    assert sniff_media_type(b"%PDF-1.7") == "application/pdf"
    assert sniff_media_type(b"plain text") == "application/octet-stream"


def test_typed_instance_round_trips_with_user_annotations() -> None:
    inst = _instance()
    exp = Experiment(NAME)
    exp.log_instance("inst", inst)
    with pytest.raises(TypeError):
        exp.log_instance("wrong", "not an instance")
    exp.commit()
    top = Experiment.load(NAME)
    desc = top._descriptor("inst")
    assert desc.media_type in (mt.V1_INSTANCE, mt.V2_INSTANCE)
    assert desc.annotations.get("org.ommx.user.author") == "alice"
    for got in (top.get_instance("inst"), top.get_attachment("inst")):
        assert got.get_user_annotation("author") == "alice"
        assert got.to_bytes() == inst.to_bytes()


def test_typed_solution_run_level() -> None:
    inst = _instance()
    solution = inst.evaluate({0: 1})
    solution.add_user_annotation("solver", "manual")
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_solution("sol", solution)
    _, run_view = _both(exp)
    got = run_view.get_solution("sol")
    assert got.get_user_annotation("solver") == "manual"
    assert got.objective == solution.objective


def test_json_errors_propagate(monkeypatch) -> None:
    exp = Experiment(NAME)
    with pytest.raises(ValueError, match="Experiment attachment value must be JSON-serializable"):
        exp.log_json("x", object())
    with exp.run() as run:
        with pytest.raises(ValueError, match="Run attachment value must be JSON-serializable"):
            run.log_json("x", {1, 2})
    exp.log_json("ok", 1)

    class Sentinel(Exception):
        pass

    def boom(*a, **k):
        raise Sentinel

    monkeypatch.setattr(json, "loads", boom)
    with pytest.raises(Sentinel):
        exp.get_json("ok")
    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(Sentinel):
        exp.log_json("y", 1)


def test_attachment_names_sorted_and_empty_run() -> None:
    exp = Experiment(NAME)
    for name in ("b", "a", "B", ""):
        exp.log_json(name, name)
    with exp.run():
        pass
    assert exp.attachment_names == ["", "B", "a", "b"]
    assert exp.runs[0].attachment_names == []


def test_concurrent_attachment_logging_is_safe() -> None:
    import threading

    exp = Experiment(NAME)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(20):
                exp.log_attachment(f"{k}-{i}", "a/b", f"{k}-{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    exp.commit()
    assert len(Experiment.load(NAME).attachment_names) == 80


# --- write_attachment streams ---------------------------------------------------------------------------

_WRITE_BIG = """
import json, os, sys
from ommx_experiment import Experiment
src, out = sys.argv[1], sys.argv[2]
exp = Experiment("example.com/team/big:v1")
exp.log_file("big", src, compression=sys.argv[3])
exp.commit()
loaded = Experiment.load("example.com/team/big:v1")
before = int([l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
loaded.write_attachment("big", out)
hwm = int([l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1])
print(json.dumps({"before_kib": before, "hwm_kib": hwm}))
"""


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_write_attachment_streams_in_bounded_memory(tmp_path, registry_root, compression: str) -> None:
    """A 96 MiB attachment is written out with a peak RSS far below its size (it used to be
    read whole, verified, then written); zstd is decompressed as a stream too, in bounded
    pieces although this payload compresses about 1000:1."""
    import hashlib
    import os
    import subprocess
    import sys

    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as fh:
        for i in range(96):
            fh.write(block[:-4] + i.to_bytes(4, "big"))
    out = tmp_path / "out.bin"
    env = {**os.environ, "OMMX_LOCAL_REGISTRY_ROOT": str(registry_root)}
    proc = subprocess.run(
        [sys.executable, "-c", _WRITE_BIG, str(src), str(out), compression], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert (report["hwm_kib"] - report["before_kib"]) * 1024 < 48 << 20, report


def test_write_attachment_of_a_corrupt_blob_leaves_the_target_alone(tmp_path) -> None:
    exp = Experiment(NAME)
    exp.log_attachment("raw", "application/octet-stream", b"good bytes" * 1000)
    exp.commit()
    loaded = Experiment.load(NAME)
    blobs, desc, _ = loaded._lookup("raw")
    path = blobs.path(desc.digest)
    path.write_bytes(b"bad bytes!" * 1000)  # same size, wrong content
    target = tmp_path / "out" / "out.bin"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    with pytest.raises(DigestMismatchError, match=desc.digest):
        loaded.write_attachment("raw", target, overwrite=True)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]  # no temp file left
