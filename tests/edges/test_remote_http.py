"""Protocol paths the loopback docker-registry cannot produce: a Bearer-token flow,
403, persistent 5xx and an image index. A small real HTTP server on 127.0.0.1 plays
registry (and token server); our client talks to it over real sockets.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.credentials import clear_ambient_credentials

from ommx_experiment import media_types as mt
from ommx_experiment.edges.remote import pull_artifact
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import (
    InvalidRemoteArtifactError,
    RemoteArtifactAuthenticationError,
    RemoteArtifactAuthorizationError,
    RemoteArtifactTransportError,
)

USER, PASSWORD, TOKEN = "tok-user", "T0ken-Pa55", "issued-token-42"
CONFIG = mt.OCI_EMPTY_CONFIG_BYTES
LAYER = b"served by the stub"
MANIFEST = Manifest(
    mt.GENERIC_ARTIFACT_TYPE,
    Descriptor(mt.OCI_EMPTY_CONFIG, sha256_digest(CONFIG), len(CONFIG)),
    (Descriptor(mt.OCTET_STREAM, sha256_digest(LAYER), len(LAYER)),),
).to_bytes()
BLOBS = {sha256_digest(CONFIG): CONFIG, sha256_digest(LAYER): LAYER}

Route = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ambient_credentials(tmp_path, monkeypatch)


class _Server:
    def __init__(self, route: Route) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                outer.requests.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = route(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _serve_content(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    if "/manifests/" in handler.path:
        return 200, {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(MANIFEST)}, MANIFEST
    digest = handler.path.rsplit("/", 1)[-1]
    if "/blobs/" in handler.path and digest in BLOBS:
        return 200, {"Content-Type": "application/octet-stream"}, BLOBS[digest]
    return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"x"}]}'


def _token_registry(handler: BaseHTTPRequestHandler, host: str) -> tuple[int, dict[str, str], bytes]:
    if handler.path.startswith("/token"):
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            return 401, {}, b""
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": TOKEN}).encode()
    if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
        challenge = f'Bearer realm="http://{host}/token",service="stub",scope="repository:tests/tok:pull"'
        return 401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}'
    return _serve_content(handler)


@pytest.fixture
def token_server() -> Iterator[_Server]:
    holder: dict[str, str] = {}
    with _Server(lambda h: _token_registry(h, holder["host"])) as server:
        holder["host"] = server.host
        yield server


def _env_creds(monkeypatch: pytest.MonkeyPatch, host: str, password: str) -> None:
    monkeypatch.setenv("OMMX_BASIC_AUTH_DOMAIN", host)
    monkeypatch.setenv("OMMX_BASIC_AUTH_USERNAME", USER)
    monkeypatch.setenv("OMMX_BASIC_AUTH_PASSWORD", password)


def test_bearer_token_flow(tmp_path: Path, token_server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_creds(monkeypatch, token_server.host, PASSWORD)
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, f"{token_server.host}/tests/tok:v1", quiet=True) == sha256_digest(MANIFEST)
    assert dst.blobs.get(sha256_digest(LAYER)) == LAYER
    token_requests = [r for r in token_server.requests if r[1].startswith("/token")]
    assert len(token_requests) == 1  # the token is reused for the blob downloads
    assert "service=stub" in token_requests[0][1] and "scope=repository" in token_requests[0][1]
    registry_requests = [r for r in token_server.requests if not r[1].startswith("/token")]
    assert registry_requests[-1][2] == f"Bearer {TOKEN}"


def test_bearer_token_refused(
    tmp_path: Path, token_server: _Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-Pa55word"
    _env_creds(monkeypatch, token_server.host, wrong)
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactAuthenticationError, match="token server") as info:
        pull_artifact(dst, f"{token_server.host}/tests/tok:v1", quiet=True)
    assert wrong not in str(info.value) + repr(info.value) + caplog.text
    assert dst.list_refs() == []


def test_anonymous_bearer_token(tmp_path: Path, token_server: _Server) -> None:
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactAuthenticationError, match="no credentials were found"):
        pull_artifact(dst, f"{token_server.host}/tests/tok:v1", quiet=True)
    token_requests = [r for r in token_server.requests if r[1].startswith("/token")]
    assert token_requests and token_requests[0][2] is None  # asked anonymously, without an Authorization header


def test_forbidden_is_authorization_error(tmp_path: Path) -> None:
    body = b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
    with _Server(lambda h: (403, {"Content-Type": "application/json"}, body)) as server:
        with pytest.raises(RemoteArtifactAuthorizationError, match="DENIED"):
            pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{server.host}/tests/x:v1", quiet=True)


def test_proxy_variables_are_honoured_on_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read once per client only when it names no proxy; with one, every
    request (the blob GETs too) goes through it, as ``requests`` does."""
    with _Server(_serve_content) as proxy:
        for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
        monkeypatch.setenv("http_proxy", f"http://{proxy.host}")
        name = "localhost:9/tests/x:v1"  # nothing listens there: only the proxy can answer
        assert pull_artifact(LocalRegistry.at(tmp_path / "dst"), name, quiet=True) == sha256_digest(MANIFEST)
    paths = [path for _, path, _ in proxy.requests]
    assert paths and all(p.startswith("http://localhost:9/v2/tests/x/") for p in paths)
    assert sum("/blobs/" in p for p in paths) == len(BLOBS)


