"""Strings that will be stored: every one must encode as UTF-8.

Python ``str`` can hold lone surrogates (``"\\ud800"``, or ``"\\udcff"`` from a file
name that is not UTF-8, via ``surrogateescape``); JSON, MessagePack and OMMX 3 cannot
store them. They are rejected when they are logged, as OMMX 3 does
(:class:`~ommx_experiment.errors.InvalidTextError`, a ``UnicodeEncodeError`` and a
``ValueError``), so a poisoned string never reaches the journal or a commit.
The common case costs one ``str.isascii()``.
"""

from __future__ import annotations

from ..errors import InvalidTextError


def check_text(value: str, what: str) -> None:
    """Raise :class:`InvalidTextError` naming ``what`` unless ``value`` encodes as UTF-8."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(what, value, exc.start, exc.end) from None


def is_utf8_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_parameter_text(name: str, value: object) -> None:
    """A run parameter's name, and its value when it is a string (``Run.log_parameter``'s hot path)."""
    if not name.isascii():
        check_text(name, "parameter name")
    if type(value) is str and not value.isascii():
        check_text(value, f"value of parameter {name!r}")


def check_annotation_text(key: str, value: str) -> None:
    """A manifest annotation's key and value."""
    check_text(key, "annotation key")
    check_text(value, f"value of annotation {key!r}")
