"""Helpers for Experiment.sweep tests: what an experiment holds, independent of run ids and order."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ommx_experiment.engine.blobstore import LEASE_DIR, PIN_SUFFIX, PINS_SUFFIX


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_rows(exp: Any) -> list[dict[str, Any]]:
    """One dict per closed run: its parameters plus status, solve/sampling counts, attachment names."""
    df = exp.run_parameters_df()
    params: dict[int, dict[str, Any]] = {}
    for column in df.columns:
        for run_id, value in zip(df.index.tolist(), df[column].tolist(), strict=True):
            if value is not None and str(value) != "<NA>":
                params.setdefault(int(run_id), {})[str(column)] = _plain(value)
    rows = []
    for run in exp.runs:
        rows.append(
            {
                "params": params.get(run.run_id, {}),
                "status": run.status,
                "reason": run.lifecycle_reason,
                "solves": [s.status for s in run.solves],
                "samplings": len(run.samplings),
                "attachments": run.attachment_names,
            }
        )
    return rows


def picture(exp: Any) -> list[str]:
    """The experiment's runs as sorted canonical JSON lines: equal for equal sweeps whatever the run order."""
    return sorted(json.dumps(row, sort_keys=True) for row in run_rows(exp))


def dict_counts(exp: Any, keys: list[str]) -> Counter[str]:
    """How many runs carry each parameter dict (restricted to ``keys``)."""
    counts: Counter[str] = Counter()
    for row in run_rows(exp):
        counts[json.dumps({k: row["params"].get(k) for k in keys}, sort_keys=True)] += 1
    return counts


def pin_files(root: Path) -> list[str]:
    """Every pin file left in any pins folder of ``root``."""
    folder = root / LEASE_DIR
    if not folder.is_dir():
        return []
    out = []
    for entry in os.scandir(folder):
        if entry.name.endswith(PINS_SUFFIX) and entry.is_dir():
            out += [name for name in os.listdir(entry.path) if name.endswith(PIN_SUFFIX)]
    return out
