"""The folder watcher (issue 6): real watchdog observers, real writer processes, real registry."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ommx_experiment.edges.watcher import PathFilter, Watcher, open_for_writing, watch
from ommx_experiment.errors import WatcherError
from ommx_experiment.errors import LifecycleError, OmmxExperimentError
from ommx_experiment.lifecycle.experiment import Experiment

WAIT = 30.0  # generous upper bound for waiting on the background thread (never asserted as timing)

WRITER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    root, go = sys.argv[1], sys.argv[2]
    final = {}

    def remember(rel, data):
        final.setdefault(rel, []).append(hashlib.sha256(data).hexdigest())

    # 1. a file written in chunks with sleeps, held open the whole time
    data = b""
    with open(os.path.join(root, "chunked.bin"), "wb") as fh:
        for i in range(5):
            chunk = bytes([65 + i]) * 65536
            fh.write(chunk); fh.flush(); data += chunk
            time.sleep(0.15)
    remember("chunked.bin", data)

    # 2. a temp file renamed into place (the temp name itself must never be attached)
    staged = os.urandom(200_000)
    tmp = os.path.join(root, "staged.bin.tmp")
    with open(tmp, "wb") as fh:
        fh.write(staged[:100_000]); fh.flush(); time.sleep(0.2); fh.write(staged[100_000:])
    os.replace(tmp, os.path.join(root, "staged.bin"))
    remember("staged.bin", staged)

    # 3. nested folders created and written at once (the inotify race of mkdir -p)
    os.makedirs(os.path.join(root, "a", "b", "c"))
    for name in ("one.txt", "two.txt"):
        body = f"nested {name}".encode()
        with open(os.path.join(root, "a", "b", "c", name), "wb") as fh:
            fh.write(body)
        remember(f"a/b/c/{name}", body)

    # 4. files that must be skipped
    for skipped in (".hidden", "notes.txt~", "down.part", "x.tmp"):
        with open(os.path.join(root, skipped), "wb") as fh:
            fh.write(b"skip me")

    # 5. a file completed, then (once the test saw it) rewritten with other content
    with open(os.path.join(root, "rewrite.txt"), "wb") as fh:
        fh.write(b"version 1")
    remember("rewrite.txt", b"version 1")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(os.path.join(root, "rewrite.txt"), "wb") as fh:
        fh.write(b"version 2, "); fh.flush(); time.sleep(0.3); fh.write(b"longer")
    remember("rewrite.txt", b"version 2, longer")
    print(json.dumps(final))
    """
)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_names(final: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for rel, digests in final.items():
        for k, digest in enumerate(digests):
            out[rel if k == 0 else f"{rel}.{k}"] = digest
    return out


def run_writer_scenario(tmp_path: Path, **options: object) -> tuple[Watcher, dict[str, str], Experiment]:
    folder = tmp_path / "out"
    folder.mkdir()
    go = tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    experiment = Experiment("watcher-test:1")
    run = experiment.run()
    with watch(run, folder, **options) as watcher:  # type: ignore[arg-type]
        writer = subprocess.Popen([sys.executable, str(script), str(folder), str(go)], stdout=subprocess.PIPE, text=True)
        wait_for(lambda: any(a.name == "rewrite.txt" for a in watcher.attached), "rewrite.txt v1 attached")
        go.touch()
        out, _ = writer.communicate(timeout=WAIT)
        assert writer.returncode == 0
    run.finish()
    return watcher, expected_names(json.loads(out)), experiment


def check_scenario(watcher: Watcher, expected: dict[str, str], experiment: Experiment) -> None:
    sealed = experiment.runs[0]
    names = sealed.attachment_names
    assert sorted(names) == sorted(expected), "every completed file exactly once, nothing else"
    for name, digest in expected.items():
        assert sha(sealed.get_blob(name)) == digest, f"{name}: wrong bytes (half-written?)"
    assert sorted(a.name for a in watcher.attached) == sorted(expected)
    assert "rewrite.txt.1" in names
    assert sealed.get_blob("rewrite.txt.1") == b"version 2, longer"
    assert sealed.attachment_media_type("chunked.bin") == "application/octet-stream"


def test_separate_writer_inotify(tmp_path: Path) -> None:
    watcher, expected, experiment = run_writer_scenario(tmp_path)
    assert watcher.backend == "inotify"
    check_scenario(watcher, expected, experiment)


def test_separate_writer_forced_polling(tmp_path: Path) -> None:
    watcher, expected, experiment = run_writer_scenario(tmp_path, force_polling=True, poll_interval=0.1)
    assert watcher.backend == "polling"
    check_scenario(watcher, expected, experiment)


def _failing_inotify() -> object:
    from watchdog.observers import Observer

    class NoWatchesLeft(Observer):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    return NoWatchesLeft()


def _no_inotify() -> object:
    raise OSError(errno.EMFILE, "inotify instance limit reached")


@pytest.mark.parametrize("factory", [_failing_inotify, _no_inotify], ids=["start-enospc", "factory-emfile"])
def test_inotify_failure_falls_back_to_polling(
    tmp_path: Path, factory: Callable[[], object], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("fallback:1")
    with caplog.at_level(logging.WARNING, logger="ommx_experiment.edges.watcher"):
        with watch(experiment, folder, observer_factory=factory, poll_interval=0.1) as watcher:
            assert watcher.backend == "polling"
            (folder / "late.txt").write_bytes(b"written while polling")
            wait_for(lambda: bool(watcher.attached), "an attachment from the polling backend")
    assert "falling back to polling" in caplog.text
    assert experiment.get_blob("late.txt") == b"written while polling"


def test_errors_in_the_watcher_thread_surface_on_stop(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("errors:1")
    run = experiment.run()
    watcher = watch(run, folder, poll_interval=0.05)
    watcher.start()
    run.finish()  # the Run is closed: attaching to it must fail in the background thread
    (folder / "too-late.txt").write_bytes(b"x")
    with pytest.raises(WatcherError) as info:
        watcher.stop()
    assert isinstance(info.value, OmmxExperimentError) and isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, LifecycleError)
    assert str(folder) in str(info.value)


def test_body_exception_wins_and_carries_the_watcher_error(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("errors:2")
    run = experiment.run()
    with pytest.raises(ValueError) as info:
        with watch(run, folder):
            run.finish()
            (folder / "f.txt").write_bytes(b"x")
            raise ValueError("body failed")
    assert any("folder watcher" in note for note in getattr(info.value, "__notes__", []))


def test_existing_files_and_existing_false(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "before.txt").write_bytes(b"before")
    (folder / "sub" / "kept.txt").write_bytes(b"kept")
    experiment = Experiment("existing:1")
    with watch(experiment, folder):
        pass
    assert experiment.attachment_names == ["before.txt", "sub/kept.txt"]
    assert experiment.get_blob("sub/kept.txt") == b"kept"

    other = Experiment("existing:2")
    with watch(other, folder, existing=False):
        (folder / "sub" / "kept.txt").write_bytes(b"changed")
        (folder / "new.txt").write_bytes(b"new")
    assert other.attachment_names == ["new.txt", "sub/kept.txt"]
    assert other.get_blob("sub/kept.txt") == b"changed"


def test_identical_content_is_not_attached_twice(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("dedupe:1")
    with watch(experiment, folder) as watcher:
        (folder / "same.txt").write_bytes(b"same")
        wait_for(lambda: bool(watcher.attached), "first version")
        (folder / "same.txt").write_bytes(b"same")  # new mtime, same bytes
        (folder / "other.txt").write_bytes(b"same")  # another path: attached on its own
    assert experiment.attachment_names == ["other.txt", "same.txt"]


def test_rewrite_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("versions:1")
    with caplog.at_level(logging.WARNING, logger="ommx_experiment.edges.watcher"):
        with watch(experiment, folder) as watcher:
            for k in range(3):
                (folder / "v.txt").write_bytes(f"v{k}".encode())
                wait_for(lambda k=k: len(watcher.attached) == k + 1, f"version {k}")
    assert experiment.attachment_names == ["v.txt", "v.txt.1", "v.txt.2"]
    assert [experiment.get_blob(n) for n in experiment.attachment_names] == [b"v0", b"v1", b"v2"]
    assert "completed again with different content" in caplog.text


def test_filters_and_symlinks(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "logs" / "deep").mkdir(parents=True)
    (folder / ".cache").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (folder / ".cache" / "c.txt").write_bytes(b"hidden dir")
    (folder / "logs" / "deep" / "x.log").write_bytes(b"log")
    (folder / "logs" / "noise.log").write_bytes(b"ignored by glob")
    (folder / "result.json").write_bytes(b"{}")
    (folder / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 10)
    experiment = Experiment("filters:1")
    with watch(experiment, folder, pattern=["*.log", "*.json", "*.png"], ignore="logs/noise.log"):
        (folder / "late.log").write_bytes(b"late")
        (folder / "late.csv").write_bytes(b"not selected")
    assert experiment.attachment_names == ["late.log", "logs/deep/x.log", "plot.png", "result.json"]
    assert experiment.attachment_media_type("plot.png") == "image/png"


def test_path_filter_rules() -> None:
    f = PathFilter()
    assert f.accepts("a/b/c.txt")
    for rel in (".x", "a/.b/c", "a/b.tmp", "a/b.part", "a/b~", "a//b"):
        assert not f.accepts(rel), rel
    g = PathFilter(pattern=("sub/*",), ignore=("*.csv",))
    assert g.accepts("sub/deeper/x.txt")  # fnmatch `*` crosses `/`
    assert not g.accepts("sub/x.csv")
    assert not g.accepts("other/x.txt")


def test_file_open_for_writing_at_stop_is_not_attached(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "open.bin"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'wb'); f.write(b'half'); f.flush(); print('ok', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        assert open_for_writing(str(path)) is True
        experiment = Experiment("open:1")
        with caplog.at_level(logging.WARNING, logger="ommx_experiment.edges.watcher"):
            with watch(experiment, folder, stop_timeout=0.3):
                (folder / "done.txt").write_bytes(b"done")
        assert experiment.attachment_names == ["done.txt"]
        assert "still being written" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    assert open_for_writing(str(path)) is False


def test_restored_experiment_rewatching_the_same_folder_adds_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"a")
    first = Experiment("rewatch:1")
    with watch(first, folder):
        pass
    assert first.attachment_names == ["a.txt"]
    del first
    restored = Experiment.restore_from_checkpoint("rewatch:1")
    with watch(restored, folder):
        (folder / "b.txt").write_bytes(b"b")
    assert restored.attachment_names == ["a.txt", "b.txt"]


def test_start_twice_and_stop_without_start(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    experiment = Experiment("lifecycle:1")
    watcher = watch(experiment, folder)
    with pytest.raises(LifecycleError):
        watcher.stop()
    watcher.start()
    with pytest.raises(LifecycleError):
        watcher.start()
    watcher.stop()
    assert watcher.stop() == []  # idempotent


def test_experiment_and_run_watch_methods(tmp_path: Path) -> None:
    """`Experiment.watch` / `Run.watch` are the public entry points of issue 6."""
    from ommx_experiment import Experiment

    folder = tmp_path / "drop"
    folder.mkdir()
    experiment = Experiment("example.com/team/watch-methods:v1")
    with experiment.run() as run, run.watch(folder):
        (folder / "a.txt").write_text("hello")
        (folder / "sub").mkdir()
        (folder / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    with experiment.watch(folder, pattern="*.txt"):  # default: what is already there is not new output
        pass
    assert experiment.attachment_names == []
    with experiment.watch(folder, pattern="*.txt", existing=True):
        pass
    assert experiment.runs[0].attachment_names == ["a.txt", "sub/b.bin"]
    assert experiment.runs[0].get_blob("sub/b.bin") == b"\x00" * 10
    assert experiment.runs[0].attachment_media_type("a.txt") == "text/plain"  # by extension
    assert experiment.runs[0].attachment_media_type("sub/b.bin") == "application/octet-stream"
    assert experiment.attachment_names == ["a.txt"]


def test_guess_media_type_magic_then_extension() -> None:
    from ommx_experiment.format.payload import guess_media_type

    assert guess_media_type("plot.json", b"\x89PNG\r\n\x1a\n....") == "image/png"  # content wins
    assert guess_media_type("out/result.json", b"{}") == "application/json"
    assert guess_media_type("table.CSV", b"a,b") == "text/csv"
    assert guess_media_type("model.lp", b"max") == "text/plain"
    assert guess_media_type("result", b"solved") == "application/octet-stream"
    assert guess_media_type("archive.tar.gz", b"\x00") == "application/octet-stream"
