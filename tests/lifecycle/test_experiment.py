"""Experiment lifecycle, properties, commit/load/fork/rename/save, errors (§1.3-§1.4, §6)."""

from __future__ import annotations

import gc
import json
import math

import pandas as pd
import pytest

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment import media_types as mt
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.errors import (
    AttachmentNotFoundError,
    InvalidInputError,
    LifecycleError,
    OmmxExperimentError,
    ParameterOverflowError,
)
from ommx_experiment.format.codec import ExperimentConfig

NAME = "example.com/team/exp:v1"


def _committed(name: str = NAME) -> Experiment:
    exp = Experiment(name)
    exp.log_json("cfg", {"b": 1, "a": [1, 2]})
    for i in range(3):
        with exp.run() as run:
            run.log_parameter("seed", i)
            run.log_attachment("raw", "application/octet-stream", bytes([i]))
    exp.commit()
    return exp


# --- construction and names ----------------------------------------------------------------------


def test_new_experiment_is_unsealed_with_canonical_name() -> None:
    exp = Experiment("alpine")
    assert exp.image_name == "docker.io/library/alpine:latest"
    assert repr(exp) == "Experiment(image_name='docker.io/library/alpine:latest', state='unsealed', open_runs=0)"
    assert exp.status is None and exp.lifecycle_reason is None
    assert exp.runs == [] and exp.attachment_names == [] and exp.annotations == {}


def test_anonymous_name_uses_registry_id(registry_root) -> None:
    exp = Experiment()
    rid = LocalRegistry.default().registry_id
    assert exp.image_name.startswith(f"{rid[:8]}.ommx.local/experiment:")


@pytest.mark.parametrize(
    "call",
    [
        lambda: Experiment("INVALID/EXPERIMENT"),
        lambda: Experiment.with_temp_local_registry("INVALID/EXPERIMENT"),
        lambda: Experiment.load("INVALID/EXPERIMENT"),
        lambda: Experiment.restore_from_checkpoint("INVALID/EXPERIMENT"),
        lambda: _committed().rename("INVALID/EXPERIMENT"),
        lambda: _committed().fork("INVALID/EXPERIMENT"),
        lambda: Experiment(NAME).rename("INVALID/EXPERIMENT"),
    ],
)
def test_invalid_image_reference_is_value_error(call) -> None:
    with pytest.raises(ValueError, match="Invalid image reference"):
        call()


# --- runs and commit ------------------------------------------------------------------------------------


def test_commit_with_open_run_fails_then_succeeds() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        assert "open_runs=1" in repr(exp)
        with pytest.raises(RuntimeError, match="Run handle"):
            exp.commit()
        run.log_parameter("a", 1)
    artifact = exp.commit()
    assert repr(exp) == f"Experiment(image_name='{NAME}', state='sealed', open_runs=0)"
    assert artifact.image_name == NAME
    assert exp.status == "finished"
    with pytest.raises(RuntimeError, match="Sealed Experiment is read-only"):
        exp.commit()


def test_sealed_experiment_rejects_every_mutation() -> None:
    exp = _committed()
    for call in (
        lambda: exp.run(),
        lambda: exp.log_json("x", 1),
        lambda: exp.log_attachment("x", "a/b", b""),
        lambda: exp.set_annotation("k", "v"),
        lambda: exp.set_autosave_policy(__import__("ommx_experiment").AutosavePolicy.disabled()),
    ):
        with pytest.raises(LifecycleError, match="Sealed Experiment is read-only"):
            call()


def test_commit_is_deterministic_up_to_our_analysis_layers(registry_root) -> None:
    # OMMX's part (config, every layer it writes) depends only on the calls; our trailing
    # layers carry the run times, the image name and the provenance, so they differ.
    from ommx_experiment.format.run_meta import trailing_layers

    a = _committed("example.com/t/one:v1").artifact.manifest
    b = _committed("example.com/t/two:v1").artifact.manifest
    assert a.config == b.config
    n = len(trailing_layers(a))
    assert n == len(trailing_layers(b)) == 4
    assert a.layers[:-n] == b.layers[:-n]


