"""A fork's carried runs are pinned by reference to the parent (``Journal._pin_source``): one small pin
manifest whose ``subject`` is the parent, whatever the number of runs. What the child commits is
the same as with the eager pin of every carried blob, and the carried blobs outlive the parent's
ref through OMMX 3's GC and ours.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry, gc, remove_image
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.format.journal import pin_refs

PARENT = "example.com/fork/parent:v1"


def _parent(n: int) -> Experiment:
    exp = Experiment(PARENT)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    exp.set_provenance(False)
    exp.log_json("shared", {"level": "experiment"})
    for i in range(n):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_json("cfg", {"i": i})
    exp.commit()
    return exp


def _child(parent: Experiment, name: str, *, eager: bool = False) -> Experiment:
    child = parent.fork(name)
    child.set_autosave_policy(AutosavePolicy.disabled())  # no draft slot: the pin alone protects the carried blobs
    child.set_provenance(False)
    session = child._session_or_raise()
    if eager:
        session.carried_source = None  # the former path: every carried blob in the first pin's layers
    session.start()
    if eager:
        session.journal._parsed.clear()  # the former path: views decode the carried rows from the journal
    return child


def _pins(name: str) -> list[Manifest]:
    registry = LocalRegistry.default()
    out = []
    for ref in pin_refs(registry, ImageName.parse(name)):
        digest = registry.resolve(ref)
        assert digest is not None
        out.append(Manifest.parse(registry.blobs.get(digest)))
    return out


def test_a_fork_pins_its_carried_runs_with_one_manifest_whose_subject_is_the_parent(registry_root: Path) -> None:
    parent = _parent(30)
    child = _child(parent, "example.com/fork/child:v1")
    (pin,) = _pins("example.com/fork/child:v1")
    assert pin.subject is not None and pin.subject.digest == parent.artifact.manifest_digest
    assert len(pin.layers) == 1  # not one layer per carried blob
    eager = _child(parent, "example.com/fork/eager:v1", eager=True)
    (eager_pin,) = _pins("example.com/fork/eager:v1")
    assert eager_pin.subject is None and len(eager_pin.layers) == 31
    assert [r.run_id for r in child.runs] == [r.run_id for r in eager.runs] == list(range(30))


def test_a_fork_commits_the_same_artifact_as_the_eager_carry(registry_root: Path) -> None:
    parent = _parent(20)
    by_reference = _child(parent, "example.com/fork/same:v1")
    eager = _child(parent, "example.com/fork/same:v1", eager=True)
    for child in (by_reference, eager):  # one more run each, closed at the same instant
        with child.run() as run:
            run.log_parameter("i", 20)
            run.log_json("cfg", {"i": 20})
    for child in (by_reference, eager):
        session = child._session_or_raise()
        session.journal.flush()
        with session.registry.db.journal_write("test: one close time") as conn:
            conn.execute("UPDATE oxe_journal_runs SET body = json_set(body, '$[5]', 1, '$[7]', 1) WHERE run_id = 20")
    assert [r.run_id for r in by_reference.runs] == [r.run_id for r in eager.runs] == list(range(21))
    digest = by_reference.commit().manifest_digest
    assert eager.commit().manifest_digest == digest  # same name: publishing the same digest again is a no-op
    assert by_reference.run_parameters_df()["i"].tolist() == list(range(21))


@pytest.mark.ommx3
def test_carried_blobs_survive_ommx3_gc_and_ours_after_the_parent_ref_is_removed(ommx3, registry_root: Path) -> None:
    parent = _parent(12)
    child = _child(parent, "example.com/fork/survivor:v1")
    with child.run() as run:
        run.log_parameter("i", 99)
    assert remove_image(PARENT) is not None  # the parent is now reachable only through the child's pin
    report = ommx3.run_json(
        """
