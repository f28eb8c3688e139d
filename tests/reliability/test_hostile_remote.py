"""Hostile remote registries: a fake OCI registry on 127.0.0.1 whose answers are mutated.

Manifest bodies (random bytes, invalid UTF-8, deep / huge JSON, wrong types, bad digests,
bad sizes, LayerRefs out of range, a Parquet layer that disagrees, a lying digest
header, a non-OMMX ``artifactType``), blob responses (truncated, too long, wrong bytes,
wrong ``Content-Length``, slow then reset) and status codes (redirect loops, 401 without
a challenge, 429/500 forever). For every case ``pull_artifact`` (and ``Experiment.load``
for some) raises an error of our tree, publishes no ref and no new blob, leaves no temp
file in ``blobs/sha256``, writes nothing outside the registry, sends a bounded number of
requests and returns within a bounded time (a hang fails the test, it does not block it).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.credentials import clear_ambient_credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ommx_experiment import Experiment
from ommx_experiment import media_types as mt
from ommx_experiment.edges.remote import pull_artifact
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import InvalidArtifactError, RemoteArtifactError
from ommx_experiment.format.run_params import encode_msgpack

from . import _foreign as fx
from . import _support as sup

CASE_BOUND = 10.0  # seconds a single pull may take before we call it a hang
MAX_REQUESTS = 100  # per case; the server answers 500 beyond it and the test fails

# --- the valid artifact the server serves unless a scenario changes it --------------------------------


_config = sup.experiment_config


PARAMS = encode_msgpack({0: {"a": 1}}, [0])
PAYLOADS = [(mt.OCTET_STREAM, b"experiment doc"), (mt.OCTET_STREAM, b"run file"), (mt.RUN_PARAMETERS, PARAMS)]
GOOD_MANIFEST, GOOD_BLOBS = fx.experiment_blobs(_config(), PAYLOADS)
GOOD = json.loads(GOOD_MANIFEST)
CONFIG_DIGEST = GOOD["config"]["digest"]
LAYER_DIGESTS = [layer["digest"] for layer in GOOD["layers"]]
PRESTORED = LAYER_DIGESTS[0]  # already in the local CAS before every pull: reused, never re-published


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer. ``content_length`` None = the body's length; ``reset_after`` = send
    that many body bytes, pause, then reset the connection (RST)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_length: int | None = None
    reset_after: int | None = None


Responder = Callable[[str, str], Reply]  # (kind "manifest"|"blob", last path component) -> Reply


@dataclass(frozen=True, slots=True)
class Scenario:
    label: str
    manifest: bytes = GOOD_MANIFEST
    blobs: dict[str, bytes] = field(default_factory=lambda: dict(GOOD_BLOBS))
    override: Responder | None = None  # takes precedence over the honest answer
    digest_header: str | None = None  # None: the honest digest of ``manifest``

    def answer(self, kind: str, ref: str, path: str) -> Reply:
        if self.override is not None:
            reply = self.override(kind, ref)
            if reply is not None:
                return reply
        if kind == "manifest":
            header = self.digest_header or sha256_digest(self.manifest)
            return Reply(200, (("Content-Type", mt.OCI_MANIFEST), ("Docker-Content-Digest", header)), self.manifest)
        if kind == "blob" and ref in self.blobs:
            return Reply(200, (("Content-Type", "application/octet-stream"),), self.blobs[ref])
        return Reply(404, (("Content-Type", "application/json"),), b'{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}')


class FakeRegistry:
    """A threaded ``http.server`` playing an OCI registry for the current :class:`Scenario`."""

    def __init__(self) -> None:
        self.scenario = Scenario("honest")
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                outer.requests.append((self.command, self.path))
                path = self.path.split("?", 1)[0]
                kind = "manifest" if "/manifests/" in path else "blob" if "/blobs/" in path else "other"
                if len(outer.requests) > MAX_REQUESTS:
                    reply = Reply(500)
                else:
                    reply = outer.scenario.answer(kind, path.rsplit("/", 1)[-1], path)
                try:
                    self._send(reply)
                except OSError:  # the client gave up first (it read enough to reject us)
                    pass

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for key, value in reply.headers:
                    self.send_header(key, value)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if reply.reset_after is None:
                    self.wfile.write(reply.body)
                    return
                self.wfile.write(reply.body[: reply.reset_after])
                self.wfile.flush()
                time.sleep(0.3)
                # SO_LINGER 0: close() sends RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def use(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.requests = []

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    try:
        yield fake
    finally:
        fake.close()


class Scene:
    def __init__(self, tmp_path: Path, server: FakeRegistry) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.registry = LocalRegistry.default()
        self.registry.blobs.put_bytes(GOOD_BLOBS[PRESTORED])
        self.fresh_count = 0
        self.secret = tmp_path / "outside" / "secret.txt"
        self.secret.parent.mkdir()
        self.secret.write_bytes(b"canary")
        self.count = 0

    def fresh(self) -> None:
        """A new registry (hypothesis examples: one example's legitimate pull must not serve the next)."""
        self.fresh_count += 1
        self.registry = LocalRegistry.at(self.tmp_path / "fresh" / str(self.fresh_count))
        self.registry.blobs.put_bytes(GOOD_BLOBS[PRESTORED])

    def state(self) -> tuple[object, ...]:
        refs = [(str(r.image_name), r.manifest_digest) for r in self.registry.list_refs()]
        outside = fx.snapshot(self.tmp_path, self.registry.root)
        outside = {k: v for k, v in outside.items() if not k.startswith("fresh")} if self.fresh_count else outside
        return refs, frozenset(self.registry.blobs.iter_digests()), outside, self.secret.read_bytes()

    def temp_files(self) -> list[str]:
        return [p.name for p in self.registry.blobs.dir.iterdir() if p.name.startswith(".")]

    def name(self, reference: str | None = None) -> str:
        self.count += 1
        return f"{self.server.host}/rel/hostile-{self.count}{reference or ':v1'}"

    def expect_rejected(
        self, scenario: Scenario, *, via: str = "pull", reference: str | None = None, may_succeed: bool = False
    ) -> BaseException | None:
        self.server.use(scenario)
        before = self.state()
        image = self.name(reference)
        outcome: dict[str, Any] = {}

        def attempt() -> None:
            try:
                if via == "pull":
                    outcome["value"] = pull_artifact(self.registry, image, quiet=True)
                else:
                    outcome["value"] = Experiment.load(image)
            except BaseException as exc:  # noqa: BLE001 -- judged below
                outcome["error"] = exc

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(CASE_BOUND)
        if os.environ.get("OXE_SHOW_REJECTIONS"):
            print(f"\n{scenario.label}: {type(outcome.get('error')).__name__}: {str(outcome.get('error'))[:160]}")
        assert not worker.is_alive(), f"{scenario.label}: {via} of {image} still running after {CASE_BOUND} s"
        error = outcome.get("error")
        if error is None and may_succeed:
            assert outcome["value"] == sha256_digest(scenario.manifest), scenario.label
            assert self.registry.resolve(image) == outcome["value"] and self.temp_files() == []
            self.registry.verify_closure(outcome["value"])
            return None
        assert error is not None, f"{scenario.label}: {via} of {image} succeeded with {outcome.get('value')!r}"
        assert isinstance(error, (RemoteArtifactError, InvalidArtifactError)), f"{scenario.label}: foreign {error!r}"
        assert len(self.server.requests) <= MAX_REQUESTS, f"{scenario.label}: {len(self.server.requests)} requests"
        assert self.state() == before, scenario.label
        assert self.temp_files() == [], scenario.label
        return error


@pytest.fixture
def scene(tmp_path: Path, server: FakeRegistry, monkeypatch: pytest.MonkeyPatch) -> Scene:
    clear_ambient_credentials(tmp_path, monkeypatch)
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # a `../` write would land inside the snapshot
    return Scene(tmp_path, server)


# --- scenario builders ---------------------------------------------------------------------------------


def _with_manifest(label: str, obj_or_bytes: Any, **kw: Any) -> Scenario:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return Scenario(label, manifest=data, **kw)


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = json.loads(json.dumps(obj))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _experiment(label: str, config: dict[str, object] | bytes, payloads: list[tuple[str, bytes]] = PAYLOADS,
                extra: list[tuple[str, bytes, dict[str, str]]] = ()) -> Scenario:  # type: ignore[assignment]
    manifest, blobs = fx.experiment_blobs(config, payloads, extra_layers=extra)
    return Scenario(label, manifest=manifest, blobs=blobs)


def _blob_reply(target: str, make: Callable[[bytes], Reply]) -> Responder:
    def respond(kind: str, ref: str) -> Reply | None:
        return make(GOOD_BLOBS[ref]) if kind == "blob" and ref == target else None

    return respond  # type: ignore[return-value]


def _status(kind_wanted: str, reply: Reply) -> Responder:
    def respond(kind: str, ref: str) -> Reply | None:
        return reply if kind == kind_wanted else None

    return respond  # type: ignore[return-value]


def _redirect_to_self(kind_wanted: str, status: int) -> Responder:
    def respond(kind: str, ref: str) -> Reply | None:
        if kind != kind_wanted:
            return None
        prefix = "manifests" if kind == "manifest" else "blobs"
        return Reply(status, (("Location", f"/v2/rel/loop/{prefix}/{ref}"),))

    return respond  # type: ignore[return-value]


def _bad_parquet() -> Scenario:
    extra = [(mt.PARQUET, b"PAR1 garbage PAR1", {mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})]
    return _experiment("parquet-garbage", _config(), extra=extra)


def _planted_parquet() -> Scenario:
    from ommx_experiment.format import run_params as rp

    planted = rp.encode_parquet(rp.build_table({0: {"a": 999}}, [0]), [0])
    extra = [(mt.PARQUET, planted, {mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})]
    return _experiment("parquet-disagrees", _config(), extra=extra)


LAYER = LAYER_DIGESTS[1]
NESTED = b"[" * 100_000 + b"]" * 100_000

FIXED: list[Scenario] = [
    # manifest bodies
    _with_manifest("empty-body", b""),
    _with_manifest("invalid-utf8", GOOD_MANIFEST.replace(b'"schemaVersion"', b'"schema\xff\xfeVersion"')),
    _with_manifest("deeply-nested", NESTED),
    _with_manifest("nested-in-annotations", GOOD_MANIFEST[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    _with_manifest("huge-json", b'{"schemaVersion":2,"pad":"' + b"x" * (5 << 20) + b'"}'),
    _with_manifest("json-array", b"[]"),
    _with_manifest("digest-md5", _set(GOOD, ("layers", 0, "digest"), "md5:" + "0" * 32)),
    _with_manifest("digest-traversal", _set(GOOD, ("layers", 0, "digest"), "sha256:../../../../outside/secret.txt")),
    _with_manifest("config-digest-traversal", _set(GOOD, ("config", "digest"), "sha256:../" + "0" * 61)),
    _with_manifest("digest-uppercase", _set(GOOD, ("layers", 1, "digest"), LAYER.upper().replace("SHA256", "sha256"))),
    _with_manifest("size-negative", _set(GOOD, ("layers", 1, "size"), -1)),
    _with_manifest("size-huge", _set(GOOD, ("layers", 1, "size"), 2**70)),
    _with_manifest("size-int64-max", _set(GOOD, ("layers", 1, "size"), 2**63 - 1)),
    _with_manifest("size-too-small", _set(GOOD, ("layers", 1, "size"), 1)),
    _with_manifest("size-float", _set(GOOD, ("layers", 1, "size"), 8.0)),
    _with_manifest("artifact-type-foreign", _set(GOOD, ("artifactType",), "application/vnd.example.not-ommx")),
    _with_manifest("artifact-type-missing", {k: v for k, v in GOOD.items() if k != "artifactType"}),
    _with_manifest("layers-not-array", _set(GOOD, ("layers",), {"0": GOOD["layers"][0]})),
    Scenario("digest-header-lies", digest_header=sha256_digest(b"another manifest")),
    Scenario("index-content-type", override=_status("manifest", Reply(200, (("Content-Type", mt.OCI_INDEX),), b"{}"))),
    _experiment("layer-ref-out-of-range", _config(attachments={"entries": {"doc": 99}})),
    _experiment("run-params-ref-out-of-range", _config(run_parameters=7)),
    _experiment("config-not-json", b"\xff not json"),
    # blob responses
    Scenario("blob-truncated", override=_blob_reply(LAYER, lambda b: Reply(200, body=b[:3]))),
    Scenario("blob-longer", override=_blob_reply(LAYER, lambda b: Reply(200, body=b + b"extra"))),
    Scenario("blob-wrong-bytes", override=_blob_reply(LAYER, lambda b: Reply(200, body=bytes(x ^ 1 for x in b)))),
    Scenario("blob-length-overstated", override=_blob_reply(LAYER, lambda b: Reply(200, body=b, content_length=len(b) + 100))),
    Scenario("blob-length-understated", override=_blob_reply(LAYER, lambda b: Reply(200, body=b, content_length=2))),
    Scenario("blob-slow-then-reset", override=_blob_reply(LAYER, lambda b: Reply(200, body=b, reset_after=2))),
    Scenario("config-slow-then-reset", override=_blob_reply(CONFIG_DIGEST, lambda b: Reply(200, body=b, reset_after=0))),
    Scenario("blob-missing", blobs={d: b for d, b in GOOD_BLOBS.items() if d != LAYER}),
    Scenario("manifest-slow-then-reset", override=_status("manifest", Reply(200, body=GOOD_MANIFEST, reset_after=10))),
    # status codes
    Scenario("manifest-301-loop", override=_redirect_to_self("manifest", 301)),
    Scenario("blob-302-loop", override=_redirect_to_self("blob", 302)),
    Scenario("401-without-challenge", override=_status("manifest", Reply(401))),
    Scenario("blob-401-without-challenge", override=_status("blob", Reply(401))),
    Scenario("429-forever", override=_status("manifest", Reply(429, (("Retry-After", "3600"),)))),
    Scenario("500-forever", override=_status("blob", Reply(500))),
    Scenario("manifest-204", override=_status("manifest", Reply(204))),
]


@pytest.mark.parametrize("scenario", FIXED, ids=[s.label for s in FIXED])
def test_every_hostile_answer_is_rejected_cleanly(scene: Scene, scenario: Scenario) -> None:
    scene.expect_rejected(scenario)


@pytest.mark.parametrize(
    "label", ["digest-traversal", "layer-ref-out-of-range", "blob-slow-then-reset", "artifact-type-foreign", "manifest-301-loop"]
)
def test_experiment_load_rejects_cleanly(scene: Scene, label: str) -> None:
    scene.expect_rejected(next(s for s in FIXED if s.label == label), via="load")


def test_pinned_digest_that_the_body_does_not_match(scene: Scene) -> None:
    scene.expect_rejected(Scenario("pinned"), reference="@" + sha256_digest(b"not this manifest"))


@pytest.mark.parametrize("scenario", [_bad_parquet(), _planted_parquet()], ids=lambda s: s.label)
def test_a_parquet_layer_that_disagrees_is_pulled_but_never_read(scene: Scene, scenario: Scenario) -> None:
    """OMMX reads only the MessagePack layer, so the pull succeeds; our reads of the run
    parameters compare the Parquet layer first and fall back to the MessagePack table."""
    scene.server.use(scenario)
    image = scene.name()
    pull_artifact(scene.registry, image, quiet=True)
    exp = Experiment.load(image)
    assert exp.run_parameters_df()["a"].tolist() == [1]
    assert scene.temp_files() == []


def test_the_honest_server_is_pulled(scene: Scene) -> None:
    """The harness can succeed: the unmodified scenario pulls and loads (so rejections mean something)."""
    scene.server.use(Scenario("honest"))
    image = scene.name()
    assert pull_artifact(scene.registry, image, quiet=True) == sha256_digest(GOOD_MANIFEST)
    assert Experiment.load(image).get_blob("doc") == b"experiment doc"
    assert scene.temp_files() == []


# --- hypothesis: random mutations of the manifest and blob answers --------------------------------------

STR_FIELDS = [("mediaType",), ("config", "mediaType"), ("config", "digest"), ("layers", 0, "digest"), ("layers", 2, "mediaType")]
INT_FIELDS = [("schemaVersion",), ("config", "size"), ("layers", 0, "size"), ("layers", 2, "size")]
OBJ_FIELDS = [("config",), ("layers", 1), ("annotations",)]
NON_STR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NON_OBJ = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.lists(st.none(), max_size=2))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def wrong_types(draw: st.DrawFn) -> Scenario:
    group = draw(st.sampled_from(["str", "int", "obj"]))
    if group == "str":
        path = draw(st.sampled_from(STR_FIELDS))
        value = draw(NON_STR)
    elif group == "int":
        path = draw(st.sampled_from(INT_FIELDS))
        value = draw(st.one_of(NON_STR, st.integers()).filter(lambda v: v != _get(GOOD, path) or type(v) is not int))
    else:
        path = draw(st.sampled_from(OBJ_FIELDS))
        # `"annotations": null` is absent (as OMMX's serde reads it), not a defect
        bad_annotations = st.one_of(NON_OBJ.filter(lambda v: v is not None),
                                    st.dictionaries(st.text(max_size=3), NON_STR, min_size=1, max_size=2))
        value = draw(NON_OBJ if path != ("annotations",) else bad_annotations)
    return _with_manifest(f"wrong-type {path}={value!r}", _set(GOOD, path, value))


@st.composite
def bad_digests(draw: st.DrawFn) -> Scenario:
    path = draw(st.sampled_from([("config", "digest"), ("layers", 0, "digest"), ("layers", 2, "digest")]))
    value = draw(st.one_of(
        st.text(max_size=80),
        st.builds(lambda s: "sha256:" + s, st.text(max_size=70)),
        st.builds(lambda s: "sha256:../" + s, st.text(alphabet="0123456789abcdef./", max_size=70)),
        st.builds(lambda s: "sha512:" + s, st.text(alphabet="0123456789abcdef", min_size=128, max_size=128)),
    ).filter(lambda v: v != _get(GOOD, path)))
    return _with_manifest(f"digest {path}={value!r}", _set(GOOD, path, value))


@st.composite
def byte_mutations(draw: st.DrawFn) -> Scenario:
    data = bytearray(GOOD_MANIFEST)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = (data[pos] + draw(st.integers(1, 255))) % 256  # always a different byte
    return _with_manifest("byte-flips", bytes(data))


@st.composite
def blob_mutations(draw: st.DrawFn) -> Scenario:
    target = draw(st.sampled_from([CONFIG_DIGEST, *LAYER_DIGESTS[1:]]))
    how = draw(st.sampled_from(["truncate", "extend", "replace", "length", "reset"]))
    n = draw(st.integers(0, 64))
    noise = draw(st.binary(min_size=1, max_size=64))

    def make(body: bytes) -> Reply:
        if how == "truncate":
            return Reply(200, body=body[: min(n, len(body) - 1)])
        if how == "extend":
            return Reply(200, body=body + noise)
        if how == "replace":
            return Reply(200, body=noise if noise != body else noise + b"!")
        if how == "length":
            return Reply(200, body=body, content_length=max(0, len(body) + (n + 1) * (1 if n % 2 else -1)))
        return Reply(200, body=body, reset_after=min(n, len(body) - 1))

    return Scenario(f"blob {how} {target[:15]} n={n}", override=_blob_reply(target, make))


@st.composite
def statuses(draw: st.DrawFn) -> Scenario:
    kind = draw(st.sampled_from(["manifest", "blob"]))
    status = draw(st.sampled_from([301, 302, 307, 308, 401, 403, 404, 429, 500, 502, 503, 418, 204, 206]))
    if status in (301, 302, 307, 308):
        return Scenario(f"{kind} {status} loop", override=_redirect_to_self(kind, status))
    return Scenario(f"{kind} {status}", override=_status(kind, Reply(status, body=draw(st.binary(max_size=40)))))


SCENARIOS = st.one_of(
    st.binary(max_size=300).map(lambda b: _with_manifest("random-bytes", b)),
    wrong_types(), bad_digests(), byte_mutations(), blob_mutations(), statuses(),
)
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(HYPOTHESIS, max_examples=40)
@given(scenario=SCENARIOS)
def test_mutated_answers(scene: Scene, scenario: Scenario) -> None:
    _judge(scene, scenario)


@pytest.mark.stress
@settings(HYPOTHESIS, max_examples=600)
@given(scenario=SCENARIOS)
def test_mutated_answers_stress(scene: Scene, scenario: Scenario) -> None:
    _judge(scene, scenario)


def _judge(scene: Scene, scenario: Scenario) -> None:
    # A byte flip inside a free-form string (a layer's mediaType) can yield another valid
    # artifact: that one may be pulled, but only exactly as served.
    scene.fresh()
    scene.expect_rejected(scenario, may_succeed=scenario.label == "byte-flips")
