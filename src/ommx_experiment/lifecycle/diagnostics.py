"""Adapter diagnostics: the sink handed to adapters and the MessagePack layer (§1.9, §2.8).

``Run.log_solve(..., store_diagnostics=True)`` passes a sink as the adapter's
``diagnostics`` keyword. With OMMX 3 installed that is
``ommx.adapter.DiagnosticCollector``; older ``ommx`` releases have none, so
:class:`DiagnosticCollector` here is the stand-in with the same protocol
(``record(report)``, ``diagnostics``).

The layer is ``msgpack.packb([dataclasses.asdict(r) for r in reports],
use_bin_type=True)``, checked to decode as exactly one MessagePack array.
Packing is best-effort: a report that is not a dataclass or holds an
unserialisable value drops the diagnostics, never the Solve.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor
from ..errors import InvalidArtifactError

if TYPE_CHECKING:
    from ..engine.blobstore import BlobStore

log = logging.getLogger(__name__)

__all__ = [
    "DiagnosticCollector",
    "new_collector",
    "pack_diagnostics",
    "store_diagnostics",
    "unpack_diagnostics",
]

# Values of ``OpenSolve.terminal_state["diagnostics"]["outcome"]["pack"]``.
PACK_DISABLED, PACK_EMPTY, PACK_ATTACHED, PACK_FAILED = "disabled", "empty", "attached", "serialization_failed"


class DiagnosticCollector:
    """An append-only, thread-safe diagnostics sink (``ommx.adapter.DiagnosticsSink`` protocol).

    ``record`` never raises and never validates; reports are packed after the solve.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: list[Any] = []

    def record(self, diagnostic: Any) -> None:
        """Append one dataclass report (kept as the object; serialised later)."""
        with self._lock:
            self._reports.append(diagnostic)

    @property
    def diagnostics(self) -> list[Any]:
        """The recorded reports, in recording order (a copy)."""
        with self._lock:
            return list(self._reports)

    def __len__(self) -> int:
        with self._lock:
            return len(self._reports)

    def __repr__(self) -> str:
        return f"DiagnosticCollector(diagnostics={len(self)})"


def new_collector() -> Any:
    """``ommx.adapter.DiagnosticCollector()`` when the installed ``ommx`` has it, else ours."""
    try:
        from ommx.adapter import DiagnosticCollector as OmmxCollector  # type: ignore[attr-defined]
    except ImportError:
        return DiagnosticCollector()
    return OmmxCollector()


def pack_diagnostics(reports: list[Any]) -> bytes | None:
    """The layer bytes of ``reports``, or None when there are none.

    Raises TypeError/ValueError (from ``dataclasses.asdict`` or msgpack) for a
    report that cannot be packed, and ValueError when the bytes do not read back
    as one MessagePack array.
    """
    if not reports:
        return None
    import msgpack

    payload: bytes = msgpack.packb([dataclasses.asdict(r) for r in reports], use_bin_type=True)
    if not isinstance(_unpack_one(payload), list):
        raise ValueError("diagnostics did not pack to a MessagePack array")
    return payload


def _unpack_one(payload: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def unpack_diagnostics(payload: bytes, where: str) -> list[Any]:
    """Decode a diagnostics layer: exactly one MessagePack array (``InvalidArtifactError`` otherwise)."""
    try:
        value = _unpack_one(payload)
    except Exception as exc:
        raise InvalidArtifactError(f"{where}: diagnostics layer is not valid MessagePack: {exc}") from exc
    if not isinstance(value, list):
        raise InvalidArtifactError(f"{where}: diagnostics layer must be a MessagePack array, got {type(value).__name__}")
    return value


def reports_of(collector: Any) -> list[Any]:
    """The reports recorded so far (empty for None)."""
    if collector is None:
        return []
    return list(collector.diagnostics)


def store_diagnostics(blobs: BlobStore, collector: Any, where: str) -> tuple[Descriptor | None, str]:
    """Pack and store ``collector``'s reports best-effort: ``(descriptor or None, pack state)``."""
    if collector is None:
        return None, PACK_DISABLED
    try:
        payload = pack_diagnostics(reports_of(collector))
    except Exception as exc:
        log.warning("%s: diagnostics dropped, they cannot be serialised: %s", where, exc)
        return None, PACK_FAILED
    if payload is None:
        return None, PACK_EMPTY
    stored = blobs.put_bytes(payload)
    return Descriptor(mt.DIAGNOSTICS, stored.digest, stored.size), PACK_ATTACHED
