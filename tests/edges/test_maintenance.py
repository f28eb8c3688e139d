"""prune_anonymous, remove_image, restore_image, size, and durations."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from helpers.catalog_support import commit_experiment, commit_generic, experiment_manifest, put, sql

from ommx_experiment import media_types as mt
from ommx_experiment.edges import maintenance
from ommx_experiment.engine.durations import parse_duration, parse_duration_seconds
from ommx_experiment.engine.names import ImageName, anonymous_artifact_name, anonymous_experiment_name
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.engine.registry import LocalRegistry


@pytest.fixture
def registry(registry_root: Path) -> LocalRegistry:
    return LocalRegistry.at(registry_root)


@pytest.fixture
def unopenable(tmp_path: Path) -> Path:
    """A root below a regular file: opening it would fail; validation must come first."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    return blocker / "registry"


# --- durations -------------------------------------------------------------------------------------

DURATIONS = [
    ("30s", 30), ("15m", 900), ("24h", 86400), ("7d", 604800), ("90", 90), ("0s", 0), ("0", 0),
    ("+5s", 5), ("007m", 420), ("18446744073709551615", 2**64 - 1), ("18446744073709551615s", 2**64 - 1),
    ("213503982334601d", 213503982334601 * 86400),
]
BAD_DURATIONS = [
    ("", "duration must not be empty"),
    ("s", 'invalid duration value in "s"'),
    ("last-week", 'invalid duration suffix in "last-week"; use s, m, h, or d'),
    ("5S", "invalid duration suffix"),
    ("1w", "invalid duration suffix"),
    ("-5s", "invalid duration value"),
    (" 5s", "invalid duration value"),
    ("5.0s", "invalid duration value"),
    ("0x5", "invalid duration value"),
    ("\u0663s", "invalid duration value"),  # a non-ASCII digit
    ("18446744073709551616", "invalid duration value"),
    ("18446744073709551615d", "duration is too large: 18446744073709551615d"),
    ("307445734561825861m", "duration is too large"),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_seconds(text) == seconds
    assert parse_duration(text) == float(seconds)


@pytest.mark.parametrize(("text", "message"), BAD_DURATIONS)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        parse_duration_seconds(text)


@given(st.integers(min_value=0, max_value=2**64 - 1), st.sampled_from(["", "s", "m", "h", "d"]))
def test_duration_product_or_too_large(value: int, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if value * factor <= 2**64 - 1:
        assert parse_duration_seconds(f"{value}{unit}") == value * factor
    else:
        with pytest.raises(ValueError, match="duration is too large"):
            parse_duration_seconds(f"{value}{unit}")


def test_durations_match_ommx3(ommx3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = [t for t, _ in DURATIONS] + [t for t, _ in BAD_DURATIONS]
    script = f"""
        import json
        from ommx.artifact import gc
        out = []
        for text in {cases!r}:
            try:
                gc(grace_period=text)
                out.append(None)
            except ValueError as exc:
                out.append(str(exc))
        print(json.dumps(out))
    """
    theirs = ommx3.run_json(script, root=tmp_path / "r")
    ours = []
    for text in cases:
        try:
            parse_duration_seconds(text)
            ours.append(None)
        except ValueError as exc:
            ours.append(str(exc))
    assert ours == theirs


# --- prune_anonymous --------------------------------------------------------------------------------


def test_prune_on_an_empty_root(tmp_path: Path) -> None:
    report = maintenance.prune_anonymous(root=tmp_path / "r")
    assert (report.count, report.refs, report.delete_applied) == (0, (), False)
    assert report.root == (tmp_path / "r").absolute()


def test_prune_candidates_kinds_and_delete(registry: LocalRegistry) -> None:
    artifact = anonymous_artifact_name(registry.registry_id)
    exp = anonymous_experiment_name(registry.registry_id)
    foreign = ImageName.parse("deadbeef.ommx.local/anonymous:20200101T000000-0123456789ab")
    a = commit_generic(registry, str(artifact))
    e = commit_experiment(registry, str(exp))
    f = commit_generic(registry, str(foreign), payload=b'{"foreign": 1}')
    commit_generic(registry, f"{registry.registry_id[:8]}.ommx.local/anonymous:not-a-stamp", payload=b"{}")
    commit_generic(registry, "example.com/t/named:20200101T000000-0123456789ab", payload=b"[]")
    dry = maintenance.prune_anonymous()
    assert {(r.image_name, r.kind, r.digest) for r in dry.refs} == {
        (str(artifact), "artifact", a), (str(foreign), "artifact", f),
    }
    with_experiments = maintenance.prune_anonymous(experiments=True)
    assert (str(exp), "experiment", e) in {(r.image_name, r.kind, r.digest) for r in with_experiments.refs}
    ref = next(r for r in with_experiments.refs if r.kind == "experiment")
    assert (ref.name, ref.reference) == (exp.repository, exp.reference) and "T" in ref.updated_at
    assert maintenance.prune_anonymous(experiments=True, older_than="365d").count == 0
    assert maintenance.prune_anonymous(experiments=True, older_than="0s").count == 3
    done = maintenance.prune_anonymous(delete=True, experiments=True)
    assert done.delete_applied and done.count == 3
    assert registry.resolve(artifact) is None and registry.resolve(exp) is None
    assert maintenance.prune_anonymous(experiments=True).count == 0
    assert len(registry.list_refs()) == 2
    # only refs went; gc then sees the blobs as orphans
    layer = Manifest.parse(registry.blobs.get(a)).layers[0].digest
    assert layer in {b.digest for b in maintenance.gc(grace_period="0s").orphan_candidates}
    deleted = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert layer in {b.digest for b in deleted.deleted_blobs} and deleted.deleted_size >= 1
    assert layer not in {b.digest for b in maintenance.gc(grace_period="0s").orphan_candidates}


def test_prune_delete_is_compare_and_delete(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    name = anonymous_artifact_name(registry.registry_id)
    commit_generic(registry, str(name))
    other, _, _ = experiment_manifest(registry, seed=5)
    original = maintenance._anonymous_refs

    def racing(*args):  # type: ignore[no-untyped-def]
        found = original(*args)
        sql(registry.root, "UPDATE refs SET manifest_digest = ? WHERE name = ?", (other, name.repository))
        return found

    monkeypatch.setattr(maintenance, "_anonymous_refs", racing)
    report = maintenance.prune_anonymous(delete=True)
    assert report.count == 0
    assert registry.resolve(name) == other


def test_prune_timestamps(registry: LocalRegistry) -> None:
    name = anonymous_artifact_name(registry.registry_id)
    commit_generic(registry, str(name))
    sql(registry.root, "UPDATE refs SET updated_at = '2020-01-01T09:00:00.123456789+09:00'")
    assert maintenance.prune_anonymous(older_than="365d").count == 1
    sql(registry.root, "UPDATE refs SET updated_at = '2026-01-01 00:00:00'")
    assert maintenance.prune_anonymous().count == 1  # no age filter: the timestamp is not read
    with pytest.raises(RuntimeError, match="Invalid Local Registry ref timestamp"):
        maintenance.prune_anonymous(older_than="1s")


def test_prune_validates_before_opening(unopenable: Path) -> None:
    with pytest.raises(ValueError, match="invalid duration suffix"):
        maintenance.prune_anonymous(root=unopenable, older_than="last-week")
    with pytest.raises(RuntimeError, match="retention duration is too large"):
        maintenance.prune_anonymous(root=unopenable, older_than="9300000000000000")
    with pytest.raises(RuntimeError, match="retention cutoff is out of range"):
        maintenance.prune_anonymous(root=unopenable, older_than="9000000000000000")
    assert not unopenable.exists()


# --- remove / restore / size ------------------------------------------------------------------------


def test_remove_and_restore(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/t/a:v1")
    assert maintenance.remove_image("example.com/t/a:v1") == digest
    assert maintenance.remove_image("example.com/t/a:v1") is None
    for blob in registry.blobs.iter_digests():
        os.utime(registry.blobs.path(blob), (time.time() - 7200, time.time() - 7200))
    assert digest in {b.digest for b in maintenance.gc(grace_period="1h").orphan_candidates}
    assert maintenance.restore_image("example.com/t/a:v1", digest) is True
    assert maintenance.restore_image("example.com/t/a:v1", digest) is False
    assert registry.resolve("example.com/t/a:v1") == digest


def test_restore_conflict_keeps_the_new_target(registry: LocalRegistry) -> None:
    old = commit_experiment(registry, "example.com/t/a:v1", seed=1)
    maintenance.remove_image("example.com/t/a:v1")
    new = commit_experiment(registry, "example.com/t/a:v1", seed=2)
    with pytest.raises(RuntimeError, match="ref currently points to"):
        maintenance.restore_image("example.com/t/a:v1", old)
    assert registry.resolve("example.com/t/a:v1") == new


def test_restore_of_a_missing_closure_fails(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/t/a:v1", attachment=b"gone soon")
    maintenance.remove_image("example.com/t/a:v1")
    layer = Manifest.parse(registry.blobs.get(digest)).layers[0].digest
    registry.blobs.path(layer).unlink()
    with pytest.raises(RuntimeError, match="Failed to read blob"):
        maintenance.restore_image("example.com/t/a:v1", digest)
    assert registry.resolve("example.com/t/a:v1") is None


def test_invalid_names_and_digests_are_rejected_before_opening(unopenable: Path) -> None:
    with pytest.raises(ValueError, match="Invalid manifest digest"):
        maintenance.restore_image("example.com/t/a:v1", "sha256:XYZ", root=unopenable)
    with pytest.raises(ValueError, match="Invalid image reference"):
        maintenance.restore_image("INVALID/NAME", "sha256:" + "a" * 64, root=unopenable)
    with pytest.raises(ValueError, match="Invalid image reference"):
        maintenance.remove_image("INVALID/NAME", root=unopenable)
    with pytest.raises(ValueError, match="Invalid image reference"):
        maintenance.size("INVALID/NAME", root=unopenable)
    assert not unopenable.exists()


def test_size_counts_unique_layers_and_excludes_the_subject(registry: LocalRegistry) -> None:
    parent = commit_experiment(registry, "example.com/t/parent:v1", attachment=b"p" * 1000)
    subject = Manifest.parse(registry.blobs.get(parent)).descriptor()
    # two solves with the same input: the layer is listed twice but counted once
    digest, manifest_bytes, config_bytes = experiment_manifest(registry, runs=1, solves=2, subject=subject, seed=8)
    registry.publish("example.com/t/child:v1", digest, config_bytes=config_bytes)
    manifest = Manifest.parse(manifest_bytes)
    unique = {layer.digest: layer.size for layer in manifest.layers}
    expected = len(manifest_bytes) + len(config_bytes) + sum(unique.values())
    assert maintenance.size("example.com/t/child:v1") == expected
    dup_layer = put(registry, mt.JSON, b'{"same": true}')
    dup = Manifest(mt.GENERIC_ARTIFACT_TYPE, put(registry, mt.OCI_EMPTY_CONFIG, b"{}"), (dup_layer, dup_layer))
    dup_digest = put(registry, mt.OCI_MANIFEST, dup.to_bytes()).digest
    registry.publish("example.com/t/dup:v1", dup_digest)
    assert maintenance.size("example.com/t/dup:v1") == len(dup.to_bytes()) + 2 + dup_layer.size
    with pytest.raises(RuntimeError, match="not in the Local Registry"):
        maintenance.size("example.com/t/absent:v1")