def test_commit_returns_the_artifact_it_built_without_reading_the_manifest_back(monkeypatch) -> None:
    from ommx_experiment.engine.digest import sha256_digest
    from ommx_experiment.lifecycle.artifact import Artifact

    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("seed", 1)
        run.log_attachment("raw", "application/octet-stream", b"x")
    parsed: list[bytes] = []
    real_parse = Manifest.parse.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Manifest, "parse", classmethod(lambda cls, data: parsed.append(data) or real_parse(cls, data)))
    art = exp.commit()
    assert parsed == []  # the manifest the commit built is the one handed out
    monkeypatch.undo()
    loaded = Artifact.load(NAME)
    assert art == loaded and art.manifest == loaded.manifest and art.manifest_bytes == loaded.manifest_bytes
    assert sha256_digest(art.manifest_bytes) == art.manifest_digest


def test_views_need_commit() -> None:
    exp = Experiment(NAME)
    for call in (lambda: exp.artifact, lambda: exp.fork(), lambda: exp.save("x.ommx"), lambda: exp.push(),
                 lambda: exp.run_parameters_parquet):
        with pytest.raises(RuntimeError, match="must be committed"):
            call()


def test_runs_ordered_by_run_id_not_close_order() -> None:
    exp = Experiment(NAME)
    r0, r1 = exp.run(), exp.run()
    r1.finish()
    r0.finish()
    assert [r.run_id for r in exp.runs] == [0, 1]
    exp.commit()
    assert [r.run_id for r in Experiment.load(NAME).runs] == [0, 1]


def test_abandoned_run_releases_counter_and_id_is_not_reused() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    run.log_parameter("lost", 1)
    del run
    gc.collect()
    assert "open_runs=0" in repr(exp)
    with exp.run() as run:
        assert run.run_id == 1
    exp.commit()
    loaded = Experiment.load(NAME)
    assert [r.run_id for r in loaded.runs] == [1]
    assert "lost" not in loaded.run_parameters_df().columns


def test_ref_conflict_keeps_session_usable_for_rename() -> None:
    _committed()
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("other", 1.5)
    with pytest.raises(RuntimeError, match="already points to"):
        exp.commit()
    assert "state='unsealed'" in repr(exp)
    exp.rename("example.com/team/exp:v2")
    exp.commit()
    assert Experiment.load("example.com/team/exp:v2").run_parameters_df()["other"].tolist() == [1.5]


def test_mixed_parameter_types_are_refused_when_logged_and_the_run_stays_usable() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("p", 1)
    with exp.run() as run:
        with pytest.raises(ValueError, match=r"Run parameter `p` is a int64 column .* got a string value 'one'"):
            run.log_parameter("p", "one")
        run.log_parameter("p", 2.5)  # int then float widens the column, as OMMX does
    df = exp.run_parameters_df()
    assert df["p"].tolist() == [1.0, 2.5]
    exp.commit()
    assert Experiment.load(NAME).run_parameters_df()["p"].tolist() == [1.0, 2.5]


def test_mixed_parameter_types_from_an_old_journal_fail_commit_permanently() -> None:
    """A journal written before type checks existed can still hold mixed types: commit fails as OMMX's does."""
    from ommx_experiment.engine.registry import LocalRegistry

    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("p", 1)
    with exp.run() as run:
        run.log_parameter("q", 1)
    registry = LocalRegistry.default()
    with registry.db.write("test: an old journal row with a mixed type") as conn:
        body = conn.execute("SELECT body FROM oxe_journal_runs WHERE run_id = 1").fetchone()[0]
        conn.execute("UPDATE oxe_journal_runs SET body = ? WHERE run_id = 1", (body.replace('{"q": 1}', '{"p": "one"}'),))
    with pytest.raises(ValueError, match="mixed column types"):
        exp.run_parameters_df()
    with pytest.raises(RuntimeError, match="Run parameter `p` has mixed column types: existing int64, incoming string"):
        exp.commit()
    assert "state='failed'" in repr(exp) and exp.status is None
    with pytest.raises(RuntimeError, match="Experiment commit has failed"):
        exp.run()
    with pytest.raises(RuntimeError, match="Experiment commit has failed"):
        exp.commit()


# --- context manager ----------------------------------------------------------------------------------------


