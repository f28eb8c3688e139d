"""Our Parquet run-parameter layer in *received* artifacts (imports and pulls).

OMMX 3 reads only the MessagePack run-parameter layer; ``run_parameters_df()``
reads our Parquet layer instead, so a Parquet table that disagrees with the
MessagePack one must never be read. Comparing them needs pandas, which an
import or a pull of a large experiment should not pay for (OMMX 3 imports a
10,000-run archive in about 0.1 s). So the comparison moves to the first read:

- before a received experiment is published, :func:`note_received_parquet`
  records ``(Parquet digest, MessagePack digest)`` in ``oxe_parquet_unverified``;
- :func:`parquet_layer_agrees` (called when a sealed experiment first reads its
  Parquet layer) is one indexed lookup for layers we wrote ourselves; a noted
  pair is compared then (the reader is about to load pandas anyway): equal, the
  note goes; different or undecodable, a warning, and the reader falls back to
  the MessagePack table, what OMMX reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import media_types as mt
from ..errors import InvalidArtifactError, RegistryError
from .codec import ExperimentConfig, check_parquet_layers
from .run_meta import trailing_layers

if TYPE_CHECKING:
    from ..engine.index_db import Database
    from ..engine.oci import Descriptor, Manifest

log = logging.getLogger(__name__)
_UNVERIFIED = "oxe_parquet_unverified"


def our_parquet_layer(manifest: Manifest) -> Descriptor | None:
    """Our Parquet run-parameter layer (among our trailing layers), if the manifest has one."""
    layer = trailing_layers(manifest).get(mt.PARQUET_RUN_PARAMS_TITLE)
    return layer if layer is not None and layer.media_type == mt.PARQUET else None


def note_received_parquet(db: Database, manifest: Manifest, config: ExperimentConfig | bytes | None) -> None:
    """Before a received experiment is published: if it carries our Parquet layer, record the
    pair ``(Parquet digest, MessagePack digest)`` as not compared yet. ``config``: the validated
    config, or its bytes."""
    layer = our_parquet_layer(manifest)
    if layer is None or config is None:
        return
    parsed = ExperimentConfig.parse(config) if isinstance(config, bytes) else config
    msgpack_layer = manifest.layers[parsed.run_parameters]
    with db.write("note a received Parquet layer") as conn:
        conn.execute(
            f"INSERT OR IGNORE INTO {_UNVERIFIED}(parquet_digest, msgpack_digest) VALUES (?, ?)",
            (layer.digest, msgpack_layer.digest),
        )


def parquet_layer_agrees(
    db: Database,
    manifest: Manifest,
    config: Callable[[], ExperimentConfig],
    read_blob: Callable[[Descriptor], bytes],
) -> bool:
    """Whether our Parquet layer (the manifest has one) may be read instead of the MessagePack table.

    True unless the pair was received and not compared yet; then it is compared now:
    equal, the note goes (best effort: a read-only root compares again next time) and
    True; different or undecodable, a warning and False. ``config`` is called only then.
    """
    from .run_params import decode_msgpack

    layer = our_parquet_layer(manifest)
    if layer is None:
        return False
    try:  # one indexed lookup for the layers we wrote
        rows = db.query(f"SELECT msgpack_digest FROM {_UNVERIFIED} WHERE parquet_digest = ?", (layer.digest,))
        noted = {str(r[0]) for r in rows}
    except RegistryError:
        noted = {"?"}  # cannot tell: compare
    if not noted:
        return True
    msgpack_digest = "?"
    try:
        parsed = config()
        msgpack_layer = manifest.layers[parsed.run_parameters]
        msgpack_digest = msgpack_layer.digest
        if msgpack_digest not in noted and "?" not in noted:
            return True  # this pairing was never received: we wrote it
        table = decode_msgpack(read_blob(msgpack_layer), {run.run_id for run in parsed.runs})
        check_parquet_layers(manifest, parsed, table, read_blob)
    except InvalidArtifactError as exc:
        log.warning("Ignoring the Parquet run-parameter layer of %s: %s", msgpack_digest, exc)
        return False
    try:
        with db.write("a received Parquet layer agrees") as conn:
            conn.execute(
                f"DELETE FROM {_UNVERIFIED} WHERE parquet_digest = ? AND msgpack_digest = ?", (layer.digest, msgpack_digest)
            )
    except RegistryError:
        pass
    return True
