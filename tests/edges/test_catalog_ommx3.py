"""Listings of a root that OMMX 3.0.0b7 and we both wrote to: both sides must agree."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers.catalog_support import commit_checkpoint, commit_experiment, commit_generic, drop_cache_rows, sql
from helpers.ours_on_ommx3 import OursOnOmmx3

from ommx_experiment.edges import catalog
from ommx_experiment.engine.registry import LocalRegistry

OMMX_WRITES = """
    from ommx.experiment import Experiment, AutosavePolicy
    from ommx.artifact import ArtifactDraft
    with Experiment("example.com/ommx/base:v1") as e:
        e.set_annotation("com.example.owner", "ommx")
        for i in range(3):
            with e.run() as r:
                r.log_parameter("seed", i)
    child = Experiment.load("example.com/ommx/base:v1").fork("example.com/ommx/child:v1")
    with child:
        with child.run() as r:
            r.log_parameter("seed", 10)
    try:
        with Experiment("example.com/ommx/failed:v1") as f:
            with f.run() as r:
                r.log_parameter("seed", 3)
            raise ValueError("boom")
    except ValueError:
        pass
    draft = Experiment("example.com/ommx/draft:v1")
    with draft.run() as r:
        r.log_parameter("seed", 4)
    anon = Experiment()
    with anon:
        with anon.run():
            pass
    d = ArtifactDraft.new("example.com/ommx/generic:v1")
    d.add_json({"a": 1})
    d.commit()
"""

OMMX_LISTS = """
    import json, warnings
    from ommx.experiment import list_experiments, list_experiment_checkpoints
    from ommx.artifact import list_artifacts, get_images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exps = [
            [r.image_name, r.manifest_digest, r.config_digest, r.status, r.run_count, r.solve_count,
             r.sampling_count, r.annotations, r.updated_at, r.config]
            for r in list_experiments()
        ]
        cks = [
            [r.checkpoint_image_name, r.requested_image_name, r.manifest_digest, r.config_digest, r.status,
             r.run_count, r.updated_at]
            for r in list_experiment_checkpoints()
        ]
        arts = [
            [r.image_name, r.manifest_digest, r.artifact_type, r.config_digest, r.annotations, r.updated_at]
            for r in list_artifacts(include_internal=True)
        ]
        images = get_images()
    print(json.dumps({"experiments": exps, "checkpoints": cks, "artifacts": arts, "images": images,
                      "warnings": [str(w.message) for w in caught]}))
"""


def _ours(root: Path) -> dict[str, Any]:
    catalog._clear_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exps = [
            [r.image_name, r.manifest_digest, r.config_digest, r.status, r.run_count, r.solve_count,
             r.sampling_count, dict(r.annotations), r.updated_at, r.config]
            for r in catalog.list_experiments(root=root)
        ]
        cks = [
            [r.checkpoint_image_name, r.requested_image_name, r.manifest_digest, r.config_digest, r.status,
             r.run_count, r.updated_at]
            for r in catalog.list_experiment_checkpoints(root=root)
        ]
        arts = [
            [r.image_name, r.manifest_digest, r.artifact_type, r.config_digest, dict(r.annotations), r.updated_at]
            for r in catalog.list_artifacts(root=root, include_internal=True)
        ]
        images = catalog.get_images(root=root)
    return {"experiments": exps, "checkpoints": cks, "artifacts": arts, "images": images,
            "warnings": [str(w.message) for w in caught]}


@pytest.fixture
def shared_root(ommx3, registry_root: Path) -> Path:  # type: ignore[no-untyped-def]
    ommx3.run(OMMX_WRITES, root=registry_root)
    registry = LocalRegistry.at(registry_root)
    commit_experiment(registry, "example.com/ours/solves:v1", runs=2, solves=2, annotations={"k": "v"})
    commit_experiment(registry, "example.com/ours/failed:v1", status="failed", reason="RuntimeError: x", seed=3)
    commit_checkpoint(registry, "example.com/ours/ck:v1", status="interrupted", seed=5)
    commit_generic(registry, "example.com/ours/generic:v1", payload=b'{"ours": true}')
    return registry_root


def test_both_listings_agree_on_a_shared_root(ommx3, shared_root: Path) -> None:  # type: ignore[no-untyped-def]
    ours = _ours(shared_root)
    theirs = ommx3.run_json(OMMX_LISTS, root=shared_root)
    assert theirs["warnings"] == [] and ours["warnings"] == []
    assert ours == theirs
    names = [e[0] for e in ours["experiments"]]
    assert "example.com/ommx/base:v1" in names and "example.com/ours/solves:v1" in names
    statuses = {c[1]: c[4] for c in ours["checkpoints"]}
    assert statuses == {
        "example.com/ommx/draft:v1": "draft",
        "example.com/ommx/failed:v1": "failed",
        "example.com/ours/ck:v1": "interrupted",
    }


def test_agreement_after_ommx_backfills_and_after_we_backfill(ommx3, shared_root: Path) -> None:  # type: ignore[no-untyped-def]
    drop_cache_rows(shared_root)
    ours_first = _ours(shared_root)  # we back-fill what OMMX wrote
    theirs = ommx3.run_json(OMMX_LISTS, root=shared_root)
    assert theirs["warnings"] == [] and ours_first == theirs
    drop_cache_rows(shared_root)
    theirs_first = ommx3.run_json(OMMX_LISTS, root=shared_root)  # OMMX back-fills what we wrote
    assert theirs_first["warnings"] == [] and _ours(shared_root) == theirs_first


def test_tampered_row_warns_on_both_sides(ommx3, shared_root: Path) -> None:  # type: ignore[no-untyped-def]
    _ours(shared_root)
    digest = str(sql(shared_root, "SELECT manifest_digest FROM refs WHERE name = 'example.com/ommx/base'")[0][0])
    sql(shared_root, "UPDATE artifact_manifests SET manifest_json = ? WHERE manifest_digest = ?", (b"{}", digest))
    ours = _ours(shared_root)
    assert any("repaired from CAS" in w and digest in w for w in ours["warnings"])
    theirs = ommx3.run_json(OMMX_LISTS, root=shared_root)  # we already repaired it: no warning left
    assert theirs["warnings"] == []
    assert {k: v for k, v in ours.items() if k != "warnings"} == {k: v for k, v in theirs.items() if k != "warnings"}


# --- list_experiment_checkpoints: the same calls through OMMX 3 and through us (issue 13) -------------

_CHECKPOINT_STEPS = """
import json, warnings
warnings.simplefilter("ignore")