def test_context_manager_commits() -> None:
    with Experiment(NAME) as exp:
        with exp.run() as run:
            run.log_parameter("a", True)
    assert exp.status == "finished"
    assert Experiment.load(NAME).run_parameters_df()["a"].tolist() == [True]


def test_commit_inside_with_then_exit_does_nothing() -> None:
    with Experiment(NAME) as exp:
        exp.commit()
    assert exp.status == "finished"


def test_exception_publishes_failed_checkpoint_and_restore(tmp_path) -> None:
    with pytest.raises(ValueError):
        with Experiment(NAME) as exp:
            exp.set_annotation("com.example.owner", "me")
            with exp.run() as run:
                run.log_parameter("a", 1)
            raise ValueError("failed")
    assert exp.status == "failed" and exp.lifecycle_reason == "ValueError: failed"
    assert exp.image_name == NAME
    assert "state='failed'" in repr(exp)
    assert ".ommx.local/checkpoint:" in exp.artifact.image_name
    with pytest.raises(RuntimeError, match="Checkpointed Experiment is read-only"):
        exp.run()
    exp.save(tmp_path / "failed.ommx")
    resumed = Experiment.restore_from_checkpoint(NAME)
    assert resumed.status is None and resumed.image_name == NAME
    assert resumed.annotations == {"com.example.owner": "me"}
    with resumed:
        with resumed.run() as run:
            assert run.run_id == 1
    assert [r.status for r in resumed.runs] == ["finished", "finished"]
    assert resumed.run_parameters_df().index.tolist() == [0, 1]
    # the committed artifact points at the checkpoint via subject
    manifest = Manifest.parse(resumed.artifact.manifest_bytes)
    assert manifest.subject is not None and manifest.subject.digest == exp.artifact.manifest_digest


def test_keyboard_interrupt_in_run_is_interrupted() -> None:
    with pytest.raises(KeyboardInterrupt):
        with Experiment(NAME) as exp:
            with exp.run():
                raise KeyboardInterrupt
    assert exp.status == "interrupted"
    restored = Experiment.restore_from_checkpoint(NAME)
    assert [(r.status, r.lifecycle_reason) for r in restored.runs] == [("interrupted", "KeyboardInterrupt")]


def test_keyboard_interrupt_at_experiment_level_is_interrupted() -> None:
    with pytest.raises(KeyboardInterrupt):
        with Experiment(NAME) as exp:
            raise KeyboardInterrupt
    assert exp.status == "interrupted" and exp.lifecycle_reason == "KeyboardInterrupt"


def test_reason_normalisation_round_trips_through_archive(tmp_path) -> None:
    message = "first\nsecond\t" + "é" * 600
    with pytest.raises(ValueError):
        with Experiment(NAME) as exp:
            with exp.run():
                raise ValueError(message)
    reason = exp.runs[0].lifecycle_reason
    assert reason.startswith("ValueError: first second é") and len(reason) == 512 and reason.endswith("…")
    exp.save(tmp_path / "a.ommx")
    imported = Experiment.import_archive(tmp_path / "a.ommx")
    assert imported.status == "failed"
    assert imported.runs[0].lifecycle_reason == reason
    assert imported.image_name == exp.artifact.image_name


# --- annotations ------------------------------------------------------------------------------------------------


def test_annotations() -> None:
    exp = Experiment(NAME)
    exp.set_annotation("com.example.owner", "alice")
    exp.set_annotation("org.ommx.user.x", "ok")
    exp.set_annotation("com.example.owner", "bob")
    with pytest.raises(ValueError, match="reserved for OMMX metadata"):
        exp.set_annotation("org.ommx.v1.x", "no")
    exp.commit()
    assert Experiment.load(NAME).annotations == {"com.example.owner": "bob", "org.ommx.user.x": "ok"}
    with pytest.raises(ValueError, match="reserved"):  # checked before the state
        exp.set_annotation("org.ommx.v1.x", "no")


# --- run parameters ---------------------------------------------------------------------------------------------