import json
from ommx.artifact import gc
r = gc(delete=True, grace_period="0s")
print(json.dumps({"missing": len(r.missing_blobs), "invalid": len(r.invalid_manifests)}))
""",
        root=registry_root,
    )
    assert report == {"missing": 0, "invalid": 0}
    gc(delete=True, grace_period="0s", exclusive=True)
    child.commit()
    loaded = Experiment.load("example.com/fork/survivor:v1")
    assert [r.get_json("cfg") for r in loaded.runs[:12]] == [{"i": i} for i in range(12)]
    assert loaded.get_json("shared") == {"level": "experiment"}


def test_a_commit_after_its_draft_takes_the_drafts_layout_and_writes_the_same_bytes(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork + one run + draft + commit (the bench's path): the commit lays out no run again
    (``format.content.LayoutMemo``), and what it writes is byte for byte what a fresh build writes."""
    import json

    from ommx_experiment.engine.oci import canonical_json
    from ommx_experiment.format import content
    from ommx_experiment.format.codec import FINISHED, ExperimentConfig

    parent = _parent(20)
    child = _child(parent, "example.com/fork/memo:v1")
    with child.run() as run:
        run.log_parameter("i", -1)  # one of the parent's names: the mostly-uniform table
        run.log_parameter("extra", 0.5)
    session = child._session_or_raise()
    session.publish_checkpoint("draft", copy=True)
    laid_out: list[int] = []
    original = content._LayerList.run
    monkeypatch.setattr(content._LayerList, "run", lambda self, r: laid_out.append(r.run_id) or original(self, r))
    reused = session.build(FINISHED, parquet=False)
    assert laid_out == []  # nothing laid out again: the draft's layout, its texts and its table
    session._layout_memo = content.LayoutMemo()
    fresh = session.build(FINISHED, parquet=False)
    assert laid_out == list(range(21))
    assert (reused.manifest_bytes, reused.config_bytes) == (fresh.manifest_bytes, fresh.config_bytes)
    assert fresh.manifest_bytes == Manifest.to_bytes(fresh.manifest, layer_texts=None)
    session.publish_checkpoint("draft", copy=True)  # the memo holds the draft's layout again
    committed = child.commit()
    registry = LocalRegistry.default()
    stored = registry.blobs.get(committed.manifest_digest)
    manifest = Manifest.parse(stored)
    assert stored == canonical_json(manifest.to_dict())  # the slow path's bytes: json.dumps of the whole object
    config_bytes = registry.blobs.get(manifest.config.digest)
    assert config_bytes == fresh.config_bytes
    assert config_bytes == json.dumps(ExperimentConfig.parse(config_bytes).to_obj(), separators=(",", ":"), ensure_ascii=False).encode()
    assert manifest.layers[: len(fresh.manifest.layers)] == fresh.manifest.layers  # then our analysis layers
    loaded = Experiment.load("example.com/fork/memo:v1")
    assert loaded.run_parameters_df()["extra"].isna().sum() == 20


def test_a_changed_run_set_is_laid_out_again(registry_root: Path) -> None:
    from ommx_experiment.format.codec import FINISHED

    parent = _parent(5)
    child = _child(parent, "example.com/fork/memo-miss:v1")
    session = child._session_or_raise()
    first = session.build(FINISHED, parquet=False)
    with child.run() as run:
        run.log_parameter("i", 5)
    child.discard_run(0)
    second = session.build(FINISHED, parquet=False)
    assert [r.run_id for r in second.content.runs] == [1, 2, 3, 4, 5] != [r.run_id for r in first.content.runs]
    assert len(second.manifest.layers) == len(first.manifest.layers) - 1  # run 0's cfg gone; run 5 has no blobs
    assert second.manifest.layers[1:5] == first.manifest.layers[2:6]


@pytest.mark.ommx3
def test_ommx3_loads_a_fork_committed_after_its_draft(ommx3, registry_root: Path) -> None:
    parent = _parent(10)
    child = parent.fork("example.com/fork/memo-ommx:v1")
    child.set_provenance(False)
    with child.run() as run:
        run.log_parameter("i", -1)
    child._session_or_raise().publish_checkpoint("draft", copy=True)
    child.commit()
    got = ommx3.run_json(
        """
import json
from ommx.experiment import Experiment
e = Experiment.load("example.com/fork/memo-ommx:v1")
df = e.run_parameters_df()
print(json.dumps({"runs": [r.run_id for r in e.runs], "i": [int(v) for v in df["i"]], "cfg": e.runs[3].get_json("cfg")}))
""",
        root=registry_root,
    )
    assert got == {"runs": list(range(11)), "i": [*range(10), -1], "cfg": {"i": 3}}


@pytest.mark.parametrize("sparse", [False, True])
def test_a_parents_parameters_by_run_are_the_tables_cells(registry_root: Path, sparse: bool) -> None:
    parent = Experiment("example.com/fork/params:v1")
    parent.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(6):
        with parent.run() as run:
            run.log_parameter("b", i * 0.5)
            run.log_parameter("a", i)
            if not sparse or i % 2:
                run.log_parameter("c", f"s{i}")
    parent.commit()
    sealed = Experiment.load("example.com/fork/params:v1")._committed()
    expected: dict[int, dict[str, object]] = {}
    for column in sealed.table().columns:  # the general walk, column by column
        for run_id, value in column.values.items():
            expected.setdefault(run_id, {})[column.name] = value
    got = sealed.params_by_run()
    assert got == expected and [list(p) for p in got.values()] == [list(p) for p in expected.values()]
    assert list(got) == list(range(6))
