"""Credential lookup (ommx_experiment.edges.auth): env override, Docker config, credential helpers."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from helpers.credentials import clear_ambient_credentials

from ommx_experiment.edges.auth import Credentials, docker_config_path, resolve_credentials

SECRET = "pa55-w0rd-never-shown"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient credentials: empty HOME, no DOCKER_CONFIG, no OMMX_BASIC_AUTH_*."""
    return clear_ambient_credentials(tmp_path, monkeypatch)


def _write_config(folder: Path, config: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def _b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_helper(bin_dir: Path, name: str, *, user: str, secret: str, host: str) -> Path:
    """A ``docker-credential-<name>`` script answering ``get`` for ``host`` only (exit 1 otherwise)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read -r server\n"
        f'if [ "$server" = "{host}" ]; then\n'
        f"  printf '%s' '{json.dumps({'ServerURL': host, 'Username': user, 'Secret': secret})}'\n"
        "else\n"
        "  echo 'credentials not found in native keychain' >&2; exit 1\n"
        "fi\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def test_no_config_means_anonymous() -> None:
    assert resolve_credentials("registry.example.com") is None


def test_home_docker_config_base64_auth(_clean_env: Path) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"registry.example.com": {"auth": _b64("bob", SECRET)}}})
    creds = resolve_credentials("registry.example.com")
    assert creds is not None
    assert (creds.username, creds.password) == ("bob", SECRET)
    assert resolve_credentials("other.example.com") is None


def test_docker_config_env_wins_over_home(_clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"r.example.com": {"auth": _b64("home", "x")}}})
    _write_config(tmp_path / "dc", {"auths": {"https://r.example.com/v1/": {"username": "dc", "password": SECRET}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert docker_config_path() == tmp_path / "dc" / "config.json"
    creds = resolve_credentials("r.example.com")
    assert creds is not None and (creds.username, creds.password) == ("dc", SECRET)


def test_env_override_matches_domain_only(monkeypatch: pytest.MonkeyPatch, _clean_env: Path) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"127.0.0.1:5000": {"auth": _b64("file", "x")}}})
    monkeypatch.setenv("OMMX_BASIC_AUTH_DOMAIN", "127.0.0.1:5000")
    monkeypatch.setenv("OMMX_BASIC_AUTH_USERNAME", "envuser")
    monkeypatch.setenv("OMMX_BASIC_AUTH_PASSWORD", SECRET)
    creds = resolve_credentials("127.0.0.1:5000")
    assert creds is not None and (creds.username, creds.password) == ("envuser", SECRET)
    assert "OMMX_BASIC_AUTH" in creds.source
    assert resolve_credentials("127.0.0.1:5001") is None


def test_docker_hub_uses_legacy_index_key(_clean_env: Path) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"https://index.docker.io/v1/": {"auth": _b64("hub", SECRET)}}})
    creds = resolve_credentials("docker.io")
    assert creds is not None and creds.username == "hub"


def test_cred_helper_per_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _clean_env: Path) -> None:
    write_helper(tmp_path / "bin", "test", user="helper-user", secret=SECRET, host="r.example.com")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _write_config(
        _clean_env / ".docker",
        {"credHelpers": {"r.example.com": "test"}, "auths": {"r.example.com": {"auth": _b64("file", "x")}}},
    )
    creds = resolve_credentials("r.example.com")
    assert creds is not None and (creds.username, creds.password) == ("helper-user", SECRET)
    assert "docker-credential-test" in creds.source


def test_creds_store_falls_back_to_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _clean_env: Path) -> None:
    write_helper(tmp_path / "bin", "store", user="store-user", secret=SECRET, host="a.example.com")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _write_config(
        _clean_env / ".docker",
        {"credsStore": "store", "auths": {"b.example.com": {"auth": _b64("file-user", "x")}}},
    )
    a = resolve_credentials("a.example.com")
    b = resolve_credentials("b.example.com")
    assert a is not None and a.username == "store-user"
    assert b is not None and b.username == "file-user"
    assert resolve_credentials("c.example.com") is None


def test_missing_helper_is_anonymous_and_logged_without_secret(
    _clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_config(_clean_env / ".docker", {"credHelpers": {"r.example.com": "does-not-exist-xyz"}})
    with caplog.at_level(logging.DEBUG):
        assert resolve_credentials("r.example.com") is None
    assert "docker-credential-does-not-exist-xyz" in caplog.text


@pytest.mark.parametrize(
    "entry",
    [{"auth": "!!not base64!!"}, {"auth": _b64("nocolon", "")[:-4]}, {"username": 3}, "nonsense"],
)
def test_malformed_entries_are_ignored(_clean_env: Path, entry: object) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"r.example.com": entry}})
    assert resolve_credentials("r.example.com") is None


def test_unreadable_config_is_ignored(_clean_env: Path) -> None:
    (_clean_env / ".docker").mkdir()
    (_clean_env / ".docker" / "config.json").write_text("{not json")
    assert resolve_credentials("r.example.com") is None


def test_identity_token_entry(_clean_env: Path) -> None:
    _write_config(_clean_env / ".docker", {"auths": {"r.example.com": {"identitytoken": SECRET}}})
    creds = resolve_credentials("r.example.com")
    assert creds is not None and creds.identity_token and creds.password == SECRET


def test_repr_and_str_mask_the_secret() -> None:
    creds = Credentials("alice", SECRET, source="test")
    assert SECRET not in repr(creds)
    assert SECRET not in str(creds)
    assert SECRET not in f"{creds}"
    assert creds.basic_header() == "Basic " + _b64("alice", SECRET)
