"""Shared fixtures.

- Every test gets its own Local Registry root: ``OMMX_LOCAL_REGISTRY_ROOT`` is set to
  ``tmp_path / "registry"`` (not created) and our process-wide default registry is reset.
- ``ommx3``: a driver for the OMMX 3.0.0b7 side venv (``.venv-ommx3``, or ``$OMMX3_PYTHON``).
- ``oci_registry`` / ``oci_registry_auth``: session-wide loopback OCI registries (the second
  behind basic auth ``alice``/``s3cret``). They are shared, so use a unique repository
  name per test.
- ``skopeo``: the path of the skopeo binary.

A missing prerequisite skips locally but FAILS under ``CI=true``, so a broken install
step in CI cannot pass as a row of skips.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

from helpers.oci_registry import OciRegistry, RegistryUnavailableError, running_registry  # noqa: E402
from helpers.ommx3 import Ommx3Driver  # noqa: E402
from helpers.ours_on_ommx3 import OursOnOmmx3  # noqa: E402

REPO_ROOT = _TESTS_DIR.parent


def in_ci() -> bool:
    """True when running under CI (``CI`` set to anything but empty/0/false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test for a missing prerequisite; under CI fail instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing test prerequisite is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def _run_deferred_drafts() -> None:
    # A session's deferred first draft (lifecycle.autosave.LATER) is published now, into this
    # test's registry, instead of 0.2 s later during another test.
    autosave = sys.modules.get("ommx_experiment.lifecycle.autosave")
    if autosave is not None:
        autosave.LATER.run_all()


def _reset_default_registry() -> None:
    # Only a module that was already imported can hold process-wide state; importing it
    # here would make every test depend on it importing cleanly.
    root_module = sys.modules.get("ommx_experiment.engine.root")
    reset = getattr(root_module, "_reset_for_tests", None)
    if reset is not None:
        reset()


@pytest.fixture(autouse=True)
def _isolated_registry_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "registry"
    monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(root))
    _reset_default_registry()
    yield root
    _run_deferred_drafts()
    _reset_default_registry()


@pytest.fixture
def registry_root(_isolated_registry_root: Path) -> Path:
    """This test's Local Registry root (``$OMMX_LOCAL_REGISTRY_ROOT``); may not exist yet."""
    return _isolated_registry_root


def _ommx3_python() -> Path:
    configured = os.environ.get("OMMX3_PYTHON")
    return Path(configured) if configured else REPO_ROOT / ".venv-ommx3" / "bin" / "python"


@pytest.fixture(scope="session")
def ommx3() -> Ommx3Driver:
    """Driver for OMMX 3.0.0b7 in the side venv; skipped (failed in CI) when it is missing."""
    python = _ommx3_python()
    if not python.exists():
        unavailable(f"OMMX 3 side venv interpreter {python} is missing; run `make bootstrap`")
    return Ommx3Driver(python)


@pytest.fixture(scope="session")
def ours3(ommx3: Ommx3Driver, tmp_path_factory: pytest.TempPathFactory) -> OursOnOmmx3:
    """Our package (this checkout's ``src``) on the side venv; skipped locally (failed under CI) when it cannot import there."""
    driver = OursOnOmmx3(ommx3.python, REPO_ROOT / "src")
    problem = driver.problem(tmp_path_factory.mktemp("probe") / "registry")
    if problem is not None:
        unavailable(problem)
    return driver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag every test that uses the ``ommx3`` fixture with the ``ommx3`` marker."""
    for item in items:
        if "ommx3" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ommx3)


@pytest.fixture(scope="session")
def skopeo() -> Path:
    """The skopeo binary; skipped (failed in CI) when it is not installed."""
    found = shutil.which("skopeo")
    if found is None:
        unavailable("`skopeo` not found on PATH (Debian package skopeo; run `make bootstrap`)")
    return Path(found)


def _registry_fixture(tmp_path_factory: pytest.TempPathFactory, *, auth: bool) -> Iterator[OciRegistry]:
    workdir = tmp_path_factory.mktemp("oci-registry-auth" if auth else "oci-registry")
    with ExitStack() as stack:
        try:
            registry = stack.enter_context(running_registry(workdir, auth=auth))
        except RegistryUnavailableError as exc:
            unavailable(str(exc))
        yield registry


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """A loopback OCI registry without auth, shared by the session."""
    yield from _registry_fixture(tmp_path_factory, auth=False)


@pytest.fixture(scope="session")
def oci_registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """A loopback OCI registry behind basic auth (``alice``/``s3cret``), shared by the session."""
    yield from _registry_fixture(tmp_path_factory, auth=True)
