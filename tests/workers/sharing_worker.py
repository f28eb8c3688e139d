"""Worker for tests/reliability/test_sharing_ommx3.py: our package and OMMX 3 in ONE process.

Runs on the OMMX 3 side venv with our ``src`` on ``PYTHONPATH``; the registry root
comes from ``OMMX_LOCAL_REGISTRY_ROOT``. Commands::

    sharing_worker.py interleave OPS SEED MODE  # OPS random calls of both libraries in this process while
                                            # a `peer` process commits; prints one JSON report. MODE `ofd`:
                                            # our design on Linux; `fallback`: the one of other platforms
    sharing_worker.py hazard                # a plain sqlite3 connection, then OMMX's listing: prints the
                                            # deleted index.sqlite3* files this process then holds
    sharing_worker.py peer SEED             # until stdin closes: one short-lived process per commit,
                                            # alternating OMMX 3 and ours; prints each committed name
    sharing_worker.py commit LIB NAME       # one commit with LIB (ommx|ours) in a fresh process
    sharing_worker.py verify LIB EXPECTED   # fresh process of LIB: every name in the JSON file EXPECTED
                                            # listed and loadable, GC dry run clean; prints one JSON report

The report of ``interleave`` holds, besides counts: ``held_after_ours``, the calls
of ours after which some file descriptor of this process still pointed at an
unlinked ``index.sqlite3-wal``/``-shm`` (spec/registry.md §4a says none);
``held_after_ommx``, the same after OMMX's calls (none with ``ofd``; with
``fallback``, how often the hazard struck, the first few in
``held_after_ommx_first``); ``errors``; and ``expected``, every name that must
exist afterwards.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers.procfs import deleted_index_fds  # noqa: E402


def _commit(lib: Any, name: str, runs: int = 1) -> None:
    with lib.Experiment(name) as experiment:
        for i in range(runs):
            with experiment.run() as run:
                run.log_parameter("i", i)


class Interleaving:
    """The random mix of calls; every method named ``ours_*`` or ``ommx_*`` is one call."""

    def __init__(self, seed: int) -> None:
        import ommx.artifact as oa
        import ommx.experiment as oe

        import ommx_experiment as ox

        self.ox, self.oe, self.oa = ox, oe, oa
        self.rng = random.Random(seed)
        self.seed = seed
        self.count = 0
        self.expected: list[str] = []
        self.open_sessions: list[Any] = []

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"example.com/sharing/{kind}-{self.seed}-{self.count}:v1"

    # --- ours ---------------------------------------------------------------------------------------

    def ours_commit(self) -> None:
        name = self._name("ours")
        _commit(self.ox, name, self.rng.randint(0, 1))
        self.expected.append(name)

    def ours_run_close(self) -> None:
        if not self.open_sessions or self.rng.random() < 0.15:
            experiment = self.ox.Experiment(self._name("ours-open"))
            policy = self.ox.AutosavePolicy
            every_close = self.rng.random() < 0.25
            experiment.set_autosave_policy(policy.every_run_close() if every_close else policy.min_interval(60.0))
            self.open_sessions.append(experiment)
        with self.rng.choice(self.open_sessions).run() as run:
            run.log_parameter("x", self.rng.random())

    def ours_commit_open(self) -> None:
        if not self.open_sessions:
            self.ours_run_close()
        experiment = self.open_sessions.pop(self.rng.randrange(len(self.open_sessions)))
        experiment.commit()
        self.expected.append(experiment.image_name)

    def ours_checkpoint(self) -> None:
        """A failed exit publishes a checkpoint; half the time restore it and commit."""
        name = self._name("ours-failed")
        try:
            with self.ox.Experiment(name) as experiment:
                with experiment.run() as run:
                    run.log_parameter("x", 1)
                raise ValueError("planned failure")
        except ValueError:
            pass
        if self.rng.random() < 0.5:
            with self.ox.Experiment.restore_from_checkpoint(name) as experiment, experiment.run() as run:
                run.log_parameter("x", 2)
            self.expected.append(name)

    def ours_load(self) -> None:
        if not self.expected:
            self.ours_commit()
        name = self.rng.choice(self.expected)
        (self.ox.Artifact if "/art-" in name else self.ox.Experiment).load(name)

    def ours_listings(self) -> None:
        self.ox.list_experiments()
        self.ox.list_experiment_checkpoints()
        self.ox.list_artifacts()

    def ours_gc(self) -> None:
        self.ox.gc()

    # --- OMMX 3 -------------------------------------------------------------------------------------

    def ommx_list_experiments(self) -> None:
        self.oe.list_experiments()

    def ommx_list_checkpoints(self) -> None:
        self.oe.list_experiment_checkpoints()

    def ommx_list_artifacts(self) -> None:
        self.oa.list_artifacts()

    def ommx_draft_commit(self) -> None:
        name = self._name("art")
        draft = self.oa.ArtifactDraft.new(name)
        draft.add_json({"k": self.count})
        draft.commit()
        self.expected.append(name)

    def ommx_experiment_commit(self) -> None:
        name = self._name("ommx")
        _commit(self.oe, name)
        self.expected.append(name)

    def ommx_load(self) -> None:
        if not self.expected:
            self.ommx_draft_commit()
        name = self.rng.choice(self.expected)
        (self.oa.Artifact if "/art-" in name else self.oe.Experiment).load(name)


# (method, weight). OMMX's listings close their connection again; its loads and commits keep
# one open for the rest of the process, so the first half of the run uses only the former.
WEIGHTS = {
    "ours_commit": 2, "ours_run_close": 6, "ours_commit_open": 1, "ours_checkpoint": 1, "ours_load": 2,
    "ours_listings": 2, "ours_gc": 1,
    "ommx_list_experiments": 3, "ommx_list_checkpoints": 2, "ommx_list_artifacts": 2,
    "ommx_draft_commit": 2, "ommx_experiment_commit": 1, "ommx_load": 2,
}
EPHEMERAL = {"ommx_list_experiments", "ommx_list_checkpoints", "ommx_list_artifacts"}


def interleave(ops: int, seed: int, mode: str) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    if mode == "fallback":
        from ommx_experiment.engine import index_db

        index_db.OFD_LOCKS = False
    mix = Interleaving(seed)
    peer = subprocess.Popen(
        [sys.executable, __file__, "peer", str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    every = [name for name, weight in WEIGHTS.items() for _ in range(weight)]
    first_half = [name for name in every if name.startswith("ours_") or name in EPHEMERAL]
    report: dict[str, Any] = {
        "calls": {}, "held_after_ours": [], "held_after_ommx": 0, "held_after_ommx_first": [], "errors": [],
    }
    for i in range(ops):
        name = mix.rng.choice(first_half if i < ops // 2 else every)
        call: Callable[[], None] = getattr(mix, name)
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, and fails the test
            report["errors"].append(f"call {i} {name}: {type(exc).__name__}: {exc}"[:400])
        calls, seconds = report["calls"].get(name, (0, 0.0))
        report["calls"][name] = (calls + 1, round(seconds + time.perf_counter() - start, 3))
        held = deleted_index_fds()
        if held and name.startswith("ours_"):
            report["held_after_ours"].append([i, name, held])
        elif held:
            report["held_after_ommx"] += 1
            if len(report["held_after_ommx_first"]) < 5:
                report["held_after_ommx_first"].append([i, name, held])
    for experiment in mix.open_sessions:
        experiment.commit()
        mix.expected.append(experiment.image_name)
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.close()
    peer_names = [line.strip() for line in peer.stdout if line.strip()]
    report["peer_exit"] = peer.wait()
    report["peer_commits"] = len(peer_names)
    report["held_at_end"] = deleted_index_fds()
    report["expected"] = mix.expected + peer_names
    return report


def hazard() -> list[str]:
    """What OMMX's listing does to a connection without our keepers' locks (run before the interleaving)."""
    import sqlite3

    import ommx.experiment as oe

    plain = sqlite3.connect(Path(os.environ["OMMX_LOCAL_REGISTRY_ROOT"]) / "index.sqlite3")
    plain.execute("SELECT count(*) FROM refs").fetchone()
    oe.list_experiments()  # OMMX's last connection closes: it checkpoints and unlinks -wal/-shm
    held = deleted_index_fds()
    plain.close()
    return held


def peer(seed: int) -> None:
    """Commit from short-lived processes until stdin closes: at times no other process has the
    database open (OMMX's close in the interleaving process then unlinks the -wal), at times one
    is mid-commit (OMMX's close then only drops that process's POSIX locks)."""
    i = 0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not sys.stdin.readline():
            return
        i += 1
        name = f"example.com/sharing/peer-{seed}-{i}:v1"
        lib = "ommx" if i % 2 else "ours"
        if subprocess.run([sys.executable, __file__, "commit", lib, name]).returncode == 0:
            print(name, flush=True)
        time.sleep(0.5)


def _lib(which: str) -> Any:
    if which == "ommx":
        import ommx.experiment as oe

        return oe
    import ommx_experiment as ox

    return ox


def verify(which: str, expected_file: str) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    expected = json.loads(Path(expected_file).read_text())
    if which == "ommx":
        import ommx.artifact as artifacts
        import ommx.experiment as experiments
    else:
        import ommx_experiment as artifacts
        import ommx_experiment as experiments  # type: ignore[no-redef]
    images = set(artifacts.get_images())
    missing = [name for name in expected if name not in images]
    unloadable = []
    for name in expected:
        if name in images:
            try:
                (artifacts.Artifact if "/art-" in name else experiments.Experiment).load(name)
            except Exception as exc:  # noqa: BLE001 - reported
                unloadable.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    report = artifacts.gc()
    return {
        "missing": missing, "unloadable": unloadable,
        "gc_missing_blobs": len(report.missing_blobs), "gc_invalid_manifests": len(report.invalid_manifests),
    }


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "interleave":
        print(json.dumps(interleave(int(argv[1]), int(argv[2]), argv[3])))
    elif command == "hazard":
        print(json.dumps(hazard()))
    elif command == "peer":
        peer(int(argv[1]))
    elif command == "commit":
        _commit(_lib(argv[1]), argv[2])
    elif command == "verify":
        print(json.dumps(verify(argv[1], argv[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
