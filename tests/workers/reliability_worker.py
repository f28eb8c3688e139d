"""Subprocess worker for tests/reliability: writer workloads, GC loops, checks in a FRESH process.

The registry root comes from ``OMMX_LOCAL_REGISTRY_ROOT``. Commands::

    reliability_worker.py workload SIDE SEED
        # forever: experiments with runs (params + attachments), commits, forks, sealed
        # renames, archive imports. Appends JSON lines to SIDE *after* each step returned:
        # {"ev":"closing"|"closed","name","run"}, {"ev":"committed","name","digest","content"}.
        # Prints "ready" once everything heavy is imported (then the parent may SIGKILL it).
    reliability_worker.py verify SIDE     # the crash-harness checks; prints one JSON report
    reliability_worker.py commit NAME     # commit one small experiment (for strace); prints digest
    reliability_worker.py save NAME PATH  # Experiment.load(NAME).save(PATH)
    reliability_worker.py writer TAG N    # commit N experiments example.com/cw/<TAG>:<i>; JSON report
    reliability_worker.py gcloop STOP     # gc(delete=True, grace 0s) + list_experiments until STOP exists
    reliability_worker.py same NAME VALUE GO  # wait for file GO, commit NAME with param VALUE; JSON outcome
    reliability_worker.py fault fsize|enospc LIMIT|FILLER STEP ARGS...  # write faults, then retry
    reliability_worker.py dump NAME | import-dump PATH | blob-audit   # JSON views in a fresh process
    reliability_worker.py readonly NAME   # reads + writes on a read-only root (run as non-root); JSON
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

PARAM_KINDS = ("i", "x", "s", "b")


# --- content capture -------------------------------------------------------------------------------


def content(exp: Any) -> dict[str, Any]:
    """Exact, JSON-able content of an experiment (sealed or unsealed): params, attachment bytes."""
    params: dict[str, dict[str, Any]] = {}
    runs = []
    for run in exp.runs:
        runs.append(
            {
                "run_id": run.run_id,
                "status": run.status,
                "attachments": {n: run.get_blob(n).hex() for n in run.attachment_names},
            }
        )
    df = exp.run_parameters_df()
    for column in df.columns:
        for run_id, value in df[column].items():
            if value is None or str(value) == "<NA>":
                continue
            if hasattr(value, "item"):
                value = value.item()
            params.setdefault(str(int(run_id)), {})[str(column)] = value
    return {
        "attachments": {n: exp.get_blob(n).hex() for n in exp.attachment_names},
        "runs": runs,
        "params": params,
        "annotations": exp.annotations,
    }


class Side:
    """The side file: one JSON line per completed step, flushed at once (survives SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, **event: Any) -> None:
        self._fh.write(json.dumps(event, sort_keys=True) + "\n")
        self._fh.flush()


# --- the crash workload ----------------------------------------------------------------------------


def _runs(exp: Any, name: str, side: Side, rng: random.Random, n: int) -> None:
    for _ in range(n):
        run = exp.run()
        run_id = run.run_id
        run.log_parameter("i", run_id)
        run.log_parameter("x", rng.random())
        run.log_parameter("s", f"value-{rng.randrange(10**6)}\u00e9")
        run.log_parameter("b", rng.random() < 0.5)
        run.log_attachment("data", "application/octet-stream", os.urandom(rng.choice((16, 4096, 70_000))))
        if rng.random() < 0.3:
            run.log_json("meta", {"run": run_id, "tag": rng.randrange(100)})
        side.write(ev="closing", name=name, run=run_id)
        run.finish()
        side.write(ev="closed", name=name, run=run_id)


def _commit(exp: Any, name: str, side: Side) -> Any:
    art = exp.commit()
    side.write(ev="committed", name=name, digest=art.manifest_digest, content=content(exp))
    return exp


