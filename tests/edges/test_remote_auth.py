"""Push/pull against the loopback registry behind htpasswd basic auth (alice/s3cret).

Credentials come from every supported source; wrong or missing ones give
``RemoteArtifactAuthenticationError``; no secret ever shows in messages, reprs,
tracebacks or logs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import traceback
from pathlib import Path

import pytest
from helpers.credentials import clear_ambient_credentials
from helpers.oci_registry import OciRegistry
from edges.test_auth import write_helper
from edges.test_remote import store_artifact, unique_name

from ommx_experiment.edges import remote, remote_http
from ommx_experiment.edges.remote import pull_artifact, push_artifact
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import RemoteArtifactAuthenticationError, RemoteArtifactNotFoundError

WRONG = "Wr0ng-pa55word-xyz"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ambient_credentials(tmp_path, monkeypatch)


def _env_creds(monkeypatch: pytest.MonkeyPatch, reg: OciRegistry, password: str) -> None:
    monkeypatch.setenv("OMMX_BASIC_AUTH_DOMAIN", reg.host)
    monkeypatch.setenv("OMMX_BASIC_AUTH_USERNAME", str(reg.username))
    monkeypatch.setenv("OMMX_BASIC_AUTH_PASSWORD", password)


def _docker_config(folder: Path, config: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _round_trip(tmp_path: Path, reg: OciRegistry, stem: str) -> None:
    name = unique_name(reg, stem)
    src = LocalRegistry.at(tmp_path / f"src-{stem}")
    digest, data = store_artifact(src, name, [os.urandom(4096)])
    assert push_artifact(src, name, digest, quiet=True) == digest
    dst = LocalRegistry.at(tmp_path / f"dst-{stem}")
    assert pull_artifact(dst, name, quiet=True) == digest
    assert dst.read_manifest(digest)[0] == data


def test_env_override_credentials(tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_creds(monkeypatch, oci_registry_auth, str(oci_registry_auth.password))
    _round_trip(tmp_path, oci_registry_auth, "env")


def test_docker_config_base64_auth(tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = base64.b64encode(str(oci_registry_auth.creds).encode()).decode()
    folder = _docker_config(tmp_path / "docker", {"auths": {oci_registry_auth.host: {"auth": encoded}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    _round_trip(tmp_path, oci_registry_auth, "dockercfg")


def test_home_docker_config_username_password(
    tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = {"username": oci_registry_auth.username, "password": oci_registry_auth.password}
    _docker_config(tmp_path / "home" / ".docker", {"auths": {f"http://{oci_registry_auth.host}": entry}})
    _round_trip(tmp_path, oci_registry_auth, "home")


def test_cred_helper(tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    write_helper(
        tmp_path / "bin", "test", user=str(oci_registry_auth.username), secret=str(oci_registry_auth.password),
        host=oci_registry_auth.host,
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = _docker_config(tmp_path / "docker", {"credHelpers": {oci_registry_auth.host: "test"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    _round_trip(tmp_path, oci_registry_auth, "helper")


def test_env_override_beats_docker_config(
    tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = base64.b64encode(f"{oci_registry_auth.username}:{WRONG}".encode()).decode()
    folder = _docker_config(tmp_path / "docker", {"auths": {oci_registry_auth.host: {"auth": encoded}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    _env_creds(monkeypatch, oci_registry_auth, str(oci_registry_auth.password))
    _round_trip(tmp_path, oci_registry_auth, "override")


def test_no_credentials(tmp_path: Path, oci_registry_auth: OciRegistry) -> None:
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactAuthenticationError, match="no credentials were found") as info:
        pull_artifact(dst, unique_name(oci_registry_auth), quiet=True)
    assert oci_registry_auth.host in str(info.value)
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry_auth)
    digest, _ = store_artifact(src, name, [b"x"])
    with pytest.raises(RemoteArtifactAuthenticationError):
        push_artifact(src, name, digest, quiet=True)


def _all_text(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        [str(exc), repr(exc), "".join(traceback.format_exception(exc)), caplog.text, repr(exc.__cause__)]
    )


def _secret_forms(user: str, password: str) -> list[str]:
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def test_wrong_password_is_authentication_error_without_leaking(
    tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _env_creds(monkeypatch, oci_registry_auth, WRONG)
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry_auth)
    digest, _ = store_artifact(src, name, [b"secretive"])
    with pytest.raises(RemoteArtifactAuthenticationError, match="rejected the credentials") as pushed:
        push_artifact(src, name, digest, quiet=True)
    with pytest.raises(RemoteArtifactAuthenticationError, match="rejected the credentials") as pulled:
        pull_artifact(LocalRegistry.at(tmp_path / "dst"), name, quiet=True)
    for info in (pushed, pulled):
        text = _all_text(info.value, caplog)
        assert "OMMX_BASIC_AUTH" in text  # names the source of the credentials ...
        for secret in _secret_forms(str(oci_registry_auth.username), WRONG):
            assert secret not in text  # ... never the secret


def test_right_password_never_leaks_on_other_errors(
    tmp_path: Path, oci_registry_auth: OciRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = str(oci_registry_auth.password)
    _env_creds(monkeypatch, oci_registry_auth, password)
    missing = unique_name(oci_registry_auth, "missing")
    with pytest.raises(RemoteArtifactNotFoundError) as info:
        pull_artifact(LocalRegistry.at(tmp_path / "dst"), missing, quiet=True)
    client = remote_http.RegistryClient(ImageName.parse(missing))
    client._creds()
    text = _all_text(info.value, caplog) + repr(client) + repr(client._creds())
    client.close()
    for secret in _secret_forms(str(oci_registry_auth.username), password):
        assert secret not in text
