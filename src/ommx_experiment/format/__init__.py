"""The OMMX artifact format: how experiments are encoded at rest, byte-compatible with OMMX 3.

Owns the experiment config codec and its validation (``codec``), the content
tree and layer-list builder (``content``), the run-parameter layers, MessagePack
and Parquet (``run_params``), attachment payload encodings (``payload``), the
streaming tar reader/writer (``tarstream``), ``.ommx`` archives and OCI-layout
folders (``archive``), and the rows of our SQLite checkpoint journal with the
pins that keep journaled blobs reachable (``journal``).

May import: the engine (``ommx_experiment.engine``), ``errors``, ``media_types``.
"""
