"""Duration strings for registry maintenance (``gc`` grace periods, prune ages).

OMMX 3's rules exactly (``GcOptions::parse_grace_period``): an unsigned decimal
integer (ASCII digits, an optional leading ``+`` as Rust's ``u64`` parser
allows, at most ``2**64 - 1``) followed by an optional unit ``s``/``m``/``h``/``d``;
a bare number is seconds. Anything else is a :class:`ValueError` with OMMX's
message. The product must also fit in ``u64`` ("duration is too large").
"""

from __future__ import annotations

import re

from ..errors import InvalidInputError

_U64_MAX = 2**64 - 1
_UNITS = {"s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}
_NUMBER_RE = re.compile(r"\+?[0-9]+")


def parse_duration_seconds(text: str) -> int:
    """Whole seconds of ``text`` (``"30s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"90"``).

    Raises :class:`~ommx_experiment.errors.InvalidInputError` (a ValueError)
    with OMMX's message for an empty string, a bad suffix, a bad or
    out-of-range number, or a product beyond ``u64``.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"duration must be a string like '24h', got {type(text).__name__}")
    if not text:
        raise InvalidInputError("duration must not be empty")
    last = text[-1]
    if last in _UNITS:
        number, factor = text[:-1], _UNITS[last]
    elif "0" <= last <= "9":
        number, factor = text, 1
    else:
        raise InvalidInputError(f"invalid duration suffix in {_rust_debug(text)}; use s, m, h, or d")
    if not _NUMBER_RE.fullmatch(number) or int(number) > _U64_MAX:
        raise InvalidInputError(f"invalid duration value in {_rust_debug(text)}")
    seconds = int(number) * factor
    if seconds > _U64_MAX:
        raise InvalidInputError(f"duration is too large: {text}")
    return seconds


def parse_duration(text: str) -> float:
    """Seconds of ``text`` as a float; see :func:`parse_duration_seconds` for the rules."""
    return float(parse_duration_seconds(text))


def _rust_debug(text: str) -> str:
    """``text`` quoted as Rust's ``{:?}`` prints a ``&str`` (OMMX puts it in its messages)."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
