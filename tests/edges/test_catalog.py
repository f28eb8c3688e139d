"""Listings: list_experiments, list_experiment_checkpoints, list_artifacts, get_images, experiments_df."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
from helpers.catalog_support import (
    cache_counts,
    commit_checkpoint,
    commit_experiment,
    commit_generic,
    drop_cache_rows,
    experiment_manifest,
    put,
    sql,
)

from ommx_experiment import media_types as mt
from ommx_experiment.edges import catalog
from ommx_experiment.engine.names import checkpoint_repository
from ommx_experiment.engine.registry import LocalRegistry


@pytest.fixture
def registry(registry_root: Path) -> LocalRegistry:
    return LocalRegistry.at(registry_root)


@pytest.fixture(autouse=True)
def _cold_catalog_caches() -> None:
    catalog._clear_caches()


def test_list_experiments_fields_and_order(registry: LocalRegistry) -> None:
    b = commit_experiment(registry, "example.com/team/b:v1", runs=2, solves=3, annotations={"com.example.owner": "me"})
    a = commit_experiment(registry, "example.com/team/a:v1", runs=1, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refs = catalog.list_experiments()
    assert [r.image_name for r in refs] == ["example.com/team/a:v1", "example.com/team/b:v1"]
    ref = refs[1]
    assert (ref.manifest_digest, ref.status, ref.run_count, ref.solve_count, ref.sampling_count) == (
        b, "finished", 2, 6, 0,
    )
    assert ref.annotations == {"com.example.owner": "me"}
    assert ref.config_digest.startswith("sha256:") and "T" in ref.updated_at
    assert ref.config["status"] == "finished" and len(ref.config["runs"]) == 2
    assert repr(ref) == "ExperimentRef(image_name='example.com/team/b:v1', status='finished', runs=2, solves=6, samplings=0)"
    assert refs[0].manifest_digest == a and refs[0].annotations == {}


def test_config_is_a_fresh_dict_each_time(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/team/a:v1")
    ref = catalog.list_experiments()[0]
    ref.config["status"] = "mutated"
    assert ref.config["status"] == "finished"
    assert catalog.list_experiments()[0].config["status"] == "finished"


def test_prefix_is_a_plain_string_prefix_of_the_canonical_ref(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/team/case:latest")
    commit_experiment(registry, "example.com/team/other:v1", seed=3)
    assert [r.image_name for r in catalog.list_experiments("example.com/team/case:lat")] == [
        "example.com/team/case:latest"
    ]
    assert catalog.list_experiments("example.com/nobody") == []
    with pytest.raises(ValueError, match="prefix"):
        catalog.list_experiments(3)  # type: ignore[arg-type]


def test_empty_root_is_created_and_lists_nothing(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    assert catalog.list_experiments(root=root) == []
    assert catalog.list_artifacts(root=root) == []
    assert catalog.list_experiment_checkpoints(root=root) == []
    assert catalog.get_images(root=root) == []
    assert (root / "index.sqlite3").is_file()


def test_failed_status_under_a_normal_name_is_listed(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/team/failed:v1", status="failed", reason="ValueError: x")
    [ref] = catalog.list_experiments()
    assert ref.status == "failed" and ref.config["outcome"] == {"reason": "ValueError: x"}


def test_checkpoints_are_hidden_except_where_asked(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/team/done:v1")
    commit_checkpoint(registry, "example.com/team/ck:v1", status="failed")
    commit_generic(registry, "example.com/team/gen:v1")
    assert [r.image_name for r in catalog.list_experiments()] == ["example.com/team/done:v1"]
    visible = [r.image_name for r in catalog.list_artifacts()]
    assert visible == ["example.com/team/done:v1", "example.com/team/gen:v1"]
    assert all(not n.startswith(checkpoint_repository(registry.registry_id)) for n in visible)
    internal = catalog.list_artifacts(include_internal=True)
    assert len(internal) == 3
    assert any(r.image_name.startswith(checkpoint_repository(registry.registry_id)) for r in internal)
    assert len(catalog.get_images()) == 3


def test_list_artifacts_fields(registry: LocalRegistry) -> None:
    gen = commit_generic(registry, "example.com/team/a:v1")
    exp = commit_experiment(registry, "example.com/team/b:v1")
    a, b = catalog.list_artifacts("example.com/team/")
    assert (a.artifact_type, a.manifest_digest, a.annotations) == (mt.GENERIC_ARTIFACT_TYPE, gen, {})
    assert a.config_digest == mt.OCI_EMPTY_CONFIG_DIGEST == a.manifest["config"]["digest"]
    assert (b.artifact_type, b.manifest_digest) == (mt.EXPERIMENT_ARTIFACT_TYPE, exp)
    assert b.manifest["config"]["digest"] == b.config_digest
    assert repr(a).startswith('ArtifactRef(image_name="example.com/team/a:v1", artifact_type=')


def test_checkpoint_listing_statuses_prefix_and_order(registry: LocalRegistry) -> None:
    commit_checkpoint(registry, "example.com/team/zz:v1", status="draft", runs=2)
    commit_checkpoint(registry, "example.com/team/aa:v1", status="failed")
    commit_checkpoint(registry, "example.com/other/x:v1", status="interrupted", seed=4)
    refs = catalog.list_experiment_checkpoints()
    assert [(r.requested_image_name, r.status) for r in refs] == [
        ("example.com/other/x:v1", "interrupted"),
        ("example.com/team/aa:v1", "failed"),
        ("example.com/team/zz:v1", "draft"),
    ]
    assert refs[2].run_count == 2 and refs[2].config["requested_image_name"] == "example.com/team/zz:v1"
    tag = hashlib.sha256(b"example.com/team/aa:v1").hexdigest()
    assert refs[1].checkpoint_image_name == f"{checkpoint_repository(registry.registry_id)}:{tag}"
    assert [r.status for r in catalog.list_experiment_checkpoints(statuses=["failed"])] == ["failed"]
    assert [r.status for r in catalog.list_experiment_checkpoints("example.com/team/", statuses=["draft", "failed"])] == [
        "failed", "draft",
    ]
    assert catalog.list_experiment_checkpoints("example.com/team/", statuses=["interrupted"]) == []
    assert repr(refs[1]).startswith("ExperimentCheckpointRef(requested_image_name='example.com/team/aa:v1', status='failed'")


def test_unknown_checkpoint_status_is_rejected_before_opening(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    root = blocker / "registry"
    with pytest.raises(ValueError, match="Unknown Experiment checkpoint status `finished`"):
        catalog.list_experiment_checkpoints(statuses=["finished"], root=root)
    assert blocker.read_text() == "not a directory"


def test_internal_refs_in_the_checkpoint_repository_are_skipped_silently(registry: LocalRegistry) -> None:
    repo = checkpoint_repository(registry.registry_id)
    commit_generic(registry, f"{repo}:pin-{'a' * 64}")
    commit_generic(registry, f"{repo}:{'b' * 64}", payload=b"pin payload")  # generic under a checkpoint-shaped tag
    commit_experiment(registry, f"{repo}:journal-v1", status="draft", requested="example.com/t/x:v1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert catalog.list_experiment_checkpoints() == []


def test_inconsistent_checkpoints_are_skipped_with_a_warning(registry: LocalRegistry) -> None:
    repo = checkpoint_repository(registry.registry_id)
    commit_experiment(registry, f"{repo}:{'c' * 64}", status="draft", requested="example.com/t/x:v1")
    with pytest.warns(RuntimeWarning, match="does not match the checkpoint ref"):
        assert catalog.list_experiment_checkpoints() == []
    with pytest.raises(RuntimeError, match="does not match the checkpoint ref"):
        catalog.list_experiment_checkpoints(strict=True)


def test_missing_cache_rows_are_backfilled_exactly(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/team/a:v1", cache=False)
    commit_generic(registry, "example.com/team/g:v1")
    drop_cache_rows(registry.root)
    assert cache_counts(registry.root) == (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalog.list_artifacts()
    assert cache_counts(registry.root) == (2, 0)  # artifact listings need no config rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalog.list_experiments()
    assert cache_counts(registry.root) == (2, 1)
    manifest, artifact_type, config_digest = sql(
        registry.root,
        "SELECT manifest_json, artifact_type, config_digest FROM artifact_manifests WHERE manifest_digest = ?",
        (digest,),
    )[0]
    assert manifest == registry.blobs.get(digest) and artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE
    [(config,)] = sql(registry.root, "SELECT config_json FROM experiment_configs WHERE config_digest = ?", (config_digest,))
    assert config == registry.blobs.get(str(config_digest))


def test_tampered_manifest_row_is_repaired_with_a_warning(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/team/a:v1")
    sql(registry.root, "UPDATE artifact_manifests SET manifest_json = ? WHERE manifest_digest = ?", (b"{}", digest))
    with pytest.raises(RuntimeError, match="Cached Manifest JSON does not match"):
        catalog.list_experiments(strict=True)
    with pytest.warns(RuntimeWarning, match="repaired from CAS") as record:
        refs = catalog.list_experiments()
    assert [r.manifest_digest for r in refs] == [digest]
    assert record[0].filename == __file__  # attributed to the caller
    [(stored,)] = sql(registry.root, "SELECT manifest_json FROM artifact_manifests WHERE manifest_digest = ?", (digest,))
    assert stored == registry.blobs.get(digest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalog.list_experiments(strict=True)


def test_wrong_artifact_type_column_is_repaired(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/team/a:v1")
    catalog.list_experiments()  # warm the in-process cache too
    sql(registry.root, "UPDATE artifact_manifests SET artifact_type = 'x' WHERE manifest_digest = ?", (digest,))
    with pytest.warns(RuntimeWarning, match="repaired from CAS"):
        assert len(catalog.list_experiments()) == 1
    assert sql(registry.root, "SELECT artifact_type FROM artifact_manifests")[0][0] == mt.EXPERIMENT_ARTIFACT_TYPE


def test_tampered_config_row_is_repaired_with_a_warning(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/team/a:v1", runs=3)
    sql(registry.root, "UPDATE experiment_configs SET config_json = ?", (b'{"status":"draft"}',))
    with pytest.raises(RuntimeError, match="Cached Experiment Config JSON does not match"):
        catalog.list_experiments(strict=True)
    with pytest.warns(RuntimeWarning, match="repaired from CAS"):
        [ref] = catalog.list_experiments()
    assert ref.run_count == 3
    [(config_digest, config)] = sql(registry.root, "SELECT config_digest, config_json FROM experiment_configs")
    assert config == registry.blobs.get(str(config_digest))


def test_unreadable_ref_is_skipped_with_a_warning(registry: LocalRegistry) -> None:
    broken = commit_experiment(registry, "example.com/team/broken:v1", cache=False)
    commit_experiment(registry, "example.com/team/ok:v1", seed=9)
    registry.blobs.path(broken).unlink()
    with pytest.warns(RuntimeWarning, match=r"example.com/team/broken:v1 .*Failed to read blob"):
        assert [r.image_name for r in catalog.list_experiments()] == ["example.com/team/ok:v1"]
    with pytest.raises(RuntimeError, match="Failed to read blob"):
        catalog.list_experiments(strict=True)


def test_non_ommx_artifact_type_warns(registry: LocalRegistry) -> None:
    config = put(registry, mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_BYTES)
    manifest = (
        b'{"artifactType":"application/vnd.ours.checkpoint.v1","config":' + _desc(config) + b',"layers":[],"schemaVersion":2}'
    )
    digest = put(registry, mt.OCI_MANIFEST, manifest).digest
    registry.publish("ours.local/checkpoint:abc", digest)
    with pytest.warns(RuntimeWarning, match="artifactType` must be one of"):
        assert catalog.list_artifacts() == []
    assert catalog.get_images() == ["ours.local/checkpoint:abc"]


def _desc(desc: object) -> bytes:
    import json

    return json.dumps(desc.to_dict(with_annotations=False), sort_keys=True, separators=(",", ":")).encode()  # type: ignore[attr-defined]


def test_corrupt_ref_name_warns_in_listings_and_raises_in_get_images(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/team/ok:v1")
    sql(
        registry.root,
        "INSERT INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?)",
        ("example.com/Team/upper", "v1", digest, "2026-01-01T00:00:00+00:00"),
    )
    with pytest.warns(RuntimeWarning, match="Invalid Local Registry image ref"):
        assert len(catalog.list_experiments()) == 1
    with pytest.raises(RuntimeError, match="Invalid Local Registry image ref"):
        catalog.get_images()


def test_warm_listing_decodes_no_json(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        commit_experiment(registry, f"example.com/team/e{i}:v1", seed=i)
    first = catalog.list_experiments()
    calls: list[str] = []

    def counting(original):  # type: ignore[no-untyped-def]
        def wrapper(raw: bytes, digest: str):  # type: ignore[no-untyped-def]
            calls.append(digest)
            return original(raw, digest)

        return wrapper

    monkeypatch.setattr(catalog, "_parse_manifest", counting(catalog._parse_manifest))
    monkeypatch.setattr(catalog, "_parse_config", counting(catalog._parse_config))
    assert catalog.list_experiments() == first
    assert calls == []


def test_config_row_is_used_when_only_the_manifest_row_is_missing(
    registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = commit_experiment(registry, "example.com/team/a:v1")
    sql(registry.root, "DELETE FROM artifact_manifests")
    config_digest = str(json.loads(registry.blobs.get(digest))["config"]["digest"])
    read: list[str] = []
    original = type(registry.blobs).get

    def counting_get(self, d, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.append(d)
        return original(self, d, *args, **kwargs)

    monkeypatch.setattr(type(registry.blobs), "get", counting_get)
    [ref] = catalog.list_experiments()
    assert ref.config_digest == config_digest and read == [digest]
    assert cache_counts(registry.root) == (1, 1)


def test_backfill_skips_a_ref_that_moved_meanwhile(registry: LocalRegistry) -> None:
    old = commit_experiment(registry, "example.com/team/a:v1", cache=False)
    new, _, _ = experiment_manifest(registry, seed=99)
    drop_cache_rows(registry.root)
    moved = []

    def keep(image, canonical):  # type: ignore[no-untyped-def]
        if not moved:  # another process re-points the ref after our SELECT
            sql(registry.root, "UPDATE refs SET manifest_digest = ? WHERE name = ?", (new, image.repository))
            moved.append(True)
        return True

    rows = catalog._Scan(registry, strict=False, experiments=True).rows(keep)
    assert [r.manifest_digest for r in rows] == [old]
    assert cache_counts(registry.root) == (0, 0)


def test_experiments_df(registry: LocalRegistry) -> None:
    pd = pytest.importorskip("pandas")
    commit_experiment(registry, "example.com/team/a:v1", runs=2, solves=1, annotations={"owner": "ann"})
    commit_experiment(registry, "example.com/team/b:v1", seed=5)
    df = catalog.experiments_df(annotations=["owner", "missing"])
    assert list(df.columns) == [
        "image_name", "status", "runs", "solves", "samplings", "updated_at", "manifest_digest", "owner", "missing",
    ]
    assert df["image_name"].tolist() == ["example.com/team/a:v1", "example.com/team/b:v1"]
    assert df["runs"].tolist() == [2, 1] and str(df["runs"].dtype) == "Int64"
    assert df["solves"].tolist() == [2, 0]
    assert df.loc[0, "owner"] == "ann" and df.loc[1, "owner"] is pd.NA and df["missing"].isna().all()
    assert str(df["updated_at"].dt.tz) == "UTC"
    empty = catalog.experiments_df("nothing/")
    assert len(empty) == 0 and "image_name" in empty.columns


def test_listing_sessions_of_our_experiment_api(registry_root: Path) -> None:
    from ommx_experiment.edges import maintenance
    from ommx_experiment.lifecycle.experiment import Experiment

    with Experiment("example.com/api/done:v1") as exp:
        with exp.run() as run:
            run.log_parameter("a", 1)
    live = Experiment("example.com/api/live:v1")  # unsealed: journal + pins only
    with live.run() as run:
        run.log_parameter("a", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.image_name for r in catalog.list_experiments()] == ["example.com/api/done:v1"]
        drafts = catalog.list_experiment_checkpoints()
    assert all(r.requested_image_name == "example.com/api/live:v1" for r in drafts)
    report = maintenance.gc(delete=True, grace_period="0s")
    assert report.missing_blobs == () and report.invalid_manifests == ()
    assert live.run_parameters_df()["a"].tolist() == [2]


# --- journal drafts (issue 7) ---------------------------------------------------------------------------------

JOURNALED = "example.com/journal/sweep:v1"


def _journaled_session(n_runs: int, name: str = JOURNALED):  # type: ignore[no-untyped-def]
    from ommx_experiment import AutosavePolicy
    from ommx_experiment.lifecycle.experiment import Experiment

    exp = Experiment(name)
    exp.set_autosave_policy(AutosavePolicy.disabled())  # the journal only: no OMMX-format checkpoint
    exp.set_annotation("com.example.owner", "ann")
    _close(exp, n_runs)
    return exp


def _close(exp, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        with exp.run() as run:
            run.log_parameter("i", run.run_id)
            run.log_attachment("out", "application/octet-stream", f"out-{run.run_id}".encode())


def test_journal_only_session_is_listed_as_a_draft(registry: LocalRegistry) -> None:
    from ommx_experiment.engine.names import ImageName
    from ommx_experiment.format.journal import checkpoint_ref, read_journal

    exp = _journaled_session(3)
    assert registry.resolve(checkpoint_ref(registry, ImageName.parse(JOURNALED))) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert catalog.list_experiment_checkpoints(strict=True) == []  # OMMX's listing: no checkpoint ref
        [ref] = catalog.list_experiment_checkpoints(strict=True, include_journal=True)
    assert (ref.requested_image_name, ref.status, ref.run_count, ref.solve_count, ref.sampling_count) == (
        JOURNALED, "draft", 3, 0, 0,
    )
    assert ref.from_journal and ref.manifest_digest is None and ref.config_digest is None
    assert ref.checkpoint_image_name == str(checkpoint_ref(registry, ImageName.parse(JOURNALED)))
    assert ref.annotations == {"com.example.owner": "ann"}
    assert ref.updated_at == read_journal(registry, ImageName.parse(JOURNALED)).updated_at
    config = ref.config
    assert config["status"] == "draft" and config["requested_image_name"] == JOURNALED
    assert [r["run_id"] for r in config["runs"]] == [0, 1, 2]
    drafts = catalog.list_experiment_checkpoints(statuses=["draft"], include_journal=True)
    assert [r.requested_image_name for r in drafts] == [JOURNALED]
    assert catalog.list_experiment_checkpoints(statuses=["failed"], include_journal=True) == []
    assert catalog.list_experiment_checkpoints("example.com/journal/", include_journal=True) == [ref]
    assert catalog.list_experiment_checkpoints("example.com/other/", include_journal=True) == []
    assert catalog.list_experiments() == []  # a draft is never an experiment
    exp.commit()
    assert catalog.list_experiment_checkpoints(include_journal=True) == []
    assert [r.image_name for r in catalog.list_experiments()] == [JOURNALED]


def test_journal_draft_config_equals_a_published_draft(registry: LocalRegistry) -> None:
    from ommx_experiment.edges.catalog import journal_draft
    from ommx_experiment.engine.names import ImageName

    exp = _journaled_session(2)
    exp.log_attachment("top", "application/json", b"{}")
    draft = journal_draft(registry, ImageName.parse(JOURNALED))
    exp._session.publish_checkpoint("draft")  # now the OMMX slot is the newer one
    [slot] = catalog.list_experiment_checkpoints()
    assert not slot.from_journal and slot.manifest_digest is not None
    assert draft is not None and draft.config_json == slot.config_json
    assert draft.run_count == slot.run_count == 2


def test_one_entry_per_name_the_newer_of_slot_and_journal(registry: LocalRegistry) -> None:
    import time

    exp = _journaled_session(2)
    time.sleep(0.01)
    slot_digest = exp._session.publish_checkpoint("draft")
    [ref] = catalog.list_experiment_checkpoints(include_journal=True)
    assert (ref.from_journal, ref.manifest_digest, ref.run_count) == (False, slot_digest, 2)
    time.sleep(0.01)
    _close(exp, 1)  # the journal moves past the slot
    [ref] = catalog.list_experiment_checkpoints(include_journal=True)
    assert (ref.from_journal, ref.manifest_digest, ref.run_count) == (True, None, 3)
    [ref] = catalog.list_experiment_checkpoints()  # OMMX's listing: the slot only
    assert (ref.from_journal, ref.manifest_digest, ref.run_count) == (False, slot_digest, 2)


def test_failed_checkpoint_newer_than_the_journal_wins(registry: LocalRegistry) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with _journaled_session(2):
            raise RuntimeError("boom")
    [ref] = catalog.list_experiment_checkpoints(include_journal=True)
    assert (ref.status, ref.from_journal, ref.run_count) == ("failed", False, 2)
    assert catalog.list_experiment_checkpoints(statuses=["draft"], include_journal=True) == []


def test_unreadable_journal_is_skipped_with_a_warning(registry: LocalRegistry) -> None:
    _journaled_session(1)
    _journaled_session(1, "example.com/journal/ok:v1")
    sql(
        registry.root,
        "UPDATE oxe_journal_runs SET body = 'not json' WHERE session_id = "
        "(SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?)",
        (JOURNALED,),
    )
    with pytest.warns(RuntimeWarning, match=f"journal of {JOURNALED} during journal draft"):
        refs = catalog.list_experiment_checkpoints(include_journal=True)
    assert [r.requested_image_name for r in refs] == ["example.com/journal/ok:v1"]
    with pytest.raises(RuntimeError, match="Invalid checkpoint journal run row"):
        catalog.list_experiment_checkpoints(strict=True, include_journal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert catalog.list_experiment_checkpoints(strict=True) == []  # the journal is not read by default
