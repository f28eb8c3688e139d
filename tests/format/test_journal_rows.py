"""Journal run rows: the attachment-only fast read gives what the general read gives, and stays strict."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ommx_experiment.engine.oci import Descriptor, parse_descriptor
from ommx_experiment.errors import InvalidArtifactError, InvalidInputError
from ommx_experiment.format.content import AttachmentContent, RunContent
from ommx_experiment.format.journal import _parse_run_row, _run_content, run_body

DIGEST = "sha256:" + "ab" * 32


def _run(**kw: object) -> RunContent:
    desc = Descriptor("application/json", DIGEST, 12, {"org.ommx.user.k": "v"})
    base: dict[str, object] = dict(
        run_id=7, status="failed", reason="boom", attachments=AttachmentContent({"cfg": desc}, {"cfg": "c.json"}),
        started_ns=5, finished_ns=9,
    )
    base.update(kw)
    return RunContent(**base)  # type: ignore[arg-type]


def test_attachment_only_rows_read_back_as_the_general_reader_reads_them() -> None:
    run = _run()
    text = run_body(run, {"p": 1.5, "s": "x"})
    got, params, closed = _parse_run_row(text)
    row = json.loads(text)
    general = _run_content(row[1], row[2], row[3], row[6], row[7], row[5])
    assert got == general == run
    assert (got.started_ns, got.finished_ns) == (general.started_ns, general.finished_ns) == (5, 9)
    assert got.attachments.filenames == {"cfg": "c.json"}
    assert params == {"p": 1.5, "s": "x"} and closed == 9


@pytest.mark.parametrize(
    ("extras", "match"),
    [
        ({"attachments": {"cfg": {"mediaType": "a/b", "digest": "sha256:xyz", "size": 1}}}, "invalid digest"),
        ({"attachments": {"cfg": {"mediaType": "a/b", "digest": DIGEST, "size": True}}}, "non-negative"),
        ({"attachments": {}, "trace": ""}, "expected an object"),
        ({"attachments": {}, "solves": None}, "TypeError"),
    ],
)
def test_damaged_rows_still_raise(extras: dict[str, object], match: str) -> None:
    text = json.dumps([3, 1, "finished", None, {}, 5, extras, None])
    with pytest.raises(InvalidArtifactError, match=match):
        _parse_run_row(text)


def test_parsed_descriptors_are_checked_as_constructed_ones() -> None:
    obj = {"mediaType": "a/b", "digest": DIGEST, "size": 3, "annotations": {"k": "v"}, "artifactType": "t/u"}
    parsed = parse_descriptor(obj, "x")
    built = Descriptor("a/b", DIGEST, 3, {"k": "v"}, "t/u")
    assert parsed == built and hash(parsed) == hash(built)
    for bad in ({**obj, "size": -1}, {**obj, "digest": "md5:00"}, {**obj, "annotations": {"k": 1}}, {**obj, "mediaType": 3}):
        with pytest.raises(InvalidArtifactError):
            parse_descriptor(bad, "x")
    with pytest.raises(InvalidInputError):
        Descriptor("a/b", DIGEST, -1)


_JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
)


_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON, max_size=8))
def test_the_row_encoder_writes_exactly_what_json_dumps_writes(row: list[object]) -> None:
    """Rows are encoded by json's C encoder made once (``journal._dumps_row``): same text as ``json.dumps``."""
    from ommx_experiment.format.journal import _dumps_row

    assert _dumps_row(row) == json.dumps(row)


def test_the_row_encoder_refuses_what_json_refuses() -> None:
    from ommx_experiment.format.journal import _dumps_row

    with pytest.raises(TypeError, match="Object of type bytes is not JSON serializable"):
        _dumps_row([3, {"p": b"x"}])


_names = st.text(max_size=5) | st.sampled_from(["%s", "%d", "100%", 'a"b', "é名", "\x00"])
_descs = st.builds(
    Descriptor,
    media_type=_names,
    digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    size=st.integers(min_value=0, max_value=2**64),
    annotations=st.sampled_from([{}, {}, {"k%": "v"}]),
)


@settings(max_examples=300, deadline=None)
@given(
    attachments=st.dictionaries(_names, _descs, max_size=3),
    filenames=st.dictionaries(_names, _names, max_size=2),
    trace=st.none() | _descs,
    reason=st.none() | _names,
    params=st.dictionaries(_names, _JSON_SCALARS.filter(lambda v: v is not None), max_size=3),
    started=st.none() | st.integers(min_value=0, max_value=2**63),
)
def test_templated_rows_are_the_rows_json_dumps_writes(
    attachments: dict[str, Descriptor], filenames: dict[str, str], trace: Descriptor | None, reason: str | None,
    params: dict[str, object], started: int | None,
) -> None:
    """A fork re-emits each carried run's row from a template per attachment shape
    (``journal._attachments_only_extras``): the same text as encoding the row object."""
    from ommx_experiment.format.journal import _ROW_V3, _run_extras

    filenames = {k: v for k, v in filenames.items() if k in attachments}
    run = RunContent(3, "finished", reason, AttachmentContent(attachments, filenames), trace, started_ns=started, finished_ns=11)
    expected = json.dumps([_ROW_V3, 3, "finished", reason, params, 11, _run_extras(run), started])
    assert run_body(run, params) == expected
    assert run_body(run, params) == expected  # the template, cached


def test_an_attachment_only_row_is_written_from_its_shapes_template() -> None:
    from ommx_experiment.format import journal

    journal._EXTRAS_TEMPLATES.clear()
    run = _run(attachments=AttachmentContent({"cfg": Descriptor("application/json", DIGEST, 12)}))
    body = run_body(run, {"p": 1})
    assert list(journal._EXTRAS_TEMPLATES) == [(("cfg", "application/json"),)]
    assert _parse_run_row(body)[0] == run
