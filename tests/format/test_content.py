"""format.content: the fast copies of RunContent agree with the dataclass' own."""

from __future__ import annotations

import dataclasses

from ommx_experiment.engine.oci import Descriptor
from ommx_experiment.format.content import _RUN_FIELDS, AttachmentContent, RunContent, SolveContent

D = "sha256:" + "1" * 64


def test_timed_is_dataclasses_replace_of_the_times() -> None:
    assert {f.name for f in dataclasses.fields(RunContent)} == {*_RUN_FIELDS, "started_ns", "finished_ns"}
    desc = Descriptor("application/json", D, 3)
    call = SolveContent(0, "finished", desc, None, "a")
    run = RunContent(7, "failed", "r", AttachmentContent({"x": desc}, {"x": "x.json"}), desc, (call,), (call,), 1, 2, {D: b"abc"})
    timed = run.timed(5, 6)
    expected = dataclasses.replace(run, started_ns=5, finished_ns=6)
    assert [getattr(timed, f.name) for f in dataclasses.fields(RunContent)] == [
        getattr(expected, f.name) for f in dataclasses.fields(RunContent)
    ]