def test_persistent_5xx_is_transport_error_after_bounded_retries(tmp_path: Path) -> None:
    with _Server(lambda h: (503, {}, b"")) as server:
        with pytest.raises(RemoteArtifactTransportError, match=server.host):
            pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{server.host}/tests/x:v1", quiet=True)
    assert len(server.requests) == 3


def test_transient_5xx_is_retried(tmp_path: Path) -> None:
    failures = iter([True])

    def route(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if next(failures, False):
            return 502, {}, b""
        return _serve_content(handler)

    with _Server(route) as server:
        digest = pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{server.host}/tests/x:v1", quiet=True)
    assert digest == sha256_digest(MANIFEST)


def test_image_index_is_rejected(tmp_path: Path) -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
    with _Server(lambda h: (200, {"Content-Type": mt.OCI_INDEX}, index)) as server:
        with pytest.raises(InvalidRemoteArtifactError, match="image.index"):
            pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{server.host}/tests/x:v1", quiet=True)


def test_blob_longer_than_declared_is_rejected(tmp_path: Path) -> None:
    def route(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = _serve_content(handler)
        return status, headers, body + b"extra" if "/blobs/" in handler.path else body

    with _Server(route) as server:
        dst = LocalRegistry.at(tmp_path / "dst")
        with pytest.raises(InvalidRemoteArtifactError, match="declared"):
            pull_artifact(dst, f"{server.host}/tests/x:v1", quiet=True)
    assert dst.list_refs() == [] and not any(dst.blobs.iter_digests())


@pytest.mark.parametrize(("setting", "limit"), [("3", 3), (None, 8)])
def test_pull_keeps_at_most_the_configured_number_of_blobs_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, limit: int
) -> None:
    """``OMMX_ARTIFACT_TRANSFER_CONCURRENCY`` (default 8) bounds the blob GETs open at once."""
    import time

    if setting is None:
        monkeypatch.delenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", setting)
    layers = [b"layer %d" % i for i in range(3 * limit)]
    blobs = {sha256_digest(CONFIG): CONFIG, **{sha256_digest(b): b for b in layers}}
    manifest = Manifest(
        mt.GENERIC_ARTIFACT_TYPE,
        Descriptor(mt.OCI_EMPTY_CONFIG, sha256_digest(CONFIG), len(CONFIG)),
        tuple(Descriptor(mt.OCTET_STREAM, sha256_digest(b), len(b)) for b in layers),
    ).to_bytes()
    guard = threading.Lock()
    in_flight = [0, 0]  # now, most seen

    def route(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if "/manifests/" in handler.path:
            return 200, {"Content-Type": mt.OCI_MANIFEST}, manifest
        with guard:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.05)  # hold the request open so that the others pile up behind the limit
        with guard:
            in_flight[0] -= 1
        return 200, {}, blobs[handler.path.rsplit("/", 1)[-1]]

    with _Server(route) as server:
        pulled = pull_artifact(LocalRegistry.at(tmp_path / "dst"), f"{server.host}/tests/x:v1", quiet=True)
    assert pulled == sha256_digest(manifest)
    assert limit // 2 < in_flight[1] <= limit  # well parallel, never beyond the setting


# --- the direct path (keep-alive http.client to a plain-HTTP loopback registry) ------------------------


class _RawServer:
    """An HTTP/1.1 server on raw sockets that answers ``reply(n, method, path)`` (``n`` counts
    requests over all connections): ``(status line and headers, body, close)``; with ``close``
    the connection is closed after the answer without saying so (no ``Connection: close``), as a
    registry closes an idle keep-alive connection. A reply of ``None`` closes without answering."""

    def __init__(self, reply: Callable[[int, str, str], tuple[bytes, bytes, bool] | None]) -> None:
        import socket

        self.reply = reply
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, User-Agent)
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> _RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Any) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
                length = int(fields.get("content-length", "0"))
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                with self._lock:
                    n = len(self.requests)
                    self.requests.append((method, path, fields.get("user-agent")))
                answer = self.reply(n, method, path)
                if answer is None:
                    return
                head_bytes, body, close = answer
                conn.sendall(head_bytes + (b"" if method == "HEAD" else body))
                if close:
                    return


