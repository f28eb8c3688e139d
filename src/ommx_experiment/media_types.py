"""Every fixed media type and annotation key of the OMMX 3 artifact format (§2.1).

Strings only; no logic beyond the grouping sets at the end.
"""

from __future__ import annotations

# --- manifest artifactType ------------------------------------------------------
EXPERIMENT_ARTIFACT_TYPE = "application/org.ommx.v1.experiment"
GENERIC_ARTIFACT_TYPE = "application/org.ommx.v1.artifact"

# --- config blobs -----------------------------------------------------------------
EXPERIMENT_CONFIG = "application/org.ommx.v1.experiment.config+json"
LEGACY_GENERIC_CONFIG = "application/org.ommx.v1.config+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_CONFIG_BYTES = b"{}"
OCI_EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# --- experiment layers --------------------------------------------------------------
RUN_PARAMETERS = "application/org.ommx.v1.experiment.run-parameters+msgpack"
TRACE_OTLP_PROTOBUF = "application/org.ommx.trace.otlp+protobuf"
DIAGNOSTICS = "application/org.ommx.diagnostic+msgpack"

# --- OMMX typed payloads (v2 written, v1 also read) -----------------------------------
V1_INSTANCE = "application/org.ommx.v1.instance"
V2_INSTANCE = "application/org.ommx.v2.instance"
V1_PARAMETRIC_INSTANCE = "application/org.ommx.v1.parametric-instance"
V2_PARAMETRIC_INSTANCE = "application/org.ommx.v2.parametric-instance"
V1_SOLUTION = "application/org.ommx.v1.solution"
V2_SOLUTION = "application/org.ommx.v2.solution"
V1_SAMPLE_SET = "application/org.ommx.v1.sample-set"
V2_SAMPLE_SET = "application/org.ommx.v2.sample-set"

# --- generic payloads ---------------------------------------------------------------------
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
NUMPY = "application/vnd.numpy"
PARQUET = "application/vnd.apache.parquet"

# --- compression ----------------------------------------------------------------------------
ZSTD_SUFFIX = "+zstd"
COMPRESSION_ANNOTATION = "org.ommx.v1.attachment.compression"
COMPRESSION_ZSTD = "zstd"

# --- OCI ----------------------------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
TITLE_ANNOTATION = "org.opencontainers.image.title"

# --- annotation namespaces ------------------------------------------------------------------
RESERVED_ANNOTATION_PREFIX = "org.ommx.v1."
USER_ANNOTATION_PREFIX = "org.ommx.user."

# --- our own extension ----------------------------------------------------------------------
PARQUET_RUN_PARAMS_TITLE = "run_parameters.parquet"
"""``org.opencontainers.image.title`` of our Parquet run-parameter layer (after the msgpack layer)."""
RUNS_TITLE = "runs.parquet"
"""Title of our run-metadata layer (``format.run_meta``): one row per run, metadata and parameters."""
SOLVES_TITLE = "solves.parquet"
"""Title of our solve-summary layer: one row per Solve and Sampling."""
PROVENANCE_TITLE = "provenance.json"
"""Title of our provenance layer (``application/json``): creation time, versions, host, git commit."""
OUR_LAYER_TITLES = frozenset({PARQUET_RUN_PARAMS_TITLE, RUNS_TITLE, SOLVES_TITLE, PROVENANCE_TITLE})

# --- groupings used by validation ---------------------------------------------------------------
INSTANCE_TYPES = frozenset({V1_INSTANCE, V2_INSTANCE})
PARAMETRIC_INSTANCE_TYPES = frozenset({V1_PARAMETRIC_INSTANCE, V2_PARAMETRIC_INSTANCE})
SOLUTION_TYPES = frozenset({V1_SOLUTION, V2_SOLUTION})
SAMPLE_SET_TYPES = frozenset({V1_SAMPLE_SET, V2_SAMPLE_SET})
OMMX_ARTIFACT_TYPES = frozenset({EXPERIMENT_ARTIFACT_TYPE, GENERIC_ARTIFACT_TYPE})
