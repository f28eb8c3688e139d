"""No ambient registry credentials for a test: the autouse fixtures of the auth and remote tests call this."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

CREDENTIAL_ENV_VARS = ("DOCKER_CONFIG", "OMMX_BASIC_AUTH_DOMAIN", "OMMX_BASIC_AUTH_USERNAME", "OMMX_BASIC_AUTH_PASSWORD")


def clear_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``HOME`` at a new empty ``tmp_path/home`` and unset the credential variables; return that home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return home
