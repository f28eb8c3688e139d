"""A writer of a shared experiment, driven line by line over stdin (tests/lifecycle/test_shared_*.py).

Commands (one JSON array per line; one JSON reply per line on stdout):

- ``["join", name]`` → ``{"ok": true}``
- ``["open", key, value]`` → ``{"run_id": N}``: a new Run with one parameter
- ``["log", run_id, key, value]`` → ``{"ok": true}`` (or ``{"error": ...}``)
- ``["attach", run_id, name, hex]`` → ``{"ok": true}``: ``log_attachment`` of ``bytes.fromhex(hex)``
  (``application/octet-stream``) and ``log_json(name + ".json", {"hex": hex})``
- ``["close", run_id]`` → ``{"ok": true}`` (or ``{"error": type, "message": ...}``)
- ``["discard", run_id]`` → ``{"ok": true}`` or an error
- ``["commit"]`` → ``{"digest": ...}`` or an error
- ``["hold"]`` → ``{"ok": true}``: group commit writes no batch until commit or exit
  (no size or time trigger), so closes stay deferred in the open-run log
- ``["deferred"]`` → ``{"deferred": N}``: closes of this writer whose rows are not written yet
- ``["exit"]``: leave cleanly

``loop NAME PREFIX [PAUSE]`` instead of commands: join NAME, then close runs with
parameter ``token = PREFIX-<i>`` forever, printing ``closed <token> <run_id>``
after each close returned (the caller kills us at random, or a close raises);
with ``PAUSE`` (seconds) a random pause of up to that long follows each close.
"""

from __future__ import annotations

import json
import sys


def _serve() -> None:
    from ommx_experiment import Experiment

    exp = None
    runs: dict[int, object] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd[0] == "join":
                exp = Experiment.join(cmd[1])
                reply: dict[str, object] = {"ok": True}
            elif cmd[0] == "open":
                assert exp is not None
                run = exp.run()
                run.log_parameter(cmd[1], cmd[2])
                runs[run.run_id] = run
                reply = {"run_id": run.run_id}
            elif cmd[0] == "log":
                runs[cmd[1]].log_parameter(cmd[2], cmd[3])  # type: ignore[attr-defined]
                reply = {"ok": True}
            elif cmd[0] == "attach":
                run = runs[cmd[1]]
                run.log_attachment(cmd[2], "application/octet-stream", bytes.fromhex(cmd[3]))  # type: ignore[attr-defined]
                run.log_json(cmd[2] + ".json", {"hex": cmd[3]})  # type: ignore[attr-defined]
                reply = {"ok": True}
            elif cmd[0] == "close":
                runs.pop(cmd[1]).finish()  # type: ignore[attr-defined]
                reply = {"ok": True}
            elif cmd[0] == "discard":
                assert exp is not None
                exp.discard_run(cmd[1])
                reply = {"ok": True}
            elif cmd[0] == "commit":
                assert exp is not None
                reply = {"digest": exp.commit().manifest_digest}
            elif cmd[0] == "hold":
                from ommx_experiment.lifecycle import session as session_module

                session_module.GROUP_COMMIT_RUNS = 10**9
                session_module.GROUP_COMMIT_SECONDS = 10**6
                reply = {"ok": True}
            elif cmd[0] == "deferred":
                assert exp is not None
                reply = {"deferred": len(exp._session_or_raise().journal.deferred)}
            elif cmd[0] == "exit":
                return
            else:
                reply = {"error": "usage", "message": repr(cmd)}
        except Exception as exc:  # reported to the driver, which decides
            reply = {"error": type(exc).__name__, "message": str(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _loop(name: str, prefix: str, pause: float = 0.0) -> None:
    import random
    import time

    from ommx_experiment import Experiment

    exp = Experiment.join(name)
    i = 0
    while True:
        token = f"{prefix}-{i}"
        with exp.run() as run:
            run.log_parameter("token", token)
            run.log_parameter("i", i)
            run_id = run.run_id
        sys.stdout.write(f"closed {token} {run_id}\n")
        sys.stdout.flush()
        i += 1
        if pause:
            time.sleep(random.uniform(0, pause))


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "loop":
        _loop(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else 0.0)
    else:
        _serve()
