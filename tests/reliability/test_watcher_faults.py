"""Faults around the folder watcher: links out, FIFOs, type changes, a vanished folder,
unreadable files and bursts of short-lived files.

Each case: ``stop()`` returns within a bound (a hang fails the test instead of blocking
it), errors surface from ``stop()`` as :class:`WatcherError` (our tree), nothing outside
the folder is read, and every file that was completed and is still there is attached
with exactly its content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ommx_experiment.edges.watcher import Watcher, watch
from ommx_experiment.errors import OmmxExperimentError, WatcherError
from ommx_experiment.lifecycle.experiment import Experiment

from . import _support as sup

STOP_BOUND = 30.0  # seconds stop() may take before we call it a hang (never asserted as timing)
WAIT = 30.0
BACKENDS = ["inotify", "polling"]


def _watch(target: Any, folder: Path, backend: str, **kw: Any) -> Watcher:
    return watch(target, folder, force_polling=backend == "polling", poll_interval=0.05, stop_timeout=1.0, **kw)


def _out(tmp_path: Path) -> Path:
    """A fresh folder to watch."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _started(name: str, folder: Path, backend: str) -> tuple[Experiment, Watcher]:
    """A new experiment ``name`` and a started watcher of ``folder`` attaching to it."""
    experiment = Experiment(name)
    return experiment, _watch(experiment, folder, backend).start()


def _stop(watcher: Watcher) -> tuple[list[Any] | None, BaseException | None]:
    """``watcher.stop()`` on a helper thread, bounded: (attachments, error)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["attached"] = watcher.stop()
        except BaseException as exc:  # noqa: BLE001 -- judged by the caller
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STOP_BOUND)
    assert not thread.is_alive(), f"stop() of the watcher of {watcher.folder} hung for {STOP_BOUND} s"
    return out.get("attached"), out.get("error")


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _contents(experiment: Experiment) -> dict[str, bytes]:
    return {name: experiment.get_blob(name) for name in experiment.attachment_names}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    top = tmp_path / "outside"
    (top / "dir").mkdir(parents=True)
    (top / "secret.txt").write_bytes(b"outside secret")
    (top / "dir" / "inner.txt").write_bytes(b"outside inner")
    return top


# --- symlinks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_symlinks_out_of_the_folder_are_never_followed(tmp_path: Path, outside: Path, backend: str) -> None:
    folder = _out(tmp_path)
    (folder / "early-link.txt").symlink_to(outside / "secret.txt")
    experiment, watcher = _started("faults:symlinks", folder, backend)
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("../../outside", target_is_directory=True)
    (folder / "loop1").symlink_to(".", target_is_directory=True)  # two links to the folder itself:
    (folder / "loop2").symlink_to("..", target_is_directory=True)  # a following walk explodes
    (folder / "real.txt").write_bytes(b"real")
    (outside / "dir" / "later.txt").write_bytes(b"written outside during the watch")
    _wait_for(lambda: bool(watcher.attached), "the regular file")
    _, error = _stop(watcher)
    assert error is None, repr(error)
    assert experiment.attachment_names == ["real.txt"]
    store = experiment._attachment_blobs()
    for data in (b"outside secret", b"outside inner", b"written outside during the watch"):
        assert not store.exists("sha256:" + hashlib.sha256(data).hexdigest()), "content outside the folder was read"


# --- FIFOs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fifo_never_blocks_the_watcher(tmp_path: Path, backend: str) -> None:
    folder = _out(tmp_path)
    os.mkfifo(folder / "early.fifo")
    experiment, watcher = _started("faults:fifo", folder, backend)
    os.mkfifo(folder / "pipe")
    (folder / "after.txt").write_bytes(b"after the fifo")
    _wait_for(lambda: bool(watcher.attached), "the file after the fifo")
    _, error = _stop(watcher)
    assert error is None, repr(error)
    assert _contents(experiment) == {"after.txt": b"after the fifo"}


# --- a file replaced by a directory (and back, and by a FIFO) ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_replaced_by_a_directory_of_the_same_name(tmp_path: Path, backend: str) -> None:
    folder = _out(tmp_path)
    experiment, watcher = _started("faults:replace", folder, backend)
    (folder / "x").write_bytes(b"x as a file")
    _wait_for(lambda: any(a.name == "x" for a in watcher.attached), "x as a file")
    (folder / "x").unlink()
    (folder / "x").mkdir()
    (folder / "x" / "inner.txt").write_bytes(b"inside x")
    # flip another path between file, directory and FIFO while the watcher looks at it
    flip = folder / "flip"
    for i in range(60):
        if i % 3 == 0:
            flip.write_bytes(b"flip %d" % i)
        elif i % 3 == 1:
            flip.mkdir()
        else:
            os.mkfifo(flip)
        time.sleep(0.005)
        if flip.is_dir():
            flip.rmdir()
        else:
            flip.unlink()
    flip.write_bytes(b"flip final")
    _, error = _stop(watcher)
    assert error is None, repr(error)
    contents = _contents(experiment)
    assert contents["x"] == b"x as a file" and contents["x/inner.txt"] == b"inside x"
    assert b"flip final" in {data for name, data in contents.items() if name.startswith("flip")}
    for name, data in contents.items():  # every version of flip is one complete write
        if name.startswith("flip"):
            assert data == b"flip final" or data.startswith(b"flip "), (name, data)


# --- the watched folder itself removed ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_watched_folder_removed_during_the_watch(tmp_path: Path, backend: str) -> None:
    folder = _out(tmp_path)
    experiment, watcher = _started("faults:removed", folder, backend)
    (folder / "done.txt").write_bytes(b"completed before the removal")
    _wait_for(lambda: bool(watcher.attached), "the file completed before the removal")
    shutil.rmtree(folder)
    time.sleep(0.2)
    _, error = _stop(watcher)
    assert isinstance(error, WatcherError) and isinstance(error, OmmxExperimentError), repr(error)
    assert str(folder) in str(error) and "removed" in str(error), str(error)
    assert _contents(experiment) == {"done.txt": b"completed before the removal"}  # nothing completed is lost


@pytest.mark.parametrize("backend", BACKENDS)
def test_watched_folder_replaced_during_the_watch(tmp_path: Path, backend: str) -> None:
    folder = _out(tmp_path)
    _, watcher = _started("faults:replaced", folder, backend)
    shutil.rmtree(folder)
    folder.mkdir()  # same path, another directory: the watch does not cover it
    (folder / "new.txt").write_bytes(b"in the new folder")
    _, error = _stop(watcher)
    assert isinstance(error, WatcherError), repr(error)
    assert str(folder) in str(error)


# --- an unreadable file --------------------------------------------------------------------------------------

UNREADABLE = textwrap.dedent(
    """
    import json, os, sys
    from ommx_experiment import Experiment
    from ommx_experiment.errors import WatcherError
    from ommx_experiment.edges.watcher import watch
    folder = sys.argv[1]
    exp = Experiment("example.com/faults/unreadable:v1")
    with open(os.path.join(folder, "readable.txt"), "wb") as fh:
        fh.write(b"readable")
    try:
        open(os.path.join(folder, "secret.bin"), "rb").read()
        print(json.dumps({"can_read": True}))
        sys.exit(0)
    except PermissionError:
        pass
    watcher = watch(exp, folder, poll_interval=0.05, stop_timeout=1.0).start()
    with open(os.path.join(folder, "late.txt"), "wb") as fh:
        fh.write(b"late")
    try:
        watcher.stop()
        error = None
    except WatcherError as exc:
        error = str(exc)
    exp.commit()
    loaded = Experiment.load("example.com/faults/unreadable:v1")
    print(json.dumps({"can_read": False, "error": error,
                      "attached": {n: loaded.get_blob(n).decode() for n in loaded.attachment_names}}))
    """
)


def _unprivileged_prefix() -> list[str]:
    """Run as uid 65534 if it can execute our interpreter, else as root without the DAC
    capabilities (then root obeys permission bits too); skip if neither is possible."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        return []  # permissions already apply
    if setpriv is None:
        pytest.skip("root ignores chmod 000 and setpriv is missing: cannot make a file unreadable")
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*nobody, sys.executable, "-c", "import ommx_experiment"], env=sup.env(Path("/nonexistent")),
                      capture_output=True).returncode == 0:
        return nobody
    no_dac = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    if subprocess.run([*no_dac, "true"], capture_output=True).returncode == 0:
        return no_dac
    pytest.skip("running as root, uid 65534 cannot execute the interpreter and capabilities cannot be dropped")


