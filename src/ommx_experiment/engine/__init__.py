"""The storage engine: one registry root that is an OCI Image Layout, OMMX 3's ``index.sqlite3`` and its locks.

Owns every file under the root: durable publication (``atomic``), OMMX's
``flock`` protocol (``locks``), content-addressed blobs (``blobstore``), the
SQLite index and its transactions (``index_db``), refs (``registry``), the
``index.json`` view (``layout_view``), root resolution (``root``), and the
vocabulary the engine stores: digests, image names, OCI descriptors and
manifests (``digest``, ``names``, ``oci``), times (``clock``, ``durations``).

May import: ``ommx_experiment.errors`` and ``ommx_experiment.media_types`` only.
Knows nothing of experiments beyond the cache rows OMMX's schema defines.
"""
