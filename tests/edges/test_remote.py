"""Push/pull against a real loopback docker-registry (CNCF distribution 2.8).

Generic artifacts are built with the storage engine directly (blobs, ``oci.Manifest``,
``registry.publish``). The shared session registries (``oci_registry``,
``oci_registry_auth``) need a unique repository per test; tests that kill or corrupt
a registry start their own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from helpers.credentials import clear_ambient_credentials
from helpers.oci_registry import OciRegistry, running_registry

from ommx_experiment import media_types as mt
from ommx_experiment.edges import remote, remote_http
from ommx_experiment.edges.progress import Advance
from ommx_experiment.edges.remote import pull_artifact, push_artifact
from ommx_experiment.edges.remote_http import is_plain_http_host, registry_base_url
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import (
    InvalidRemoteArtifactError,
    RefConflictError,
    RemoteArtifactError,
    RemoteArtifactNotFoundError,
    RemoteArtifactTransportError,
)

TITLE = "org.opencontainers.image.title"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ambient_credentials(tmp_path, monkeypatch)


@pytest.fixture
def http_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every HTTP request our client sends, through ``requests`` or the direct path, as
    ``(method, path)`` (the requests still go out)."""
    calls: list[tuple[str, str]] = []
    original = requests.Session.send
    original_direct = remote_http._Connection.request

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        calls.append((str(request.method), urlsplit(str(request.url)).path))
        return original(self, request, **kwargs)  # type: ignore[arg-type]

    def direct(self: remote_http._Connection, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        calls.append((method, urlsplit(url).path))
        original_direct(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    monkeypatch.setattr(remote_http._Connection, "request", direct)
    return calls


def unique_name(reg: OciRegistry, stem: str = "art") -> str:
    return f"{reg.host}/tests/{stem}-{uuid.uuid4().hex[:10]}:v1"


def store_artifact(
    registry: LocalRegistry,
    name: str,
    layers: list[bytes],
    *,
    subject: Descriptor | None = None,
    artifact_type: str = mt.GENERIC_ARTIFACT_TYPE,
) -> tuple[str, bytes]:
    """Store blobs + manifest, publish ``name``; returns (manifest digest, manifest bytes)."""
    config = registry.blobs.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)
    descs = []
    for i, data in enumerate(layers):
        stored = registry.blobs.put_bytes(data)
        descs.append(Descriptor(mt.OCTET_STREAM, stored.digest, stored.size, {TITLE: f"layer{i}"}))
    manifest = Manifest(
        artifact_type, Descriptor(mt.OCI_EMPTY_CONFIG, config.digest, config.size), tuple(descs), subject=subject
    )
    data = manifest.to_bytes()
    digest = registry.blobs.put_bytes(data).digest
    registry.publish(name, digest)
    return digest, data


def temp_files(registry: LocalRegistry) -> list[str]:
    return [p.name for p in registry.blobs.dir.iterdir() if p.name.startswith(".")]


def raw_push_blob(base: str, repo: str, data: bytes) -> str:
    start = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10)
    assert start.status_code == 202
    digest = sha256_digest(data)
    loc = start.headers["Location"]
    put = requests.put(f"{loc}&digest={digest}", data=data, timeout=10)
    assert put.status_code == 201, put.text
    return digest


def registry_blob_path(reg: OciRegistry, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return reg.data_dir / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "plain"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.3.2.1", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("example.com", False),
        ("ghcr.io", False),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_plain_http_only_for_loopback(host: str, plain: bool) -> None:
    assert is_plain_http_host(host) is plain
    assert registry_base_url(host).startswith("http://" if plain else "https://")


def test_docker_hub_api_host() -> None:
    assert registry_base_url("docker.io") == "https://registry-1.docker.io"


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_generic_artifact(tmp_path: Path, oci_registry: OciRegistry) -> None:
    name = unique_name(oci_registry)
    src = LocalRegistry.at(tmp_path / "src")
    digest, data = store_artifact(src, name, [b"alpha" * 1000, os.urandom(3 << 20), b""])
    assert push_artifact(src, name, digest, quiet=True) == digest
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, name, quiet=True) == digest
    assert dst.resolve(name) == digest
    assert dst.read_manifest(digest)[0] == data
    dst.verify_closure(digest)
    for blob, _ in src.closure(digest):
        assert dst.blobs.get(blob) == src.blobs.get(blob)
    assert temp_files(dst) == []
    # the OCI layout view names the pulled ref
    index = json.loads((dst.root / "index.json").read_bytes())
    assert [m["annotations"][mt.REF_NAME_ANNOTATION] for m in index["manifests"]] == [name]
    # pulling again is a no-op returning the same digest
    assert pull_artifact(dst, name, quiet=True) == digest