def test_run_parameters_df_matches_ommx_shape() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("solver", "a")
        run.log_parameter("time_limit", 1.5)
    with exp.run() as run:
        run.log_parameter("solver", "b")
        run.log_parameter("presolve", True)
    with exp.run():
        pass
    live = exp.run_parameters_df()
    exp.commit()
    for df in (live, exp.run_parameters_df(), Experiment.load(NAME).run_parameters_df()):
        assert df.index.name == "run_id" and df.index.tolist() == [0, 1, 2]
        assert list(df.columns) == ["solver", "time_limit", "presolve"]
        assert str(df["solver"].dtype).startswith("string") and str(df["time_limit"].dtype) == "Float64"
        assert str(df["presolve"].dtype) == "boolean"
        assert df.loc[2].isna().all() and df.loc[0, "presolve"] is pd.NA


def test_float_specials_and_int_promotion() -> None:
    exp = Experiment(NAME)
    for value in (math.inf, -math.inf, math.nan, 3):
        with exp.run() as run:
            run.log_parameter("v", value)
    exp.commit()
    df = Experiment.load(NAME).run_parameters_df()
    values = df["v"].tolist()
    assert values[0] == math.inf and values[1] == -math.inf and math.isnan(values[2]) and values[3] == 3.0
    assert str(df["v"].dtype) == "Float64"


def test_parameter_type_errors() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    with pytest.raises(OverflowError, match="int64"):
        run.log_parameter("big", 2**63)
    with pytest.raises(TypeError, match="must be bool, int, float, or str"):
        run.log_parameter("none", None)
    run.log_parameter("", -(2**63))
    run.log_parameter("x", 1)
    run.log_parameter("x", "last wins")
    run.finish()
    exp.commit()
    df = Experiment.load(NAME).run_parameters_df()
    assert df.loc[0, ""] == -(2**63) and df.loc[0, "x"] == "last wins"
    assert issubclass(ParameterOverflowError, OmmxExperimentError)


def test_our_layers_follow_the_msgpack_layer(registry_root) -> None:
    exp = _committed()
    layers = exp.artifact.layers
    titles = [(d.media_type, d.annotations.get(mt.TITLE_ANNOTATION)) for d in layers[-4:]]
    assert titles == [
        (mt.PARQUET, mt.PARQUET_RUN_PARAMS_TITLE),
        (mt.PARQUET, mt.RUNS_TITLE),
        (mt.PARQUET, mt.SOLVES_TITLE),
        (mt.JSON, mt.PROVENANCE_TITLE),
    ]
    assert layers[-5].media_type == mt.RUN_PARAMETERS
    config = ExperimentConfig.parse(exp.artifact.get_blob(exp.artifact.manifest.config))
    assert config.run_parameters == len(layers) - 5
    path = exp.run_parameters_parquet
    assert path.parent == registry_root / "blobs" / "sha256"
    assert pd.read_parquet(path)["seed"].tolist() == [0, 1, 2]
    import duckdb

    assert duckdb.sql(f"SELECT sum(seed) FROM read_parquet('{path}')").fetchall()[0][0] == 3


# --- fork / rename / save / import --------------------------------------------------------------------------


def test_fork_carries_everything_by_descriptor() -> None:
    parent = _committed()
    parent_blobs = {d.digest for d in parent.artifact.layers}
    child = parent.fork("example.com/team/child:v1")
    assert "state='unsealed'" in repr(child) and child.annotations == {}
    with child.run() as run:
        assert run.run_id == 3
        run.log_parameter("seed", 9)
    child.commit()
    assert parent.run_parameters_df().index.tolist() == [0, 1, 2]
    assert child.run_parameters_df().index.tolist() == [0, 1, 2, 3]
    assert child.get_json("cfg") == {"b": 1, "a": [1, 2]}
    manifest = Manifest.parse(child.artifact.manifest_bytes)
    assert manifest.subject.digest == parent.artifact.manifest_digest
    # only the parent's run-parameter table and our analysis layers are rebuilt
    assert parent_blobs - {d.digest for d in child.artifact.layers} <= {d.digest for d in parent.artifact.layers[-5:]}


def test_fork_anonymous_name() -> None:
    child = _committed().fork()
    assert ".ommx.local/experiment:" in child.image_name


def test_rename_sealed_publishes_alias() -> None:
    exp = _committed()
    old_artifact = exp.artifact
    exp.rename("example.com/team/exp:alias")
    assert exp.image_name == "example.com/team/exp:alias"
    assert exp.artifact.image_name == "example.com/team/exp:alias"
    assert old_artifact.image_name == NAME
    assert Experiment.load(NAME).artifact.manifest_digest == Experiment.load("example.com/team/exp:alias").artifact.manifest_digest
    exp.rename("example.com/team/exp:alias")  # same digest: no-op


