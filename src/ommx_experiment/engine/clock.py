"""Timestamps of refs: RFC 3339 strings written by us (µs) and by OMMX (ns)."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def now_timestamp() -> str:
    """The current UTC time as RFC 3339 with microseconds (the ``updated_at`` of refs we write)."""
    return datetime.now(UTC).isoformat()


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 from us (µs) or OMMX (ns); fractional digits beyond 6 are dropped."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text)
