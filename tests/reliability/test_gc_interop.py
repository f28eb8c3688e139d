"""Deleting GC beside the other library's writers, in both directions (issue 16, faults 2 and 3).

- OMMX 3's GC (any grace, even 0 s) beside our commits: every ref we publish has its whole
  closure on disk when the ref row commits (the publish window: ``.gc-exclusion.lock`` held
  ``LOCK_EX`` around the closure check and the ref write, which OMMX's deleting GC also holds
  for its whole pass). A blob lost before the window makes ``commit()`` raise
  ``BlobNotFoundError`` naming it; nothing is published and the session stays unsealed.
- Our GC beside OMMX 3's commits: OMMX protects a commit in progress only by mtime, so a
  deleting pass with a grace under 24 h is refused unless the caller asserts ``exclusive``.

The OMMX side runs OMMX 3.0.0b7 for real, in the side venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.errors import (
    BlobNotFoundError,
    InvalidInputError,
    JournalWriteError,
    LifecycleError,
    OmmxExperimentError,
    RunBlobsLostError,
)

from . import _support as sup

WORKER = sup.TESTS / "workers" / "fault_worker.py"

_OMMX_GC_ONCE = """
import json
from ommx.artifact import gc
r = gc(delete=True, grace_period={grace!r})
print(json.dumps({{"deleted": [b.digest for b in r.deleted_blobs], "missing": len(r.missing_blobs)}}))
"""

_OMMX_GC_WAITING = """
import json, sys
from ommx.artifact import gc
print("ready", flush=True)
sys.stdin.readline()
r = gc(delete=True, grace_period="0s")
print(json.dumps({"deleted": [b.digest for b in r.deleted_blobs]}), flush=True)
"""

_OMMX_GC_LOOP = """
import json, os, time
from ommx.artifact import gc
passes, longest, errors, deleted = 0, 0.0, [], 0
while not os.path.exists({stop!r}):
    t0 = time.monotonic()
    try:
        deleted += len(gc(delete=True, grace_period={grace!r}).deleted_blobs)
    except Exception as exc:
        errors.append(repr(exc))
    longest = max(longest, time.monotonic() - t0)
    passes += 1
print(json.dumps({{"passes": passes, "longest": longest, "errors": errors, "deleted": deleted}}))
"""

_OMMX_LOAD = """
import hashlib, json, sys
sys.path.insert(0, {workers!r})
from fault_worker import payload
from ommx.experiment import Experiment
problems = []
for name in {names!r}:
    try:
        e = Experiment.load(name)
        tag, i = name.rsplit("/", 1)[1].split(":")
        if tag.startswith("w") and int(i) % 2:
            continue  # our committers attach a payload to even commits only
        if e.runs[0].get_blob("payload") != payload(tag, int(i)):
            problems.append(name + ": payload differs")
    except Exception as exc:
        problems.append(name + ": " + repr(exc))
print(json.dumps({{"problems": problems}}))
"""

_OMMX_COMMITTER = """
import hashlib, json, sys
sys.path.insert(0, {workers!r})
from fault_worker import payload
from ommx.experiment import Experiment
outcomes = {{}}
for i in range({n}):
    name = f"example.com/fw/{tag}:{{i}}"
    try:
        e = Experiment(name)
        with e.run() as r:
            r.log_parameter("i", i)
            r.log_attachment("payload", "application/octet-stream", payload({tag!r}, i))
        e.commit()
        outcomes[name] = "ok"
    except Exception as exc:
        outcomes[name] = repr(exc)