def workload(side_path: Path, seed: int) -> None:
    import pandas  # noqa: F401  (heavy imports first: kills should land in registry I/O)
    import pyarrow  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    LocalRegistry.default()
    rng = random.Random(seed)
    side = Side(side_path)
    scratch = side_path.parent / "scratch"  # shared: a save sweeps the temps of killed earlier saves
    scratch.mkdir(exist_ok=True)
    print("ready", flush=True)
    committed: list[tuple[str, Any]] = []
    for k in range(10**6):
        name = f"example.com/crash/s{seed}-{k}:v1"
        action = rng.random()
        if action < 0.15 and committed:  # fork a committed experiment, add runs, commit
            _, parent = rng.choice(committed)
            child = parent.fork(name)
            side.write(ev="forked", name=name, parent=parent.image_name, base=content(parent))
            _runs(child, name, side, rng, rng.randrange(1, 3))
            committed.append((name, _commit(child, name, side)))
        elif action < 0.25 and committed:  # sealed rename = alias
            alias = f"example.com/crash/alias-s{seed}-{k}:v1"
            _, exp = rng.choice(committed)
            digest = exp.artifact.manifest_digest
            exp.rename(alias)
            side.write(ev="committed", name=alias, digest=digest, content=content(exp))
        elif action < 0.35:  # archive import of an experiment built in a temp registry
            tmp = Experiment.with_temp_local_registry(name)
            tmp.log_json("origin", {"seed": seed, "k": k})
            _runs(tmp, f"tmp:{name}", side, rng, rng.randrange(1, 3))
            tmp.commit()
            path = scratch / f"{seed}-{k}.ommx"
            tmp.save(path)
            imported = Experiment.import_archive(path)
            committed.append((name, imported))
            side.write(ev="committed", name=name, digest=imported.artifact.manifest_digest, content=content(imported))
        else:  # a new experiment; most get committed, some stay unsealed (journal only)
            exp = Experiment(name)
            exp.set_annotation("seed", str(seed))
            exp.log_attachment("shared", "application/octet-stream", os.urandom(rng.choice((8, 2048))))
            side.write(ev="started", name=name)
            _runs(exp, name, side, rng, rng.randrange(1, 5))
            if rng.random() < 0.8:
                committed.append((name, _commit(exp, name, side)))


# --- verification in a fresh process ------------------------------------------------------------------


