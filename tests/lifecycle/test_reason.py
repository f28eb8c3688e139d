from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ommx_experiment.lifecycle.reason import collapse_whitespace, lifecycle_reason, normalise_reason

# The Unicode White_Space property, which Rust's char::is_whitespace implements.
RUST_WHITESPACE = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def test_type_and_message() -> None:
    assert lifecycle_reason(ValueError("failed")) == "ValueError: failed"
    assert lifecycle_reason(RuntimeError("solve failed")) == "RuntimeError: solve failed"


def test_key_error_uses_str_quoting() -> None:
    assert lifecycle_reason(KeyError("oops")) == "KeyError: 'oops'"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ValueError(""), ValueError(" \n\t\u3000")])
def test_blank_message_gives_type_name(exc: BaseException) -> None:
    assert lifecycle_reason(exc) == type(exc).__name__


def test_reference_normalisation_case() -> None:
    # §6: "first\nsecond\t" + "é"*600 -> collapsed, cut to 511 chars + "…"
    reason = lifecycle_reason(ValueError("first\nsecond\t" + "é" * 600))
    prefix = "ValueError: first second "
    assert reason.startswith(prefix)
    assert len(reason) == 512
    assert reason == prefix + "é" * (511 - len(prefix)) + "…"


def test_exactly_512_chars_is_not_cut() -> None:
    message = "x" * (512 - len("ValueError: "))
    assert lifecycle_reason(ValueError(message)) == "ValueError: " + message
    assert lifecycle_reason(ValueError(message + "y")).endswith("x…")


def test_rust_whitespace_set_differs_from_python_only_on_separators() -> None:
    differing = [c for c in range(sys.maxunicode + 1) if chr(c).isspace() != (c in RUST_WHITESPACE)]
    assert differing == [0x1C, 0x1D, 0x1E, 0x1F]
    for c in RUST_WHITESPACE:
        assert collapse_whitespace(f"a{chr(c)}b") == "a b"


@pytest.mark.parametrize("char", ["\x1c", "\x1d", "\x1e", "\x1f", "\x01", "\u200b"])
def test_non_rust_whitespace_is_kept(char: str) -> None:
    assert lifecycle_reason(ValueError(f"a{char}b")) == f"ValueError: a{char}b"


def test_broken_str_falls_back_to_type_name() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert lifecycle_reason(Weird()) == "Weird"


def test_empty_text_normalises_to_exception() -> None:
    assert normalise_reason(" \u2028 ") == "exception"


@given(st.text())
def test_collapse_matches_python_split_without_separators(text: str) -> None:
    text = "".join(ch for ch in text if ch not in "\x1c\x1d\x1e\x1f")
    assert collapse_whitespace(text) == " ".join(text.split())


@given(st.text(min_size=1))
def test_reason_is_bounded_and_trimmed(message: str) -> None:
    reason = lifecycle_reason(RuntimeError(message))
    assert 0 < len(reason) <= 512
    assert reason == reason.strip(" ")
    assert "  " not in reason