def test_unreadable_file_surfaces_on_stop_and_loses_nothing(tmp_path: Path) -> None:
    prefix = _unprivileged_prefix()
    top = Path(tempfile.mkdtemp(prefix="oxe-unreadable-"))
    try:
        os.chmod(top, 0o777)
        folder, root = top / "out", top / "registry"
        folder.mkdir()
        root.mkdir()
        secret = folder / "secret.bin"
        secret.write_bytes(b"nobody may read this")
        secret.chmod(0o000)
        if prefix and "--reuid=65534" in prefix:
            for p in (folder, root):
                os.chown(p, 65534, 65534)
        script = top / "unreadable.py"
        script.write_text(UNREADABLE)
        proc = subprocess.run([*prefix, sys.executable, str(script), str(folder)], env=sup.env(root),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if out["can_read"]:
            pytest.skip("the unprivileged process can still read a chmod 000 file")
        assert out["error"] is not None and "secret.bin" in out["error"] and "Permission" in out["error"], out
        assert out["attached"] == {"readable.txt": "readable", "late.txt": "late"}
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- a burst of short-lived files ---------------------------------------------------------------------------


def _payload(i: int) -> bytes:
    return (b"%05d-" % i) * (50 + i % 200)


@pytest.mark.parametrize("backend", BACKENDS)
def test_burst_of_files_created_and_deleted(tmp_path: Path, backend: str) -> None:
    count = 2000
    folder = _out(tmp_path)
    experiment, watcher = _started("faults:burst", folder, backend)
    kept: dict[str, bytes] = {}
    for i in range(count):
        path = folder / f"f{i:05d}.bin"
        data = _payload(i)
        with open(path, "wb") as fh:  # two writes: a read in between would see a prefix
            fh.write(data[: len(data) // 2])
            fh.flush()
            fh.write(data[len(data) // 2 :])
        if i % 10 == 0:
            kept[path.name] = data
        else:
            path.unlink()
    _, error = _stop(watcher)
    assert error is None, repr(error)
    contents = _contents(experiment)
    for name, data in contents.items():
        base = name.split(".bin", 1)[0] + ".bin"
        assert data == _payload(int(base[1:6])), f"{name}: partial or foreign content"
    for name, data in kept.items():
        assert contents.get(name) == data, f"completed file {name} was lost"