def _ok(body: bytes = b"", **headers: str) -> bytes:
    fields = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{fields}\r\n".encode()


def _client(host: str) -> Any:
    from ommx_experiment.edges.remote_http import RegistryClient
    from ommx_experiment.engine.names import ImageName

    return RegistryClient(ImageName.parse(f"{host}/tests/direct:v1"))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Retries happen at once; the list records each backoff (attempt number)."""
    from ommx_experiment.edges import remote_http

    calls: list[int] = []
    monkeypatch.setattr(remote_http, "_backoff", calls.append)
    return calls


def test_a_closed_idle_connection_is_sent_again_once_without_a_retry(no_backoff: list[int]) -> None:
    """The server closes every connection after one answer, silently: each next request meets
    a dead keep-alive connection and is sent again on a new one, not retried with backoff; the
    blob-upload PUT (never retried) gets through too."""
    layer = sha256_digest(LAYER)

    def reply(n: int, method: str, path: str) -> tuple[bytes, bytes, bool]:
        if method == "POST":
            return b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nLocation: /v2/tests/direct/blobs/uploads/u1\r\n\r\n", b"", True
        if method == "PUT":
            return b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", b"", True
        return _ok(b"", Content_Type="application/octet-stream"), b"", True

    with _RawServer(reply) as server, _client(server.host) as client:
        assert client.blob_exists(layer) and client.blob_exists(layer) and client.blob_exists(layer)
        client.upload_blob(layer, len(LAYER), lambda: [LAYER])
    assert [m for m, _, _ in server.requests] == ["HEAD", "HEAD", "HEAD", "POST", "PUT"]
    assert server.connections == 5 and no_backoff == []
    assert server.requests[-1][1].endswith("/uploads/u1?digest=" + layer.replace(":", "%3A"))


def test_a_request_is_sent_again_only_once(no_backoff: list[int]) -> None:
    """After the first answer the server closes every connection without answering: the
    request that met the dead connection is sent once more, then the ordinary retries (two,
    with backoff) run out."""

    def reply(n: int, method: str, path: str) -> tuple[bytes, bytes, bool] | None:
        return (_ok(), b"", True) if n == 0 else None

    with _RawServer(reply) as server, _client(server.host) as client:
        assert client.blob_exists(sha256_digest(LAYER))
        with pytest.raises(RemoteArtifactTransportError, match=rf"check blob sha256:\w+ .*{server.host} after 3 attempt"):
            client.blob_exists(sha256_digest(LAYER))
    assert len(server.requests) == 1 + 3  # the first; the resend and two retries of the second
    assert no_backoff == [0, 1]


def test_a_short_blob_body_is_a_transport_error(tmp_path: Path) -> None:
    """Fewer body bytes than ``Content-Length``, then the connection closes: a transport error
    naming the blob (``http.client`` alone would end the body quietly)."""
    layer = sha256_digest(LAYER)

    def reply(n: int, method: str, path: str) -> tuple[bytes, bytes, bool]:
        if "/manifests/" in path:
            return _ok(MANIFEST, Content_Type=mt.OCI_MANIFEST), MANIFEST, False
        body = BLOBS[path.rsplit("/", 1)[-1]]
        if path.endswith(layer):
            return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode(), body, True
        return _ok(body), body, False

    dst = LocalRegistry.at(tmp_path / "dst")
    with _RawServer(reply) as server:
        with pytest.raises(
            RemoteArtifactTransportError, match=rf"download blob {layer} .*broke after {len(LAYER)} bytes"
        ):
            pull_artifact(dst, f"{server.host}/tests/x:v1", quiet=True)
    assert dst.list_refs() == [] and not any(dst.blobs.iter_digests())


def test_a_redirect_is_followed_through_requests(tmp_path: Path) -> None:
    """A ``307`` on the direct path sends the request again through ``requests``, which
    follows the redirect; the other requests stay on the direct path."""
    layer = sha256_digest(LAYER)

    def reply(n: int, method: str, path: str) -> tuple[bytes, bytes, bool]:
        if "/manifests/" in path:
            return _ok(MANIFEST, Content_Type=mt.OCI_MANIFEST), MANIFEST, False
        if path.startswith("/elsewhere/"):
            return _ok(LAYER), LAYER, False
        if path.endswith(layer):
            return f"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere/{layer}\r\nContent-Length: 0\r\n\r\n".encode(), b"", False
        body = BLOBS[path.rsplit("/", 1)[-1]]
        return _ok(body), body, False

    dst = LocalRegistry.at(tmp_path / "dst")
    with _RawServer(reply) as server:
        assert pull_artifact(dst, f"{server.host}/tests/x:v1", quiet=True) == sha256_digest(MANIFEST)
    assert dst.blobs.get(layer) == LAYER
    via = [(path.rsplit("/", 1)[0].rsplit("/", 1)[-1], "requests" if (agent or "").startswith("python-requests") else "direct")
           for _, path, agent in server.requests]
    assert via.count(("manifests", "direct")) == 1 and via.count(("blobs", "direct")) == 2
    assert via.count(("blobs", "requests")) == 1 and via[-1] == ("elsewhere", "requests")


@pytest.mark.parametrize(
    ("env", "direct"),
    [
        ({}, True),
        ({"HTTP_PROXY": "http://proxy.invalid:3128"}, False),
        ({"ALL_PROXY": "http://proxy.invalid:3128"}, False),
        ({"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "127.0.0.1"}, True),
        ({"HTTPS_PROXY": "http://proxy.invalid:3128"}, True),  # not for an http:// registry
    ],
)
def test_a_proxy_that_applies_disables_the_direct_path(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], direct: bool
) -> None:
    """The direct path is taken only where ``requests`` would not use a proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    seen: list[str | None] = []

    def reply(n: int, method: str, path: str) -> tuple[bytes, bytes, bool]:
        return _ok(), b"", False

    with _RawServer(reply) as server, _client(server.host) as client:
        if direct:
            assert client.blob_exists(sha256_digest(LAYER))
            seen = [agent for _, _, agent in server.requests]
            assert seen == [None]  # http.client sends no User-Agent; requests would
        else:
            assert client._direct is None