def _events(side_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in side_path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by SIGKILL mid-write: never a completed step
            continue
    return out


def _closure_problems(reg: Any) -> list[str]:
    problems = []
    for ref in reg.list_refs():
        try:
            for digest, size in reg.closure(ref.manifest_digest):
                if not reg.blobs.verify(digest, size):
                    problems.append(f"{ref.image_name}: blob {digest} missing or corrupt")
        except Exception as exc:
            problems.append(f"{ref.image_name}: {exc!r}")
    return problems


def _runs_of(exp: Any) -> set[int]:
    return {r.run_id for r in exp.runs}


def verify(side_path: Path) -> dict[str, Any]:
    from ommx_experiment import Experiment
    from ommx_experiment.engine import layout_view
    from ommx_experiment.engine.registry import LocalRegistry

    reg = LocalRegistry.default()
    report: dict[str, Any] = {"errors": []}
    errors: list[str] = report["errors"]
    report["integrity"] = reg.db.query("PRAGMA integrity_check")[0][0]
    errors.extend(_closure_problems(reg))
    events = _events(side_path)
    committed = {e["name"]: e for e in events if e["ev"] == "committed"}
    closing: dict[str, set[int]] = {}
    closed: dict[str, set[int]] = {}
    for e in events:
        if e["ev"] in ("closing", "closed"):
            (closing if e["ev"] == "closing" else closed).setdefault(e["name"], set()).add(e["run"])
    for name, event in committed.items():
        try:
            if reg.resolve(name) != event["digest"]:
                errors.append(f"{name}: ref is {reg.resolve(name)}, committed {event['digest']}")
                continue
            got = content(Experiment.load(name))
            if got != event["content"]:
                errors.append(f"{name}: content differs after reload")
        except Exception as exc:
            errors.append(f"{name}: load failed: {exc!r}")
    restored = 0
    for name in sorted(set(closing) - set(committed)):
        if name.startswith("tmp:"):
            continue
        done, tried = closed.get(name, set()), closing[name]
        if reg.resolve(name) is not None:  # killed after publish, before the side line
            loaded = Experiment.load(name)
        else:
            try:
                loaded = Experiment.restore_from_checkpoint(name)
                restored += 1
            except Exception as exc:
                if done:
                    errors.append(f"{name}: restore failed though runs {sorted(done)} closed: {exc!r}")
                continue
        runs = _runs_of(loaded)
        # a Run open when the kill landed comes back `interrupted` (open-run recovery), never a closed one
        recovered = {r.run_id for r in loaded.runs if r.lifecycle_reason == "process exited while the run was open"}
        if recovered & done:
            errors.append(f"{name}: closed runs {sorted(recovered & done)} came back as interrupted")
        runs -= recovered
        # forked children carry the parent's runs; only their own run ids are judged here
        base = {int(r["run_id"]) for e in events if e["ev"] == "forked" and e["name"] == name for r in e["base"]["runs"]}
        own = runs - base
        if not done <= own or not own <= tried:
            errors.append(f"{name}: restored runs {sorted(own)}; closed {sorted(done)}; started {sorted(tried)}")
    report["committed"] = len(committed)
    report["restored"] = restored
    reg.sync()
    index = layout_view.read_index(reg.root)
    refs = {str(r.image_name): r.manifest_digest for r in reg.list_refs()}
    report["refs"] = len(refs)
    if index != refs:
        errors.append(f"index.json differs from refs: {sorted(set(index) ^ set(refs))[:5]}")
    return report


# --- single commits (strace), concurrent writers, gc loops ------------------------------------------------


INLINE_NOTE = b"an inline experiment-level attachment " * 10


def commit_one(name: str) -> str:
    from ommx_experiment import Experiment

    exp = Experiment(name)
    # over the 64 KiB inline cap: stored and pinned when logged (the pin path); "note" is inline
    # (its journal row holds the bytes; the commit stores it)
    exp.log_attachment("shared", "application/octet-stream", b"shared payload " * 5000)
    exp.log_attachment("note", "application/octet-stream", INLINE_NOTE)
    with exp.run() as run:
        run.log_parameter("seed", 7)
        run.log_attachment("data", "application/octet-stream", b"run payload " * 300)
    return exp.commit().manifest_digest


def writer(tag: str, n: int) -> dict[str, Any]:
    from ommx_experiment import Experiment

    errors = []
    for i in range(n):
        exp = Experiment(f"example.com/cw/{tag}:{i}")
        exp.log_attachment("a", "application/octet-stream", f"{tag}-{i}".encode() * 50)
        with exp.run() as run:
            run.log_parameter("w", tag)
            run.log_parameter("i", i)
            run.log_attachment("r", "application/octet-stream", os.urandom(256))
        try:
            exp.commit()
        except Exception as exc:
            errors.append(f"{i}: {exc!r}")
    return {"errors": errors}


def check_writers(names: list[str]) -> dict[str, Any]:
    """Every name loads, has its params and attachments, and a fully present closure."""
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    reg = LocalRegistry.default()
    problems = _closure_problems(reg)
    loaded = 0
    for name in names:
        try:
            exp = Experiment.load(name)
            tag, i = name.rsplit("/", 1)[1].split(":")
            got = content(exp)
            if got["params"] != {"0": {"w": tag, "i": int(i)}}:
                problems.append(f"{name}: params {got['params']}")
            if bytes.fromhex(got["attachments"]["a"]) != f"{tag}-{i}".encode() * 50:
                problems.append(f"{name}: attachment differs")
            loaded += 1
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
    return {"problems": problems, "loaded": loaded}


def verify_name(name: str, digest: str) -> dict[str, Any]:
    """After a same-name race: the ref is the winner's, loads, integrity ok."""
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    reg = LocalRegistry.default()
    problems = _closure_problems(reg)
    if reg.db.query("PRAGMA integrity_check")[0][0] != "ok":
        problems.append("integrity_check failed")
    if reg.resolve(name) != digest:
        problems.append(f"{name} -> {reg.resolve(name)}, winner committed {digest}")
    got = content(Experiment.load(name))
    return {"problems": problems, "who": got["params"]["0"]["who"]}


def verify_theirs(names: list[str]) -> dict[str, Any]:
    """OMMX 3's experiments, read by us: params, the JSON attachment, run attachments."""
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    problems = _closure_problems(LocalRegistry.default())
    for name in names:
        try:
            exp = Experiment.load(name)
            i = int(name.rsplit(":", 1)[1])
            if exp.get_json("cfg") != {"i": i} or content(exp)["params"] != {"0": {"i": i}}:
                problems.append(f"{name}: content differs")
            if exp.runs[0].get_blob("raw") != b"theirs-%d" % i:
                problems.append(f"{name}: run attachment differs")
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
    return {"problems": problems}


def gcloop(stop: Path) -> dict[str, Any]:
    from ommx_experiment import gc, list_experiments

    passes, deleted, errors = 0, 0, []
    while not stop.exists():
        try:
            report = gc(delete=True, grace_period="0s", exclusive=True)
            deleted += len(report.deleted_blobs)
            list_experiments()
        except Exception as exc:
            errors.append(repr(exc))
        passes += 1
    return {"passes": passes, "deleted": deleted, "errors": errors}


def same(name: str, value: str, go: Path) -> dict[str, Any]:
    from ommx_experiment import Experiment
    from ommx_experiment.errors import RefConflictError

    exp = Experiment(name)
    with exp.run() as run:
        run.log_parameter("who", value)
    while not go.exists():
        time.sleep(0.001)
    try:
        return {"won": exp.commit().manifest_digest}
    except RefConflictError as exc:
        return {"conflict": str(exc), "runtime_error": isinstance(exc, RuntimeError)}


# --- resource faults ------------------------------------------------------------------------------------


class Fault:
    """Make writes fail, then let space return: RLIMIT_FSIZE (EFBIG) or a filler file on a small tmpfs (ENOSPC)."""

    def __init__(self, mode: str, param: str) -> None:
        self.mode, self.param = mode, param
        self.filler = Path(param) if mode == "enospc" else None
        self.slack = int(param) if mode == "fsize" else 1 << 20

    @property
    def payload_size(self) -> int:
        return self.slack * 2

    def start(self) -> None:
        if self.mode == "fsize":
            import resource
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.slack, resource.RLIM_INFINITY))
            return
        assert self.filler is not None
        st = os.statvfs(self.filler.parent)
        free = st.f_bavail * st.f_frsize
        with open(self.filler, "wb") as fh:  # leave ~slack bytes free
            fh.write(b"\0" * max(0, free - self.slack))

    def stop(self) -> None:
        if self.mode == "fsize":
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        elif self.filler is not None:
            self.filler.unlink()


