"""The registry's edges: moving and watching artifacts, listing and upkeep, without the experiment lifecycle.

Owns push/pull to OCI distribution registries (``remote``, ``remote_http``,
``auth``, ``progress``), the folder watcher that turns completed files into
attachments of any target (``watcher``), listings and DataFrames over a registry
(``catalog``), and upkeep: GC, pruning, removal, size (``maintenance``).

May import: ``ommx_experiment.format``, ``ommx_experiment.engine``, ``errors``,
``media_types``. The lifecycle calls into the edges, never the reverse.
"""
