"""Lifecycle reason strings for failed/interrupted Runs and Experiments (§1.10).

OMMX builds ``"<TypeName>: <str(exc)>"`` (just the type name when the message is
blank), collapses every whitespace run to one space with Rust's
``split_whitespace`` and cuts the result to 512 characters (511 + ``…``).
"""

from __future__ import annotations

import re

from ..errors import OmmxExperimentError

MAX_REASON_CHARS = 512
ELLIPSIS = "\u2026"
EMPTY_REASON = "exception"

# Rust `char::is_whitespace` = the Unicode White_Space property. Python's str.split()
# differs: it also splits on U+001C..U+001F (which Rust keeps), so we spell the set out.
_RUST_WHITESPACE = re.compile(
    "[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)


def collapse_whitespace(text: str) -> str:
    """``text.split_whitespace().join(" ")`` with Rust's definition of whitespace."""
    return " ".join(part for part in _RUST_WHITESPACE.split(text) if part)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the original failure
        return ""


def normalise_reason(text: str) -> str:
    """Collapse whitespace, cut to 512 characters, ``exception`` when empty."""
    collapsed = collapse_whitespace(text)
    if not collapsed:
        return EMPTY_REASON
    if len(collapsed) > MAX_REASON_CHARS:
        return collapsed[: MAX_REASON_CHARS - 1] + ELLIPSIS
    return collapsed


def _type_name(exc: BaseException) -> str:
    """The exception's type name as OMMX would show it: ours by the builtin OMMX raises in its place."""
    if not isinstance(exc, OmmxExperimentError):
        return type(exc).__name__
    builtin = next((k for k in type(exc).__mro__ if k.__module__ == "builtins" and k is not Exception), Exception)
    return builtin.__name__


def lifecycle_reason(exc: BaseException) -> str:
    """The reason string OMMX stores for a scope that ended with ``exc``.

    One of our exceptions is named by the builtin OMMX raises in its place
    (``LifecycleError`` → ``RuntimeError``), so the strings are OMMX's.
    """
    name = _type_name(exc)
    message = _message(exc)
    raw = name if not collapse_whitespace(message) else f"{name}: {message}"
    return normalise_reason(raw)
