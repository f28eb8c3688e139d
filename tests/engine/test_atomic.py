"""atomic: publication leaves either the old or the new file and never a temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ommx_experiment.engine import atomic


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_creates_and_replaces_without_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    atomic.atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    atomic.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _listing(tmp_path) == ["index.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK


def test_create_new_refuses_existing_and_keeps_content(tmp_path: Path) -> None:
    target = tmp_path / "oci-layout"
    atomic.create_new_bytes(target, b"first")
    with pytest.raises(FileExistsError, match="oci-layout"):
        atomic.create_new_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    assert _listing(tmp_path) == ["oci-layout"]


def test_failure_inside_temp_file_removes_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic.temp_file(tmp_path) as (tmp, handle):
        handle.write(b"partial")
        assert _listing(tmp_path) == [tmp.name]
        raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def test_keyboard_interrupt_removes_temp_file_and_keeps_old_target(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic.atomic_write_bytes(target, b"old")
    with pytest.raises(KeyboardInterrupt), atomic.temp_file(tmp_path) as (_, handle):
        handle.write(b"new but interrupted")
        raise KeyboardInterrupt
    assert _listing(tmp_path) == ["f"]
    assert target.read_bytes() == b"old"


def test_publish_noclobber_keeps_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "blob"
    final.write_bytes(b"existing")
    with atomic.temp_file(tmp_path) as (tmp, handle):
        handle.write(b"other")
        atomic.sync_file(handle)
        assert atomic.publish_noclobber(tmp, final) is False
    assert final.read_bytes() == b"existing"
    assert _listing(tmp_path) == ["blob"]


def test_publish_noclobber_creates_with_public_mode(tmp_path: Path) -> None:
    final = tmp_path / "blob"
    with atomic.temp_file(tmp_path) as (tmp, handle):
        handle.write(b"data")
        atomic.sync_file(handle)
        assert atomic.publish_noclobber(tmp, final) is True
    assert final.read_bytes() == b"data"
    assert final.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK
    assert final.stat().st_nlink == 1  # the temp link is gone
    assert _listing(tmp_path) == ["blob"]


def test_publish_replace_overwrites(tmp_path: Path) -> None:
    final = tmp_path / "x"
    final.write_bytes(b"old")
    with atomic.temp_file(tmp_path) as (tmp, handle):
        handle.write(b"new")
        atomic.sync_file(handle)
        atomic.publish_replace(tmp, final)
    assert final.read_bytes() == b"new"
    assert _listing(tmp_path) == ["x"]


def test_temp_names_are_recognised_with_owner_pid() -> None:
    name = atomic.temp_name("blob-")
    assert atomic.is_temp_name(name)
    assert atomic.temp_owner_pid(name) == os.getpid()
    assert not atomic.is_temp_name("a" * 64)
    assert atomic.temp_owner_pid(".blob-abc.tmp") is None
    assert atomic.temp_owner_pid("index.json") is None