print(json.dumps(outcomes))
"""


def _worker(root: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=sup.env(root), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


def _last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


def _check_ours(root: Path, names: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(WORKER), "check", json.dumps(names)], env=sup.env(root),
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report["problems"] == [] and report["checked"] == len(names), report["problems"][:5]


def _check_ommx(ommx3: Any, root: Path, names: list[str]) -> None:
    report = ommx3.run_json(_OMMX_LOAD.format(workers=str(WORKER.parent), names=names), root=root, timeout=600)
    assert report["problems"] == [], report["problems"][:5]


def _commit_outcome(exp: Experiment, name: str) -> str:
    """``published`` (the commit loads) or ``refused`` (nothing published, unsealed): BlobNotFoundError
    naming the lost blob, or JournalWriteError when a run whose close was not durable cannot be
    saved (its blob is gone) — both RuntimeErrors of our tree."""
    registry = LocalRegistry.default()
    try:
        art = exp.commit()
    except (BlobNotFoundError, JournalWriteError) as exc:
        assert "Failed to read blob" in str(exc) and "not published" in str(exc), exc
        assert isinstance(exc, RuntimeError) and isinstance(exc, OmmxExperimentError)
        assert registry.resolve(name) is None
        assert name not in (registry.root / "index.json").read_text()
        with pytest.raises(LifecycleError, match="must be committed"):  # unsealed, not commit-failed
            exp.artifact
        return "refused"
    assert art.image_name == name and registry.resolve(name) == art.manifest_digest
    for blob, size in registry.closure(art.manifest_digest):
        assert registry.blobs.verify(blob, size), blob
    return "published"


# --- fault 2: commit verifies the closure ----------------------------------------------------------------------


def test_commit_refuses_a_missing_layer(registry_root: Path) -> None:
    """An attachment blob deleted behind our back before commit(): BlobNotFoundError naming it;
    no ref, nothing in index.json, the session stays unsealed; storing the same bytes again
    repairs it and the next commit publishes a complete artifact."""
    name = "example.com/fw/missing-layer:v1"
    exp = Experiment(name)
    with exp.run() as run:
        run.log_parameter("i", 0)
        run.log_attachment("payload", "application/octet-stream", b"lost payload" * 100)
    registry = LocalRegistry.default()
    digest = sha256_digest(b"lost payload" * 100)
    os.unlink(registry.blobs.path(digest))
    with pytest.raises(BlobNotFoundError) as info:
        exp.commit()
    message = str(info.value)
    assert digest in message and "layer" in message and name in message and "not published" in message
    assert registry.resolve(name) is None
    assert name not in (registry_root / "index.json").read_text()
    with exp.run() as run:  # same bytes again: the CAS has the blob back
        run.log_attachment("again", "application/octet-stream", b"lost payload" * 100)
    art = exp.commit()
    assert registry.resolve(name) == art.manifest_digest
    assert Experiment.load(name).runs[0].get_blob("payload") == b"lost payload" * 100


@pytest.mark.ommx3
def test_ommx_gc_waits_for_the_publish_window(ommx3: Any, registry_root: Path) -> None:
    """OMMX 3's deleting GC (0 s grace) started while we hold the publish window waits for it;
    a blob that was an orphan when the GC was started but is published inside the window
    survives, and the ref loads."""
    registry = LocalRegistry.default()
    from ommx_experiment import media_types as mt
    from ommx_experiment.lifecycle.artifact import ArtifactDraft

    orphan = registry.blobs.put_bytes(b"young orphan, published later" * 10).digest
    proc = subprocess.Popen(
        [str(ommx3.python), "-c", _OMMX_GC_WAITING], env=ommx3.env(registry_root),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        with registry.publish_window():
            proc.stdin.write("\n")
            proc.stdin.flush()
            time.sleep(1.0)  # give the GC every chance to run (it must not: it waits for the lock)
            assert proc.poll() is None, proc.communicate()
            assert registry.blobs.exists(orphan)
            draft = ArtifactDraft.new("example.com/fw/window:v1", registry=registry)
            draft.add_layer(mt.OCTET_STREAM, b"young orphan, published later" * 10)
            art = draft.commit()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert orphan not in json.loads(out.strip().splitlines()[-1])["deleted"]
    assert registry.blobs.verify(orphan) and registry.resolve("example.com/fw/window:v1") == art.manifest_digest


@pytest.mark.ommx3
def test_ommx_zero_grace_gc_beside_an_open_run_never_yields_a_broken_commit(ommx3: Any, registry_root: Path) -> None:
    """OMMX 3's gc(delete=True, "0s") while a Run holds a logged attachment (the repro of issue 16,
    fault 2 B): the close raises RunBlobsLostError naming the run, the lost attachment and its
    parameters; the run is not recorded and not kept pending, so the next run and commit() work and
    the artifact loads in OMMX 3. It never yields a broken commit."""
    name = "example.com/fw/open-run:v1"
    exp = Experiment(name)
    with pytest.raises(RunBlobsLostError) as lost:  # OMMX ignores our leases: the unpinned payload is gone
        with exp.run() as run:
            run.log_parameter("i", 0)
            # over INLINE_MAX_BYTES: stored when logged (a small one stays inline and no GC can take it)
            run.log_attachment("payload", "application/octet-stream", b"payload of an open run" * 4000)
            collected = ommx3.run_json(_OMMX_GC_ONCE.format(grace="0s"), root=registry_root)["deleted"]
    digest = sha256_digest(b"payload of an open run" * 4000)
    assert digest in collected
    message = str(lost.value)
    assert isinstance(lost.value, BlobNotFoundError) and isinstance(lost.value, RuntimeError)
    assert "run 0 of" in message and "attachment `payload`" in message and digest in message, message
    assert "{'i': 0}" in message and "not recorded" in message, message
    # the sweep goes on: the failed run is not kept pending, so later closes and the commit work
    with exp.run() as run:
        run.log_parameter("i", 1)
        run.log_attachment("payload", "application/octet-stream", b"payload of a later run" * 50)
    assert _commit_outcome(exp, name) == "published"
    load = ommx3.run_json(
        f"import json\nfrom ommx.experiment import Experiment\ne = Experiment.load({name!r})\n"
        f"print(json.dumps([[r.run_id, r.get_blob('payload').decode()] for r in e.runs]))",
        root=registry_root,
    )
    assert load == [[1, "payload of a later run" * 50]]


def test_experiment_attachment_collected_before_its_pin_is_written_again(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An experiment-level attachment is pinned inside the publish window. An in-memory one is
    written inside that window, so no GC can run between its write and its pin; a file's blob
    that a GC collected between its write and the window (injected here: the file is unlinked
    right after the write) is written again from the source file before the pin, never pinned
    missing."""
    from ommx_experiment.engine.locks import holds_gc_exclusion

    exp = Experiment("example.com/fw/exp-attach:v1")
    registry = LocalRegistry.default()
    blobs = registry.blobs
    real_put_bytes, real_put_file = blobs.put_bytes, blobs.put_file
    collected: list[str] = []
    in_window: list[bool] = []

    def put_bytes(data: bytes) -> Any:
        if data.startswith(b'{"pad"'):
            in_window.append(holds_gc_exclusion(registry.root))
        return real_put_bytes(data)

    def collect(stored: Any) -> Any:
        if stored.digest not in collected:  # the first write only
            (blobs.dir / stored.digest.split(":", 1)[1]).unlink()
            collected.append(stored.digest)
        return stored

    monkeypatch.setattr(blobs, "put_bytes", put_bytes)
    monkeypatch.setattr(blobs, "put_file", lambda path: collect(real_put_file(path)))
    exp.log_json("config", {"pad": "x" * 70_000})  # over the 64 KiB inline cap: stored and pinned when logged
    source = registry_root.parent / "table.csv"
    source.write_text("a,b\n" + "1,2\n" * 100)
    exp.log_file("table", source)
    monkeypatch.undo()
    assert in_window == [True]
    assert len(collected) == 1
    art = exp.commit()
    again = Experiment.load(art.image_name)
    assert again.get_json("config") == {"pad": "x" * 70_000}
    assert again.get_blob("table") == source.read_bytes()