def test_remote_digest_equals_local(tmp_path: Path, oci_registry: OciRegistry) -> None:
    name = unique_name(oci_registry)
    src = LocalRegistry.at(tmp_path / "src")
    digest, data = store_artifact(src, name, [b"x"])
    push_artifact(src, name, digest, quiet=True)
    image = ImageName.parse(name)
    resp = requests.get(
        f"{oci_registry.url}/v2/{image.path}/manifests/v1", headers={"Accept": mt.OCI_MANIFEST}, timeout=10
    )
    assert resp.content == data
    assert resp.headers["Docker-Content-Digest"] == digest


def test_push_uploads_only_missing_blobs(
    tmp_path: Path, oci_registry: OciRegistry, http_log: list[tuple[str, str]]
) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    shared = os.urandom(1 << 16)
    first = unique_name(oci_registry, "first")
    digest1, _ = store_artifact(src, first, [shared])
    push_artifact(src, first, digest1, quiet=True)
    assert sum(1 for m, _ in http_log if m == "PUT") == 3  # config, layer, manifest
    http_log.clear()
    # same repository, second artifact: shared layer and config are skipped
    second = first.replace(":v1", ":v2")
    digest2, _ = store_artifact(src, second, [shared, b"only-in-second"])
    push_artifact(src, second, digest2, quiet=True)
    puts = [path for m, path in http_log if m == "PUT"]
    heads = [path for m, path in http_log if m == "HEAD"]
    assert len(heads) == 3
    assert len(puts) == 2  # the new layer + the manifest
    assert puts[-1].endswith("/manifests/v2")
    http_log.clear()
    push_artifact(src, second, digest2, quiet=True)  # everything present: HEADs and the manifest only
    assert [m for m, _ in http_log].count("PUT") == 1
    assert not any(m == "POST" for m, _ in http_log)


def test_fresh_push_stops_checking_small_blobs_after_the_probe(
    tmp_path: Path, oci_registry: OciRegistry, http_log: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(remote.CONCURRENCY_ENV, "1")  # the probe's order is the blobs' order
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry, "probe")
    layers = [b"small-%d" % i for i in range(20)] + [os.urandom(remote.SMALL_BLOB + 1)]
    digest, _ = store_artifact(src, name, layers)
    push_artifact(src, name, digest, quiet=True)
    heads = [p for m, p in http_log if m == "HEAD"]
    assert len(heads) == remote.HEAD_PROBE + 1  # the probe, then only the blob above SMALL_BLOB
    assert sum(1 for m, p in http_log if m == "PUT" and "/blobs/" in p) == 22  # config + 21 layers
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, name, quiet=True) == digest
    dst.verify_closure(digest)
    http_log.clear()  # a second tag of the same content: the probe finds blobs, every one is checked
    push_artifact(src, name.replace(":v1", ":v2"), digest, quiet=True)
    assert [m for m, _ in http_log].count("HEAD") == 22 and not any(m == "POST" for m, _ in http_log)


