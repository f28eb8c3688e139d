"""sha256 digests in the OCI form ``sha256:<64 lowercase hex>``.

OMMX only ever writes and accepts sha256 digests, always lowercase. Every blob
name, descriptor digest and manifest digest in a Local Registry has this form.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Iterable

SHA256_PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_valid_digest(value: object) -> bool:
    """Return True iff ``value`` is a ``str`` of the form ``sha256:<64 lowercase hex>``."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def parse_digest(value: object, *, what: str = "digest") -> str:
    """Return the 64-hex part of a valid digest.

    Raises
    ------
    InvalidInputError
        ``value`` is not ``sha256:<64 lowercase hex>``; the message names ``what``.
    """
    if not is_valid_digest(value):
        raise InvalidInputError(f"Invalid {what} {value!r}: expected sha256:<64 lowercase hex>")
    assert isinstance(value, str)
    return value[len(SHA256_PREFIX) :]


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    """Digest string of ``data``."""
    return SHA256_PREFIX + hashlib.sha256(data).hexdigest()


def sha256_digest_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    """Digest string and total size of the concatenation of ``chunks`` (streaming)."""
    hasher = StreamingDigest()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest(), hasher.size


class StreamingDigest:
    """Incremental sha256 for callers that hash while they copy: ``update`` each chunk, then ``digest()``."""

    __slots__ = ("_hasher", "size")

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add ``chunk``; ``size`` counts the bytes added so far."""
        self._hasher.update(chunk)
        self.size += len(chunk)

    def digest(self) -> str:
        """Digest string of everything added so far."""
        return SHA256_PREFIX + self._hasher.hexdigest()


_HEX_RE = re.compile(r"[0-9a-f]{64}")


def is_valid_hex(value: str) -> bool:
    """True for exactly 64 lowercase hex characters: the name of a blob file."""
    return _HEX_RE.fullmatch(value) is not None
