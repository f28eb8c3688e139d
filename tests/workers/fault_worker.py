"""Subprocess worker for the issue-16 fault tests (tests/reliability/test_gc_interop.py and friends).

The registry root comes from ``OMMX_LOCAL_REGISTRY_ROOT``. Commands (each prints one JSON line last)::

    fault_worker.py committer TAG N       # N experiments example.com/fw/<TAG>:<i> (a run with params, and a
                                          # fresh attachment when i is even); outcome per commit: {"ok": digest} or
                                          # {"error": class, "message", "published": ref after the failure}
    fault_worker.py sweep NAME TAG REPORT BUSY_MS [PACE_MS]  # runs of one joined experiment until killed (params,
                                          # a payload on even i); appends "closed RUN_ID I" to REPORT after each close
                                          # that returned, "error I CLASS" otherwise; BUSY_MS: SQLite busy budget;
                                          # PACE_MS: a pause after each run (bounds what a small disk must hold)
    fault_worker.py verify NAME REPORT    # restore NAME: every reported run is there with its params and payload;
                                          # then commit it; prints the digest and the checked ids
    fault_worker.py check NAMES_JSON      # load each name (ours): params + attachment bytes, closure complete
    fault_worker.py gcloop STOP           # our gc(delete=True) (24h) + refused gc("0s") until STOP exists
    fault_worker.py tidy SCRATCH          # the "next operation" after kills: one import of an archive found in
                                          # SCRATCH (or one blob write) and one save into SCRATCH
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any


def payload(tag: str, i: int) -> bytes:
    """The run attachment of commit ``i`` of ``tag``: unique, a few KiB."""
    seed = hashlib.sha256(f"{tag}-{i}".encode()).digest()
    return seed * 128


def committer(tag: str, n: int) -> dict[str, Any]:
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry
    from ommx_experiment.errors import RunBlobsLostError

    outcomes: dict[str, dict[str, str]] = {}
    for i in range(n):
        name = f"example.com/fw/{tag}:{i}"
        exp = Experiment(name)
        try:
            with exp.run() as run:
                run.log_parameter("tag", tag)
                run.log_parameter("i", i)
                if i % 2 == 0:  # odd commits carry only parameters: their blobs are all written by commit()
                    run.log_attachment("payload", "application/octet-stream", payload(tag, i))
        except RunBlobsLostError as exc:  # a GC collected the payload before the close pinned it: said, not recorded
            outcomes[name] = {"error": type(exc).__name__, "message": str(exc)[:300], "published": "None"}
            continue  # nothing to commit: the one run of this experiment was not recorded
        try:
            outcomes[name] = {"ok": exp.commit().manifest_digest}
        except Exception as exc:
            outcomes[name] = {
                "error": type(exc).__name__,
                "message": str(exc)[:300],
                "published": str(LocalRegistry.default().resolve(name)),
            }
    return {"outcomes": outcomes}


def sweep(name: str, tag: str, report: Path, busy_ms: int, pace_ms: int = 0) -> dict[str, Any]:
    from ommx_experiment import AutosavePolicy, Experiment
    from ommx_experiment.engine import index_db
    from ommx_experiment.errors import OmmxExperimentError

    index_db.BUSY_TIMEOUT_MS = busy_ms
    with report.open("a", buffering=1) as out:  # line-buffered: a line per close, written before the next run
        while True:  # joining also writes the index: under the faults it may take a few attempts
            try:
                exp = Experiment.join(name)
                break
            except (OmmxExperimentError, OSError) as exc:
                out.write(f"error join {type(exc).__name__}\n")
                time.sleep(0.05)
        exp.set_autosave_policy(AutosavePolicy.disabled())
        for i in range(10**9):
            try:
                with exp.run() as run:
                    run.log_parameter("tag", tag)
                    run.log_parameter("i", i)
                    if i % 2 == 0:
                        run.log_attachment("payload", "application/octet-stream", payload(tag, i))
                    run_id = run.run_id
            except (OmmxExperimentError, OSError) as exc:
                out.write(f"error {i} {type(exc).__name__}\n")
                continue
            out.write(f"closed {run_id} {i}\n")
            if pace_ms:
                time.sleep(pace_ms / 1000)
    return {}


def verify(name: str, report: Path) -> dict[str, Any]:
    from ommx_experiment import Experiment

    closed: dict[int, int] = {}
    errors: dict[str, int] = {}
    for line in report.read_text().splitlines():
        parts = line.split()
        if parts[0] == "closed" and len(parts) == 3:
            closed[int(parts[1])] = int(parts[2])
        elif parts[0] == "error" and len(parts) == 3:
            errors[parts[2]] = errors.get(parts[2], 0) + 1
    tag = report.stem
    problems: list[str] = []
    exp = Experiment.restore_from_checkpoint(name)
    runs = {r.run_id: r for r in exp.runs}
    params = {int(row["run_id"]): row for _, row in exp.run_parameters_df().reset_index().iterrows()}
    for run_id, i in closed.items():
        run = runs.get(run_id)
        if run is None:
            problems.append(f"run {run_id} (i={i}) reported closed is not restorable")
            continue
        if run.status != "finished" or int(params[run_id]["i"]) != i or params[run_id]["tag"] != tag:
            problems.append(f"run {run_id}: status {run.status}, params {dict(params[run_id])}")
        if i % 2 == 0 and run.get_blob("payload") != payload(tag, i):
            problems.append(f"run {run_id}: payload differs")
    digest = exp.commit().manifest_digest if not problems else None
    return {"problems": problems[:10], "closed": sorted(closed), "errors": errors, "digest": digest,
            "restored": len(runs)}


def check(names: list[str]) -> dict[str, Any]:
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    reg = LocalRegistry.default()
    problems = []
    for name in names:
        try:
            digest = reg.resolve(name)
            assert digest is not None, "no ref"
            for blob, size in reg.closure(digest):
                if not reg.blobs.verify(blob, size):
                    problems.append(f"{name}: blob {blob} missing or corrupt")
            exp = Experiment.load(name)
            tag, i = name.rsplit("/", 1)[1].split(":")
            run = exp.runs[0]
            if int(i) % 2 == 0 and run.get_blob("payload") != payload(tag, int(i)):
                problems.append(f"{name}: payload differs")
            row = exp.run_parameters_df().iloc[0]
            if str(row["tag"]) != tag or int(row["i"]) != int(i):
                problems.append(f"{name}: params {dict(row)}")
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
    return {"problems": problems, "checked": len(names)}


def gcloop(stop: Path) -> dict[str, Any]:
    from ommx_experiment import gc

    passes, refused, deleted, errors = 0, 0, 0, []
    while not stop.exists():
        try:
            deleted += len(gc(delete=True).deleted_blobs)
            passes += 1
        except Exception as exc:
            errors.append(repr(exc))
        try:
            gc(delete=True, grace_period="0s")
            errors.append("gc(delete=True, grace_period='0s') was not refused")
        except ValueError:
            refused += 1
        time.sleep(0.01)
    return {"passes": passes, "refused": refused, "deleted": deleted, "errors": errors}


def tidy(scratch: Path) -> dict[str, Any]:
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    archives = sorted(p for p in scratch.glob("*.ommx") if p.name != "tidy.ommx")
    if archives:
        exp = Experiment.import_archive(archives[0])
    else:
        LocalRegistry.default().blobs.put_bytes(b"tidy")
        exp = Experiment("example.com/fw/tidy:v1")
        exp.commit()
    target = scratch / "tidy.ommx"
    target.unlink(missing_ok=True)
    exp.save(target)
    return {"imported": bool(archives)}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "committer":
        out = committer(args[0], int(args[1]))
    elif command == "sweep":
        out = sweep(args[0], args[1], Path(args[2]), int(args[3]), int(args[4]) if len(args) > 4 else 0)
    elif command == "verify":
        out = verify(args[0], Path(args[1]))
    elif command == "check":
        out = check(json.loads(args[0]))
    elif command == "gcloop":
        out = gcloop(Path(args[0]))
    elif command == "tidy":
        out = tidy(Path(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