@pytest.mark.ommx3
def test_experiment_attachments_beside_ommx_zero_grace_gc(ommx3: Any, tmp_path: Path) -> None:
    """OMMX 3's gc(delete=True, "0s") in a loop while we log 150 experiment-level attachments and
    commit: every log returns, the commit succeeds, and every attachment loads in both libraries."""
    root = tmp_path / "registry"
    stop = tmp_path / "stop"
    LocalRegistry.at(root)
    gc_loop = subprocess.Popen(
        [str(ommx3.python), "-c", _OMMX_GC_LOOP.format(stop=str(stop), grace="0s")],
        env=ommx3.env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    code = (
        "import json\nfrom ommx_experiment import Experiment\n"
        "exp = Experiment('example.com/fw/exp-attach-race:v1')\n"
        "for i in range(150):\n"
        "    exp.log_attachment('a%d' % i, 'application/octet-stream', b'%06d' % i * 200)\n"
        "print(json.dumps({'digest': exp.commit().manifest_digest}))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=sup.env(root), capture_output=True, text=True, timeout=600)
    finally:
        stop.touch()
        out, err = gc_loop.communicate(timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert gc_loop.returncode == 0, err
    report = _last_json(out)
    assert report["errors"] == [] and report["passes"] > 0, report
    check = (
        "import json\nfrom {module} import Experiment\n"
        "e = Experiment.load('example.com/fw/exp-attach-race:v1')\n"
        "print(json.dumps(sum(e.get_blob('a%d' % i) == b'%06d' % i * 200 for i in range(150))))\n"
    )
    ours = subprocess.run(
        [sys.executable, "-c", check.format(module="ommx_experiment")], env=sup.env(root), capture_output=True, text=True
    )
    assert ours.returncode == 0, ours.stderr
    assert _last_json(ours.stdout) == 150
    assert ommx3.run_json(check.format(module="ommx.experiment"), root=root) == 150


@pytest.mark.ommx3
def test_fork_whose_parent_was_collected_is_not_published_broken(ommx3: Any, registry_root: Path) -> None:
    """A fork carries its parent's runs as descriptors. The parent's ref is removed and OMMX 3's
    0 s GC collects what nothing else reaches: the fork's commit publishes nothing broken."""
    from ommx_experiment import remove_image

    parent_name, child_name = "example.com/fw/parent:v1", "example.com/fw/child:v1"
    parent = Experiment(parent_name)
    with parent.run() as run:
        run.log_parameter("i", 0)
        run.log_attachment("payload", "application/octet-stream", b"parent payload" * 64)
    parent.commit()
    child = parent.fork(child_name)
    assert remove_image(parent_name) is not None
    ommx3.run_json(_OMMX_GC_ONCE.format(grace="0s"), root=registry_root)
    _commit_outcome(child, child_name)


# --- fault 3: our GC beside OMMX 3 writers -----------------------------------------------------------------------


def test_short_grace_gc_is_refused_without_exclusive(registry_root: Path) -> None:
    from ommx_experiment import gc
    from ommx_experiment.cli import main

    registry = LocalRegistry.default()
    orphan = registry.blobs.put_bytes(b"an orphan").digest
    old = time.time() - 3600
    os.utime(registry.blobs.path(orphan), (old, old))
    for grace in ("0s", "1s", "1h", "86399"):
        with pytest.raises(InvalidInputError) as info:
            gc(delete=True, grace_period=grace)
        assert isinstance(info.value, ValueError)
        assert "shorter than 24h" in str(info.value) and "exclusive=True" in str(info.value)
        assert str(registry_root) in str(info.value)
    assert registry.blobs.exists(orphan)
    assert gc(grace_period="0s").orphan_candidates  # a dry run reports at any grace
    proc = subprocess.run(
        [sys.executable, "-m", "ommx_experiment", "gc", "--delete", "--grace-period", "0s", "--root", str(registry_root)],
        env=sup.env(registry_root), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("error: grace_period 0s is shorter than 24h") and "--exclusive" in proc.stderr
    assert registry.blobs.exists(orphan)
    assert gc(delete=True, grace_period="24h").deleted_blobs == ()  # the default is allowed; the orphan is young
    assert main(["gc", "--delete", "--grace-period", "0s", "--exclusive", "--root", str(registry_root)]) == 0
    assert not registry.blobs.exists(orphan)


@pytest.mark.ommx3
def test_our_gc_beside_ommx3_commits(ommx3: Any, tmp_path: Path) -> None:
    """Two OMMX 3 processes commit experiments with run attachments while our deleting GC loops
    (default grace; every 0 s attempt refused): every OMMX commit succeeds and loads in both
    libraries. (Before the refusal, a 0 s pass here broke OMMX commits: issue 16, fault 3.)"""
    root = tmp_path / "registry"
    stop = tmp_path / "stop"
    LocalRegistry.at(root)
    n = 12
    loop = _worker(root, "gcloop", str(stop))
    try:
        theirs = [
            subprocess.Popen(
                [str(ommx3.python), "-c", _OMMX_COMMITTER.format(workers=str(WORKER.parent), n=n, tag=f"o{k}")],
                env=ommx3.env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for k in range(2)
        ]
        outcomes: dict[str, str] = {}
        for proc in theirs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            outcomes.update(_last_json(out))
    finally:
        stop.touch()
        out, err = loop.communicate(timeout=300)
    assert loop.returncode == 0, err
    gc_report = _last_json(out)
    assert gc_report["errors"] == [] and gc_report["passes"] > 0 and gc_report["refused"] == gc_report["passes"]
    assert {v for v in outcomes.values()} == {"ok"}, outcomes
    names = sorted(outcomes)
    _check_ommx(ommx3, root, names)
    # OMMX commits carry no `tag` parameter: check ours by payload only
    report = ommx3.run_json(_OMMX_LOAD.format(workers=str(WORKER.parent), names=names), root=root)
    assert report["problems"] == []
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import json, sys\nsys.path.insert(0, %r)\nfrom fault_worker import payload\n"
            "from ommx_experiment import Experiment\nbad = []\n"
            "for n in %r:\n"
            "    tag, i = n.rsplit('/', 1)[1].split(':')\n"
            "    try:\n"
            "        ok = Experiment.load(n).runs[0].get_blob('payload') == payload(tag, int(i))\n"
            "    except Exception as exc:\n"
            "        ok = repr(exc)\n"
            "    if ok is not True: bad.append([n, str(ok)])\n"
            "print(json.dumps(bad))"
        ) % (str(WORKER.parent), names)],
        env=sup.env(root), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == []


# --- OMMX 3's GC beside our commits --------------------------------------------------------------------------------


@pytest.mark.ommx3
@pytest.mark.parametrize(
    ("grace", "per_writer"),
    [
        pytest.param("0s", 8, id="0s"),
        pytest.param("1s", 8, id="1s"),
        pytest.param("0s", 60, id="0s-stress", marks=pytest.mark.stress),
        pytest.param("1s", 60, id="1s-stress", marks=pytest.mark.stress),
    ],
)
def test_ommx_gc_beside_our_commits(ommx3: Any, tmp_path: Path, grace: str, per_writer: int) -> None:
    """OMMX 3's gc(delete=True) at 0 s / 1 s grace in a loop beside 2 of our committing processes
    (runs with parameters; every other one with a run attachment): every commit() succeeds and loads in
    both libraries with its params and payload; the only failure is a Run close raising RunBlobsLostError
    (its payload was collected before the close could pin it; the run is not recorded, nothing published);
    OMMX's GC keeps making passes (the publish windows never starve it)."""
    root = tmp_path / "registry"
    stop = tmp_path / "stop"
    LocalRegistry.at(root)
    gc_loop = subprocess.Popen(
        [str(ommx3.python), "-c", _OMMX_GC_LOOP.format(stop=str(stop), grace=grace)],
        env=ommx3.env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    writers = [_worker(root, "committer", f"w{k}", str(per_writer)) for k in range(2)]
    results: list[dict[str, Any]] = []
    try:
        for proc in writers:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            results.append(_last_json(out))
    finally:
        stop.touch()
        out, err = gc_loop.communicate(timeout=300)
    assert gc_loop.returncode == 0, err
    gc_report = _last_json(out)
    assert gc_report["errors"] == [] and gc_report["passes"] > 0, gc_report
    outcomes = {name: o for r in results for name, o in r["outcomes"].items()}
    assert len(outcomes) == 2 * per_writer
    failed = {n: o for n, o in outcomes.items() if "ok" not in o}
    for name, outcome in failed.items():
        # the only failure left: the run's payload was collected before its close pinned it (said at the
        # close, the run not recorded); every commit() attempted succeeded
        assert outcome["error"] == "RunBlobsLostError", (name, outcome)
        assert outcome["published"] == "None" and "Failed to read blob" in outcome["message"], (name, outcome)
    published = sorted(n for n, o in outcomes.items() if "ok" in o)
    # Parameter-only commits write all their blobs inside the publish window: they always succeed.
    assert {n for n in outcomes if int(n.rsplit(":", 1)[1]) % 2} <= set(published), failed
    _check_ours(root, published)
    _check_ommx(ommx3, root, published)

