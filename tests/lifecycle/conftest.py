"""Fixtures of the lifecycle tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import Writer


@pytest.fixture
def writers(registry_root: Path) -> Iterator[Any]:
    """Start ``shared_worker.py`` processes on the test's registry (``writers()`` starts one); killed at the end."""
    started: list[Writer] = []

    def start() -> Writer:
        writer = Writer(registry_root)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.kill()
