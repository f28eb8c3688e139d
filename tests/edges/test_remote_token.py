"""Bearer-token auth against a real docker-registry configured with ``auth: token``.

A small token server on 127.0.0.1 checks basic credentials and issues RS256 JWTs
(signed with ``openssl``) carrying an ``x5c`` certificate that the registry trusts
through ``rootcertbundle``. The registry validates every token itself, so this
exercises the whole challenge → token → retry flow, including the scope upgrade
from ``pull`` to ``pull,push`` during a push.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import unavailable
from helpers.credentials import clear_ambient_credentials
from helpers.oci_registry import _free_port, _is_ready, _stop
from edges.test_remote import store_artifact

from ommx_experiment.edges.remote import pull_artifact, push_artifact
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import RemoteArtifactAuthenticationError

USER, PASSWORD = "tokuser", "t0ken-S3cret"
SERVICE, ISSUER = "loopback-registry", "loopback-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenIssuer:
    def __init__(self, workdir: Path) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            unavailable("`openssl` not found on PATH (Debian package openssl)")
        self.key = workdir / "key.pem"
        self.cert = workdir / "cert.pem"
        subprocess.run(
            [str(openssl), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=loopback-token-issuer"],
            check=True, capture_output=True,
        )
        der = subprocess.run(
            [str(openssl), "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued: list[str] = []

    def token(self, scope: str | None) -> str:
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
            check=True, capture_output=True,
        ).stdout
        self.issued.append(scope or "")
        return f"{signing_input}.{_b64url(signature)}"


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[str, _TokenIssuer]]:
    exe = shutil.which("docker-registry")
    if exe is None:
        unavailable("`docker-registry` not found on PATH (Debian package docker-registry)")
    issuer = _TokenIssuer(tmp_path)
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class TokenHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            scope = parse_qs(urlsplit(self.path).query).get("scope", [None])[0]
            body = json.dumps({"token": issuer.token(scope)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    token_server = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=token_server.serve_forever, daemon=True).start()
    port = _free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: loopback-test-secret}}\n"
        f"auth: {{token: {{realm: 'http://127.0.0.1:{token_server.server_address[1]}/token', "
        f"service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {issuer.cert}}}}}\n"
    )
    with (tmp_path / "registry.log").open("ab") as log:
        proc = subprocess.Popen([exe, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while not _is_ready(f"http://127.0.0.1:{port}"):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", issuer
    finally:
        _stop(proc)
        token_server.shutdown()
        token_server.server_close()


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ambient_credentials(tmp_path, monkeypatch)


def _docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, password: str) -> None:
    folder = tmp_path / "docker"
    folder.mkdir()
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))


def test_push_and_pull_with_bearer_tokens(
    tmp_path: Path, token_registry: tuple[str, _TokenIssuer], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, issuer = token_registry
    _docker_config(tmp_path, monkeypatch, host, PASSWORD)
    name = f"{host}/tests/token:v1"
    src = LocalRegistry.at(tmp_path / "src")
    digest, data = store_artifact(src, name, [os.urandom(1 << 16)])
    assert push_artifact(src, name, digest, quiet=True) == digest
    # scope upgraded for the upload; the registry's challenge lists the actions in either order
    actions = [set(scope.rsplit(":", 1)[1].split(",")) for scope in issuer.issued if scope.startswith("repository:tests/token:")]
    assert {"pull", "push"} in actions
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, name, quiet=True) == digest
    assert dst.read_manifest(digest)[0] == data


def test_bearer_token_with_wrong_password(
    tmp_path: Path, token_registry: tuple[str, _TokenIssuer], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, issuer = token_registry
    wrong = "n0t-the-S3cret"
    _docker_config(tmp_path, monkeypatch, host, wrong)
    with pytest.raises(RemoteArtifactAuthenticationError, match="rejected the credentials") as info:
        pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{host}/tests/token:v1", quiet=True)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert issuer.issued == []