def _attempt(action: Any) -> str:
    try:
        action()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


def fault(mode: str, param: str, step: str, args: list[str]) -> dict[str, Any]:
    """One step while writes fail; then space returns and the SAME session/process retries."""
    from ommx_experiment import Experiment
    from ommx_experiment.engine.registry import LocalRegistry

    LocalRegistry.default()
    injected = Fault(mode, param)
    big = os.urandom(injected.payload_size)
    out: dict[str, Any] = {}
    if step == "log":
        exp = Experiment(args[0])
        run = exp.run()
        injected.start()
        out["first"] = _attempt(lambda: run.log_attachment("big", "application/octet-stream", big))
        injected.stop()
        run.log_attachment("big", "application/octet-stream", big)
        run.finish()
        out["digest"] = exp.commit().manifest_digest
    elif step == "log_file":  # the kernel copy (copy_file_range) of put_file
        import tempfile

        with tempfile.TemporaryDirectory() as folder:  # outside the root: not on its full file system
            source = Path(folder) / "big.bin"
            source.write_bytes(big)
            exp = Experiment(args[0])
            run = exp.run()
            injected.start()
            out["first"] = _attempt(lambda: run.log_file("big", source))
            injected.stop()
            run.log_file("big", source)
            run.finish()
            out["digest"] = exp.commit().manifest_digest
    elif step == "commit":
        exp = Experiment(args[0])
        exp.log_attachment("small", "application/octet-stream", b"small")
        with exp.run() as run:
            run.log_parameter("x", 1)
        injected.start()
        exp.log_attachment("big", "application/octet-stream", b"")  # an empty blob still fits

        def big_run() -> None:  # a run whose parameter exceeds the space left: its log or its close fails
            with exp.run() as run:
                run.log_parameter("big", big.hex()[: injected.payload_size])

        out["close"] = _attempt(big_run)
        out["first"] = _attempt(exp.commit)
        injected.stop()
        out["digest"] = exp.commit().manifest_digest
    elif step == "import":
        injected.start()
        out["first"] = _attempt(lambda: Experiment.import_archive(args[0]))
        injected.stop()
        out["digest"] = Experiment.import_archive(args[0]).artifact.manifest_digest
    return out