def test_pull_reuses_blobs_already_stored(
    tmp_path: Path, oci_registry: OciRegistry, http_log: list[tuple[str, str]]
) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    payload = os.urandom(1 << 16)
    digest, _ = store_artifact(src, name, [payload, b"second"])
    push_artifact(src, name, digest, quiet=True)
    dst = LocalRegistry.at(tmp_path / "dst")
    dst.blobs.put_bytes(payload)
    http_log.clear()
    pull_artifact(dst, name, quiet=True)
    blob_gets = [p for m, p in http_log if m == "GET" and "/blobs/" in p]
    assert len(blob_gets) == 2  # config and "second"; the stored payload is reused
    dst.verify_closure(digest)


def test_fork_with_subject_pushes_without_subject(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    parent_name = unique_name(oci_registry, "parent")
    parent_digest, parent_bytes = store_artifact(src, parent_name, [b"parent layer"])
    subject = Descriptor(mt.OCI_MANIFEST, parent_digest, len(parent_bytes))
    child_name = unique_name(oci_registry, "child")
    child_digest, child_bytes = store_artifact(src, child_name, [b"child layer"], subject=subject)
    push_artifact(src, child_name, child_digest, quiet=True)
    repo = ImageName.parse(child_name).path
    head = requests.head(f"{oci_registry.url}/v2/{repo}/manifests/{parent_digest}", timeout=10)
    assert head.status_code == 404  # the subject is not pushed
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, child_name, quiet=True) == child_digest
    assert dst.read_manifest(child_digest)[0] == child_bytes
    assert dst.read_manifest(child_digest)[1].subject == parent_digest
    assert not dst.blobs.exists(parent_digest)  # the subject is not pulled either
    dst.verify_closure(child_digest)


def test_pull_by_digest(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [b"by digest"])
    push_artifact(src, name, digest, quiet=True)
    pinned = f"{ImageName.parse(name).repository}@{digest}"
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, pinned, quiet=True) == digest
    assert dst.resolve(pinned) == digest


def test_push_by_digest_only_name(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [b"pinned push"])
    pinned = f"{ImageName.parse(name).repository}@{digest}"
    assert push_artifact(src, pinned, digest, quiet=True) == digest
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, pinned, quiet=True) == digest


def test_pull_refuses_conflicting_local_ref(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [b"remote"])
    push_artifact(src, name, digest, quiet=True)
    dst = LocalRegistry.at(tmp_path / "dst")
    local_digest, _ = store_artifact(dst, name, [b"local, different"])
    with pytest.raises(RefConflictError, match=local_digest):
        pull_artifact(dst, name, quiet=True)
    assert dst.resolve(name) == local_digest


# --- refusals and not-found ----------------------------------------------------------------------


def test_local_names_are_refused(tmp_path: Path) -> None:
    reg = LocalRegistry.at(tmp_path / "src")
    name = f"{reg.registry_id[:8]}.ommx.local/anonymous:20260101T000000-0123456789ab"
    digest, _ = store_artifact(reg, name, [b"anon"])
    with pytest.raises(RemoteArtifactError, match="rename"):
        push_artifact(reg, name, digest)
    with pytest.raises(RemoteArtifactNotFoundError, match="rename"):
        pull_artifact(reg, "abc.local/x:y")


def test_missing_tag_and_repository(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [b"present"])
    push_artifact(src, name, digest, quiet=True)
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactNotFoundError, match="MANIFEST_UNKNOWN") as missing_tag:
        pull_artifact(dst, name.replace(":v1", ":nope"), quiet=True)
    assert oci_registry.host in str(missing_tag.value)
    with pytest.raises(RemoteArtifactNotFoundError, match="not found on"):
        pull_artifact(dst, f"{oci_registry.host}/tests/never-pushed-{uuid.uuid4().hex[:8]}:v1", quiet=True)
    assert dst.list_refs() == []


@pytest.mark.timeout(60)
def test_unreachable_port_fails_fast_naming_host(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactTransportError, match=f"127.0.0.1:{port}") as info:
        pull_artifact(dst, f"127.0.0.1:{port}/tests/x:v1", quiet=True)
    assert "3 attempt(s)" in str(info.value)  # first try + 2 bounded retries
    assert dst.list_refs() == []