def test_rename_unsealed_changes_commit_name() -> None:
    exp = Experiment(NAME)
    exp.rename("example.com/team/other:v1")
    exp.commit()
    assert LocalRegistry.default().resolve(NAME) is None
    Experiment.load("example.com/team/other:v1")


def test_save_and_import_archive(tmp_path) -> None:
    exp = _committed()
    path = tmp_path / "exp.ommx"
    exp.save(path)
    assert path.stat().st_size > 0
    with pytest.raises(RuntimeError, match="exists"):
        exp.save(path)
    imported = Experiment.import_archive(path)
    assert imported.run_parameters_df().equals(exp.run_parameters_df())


def test_import_archive_opens_the_experiment_from_what_it_validated(tmp_path, monkeypatch) -> None:
    """The config and table the import validated are reused (no second parse), and the sealed
    statuses are still checked on them (a draft is refused as Experiment.load refuses it)."""
    from ommx_experiment.format import codec
    from ommx_experiment.errors import InvalidArtifactError
    from ommx_experiment.format.codec import ExperimentConfig
    from ommx_experiment.lifecycle.session import SealedState

    exp = _committed()
    exp.save(tmp_path / "exp.ommx")
    run_ids, frame = [r.run_id for r in exp.runs], exp.run_parameters_df()
    parses = []
    real_parse = codec._parse
    monkeypatch.setattr(codec, "_parse", lambda data: parses.append(len(data)) or real_parse(data))
    codec._parse_cached.cache_clear()
    imported = Experiment.import_archive(tmp_path / "exp.ommx")
    assert [r.run_id for r in imported.runs] == run_ids and imported.run_parameters_df().equals(frame)
    assert len(parses) == 1  # the import's own: the opened Experiment read the config it validated
    sealed = imported._sealed
    config = sealed.config
    draft = ExperimentConfig("draft", None, None, config.attachments, config.runs, config.run_parameters)
    with pytest.raises(InvalidArtifactError, match="^Experiment config status is draft, expected finished"):
        SealedState.open(sealed.registry, sealed.image_name, sealed.manifest_digest, received=(draft, sealed.table()))


def test_from_artifact_rejects_generic() -> None:
    from ommx_experiment.lifecycle.artifact import ArtifactDraft

    draft = ArtifactDraft.new("example.com/team/generic:v1")
    draft.add_layer("application/octet-stream", b"x")
    artifact = draft.commit()
    with pytest.raises(RuntimeError, match="Experiment artifact type is application/org.ommx.v1.artifact"):
        Experiment.from_artifact(artifact)


def test_load_missing_is_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        Experiment.load("localhost.invalid.local/none:v1")


# --- temp registry --------------------------------------------------------------------------------------------


def test_temp_registry_lives_as_long_as_derived_objects() -> None:
    exp = Experiment.with_temp_local_registry()
    assert ".ommx.local/experiment:" in exp.image_name and "open_runs=0" in repr(exp)
    holder = exp._holder
    path = holder.path
    with exp.run() as run:
        run.log_parameter("p", 1)
    artifact = exp.commit()
    run_view = exp.runs[0]
    del exp, holder, run
    gc.collect()
    assert path.exists()
    assert Experiment.from_artifact(artifact).run_parameters_df()["p"].tolist() == [1]
    del artifact
    gc.collect()
    assert path.exists()  # the SealedRun still holds it
    del run_view
    gc.collect()
    assert not path.exists()


def test_errors_are_builtin_subclasses() -> None:
    exp = _committed()
    with pytest.raises(KeyError):
        exp.get_blob("missing")
    with pytest.raises(AttachmentNotFoundError):
        exp.runs[0].get_blob("missing")
    assert issubclass(InvalidInputError, ValueError)


def test_config_bytes_are_ommx_layout() -> None:
    exp = _committed()
    config = exp.artifact.get_blob(exp.artifact.manifest.config)
    obj = json.loads(config)
    assert list(obj) == ["status", "attachments", "runs", "run_parameters"]
    assert config == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
