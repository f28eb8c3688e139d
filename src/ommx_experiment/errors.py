"""The exception tree of ommx-experiment.

Every exception we raise derives from :class:`OmmxExperimentError` *and* from the
builtin exception that OMMX 3 raises in the same situation, so code written
against ``ommx.experiment`` (``except RuntimeError``, ``except KeyError``, ...)
keeps working, while callers who want to catch only our errors can catch the root.

Messages name the ref, digest or path involved and the step that failed.
"""

from __future__ import annotations


class OmmxExperimentError(Exception):
    """Root of every error raised by ommx-experiment."""


# --- caller input -----------------------------------------------------------


class InvalidInputError(OmmxExperimentError, ValueError):
    """A caller passed a value that is not acceptable (OMMX raises ValueError)."""


class InvalidTextError(InvalidInputError, UnicodeEncodeError):
    """A string that cannot be stored as UTF-8 (a lone surrogate), rejected when it is logged.

    OMMX 3 raises ``UnicodeEncodeError`` there; this is one too (and a ValueError),
    with ``what`` naming the field (``parameter name``, ``attachment name``, ...).
    """

    def __init__(self, what: str, value: str, start: int, end: int) -> None:
        UnicodeEncodeError.__init__(self, "utf-8", value, start, end, f"{what}: surrogates not allowed")
        self.what = what

    def __str__(self) -> str:
        return (
            f"{self.what} cannot be stored as UTF-8: lone surrogate {self.object[self.start]!r} "
            f"at position {self.start} of {self.object!r:.80}"
        )


class InvalidImageNameError(InvalidInputError):
    """An image reference that does not parse. Message starts ``Invalid image reference``."""


class ParameterTypeError(InvalidInputError):
    """A run parameter whose type does not fit the column the closed runs established.

    The message names the column, the established type and the value's type.
    int and float mix (the column widens to float64, as OMMX does); nothing else does.
    """

    def __init__(self, name: str, established: str, incoming: str, value: object = None) -> None:
        super().__init__(
            f"Run parameter `{name}` is a {established} column (established by closed runs); "
            f"got a {incoming} value {value!r:.80}. Log a {established} value, use another parameter name, "
            "or discard the runs that established the column (Experiment.discard_run)"
        )
        self.name = name
        self.established = established
        self.incoming = incoming


class InvalidArgumentTypeError(OmmxExperimentError, TypeError):
    """A caller passed an argument of the wrong kind (OMMX raises TypeError)."""


class ParameterOverflowError(OmmxExperimentError, OverflowError):
    """A run-parameter int that does not fit in int64."""


class AttachmentNotFoundError(OmmxExperimentError, KeyError):
    """No attachment of that name in this namespace (OMMX raises ``KeyError(name)``)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain name visible
        return str(self.args[0]) if self.args else "attachment not found"


# --- lifecycle ---------------------------------------------------------------


class ExtraNotInstalledError(OmmxExperimentError, ImportError):
    """An optional feature whose extra is not installed; the message names ``pip install 'ommx-experiment[<extra>]'``."""


class LifecycleError(OmmxExperimentError, RuntimeError):
    """An operation not allowed in the object's current lifecycle state."""


# --- storage -----------------------------------------------------------------


class RunNotFoundError(OmmxExperimentError, KeyError):
    """No closed run with that id in the experiment."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunNotRecordedError(LifecycleError):
    """A Run closed after its shared experiment was committed or replaced; the message says where it was kept."""


class ExperimentBusyError(LifecycleError):
    """Commit refused: other live processes still hold open runs of the experiment (the message names them)."""


class RegistryError(OmmxExperimentError, RuntimeError):
    """A Local Registry operation failed (I/O, SQLite, layout)."""


class JournalWriteError(RegistryError):
    """The checkpoint journal could not be written; the message names the run or step and what was kept."""


class RootAlreadySetError(RegistryError):
    """``set_local_registry_root`` after the root was set or resolved."""


class RegistryCorruptError(RegistryError):
    """``index.sqlite3`` is corrupt (SQLite: malformed / not a database). Writes stop until
    ``ommx-experiment recover`` rebuilds it; the message names the file and that command."""


class RegistryIndexLostError(RegistryError):
    """``index.sqlite3`` is missing or empty in a root that holds blobs or ``index.json`` refs.

    Nothing is created or rewritten; ``ommx-experiment recover`` rebuilds the refs."""


class BlobNotFoundError(RegistryError):
    """A blob named by a digest is absent from the CAS. Message contains ``Failed to read blob``."""


class RunBlobsLostError(BlobNotFoundError):
    """A Run's logged payload blobs vanished before its close could pin them (a deleting GC that
    does not honour our leases, such as OMMX 3's with a short grace). The run was not recorded;
    the message names the run, each lost blob and the parameters that were logged."""


class DigestMismatchError(RegistryError):
    """Bytes do not hash to the digest that names them."""


class RefConflictError(RegistryError):
    """A ref already points to a different manifest; publish never overwrites."""


class RefNotFoundError(RegistryError):
    """No ref of that name in the Local Registry."""


class ArchiveExistsError(RegistryError, FileExistsError):
    """``save`` refuses to overwrite: the archive destination exists (OMMX raises RuntimeError)."""


class InvalidArtifactError(OmmxExperimentError, RuntimeError):
    """A stored or received artifact is malformed (manifest, config, layer table)."""


class ArchiveError(InvalidArtifactError):
    """An archive or OCI layout directory that cannot be imported safely."""


# --- folder watcher ----------------------------------------------------------


class WatcherError(OmmxExperimentError, RuntimeError):
    """The folder watcher's background thread failed (chained to the first error)."""


# --- remote ------------------------------------------------------------------


class RemoteArtifactError(OmmxExperimentError, RuntimeError):
    """Root of remote-registry failures (same name and base as OMMX's)."""


class RemoteArtifactNotFoundError(RemoteArtifactError):
    """The remote registry has no such repository, tag or blob."""


class RemoteArtifactAuthenticationError(RemoteArtifactError):
    """The remote registry rejected our credentials (or wanted some)."""


class RemoteArtifactAuthorizationError(RemoteArtifactError):
    """Authenticated, but not allowed."""


class RemoteArtifactTransportError(RemoteArtifactError):
    """Network failure: unreachable host, reset connection, timeout, 5xx."""


class InvalidRemoteArtifactError(RemoteArtifactError):
    """The remote answered with something that is not a valid OMMX artifact."""