def listed(prefix, **kw):
    return [[c.requested_image_name, c.status, c.run_count, c.solve_count, c.sampling_count, repr(c)]
            for c in L.list_experiment_checkpoints(prefix, **kw)]

out, journal, immediate = {}, {}, None
policies = {"every_n_runs(2)": L.AutosavePolicy.every_n_runs(2), "disabled()": L.AutosavePolicy.disabled(),
            "every_run_close()": L.AutosavePolicy.every_run_close(), "default": None}
for label, policy in policies.items():
    prefix = "example.com/parity/" + label.split("(")[0]
    e = L.Experiment(prefix + ":v1")
    if policy is not None:
        e.set_autosave_policy(policy)
    steps, drafts = [], []
    for i in range(3):
        with e.run() as r:
            r.log_parameter("x", i)
        if LIB == "ours" and policy is None and i == 0:  # our default defers its first draft by 0.2 s
            immediate = listed(prefix)
            importlib.import_module("ommx_experiment.lifecycle.autosave").LATER.run_all()  # wait for it
        steps.append(listed(prefix))
        if LIB == "ours":
            drafts.append(listed(prefix, include_journal=True))
    e.commit()
    steps.append(listed(prefix))
    out[label], journal[label] = steps, drafts
try:
    with L.Experiment("example.com/parity/failed:v1") as e:
        with e.run() as r:
            r.log_parameter("x", 1)
        raise ValueError("boom")
except ValueError:
    pass
out["failed"] = listed("example.com/parity/failed")
print(json.dumps({"listed": out, "journal": journal, "immediate": immediate}))
"""


def test_checkpoint_listing_matches_ommx_and_journal_drafts_need_include_journal(
    ours3: OursOnOmmx3, tmp_path: Path
) -> None:
    both = ours3.run_both(_CHECKPOINT_STEPS, tmp_path)
    ommx, ours = both["ommx"]["listed"], both["ours"]["listed"]
    for label in ("every_n_runs(2)", "disabled()", "every_run_close()", "failed"):
        assert ours[label] == ommx[label], label
    assert ommx["disabled()"] == [[], [], [], []]  # journal drafts would have listed 1, 2, 3 runs here
    # OMMX's default policy publishes after every close; ours (min_interval(60)) 0.2 s after the first
    # close, then once within 60 s, so its listing lags while the journal is current: include_journal=True
    # shows OMMX's.
    runs = [[entry[2] for entry in step] for step in ommx["default"]]
    assert runs == [[1], [2], [3], []]
    assert both["ours"]["immediate"] == []  # right after the first close: the draft is not published yet
    assert [[entry[2] for entry in step] for step in ours["default"]] == [[1], [1], [1], []]
    assert [[entry[2] for entry in step] for step in both["ours"]["journal"]["default"]] == runs[:3]
    assert [[entry[2] for entry in step] for step in both["ours"]["journal"]["disabled()"]] == [[1], [2], [3]]