# --- failures leave nothing behind ----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_registry_killed_mid_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_registry(tmp_path / "own-registry") as reg:
        src = LocalRegistry.at(tmp_path / "src")
        name = f"{reg.host}/tests/killed:v1"
        big = os.urandom(64 << 20)
        digest, _ = store_artifact(src, name, [b"small first", big])
        push_artifact(src, name, digest, quiet=True)
        original = remote_http.RegistryClient.blob_chunks
        big_digest = sha256_digest(big)

        def killing_chunks(self: remote_http.RegistryClient, blob: str, size: int, advance: Advance) -> Iterator[bytes]:
            for i, chunk in enumerate(original(self, blob, size, advance)):
                if blob == big_digest and i == 1:
                    os.kill(reg.pid, signal.SIGKILL)
                yield chunk

        monkeypatch.setattr(remote_http.RegistryClient, "blob_chunks", killing_chunks)
        dst = LocalRegistry.at(tmp_path / "dst")
        with pytest.raises(RemoteArtifactTransportError, match=reg.host):
            pull_artifact(dst, name, quiet=True)
    assert dst.resolve(name) is None
    assert dst.list_refs() == []
    assert not dst.blobs.exists(big_digest)
    assert not dst.blobs.exists(digest)
    assert temp_files(dst) == []


_KILLED_PULL = """
import os, sys
from ommx_experiment.engine import blobstore
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.edges.remote import pull_artifact
real = blobstore.Staging.add_chunks
staged = []
def add_chunks(self, *args, **kwargs):
    staged.append(real(self, *args, **kwargs))
    if len(staged) == 12:  # blobs staged, fsyncs queued on the helpers, workers mid-download
        os.kill(os.getpid(), 9)
    return staged[-1]
blobstore.Staging.add_chunks = add_chunks
pull_artifact(LocalRegistry.at(sys.argv[1]), sys.argv[2], quiet=True)
"""