def blob_audit() -> dict[str, Any]:
    """Every digest-named file hashes to its name; our temp files left behind."""
    import hashlib

    from ommx_experiment.engine import atomic
    from ommx_experiment.engine.registry import LocalRegistry

    reg = LocalRegistry.default()
    bad = []
    for digest in reg.blobs.iter_digests():
        if "sha256:" + hashlib.sha256(reg.blobs.path(digest).read_bytes()).hexdigest() != digest:
            bad.append(digest)
    temps = [p.name for d in (reg.root, reg.blobs.dir) for p in d.iterdir() if atomic.is_temp_name(p.name)]
    return {"bad": bad, "temps": temps, "integrity": reg.db.query("PRAGMA integrity_check")[0][0]}


def readonly(name: str) -> dict[str, Any]:
    from ommx_experiment import Experiment

    out: dict[str, Any] = {}
    exp = Experiment.load(name)
    out["params"] = content(exp)["params"]
    out["df_columns"] = [str(c) for c in exp.run_parameters_df().columns]
    for label, action in (
        ("new_commit", lambda: Experiment("example.com/ro/new:v1").commit()),
        ("rename", lambda: Experiment.load(name).rename("example.com/ro/alias:v1")),
    ):
        try:
            action()
            out[label] = "ok"
        except Exception as exc:
            out[label] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "workload":
        workload(Path(argv[1]), int(argv[2]))
    elif command == "verify":
        print(json.dumps(verify(Path(argv[1]))))
    elif command == "commit":
        print(commit_one(argv[1]))
    elif command == "save":
        from ommx_experiment import Experiment

        Experiment.load(argv[1]).save(argv[2])
    elif command == "writer":
        print(json.dumps(writer(argv[1], int(argv[2]))))
    elif command == "verify-name":
        print(json.dumps(verify_name(argv[1], argv[2])))
    elif command == "verify-theirs":
        print(json.dumps(verify_theirs(json.loads(argv[1]))))
    elif command == "check-writers":
        print(json.dumps(check_writers(json.loads(argv[1]))))
    elif command == "gcloop":
        print(json.dumps(gcloop(Path(argv[1]))))
    elif command == "same":
        print(json.dumps(same(argv[1], argv[2], Path(argv[3]))))
    elif command == "fault":
        print(json.dumps(fault(argv[1], argv[2], argv[3], argv[4:])))
    elif command == "dump":
        from ommx_experiment import Experiment

        print(json.dumps(content(Experiment.load(argv[1]))))
    elif command == "import-dump":
        from ommx_experiment import Experiment

        print(json.dumps(content(Experiment.import_archive(argv[1]))))
    elif command == "blob-audit":
        print(json.dumps(blob_audit()))
    elif command == "readonly":
        print(json.dumps(readonly(argv[1])))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
