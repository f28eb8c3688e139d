"""GC's lean manifest reader (`gc_links`) against the role-based reader it shortcuts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ommx_experiment.engine.manifest_links import GC, gc_links, parse_manifest_links
from ommx_experiment.errors import InvalidArtifactError

D1, D2, D3, D4 = (f"sha256:{c * 64}" for c in "1234")
DIGEST = f"sha256:{'f' * 64}"


def _desc(digest: str = D1, **extra: Any) -> dict[str, Any]:
    return {"mediaType": "application/json", "digest": digest, "size": 3, **extra}


def _manifest(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2, "config": _desc(D1), "layers": [_desc(D2), _desc(D3)]}
    for key, value in fields.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


_DROP = object()

DOCUMENTS: list[tuple[str, bytes]] = [
    ("plain", json.dumps(_manifest()).encode()),
    ("subject", json.dumps(_manifest(subject=_desc(D4))).encode()),
    ("annotations", json.dumps(_manifest(annotations={"a": "b"})).encode()),
    ("empty annotations", json.dumps(_manifest(annotations={})).encode()),
    ("null annotations", json.dumps(_manifest(annotations=None)).encode()),
    ("no layers", json.dumps(_manifest(layers=[])).encode()),
    ("whitespace around", b" \n\t" + json.dumps(_manifest()).encode() + b"\r\n "),
    ("layer annotations", json.dumps(_manifest(layers=[_desc(D2, annotations={"x": "y"})])).encode()),
    ("extra data", json.dumps(_manifest()).encode() + b" {}"),
    ("truncated", json.dumps(_manifest()).encode()[:-5]),
    ("array", b"[1, 2, 3]"),
    ("string", b'"manifest"'),
    ("empty", b""),
    ("not json", b"not the manifest"),
    ("no schemaVersion", json.dumps(_manifest(schemaVersion=_DROP)).encode()),
    ("bool schemaVersion", json.dumps(_manifest(schemaVersion=True)).encode()),
    ("string schemaVersion", json.dumps(_manifest(schemaVersion="2")).encode()),
    ("float schemaVersion", json.dumps(_manifest(schemaVersion=2.0)).encode()),
    ("layers object", json.dumps(_manifest(layers={})).encode()),
    ("no layers key", json.dumps(_manifest(layers=_DROP)).encode()),
    ("no config", json.dumps(_manifest(config=_DROP)).encode()),
    ("config not object", json.dumps(_manifest(config=[D1])).encode()),
    ("config bad digest", json.dumps(_manifest(config=_desc("sha256:ABC"))).encode()),
    ("config upper digest", json.dumps(_manifest(config=_desc(f"sha256:{'A' * 64}"))).encode()),
    ("config negative size", json.dumps(_manifest(config=_desc(size=-1))).encode()),
    ("config bool size", json.dumps(_manifest(config=_desc(size=True))).encode()),
    ("config float size", json.dumps(_manifest(config=_desc(size=3.0))).encode()),
    ("config no mediaType", json.dumps(_manifest(config={"digest": D1, "size": 3})).encode()),
    ("config int mediaType", json.dumps(_manifest(config=_desc(mediaType=1))).encode()),
    ("layer not object", json.dumps(_manifest(layers=[D2])).encode()),
    ("layer bad digest", json.dumps(_manifest(layers=[_desc("sha512:00")])).encode()),
    ("layer digest number", json.dumps(_manifest(layers=[_desc(7)])).encode()),
    ("subject bad", json.dumps(_manifest(subject={"digest": D4})).encode()),
    ("subject not object", json.dumps(_manifest(subject=D4)).encode()),
    ("annotations array", json.dumps(_manifest(annotations=["a"])).encode()),
    ("annotations number value", json.dumps(_manifest(annotations={"a": 1})).encode()),
    ("annotations null value", json.dumps(_manifest(annotations={"a": None})).encode()),
    ("deep nesting", b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("NaN size", json.dumps(_manifest()).encode().replace(b'"size": 3', b'"size": NaN', 1)),
]


def _reference(data: bytes) -> tuple[str, list[str], str | None] | None:
    try:
        links = parse_manifest_links(data, DIGEST, GC)
    except InvalidArtifactError:
        return None
    return links.config_digest, [d for d, _ in links.layers], links.subject


@pytest.mark.parametrize("known", [(), frozenset({D1, D2, D3, D4})], ids=["unknown", "known"])
@pytest.mark.parametrize(("label", "data"), DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_gc_links_accepts_and_refuses_as_the_gc_rules(label: str, data: bytes, known: frozenset[str]) -> None:
    expected = _reference(data)
    if expected is None:
        with pytest.raises(InvalidArtifactError, match=DIGEST):
            gc_links(data, DIGEST, known)
    else:
        assert gc_links(data, DIGEST, known) == expected


def test_the_cases_cover_both_outcomes() -> None:
    outcomes = [_reference(data) is None for _, data in DOCUMENTS]
    assert outcomes.count(False) >= 8 and outcomes.count(True) >= 25


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf" + json.dumps(_manifest()).encode(),  # UTF-8 BOM
        json.dumps(_manifest()).encode("utf-16-le"),
        json.dumps(_manifest()).encode("utf-32"),
        json.dumps(_manifest(annotations={"a": "\ud800"}), ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ],
    ids=["bom", "utf-16", "utf-32", "encoded-surrogate"],
)
def test_gc_links_reads_utf8_only_as_ommx(data: bytes) -> None:
    """``json.loads`` of bytes also takes these; OMMX's ``serde_json`` (and so its GC) does not."""
    assert _reference(data) is not None
    with pytest.raises(InvalidArtifactError, match="not a valid OCI image manifest"):
        gc_links(data, DIGEST)