def test_pull_killed_mid_way_publishes_nothing_and_the_next_pull_cleans_up(
    tmp_path: Path, oci_registry: OciRegistry
) -> None:
    import subprocess
    import sys

    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry, "killed-pull")
    payloads = [os.urandom(300 + i) for i in range(40)]
    digest, _ = store_artifact(src, name, payloads)
    push_artifact(src, name, digest, quiet=True)
    root = tmp_path / "dst"
    LocalRegistry.at(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    killed = subprocess.run([sys.executable, "-c", _KILLED_PULL, str(root), name], env=env, timeout=120)
    assert killed.returncode == -9
    dst = LocalRegistry.at(root)
    assert dst.resolve(name) is None and dst.list_refs() == []
    assert not any(dst.blobs.exists(sha256_digest(p)) for p in payloads)
    assert any(n.startswith(".oxe-stage-") for n in temp_files(dst))  # what the kill left behind
    assert pull_artifact(dst, name, quiet=True) == digest
    dst.verify_closure(digest)
    assert temp_files(dst) == []


def test_corrupt_remote_blob_publishes_nothing(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    good = os.urandom(1 << 18)
    digest, _ = store_artifact(src, name, [b"fine layer " + uuid.uuid4().bytes, good])
    push_artifact(src, name, digest, quiet=True)
    stored = registry_blob_path(oci_registry, sha256_digest(good))
    stored.write_bytes(os.urandom(len(good)))  # same size, other content
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(InvalidRemoteArtifactError, match=sha256_digest(good)):
        pull_artifact(dst, name, quiet=True)
    assert dst.list_refs() == []
    assert not dst.blobs.exists(digest)
    assert not dst.blobs.exists(sha256_digest(good))
    assert not any(dst.blobs.iter_digests())  # not even the fine layer is published
    assert temp_files(dst) == []


def test_non_ommx_artifact_type_is_rejected(tmp_path: Path, oci_registry: OciRegistry) -> None:
    repo = f"tests/foreign-{uuid.uuid4().hex[:10]}"
    config_digest = raw_push_blob(oci_registry.url, repo, b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.not-ommx",
        "config": {"mediaType": mt.OCI_EMPTY_CONFIG, "digest": config_digest, "size": 2},
        "layers": [],
    }
    put = requests.put(
        f"{oci_registry.url}/v2/{repo}/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": mt.OCI_MANIFEST},
        timeout=10,
    )
    assert put.status_code == 201, put.text
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(InvalidRemoteArtifactError, match="not an OMMX artifact"):
        pull_artifact(dst, f"{oci_registry.host}/{repo}:v1", quiet=True)
    assert dst.list_refs() == []
    assert not any(dst.blobs.iter_digests())


def test_manifest_digest_mismatch_is_detected() -> None:
    image = ImageName.parse("127.0.0.1:1/a/b@sha256:" + "0" * 64)
    with pytest.raises(InvalidRemoteArtifactError, match="hashes to"):
        remote._verified_manifest_digest(image, b"{}", None)
    tagged = ImageName.parse("127.0.0.1:1/a/b:v1")
    with pytest.raises(InvalidRemoteArtifactError, match="announced"):
        remote._verified_manifest_digest(tagged, b"{}", "sha256:" + "1" * 64)
    assert remote._verified_manifest_digest(tagged, b"{}", sha256_digest(b"{}")) == sha256_digest(b"{}")


def test_push_with_missing_local_blob_fails_before_network(tmp_path: Path) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = "127.0.0.1:1/tests/incomplete:v1"  # nothing listens: reaching the network would be a transport error
    digest, _ = store_artifact(src, name, [b"will vanish"])
    src.blobs.path(sha256_digest(b"will vanish")).unlink()
    with pytest.raises(Exception, match="Failed to read blob") as info:
        push_artifact(src, name, digest, quiet=True)
    assert not isinstance(info.value, RemoteArtifactTransportError)


# --- progress -----------------------------------------------------------------------------------


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_tty_not_quiet_and_after_a_second(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ommx_experiment.edges import progress

    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [os.urandom(1 << 20), os.urandom(1 << 20)])
    tty = _FakeTty()
    monkeypatch.setattr("sys.stderr", tty)
    push_artifact(src, name, digest)  # a loopback push of 2 MiB is done well within a second: silent
    assert tty.getvalue() == ""
    monkeypatch.setattr(progress, "SHOW_AFTER", 0.0)  # from here on every transfer counts as long
    push_artifact(src, name.replace(":v1", ":v2"), digest, quiet=True)
    assert tty.getvalue() == ""
    pull_artifact(LocalRegistry.at(tmp_path / "dst"), name)
    assert "pull" in tty.getvalue() and "blobs" in tty.getvalue()  # one line: blobs and bytes of the whole pull
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    pull_artifact(LocalRegistry.at(tmp_path / "dst2"), name)
    assert plain.getvalue() == ""


def test_transfer_progress_counts_from_many_threads() -> None:
    import threading

    from ommx_experiment.edges.progress import TransferProgress

    progress = TransferProgress("pull", 8, 8 * 1000, enabled=False)

    def work() -> None:
        for _ in range(1000):
            progress.advance(1)
        progress.blob_done()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (progress.done_blobs, progress.done_bytes, progress.shown) == (8, 8000, False)


@pytest.mark.parametrize(("value", "expected"), [(None, 8), ("1", 1), ("16", 16), ("+3", 3)])
def test_transfer_concurrency_reads_the_ommx_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int
) -> None:
    if value is None:
        monkeypatch.delenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", value)
    assert remote.transfer_concurrency() == expected


