"""Image names: OMMX-identical canonicalisation, derived names, round trip, and a
differential test against OMMX 3 itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ommx_experiment.engine.names import (
    ImageName,
    anonymous_artifact_name,
    anonymous_experiment_name,
    checkpoint_name,
    checkpoint_repository,
    is_anonymous,
)
from ommx_experiment.errors import InvalidImageNameError

DIGEST = "sha256:" + "ab" * 32

CANONICAL = [
    ("alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine", "latest"),
    ("alpine:3.19", "docker.io/library/alpine:3.19", "docker.io/library/alpine", "3.19"),
    ("team/app", "docker.io/team/app:latest", "docker.io/team/app", "latest"),
    ("docker.io/alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine", "latest"),
    ("registry-1.docker.io/alpine:v1", "docker.io/library/alpine:v1", "docker.io/library/alpine", "v1"),
    ("index.docker.io/team/app:v1", "docker.io/team/app:v1", "docker.io/team/app", "v1"),
    ("example.com/team/ck:v1", "example.com/team/ck:v1", "example.com/team/ck", "v1"),
    ("example.com/a/b/c", "example.com/a/b/c:latest", "example.com/a/b/c", "latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app", "latest"),
    ("localhost:5000/app:v2", "localhost:5000/app:v2", "localhost:5000/app", "v2"),
    ("127.0.0.1:5000/x/y:t", "127.0.0.1:5000/x/y:t", "127.0.0.1:5000/x/y", "t"),
    ("example.com:99999/app", "example.com:99999/app:latest", "example.com:99999/app", "latest"),
    ("library/" + "a" * 247, "docker.io/library/" + "a" * 247 + ":latest", "docker.io/library/" + "a" * 247, "latest"),
    ("example.com/" + "a" * 255, "example.com/" + "a" * 255 + ":latest", "example.com/" + "a" * 255, "latest"),
    ("example.com/app@sha512:" + "ab" * 64, "example.com/app@sha512:" + "ab" * 64, "example.com/app", "sha512:" + "ab" * 64),
    ("a_b.com/x", "a_b.com/x:latest", "a_b.com/x", "latest"),
    ("Example.COM/app:v1", "Example.COM/app:v1", "Example.COM/app", "v1"),
    (f"example.com/app@{DIGEST}", f"example.com/app@{DIGEST}", "example.com/app", DIGEST),
    (f"example.com/app:v1@{DIGEST}", f"example.com/app:v1@{DIGEST}", "example.com/app", DIGEST),
    ("a.b/c_d__e-f---g.h:Tag_1.x-y", "a.b/c_d__e-f---g.h:Tag_1.x-y", "a.b/c_d__e-f---g.h", "Tag_1.x-y"),
    ("2a02bd8f.ommx.local/experiment:20261126T040606-2ad6232d8988",
     "2a02bd8f.ommx.local/experiment:20261126T040606-2ad6232d8988",
     "2a02bd8f.ommx.local/experiment", "20261126T040606-2ad6232d8988"),
]

INVALID = [
    "",
    "INVALID/EXPERIMENT",
    "Alpine",
    "example.com/Team/app",
    "example.com/app:",
    "example.com/app:-tag",
    "example.com/app:" + "t" * 129,
    "example.com/app@sha256:xyz",
    "example.com//app",
    "example.com/app/",
    "/app",
    "app..x",
    "app_-x",
    "example.com/app:v1:v2",
    "exa mple.com/app",
    "example.com/app@",
    "example.com/" + "a" * 256,
    "a" * 250,  # 258 characters once normalised to library/...
    # OMMX 3 rejects bracketed IPv6 hosts (verified against 3.0.0b7 by the differential test)
    "[::1]:5000/app:v1",
    "[fe80::1]/app",
    "example.com/app@sha256:" + "ab" * 20,
    "example.com/app@md5:" + "ab" * 16,
    "example.com/app@sha512:" + "ab" * 32,
]


@pytest.mark.parametrize(("raw", "canonical", "repository", "reference"), CANONICAL)
def test_canonicalisation_table(raw: str, canonical: str, repository: str, reference: str) -> None:
    image = ImageName.parse(raw)
    assert str(image) == canonical
    assert image.repository == repository
    assert image.reference == reference
    assert ImageName.parse(canonical) == image


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_names_raise_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^Invalid image reference") as info:
        ImageName.parse(raw)
    assert isinstance(info.value, InvalidImageNameError)


def test_non_string_is_invalid() -> None:
    with pytest.raises(InvalidImageNameError, match=r"^Invalid image reference"):
        ImageName.parse(42)


def test_from_row_rebuilds_tag_and_digest_refs() -> None:
    assert str(ImageName.from_row("docker.io/library/alpine", "latest")) == "docker.io/library/alpine:latest"
    assert str(ImageName.from_row("localhost:5000/app", DIGEST)) == f"localhost:5000/app@{DIGEST}"


def test_is_local_only_for_dot_local_hosts() -> None:
    assert ImageName.parse("2a02bd8f.ommx.local/checkpoint:abc").is_local
    assert not ImageName.parse("example.com/app:v1").is_local
    assert not ImageName.parse("localhost:5000/app").is_local


def test_checkpoint_name_matches_ommx_verified_example() -> None:
    # ommx3-format.md §3.1, verified on OMMX 3.0.0b7.
    registry_id = "2a02bd8f" + "0" * 24
    name = checkpoint_name(registry_id, ImageName.parse("example.com/team/ck:v1"))
    assert str(name) == (
        "2a02bd8f.ommx.local/checkpoint:483c2948e3a668be88011401d472070721ee6ae5782587479af0092fa9fd3ea7"
    )
    assert name.tag == hashlib.sha256(b"example.com/team/ck:v1").hexdigest()
    assert checkpoint_repository(registry_id) == "2a02bd8f.ommx.local/checkpoint"


def test_checkpoint_tag_hashes_the_canonical_name() -> None:
    registry_id = "0123456789abcdef" * 2
    short = checkpoint_name(registry_id, ImageName.parse("alpine"))
    assert short.tag == hashlib.sha256(b"docker.io/library/alpine:latest").hexdigest()


def test_anonymous_name_shapes() -> None:
    registry_id = "deadbeef" + "1" * 24
    exp = anonymous_experiment_name(registry_id)
    art = anonymous_artifact_name(registry_id)
    assert re.fullmatch(r"deadbeef\.ommx\.local/experiment:[0-9]{8}T[0-9]{6}-[0-9a-f]{12}", str(exp))
    assert re.fullmatch(r"deadbeef\.ommx\.local/anonymous:[0-9]{8}T[0-9]{6}-[0-9a-f]{12}", str(art))
    assert ImageName.parse(str(exp)) == exp
    assert is_anonymous(exp) and is_anonymous(art)
    assert not is_anonymous(exp, experiments=False) and is_anonymous(art, experiments=False)
    assert anonymous_experiment_name(registry_id) != exp  # fresh nonce each time
    assert not is_anonymous(ImageName.parse("deadbeef.ommx.local/experiment:v1"))
    assert not is_anonymous(ImageName.parse("example.com/experiment:20261126T040606-2ad6232d8988"))


# --- round trip ---------------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_sep = st.sampled_from([".", "_", "__", "-", "--"])
_component = st.builds(
    lambda head, rest: head + "".join(s + a for s, a in rest), _alnum, st.lists(st.tuples(_sep, _alnum), max_size=2)
)
_path = st.lists(_component, min_size=1, max_size=3).map("/".join).filter(lambda p: p != "library")
_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_host = st.one_of(
    st.just(""),
    st.just("localhost"),
    st.lists(_label, min_size=2, max_size=3).map(".".join),
    st.just("registry-1.docker.io"),
)
_port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
_tag = st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True).map(lambda t: ":" + t))
_digest = st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(lambda b: "@sha256:" + hashlib.sha256(b).hexdigest()))


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    host = draw(_host)
    path = draw(_path)
    if not host and "/" in path and "." in path.split("/", 1)[0]:
        host = "example.com"  # a dotted first component *is* a host in the grammar
    prefix = f"{host}{draw(_port) if host and not host.startswith('registry-1') else ''}/" if host else ""
    return prefix + path + draw(_tag) + draw(_digest)


@given(valid_names())
def test_parse_str_round_trip(raw: str) -> None:
    image = ImageName.parse(raw)
    again = ImageName.parse(str(image))
    assert again == image
    assert str(again) == str(image)
    assert ImageName.from_row(image.repository, image.reference).repository == image.repository


# --- differential against OMMX 3 ------------------------------------------------------

TRICKY = [c[0] for c in CANONICAL] + INVALID + [
    "ubuntu:22.04",
    "library/ubuntu",
    "docker.io/library/ubuntu:22.04",
    "quay.io/org/repo:tag",
    "ghcr.io/jij-inc/ommx/experiment:v1",
    "my-registry.local:8443/a/b:c",
    "localhost:5000/app@" + DIGEST,
    "host:5000",
    "host:5000/app",
    "a/b/c/d/e:f",
    "a:b",
    "a.b:1",
    "foo_bar",
    "foo__bar",
    "foo___bar",
    "foo-bar",
    "foo.-bar",
    "UPPER.example.com/app",
    "example.com:99999/app",
    "example.com/app:" + "t" * 128,
    "example.com/app@sha512:" + "ab" * 64,
    "example.com/app@sha256:" + "AB" * 32,
    "example.com/app@sha256:" + "ab" * 20,
    "[::1]/app",
    "[::1]app",
    "docker.io/app:latest",
    "index.docker.io/app",
    "0.0_0/0",
    "a.b_c/d",
    "localhost",
    "localhost:5000",
    "a_b.com/x",
    "-a.com/x",
    "a-.com/x",
    "a..b/x",
    "a.com:/x",
    "a.b_c:5000/d",
    "A_B.c/d",
    "x.y_/a",
    "a:5/b",
    ".a/b",
]


def _ommx3_python() -> Path | None:
    configured = os.environ.get("OMMX3_PYTHON")
    candidates = [Path(configured)] if configured else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo / ".venv-ommx3" / "bin" / "python", Path("/tmp/venv-ommx3/bin/python")]
    for python in candidates:
        if python.exists() and subprocess.run(
            [str(python), "-c", "import ommx.experiment"], capture_output=True, timeout=120
        ).returncode == 0:
            return python
    return None


_OMMX3_CANON = r"""
import json, sys
from ommx.experiment import Experiment
out = {}
for name in json.loads(sys.stdin.read()):
    try:
        out[name] = Experiment.with_temp_local_registry(name).image_name
    except ValueError as exc:
        out[name] = None
print(json.dumps(out))
"""


def _ours(name: str) -> str | None:
    try:
        return str(ImageName.parse(name))
    except InvalidImageNameError:
        return None


@pytest.mark.ommx3
def test_differential_against_ommx3(tmp_path: Path) -> None:
    python = _ommx3_python()
    if python is None:
        from conftest import unavailable

        unavailable("OMMX 3 side venv not found (.venv-ommx3, /tmp/venv-ommx3 or $OMMX3_PYTHON)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMMX_LOCAL_REGISTRY_ROOT"] = str(tmp_path / "ommx3-root")
    proc = subprocess.run(
        [str(python), "-c", _OMMX3_CANON], input=json.dumps(TRICKY), env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(TRICKY) >= 40
    mismatches = {n: (theirs[n], _ours(n)) for n in TRICKY if theirs[n] != _ours(n)}
    assert mismatches == {}
