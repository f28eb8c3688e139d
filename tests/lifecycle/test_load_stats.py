"""Experiment.load stats each layer blob once: Artifact.load's closure check covers the sealed state's."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry
from ommx_experiment.errors import BlobNotFoundError
from ommx_experiment.lifecycle.artifact import Artifact

NAME = "experiments.local/load/stats:v1"  # .local: never pulled


def _committed(n: int) -> Experiment:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(n):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_json("cfg", {"i": i})
    exp.commit()
    return exp


def test_load_stats_each_layer_blob_once(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _committed(12).artifact.manifest
    blobs = LocalRegistry.default().blobs
    paths = {os.fspath(blobs.path(d.digest)): d.digest for d in manifest.layers}
    seen: Counter[str] = Counter()
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        key = os.fspath(path)  # type: ignore[arg-type]
        if key in paths:
            seen[key] += 1
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)
    loaded = Experiment.load(NAME)
    monkeypatch.undo()
    assert len(loaded.runs) == 12
    assert set(seen) == set(paths) and set(seen.values()) == {1}


def test_a_truncated_layer_still_fails_load_and_from_artifact(registry_root: Path) -> None:
    manifest = _committed(3).artifact.manifest
    artifact = Artifact.load(NAME)
    path = LocalRegistry.default().blobs.path(manifest.layers[1].digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(1)
    with pytest.raises(BlobNotFoundError):
        Experiment.from_artifact(artifact)  # opened before the damage: the sealed state checks the sizes
    with pytest.raises(BlobNotFoundError, match="has 1 bytes, expected"):
        Experiment.load(NAME)