@pytest.mark.parametrize("value", ["0", "-2", "four", "", " 4", "2.5"])
def test_transfer_concurrency_rejects_what_ommx_rejects(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", value)
    with pytest.raises(ValueError, match="OMMX_ARTIFACT_TRANSFER_CONCURRENCY must be a positive integer"):
        remote.transfer_concurrency()


@pytest.mark.parametrize("workers", ["1", "3"])
def test_many_blobs_round_trip_at_any_concurrency(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    monkeypatch.setenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", workers)
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    payloads = [os.urandom(100 + i) for i in range(40)]
    digest, _ = store_artifact(src, name, payloads)
    push_artifact(src, name, digest, quiet=True)
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, name, quiet=True) == digest
    for data in payloads:
        assert dst.blobs.get(sha256_digest(data)) == data


def test_loopback_transfers_go_over_keep_alive_connections_without_requests(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the plain-HTTP loopback docker-registry a push and a pull (HEADs, uploads with a
    1 MiB+ streamed blob, blob GETs, manifests) never use ``requests``, and each client opens
    one connection (the server keeps it alive), so a transfer opens at most workers + 1."""
    import http.client

    monkeypatch.setenv("OMMX_ARTIFACT_TRANSFER_CONCURRENCY", "3")

    def no_requests(*args: object, **kwargs: object) -> None:
        raise AssertionError("requests was used")

    monkeypatch.setattr(requests.Session, "send", no_requests)
    opened = []
    real_connect = remote_http._Connection.connect

    def connect(self: http.client.HTTPConnection) -> None:
        opened.append(self)
        real_connect(self)  # type: ignore[arg-type]

    monkeypatch.setattr(remote_http._Connection, "connect", connect)
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    payloads = [os.urandom(100 + i) for i in range(30)] + [os.urandom((1 << 20) + 5)]
    digest, _ = store_artifact(src, name, payloads)
    push_artifact(src, name, digest, quiet=True)
    assert 1 < len(opened) <= 4
    opened.clear()
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, name, quiet=True) == digest
    assert 1 < len(opened) <= 4
    assert all(dst.blobs.get(sha256_digest(data)) == data for data in payloads)


def test_loopback_transfers_do_not_import_requests(tmp_path: Path, oci_registry: OciRegistry) -> None:
    """On the direct path ``requests`` (~0.3 s of imports) is never imported."""
    import subprocess
    import sys

    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    digest, _ = store_artifact(src, name, [os.urandom(300 + i) for i in range(5)])
    script = (
        "import sys\n"
        "from ommx_experiment.engine.registry import LocalRegistry\n"
        "from ommx_experiment.edges.remote import pull_artifact, push_artifact\n"
        f"push_artifact(LocalRegistry.at({str(tmp_path / 'src')!r}), {name!r}, {digest!r}, quiet=True)\n"
        f"assert pull_artifact(LocalRegistry.at({str(tmp_path / 'dst')!r}), {name!r}, quiet=True) == {digest!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_failing_blob_stops_the_parallel_pull_cleanly(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One blob of many fails: the error is raised, nothing is published, no temp file stays."""
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry)
    payloads = [os.urandom(200 + i) for i in range(30)]
    digest, _ = store_artifact(src, name, payloads)
    push_artifact(src, name, digest, quiet=True)
    bad = sha256_digest(payloads[17])
    real = remote.RegistryClient.blob_chunks

    def flaky(self: remote.RegistryClient, blob: str, size: int, advance: object) -> object:
        if blob == bad:
            raise RemoteArtifactTransportError("connection reset (test)")
        return real(self, blob, size, advance)  # type: ignore[arg-type]

    monkeypatch.setattr(remote.RegistryClient, "blob_chunks", flaky)
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(RemoteArtifactTransportError, match="test"):
        pull_artifact(dst, name, quiet=True)
    assert dst.resolve(name) is None
    assert [p.name for p in dst.blobs.dir.iterdir()] == []


def test_invalid_experiment_is_rejected_after_download(tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    name = unique_name(oci_registry, "bad-experiment")
    # experiment artifactType, but an empty OCI config: §5 validation must refuse it
    digest, _ = store_artifact(src, name, [b"layer"], artifact_type=mt.EXPERIMENT_ARTIFACT_TYPE)
    push_artifact(src, name, digest, quiet=True)
    dst = LocalRegistry.at(tmp_path / "dst")
    with pytest.raises(InvalidRemoteArtifactError, match="not a valid OMMX experiment"):
        pull_artifact(dst, name, quiet=True)
    assert dst.list_refs() == []
    assert not any(dst.blobs.iter_digests())
    assert temp_files(dst) == []
