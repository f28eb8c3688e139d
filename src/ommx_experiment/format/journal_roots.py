"""The checkpoint journal seen by GC: every blob digest its tables and open-run logs name.

Kept apart from :mod:`~ommx_experiment.format.journal` (the journal itself) so that a GC
pass reads the journal's rows without loading the journal's machinery: this module
imports only the writers' folder name.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from ..engine.writers import WRITERS_DIR
from .run_log import ATTACHMENT, read_records

if TYPE_CHECKING:
    from ..engine.registry import LocalRegistry

__all__ = ["journal_blob_digests"]

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST_BYTES_RE = re.compile(rb"sha256:[0-9a-f]{64}")


def journal_blob_digests(registry: LocalRegistry) -> set[str]:
    """Every digest the journal tables name: GC roots besides the pin refs (belt and braces).

    Found textually (``sha256:<64 hex>``) in session headers (subject), pin digests,
    run rows and attachment rows, whatever their format, orphan rows included: an
    unreadable row over-protects its blobs instead of losing them. A pin digest
    is a manifest, so GC walks its subject chain.
    """
    found: set[str] = set()
    with registry.db.read() as conn:
        for sql in (
            "SELECT header || ' ' || COALESCE(pin_digest, '') FROM oxe_journal_sessions",
            "SELECT body FROM oxe_journal_runs",
            "SELECT body FROM oxe_journal_attachments",
            "SELECT COALESCE(pin_digest, '') FROM oxe_journal_writers",
        ):
            for (text,) in conn.execute(sql):
                if '"inline":' in str(text) and sql.endswith("oxe_journal_attachments"):
                    continue  # an inline attachment (spec/experiment.md): its bytes are in the row, not a blob
                found.update(_DIGEST_RE.findall(str(text)))
    # Open runs of live or dead writers name their blobs only in the open-run logs.
    folder = registry.root / WRITERS_DIR
    for path in folder.glob("*.log") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            inline = _inline_digests(data)
            found.update(d.decode() for d in _DIGEST_BYTES_RE.findall(data) if d not in inline)
    return found


def _inline_digests(data: bytes) -> frozenset[bytes]:
    """Digests of the log's inline attachments: their bytes are in the log until the batch stores
    them, so they are not blobs (yet), and rooting them would report them missing."""
    out: set[bytes] = set()
    for record in read_records(data):
        if record[0] == ATTACHMENT and len(record) > 5 and type(record[5]) is bytes and isinstance(record[3], dict):
            out.add(str(record[3].get("digest")).encode())
    return frozenset(out)
