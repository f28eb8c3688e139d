"""The one place that talks SQL transactions to ``<root>/index.sqlite3``.

The database is shared with OMMX 3 (registry-sharing.md §4, §7 rules 10–15):

- OMMX's tables are created with OMMX's exact DDL and ``PRAGMA user_version = 2``
  in one ``BEGIN IMMEDIATE`` transaction; we never alter them.
- Our own objects carry the ``oxe_`` prefix; our schema version lives in
  ``oxe_meta`` (key ``schema_version``) and is migrated step by step, each step
  in its own ``BEGIN IMMEDIATE`` transaction.
- Connections use ``isolation_level=None`` (explicit transactions only), a busy
  timeout of 60 s, and every write starts with ``BEGIN IMMEDIATE`` so no deferred
  read transaction is ever upgraded (that fails at once under WAL).
- No foreign keys into OMMX's tables; triggers on ``refs`` are plain SQL touching
  only our tables (they bump ``oxe_meta.refs_version``, also on OMMX's writes).
- This process's connections to one file are shared by every ``Database`` of it,
  and two *keeper* descriptors hold open file description locks beside them, so
  neither OMMX 3's own SQLite in the same process nor ours can unlink the ``-wal``
  the other is using (:class:`SharedConnections`, spec/registry.md §4a).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RegistryCorruptError, RegistryError, RegistryIndexLostError
from . import atomic

DB_NAME = "index.sqlite3"
CORRUPT_MARKER = ".oxe-index-corrupt"
"""Created in the root when SQLite reports ``index.sqlite3`` corrupt; writes stop until ``recover`` removes it."""
RECOVER_HINT = "ommx-experiment recover"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_POISONED: set[str] = set()  # index paths this process saw corrupt
MARKER_RECHECK_S = 1.0
"""The Run-close fast path looks for another process's corruption marker at most this often."""
OMMX_USER_VERSION = 2
BUSY_TIMEOUT_MS = 60_000

# OMMX 3's create_schema, verbatim (sqlite_master text of a b7-created root).
OMMX_DDL = (
    """CREATE TABLE IF NOT EXISTS ommx_local_registry_metadata (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    """CREATE TABLE IF NOT EXISTS refs (
            name TEXT NOT NULL,
            reference TEXT NOT NULL,
            manifest_digest TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY(name, reference)
        )""",
    """CREATE INDEX IF NOT EXISTS idx_refs_manifest_digest
            ON refs(manifest_digest)""",
    """CREATE TABLE IF NOT EXISTS artifact_manifests (
            manifest_digest TEXT PRIMARY KEY,
            manifest_json BLOB NOT NULL,
            artifact_type TEXT NOT NULL,
            config_digest TEXT NOT NULL
        )""",
    """CREATE INDEX IF NOT EXISTS idx_artifact_manifests_config_digest
            ON artifact_manifests(config_digest)""",
    """CREATE TABLE IF NOT EXISTS experiment_configs (
            config_digest TEXT PRIMARY KEY,
            config_json BLOB NOT NULL
        )""",
)

OMMX_COLUMNS = {
    "ommx_local_registry_metadata": ["key", "value"],
    "refs": ["name", "reference", "manifest_digest", "updated_at"],
    "artifact_manifests": ["manifest_digest", "manifest_json", "artifact_type", "config_digest"],
    "experiment_configs": ["config_digest", "config_json"],
}

_BUMP = "UPDATE oxe_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'refs_version';"
#: The triggers that count every change of ``refs`` (ours and OMMX's) in ``oxe_meta.refs_version``.
REFS_TRIGGERS = {
    f"oxe_refs_after_{event.lower()}": f"CREATE TRIGGER IF NOT EXISTS oxe_refs_after_{event.lower()} "
    f"AFTER {event} ON refs BEGIN {_BUMP} END"
    for event in ("INSERT", "UPDATE", "DELETE")
}
_LOG_ROWS = {
    "insert": "(NEW.name, NEW.reference)",
    "update": "(OLD.name, OLD.reference), (NEW.name, NEW.reference)",
    "delete": "(OLD.name, OLD.reference)",
}
#: The triggers that feed ``oxe_refs_log`` (the refs the ``index.json`` view has not planned yet).
LOG_TRIGGERS = {
    f"oxe_refs_log_{event}": f"CREATE TRIGGER IF NOT EXISTS oxe_refs_log_{event} AFTER {event.upper()} ON refs BEGIN "
    f"INSERT INTO oxe_refs_log(name, reference) VALUES {rows}; END"
    for event, rows in _LOG_ROWS.items()
}

# Our migrations: entry i brings oxe schema_version from i to i+1. Append only, never edit.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE IF NOT EXISTS oxe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT OR IGNORE INTO oxe_meta(key, value) VALUES ('refs_version', '0')",
        *REFS_TRIGGERS.values(),
    ),
    # checkpoint journal of unsealed Experiment sessions (checkpoints.py, spec/experiment.md)
    (
        "CREATE TABLE IF NOT EXISTS oxe_journal_sessions ("
        " requested_name TEXT PRIMARY KEY, session_id TEXT NOT NULL, header TEXT NOT NULL,"
        " pin_digest TEXT, updated_at TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS oxe_journal_runs ("
        " session_id TEXT NOT NULL, run_id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY(session_id, run_id))",
        "CREATE TABLE IF NOT EXISTS oxe_journal_attachments ("
        " session_id TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY(session_id, name))",
    ),
    # shared unsealed experiments: many writers per session (format/journal.py, spec/experiment.md)
    (
        "ALTER TABLE oxe_journal_sessions ADD COLUMN next_run_id INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE oxe_journal_sessions ADD COLUMN columns TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE oxe_journal_sessions ADD COLUMN sealing TEXT",
        "ALTER TABLE oxe_journal_sessions ADD COLUMN slot_digest TEXT",
        "UPDATE oxe_journal_sessions SET next_run_id = COALESCE(json_extract(header, '$.next_run_id'), 0)",
        "CREATE TABLE IF NOT EXISTS oxe_journal_writers ("
        " writer_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,"
        " started_at TEXT NOT NULL, pin_digest TEXT)",
        "CREATE INDEX IF NOT EXISTS oxe_journal_writers_session ON oxe_journal_writers(session_id)",
        "CREATE TABLE IF NOT EXISTS oxe_journal_sealed ("
        " session_id TEXT PRIMARY KEY, requested_name TEXT NOT NULL, manifest_digest TEXT NOT NULL,"
        " sealed_at TEXT NOT NULL)",
    ),
    # index.json patched in place (layout_view.py, spec/registry.md §5): the refs changed since the
    # view was last planned (also by OMMX's writes) and where each entry sits in the file
    (
        "CREATE TABLE IF NOT EXISTS oxe_refs_log (name TEXT NOT NULL, reference TEXT NOT NULL)",
        "CREATE TRIGGER IF NOT EXISTS oxe_refs_log_insert AFTER INSERT ON refs BEGIN "
        "INSERT INTO oxe_refs_log(name, reference) VALUES (NEW.name, NEW.reference); END",
        "CREATE TRIGGER IF NOT EXISTS oxe_refs_log_update AFTER UPDATE ON refs BEGIN "
        "INSERT INTO oxe_refs_log(name, reference) VALUES (OLD.name, OLD.reference), (NEW.name, NEW.reference); END",
        "CREATE TRIGGER IF NOT EXISTS oxe_refs_log_delete AFTER DELETE ON refs BEGIN "
        "INSERT INTO oxe_refs_log(name, reference) VALUES (OLD.name, OLD.reference); END",
        "CREATE TABLE IF NOT EXISTS oxe_view_slots ("
        " name TEXT NOT NULL, reference TEXT NOT NULL, pos INTEGER NOT NULL, len INTEGER NOT NULL,"
        " PRIMARY KEY(name, reference))",
        "CREATE INDEX IF NOT EXISTS oxe_view_slots_pos ON oxe_view_slots(pos)",
    ),
    # our Parquet layer of a received artifact, compared with its MessagePack table on first read
    # (format/codec.py parquet_layer_agrees)
    (
        "CREATE TABLE IF NOT EXISTS oxe_parquet_unverified ("
        " parquet_digest TEXT NOT NULL, msgpack_digest TEXT NOT NULL, PRIMARY KEY(parquet_digest, msgpack_digest))",
    ),
]

def _all_migrations() -> list[tuple[str, ...]]:
    return MIGRATIONS




class Database:
    """One registry's index: transactions and schema, over this process's shared connections.

    Every ``Database`` of one file (whatever its root spelling) uses the same
    :class:`SharedConnections`; each method below is one *operation* on them
    (spec/registry.md §4a).
    """

    def __init__(self, root: Path, *, path: Path | None = None) -> None:
        self.path = root / DB_NAME if path is None else path
        self.connections = shared_connections(self.path)
        self._path_str = str(self.path)
        self._marker_str = str(self.path.parent / CORRUPT_MARKER) if self.path.name == DB_NAME else ""
        self._marker_checked = 0.0  # time.monotonic() of the last marker check on the Run-close fast path

    def close(self) -> None:
        """Close this process's connections to the file (harmlessly: no checkpoint, no unlink).

        Any ``Database`` of the file reopens them at its next operation.
        """
        self.connections.close()

    # --- transactions --------------------------------------------------------

    @contextlib.contextmanager
    def write(self, step: str = "write") -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; committed on success, rolled back on any exception.

        ``step`` names the operation in error messages. Keep the body short and
        free of file I/O: OMMX waits at most 30 s for our write lock.
        """
        with self.connections.operation(MAIN) as conn:
            try:
                with write_transaction(conn, self.path, step):
                    yield conn
            finally:
                self.connections.main_writes += 1

    def change_token(self) -> tuple[object, int, int]:
        """Equal on two calls only if nobody changed the database in between (cached views' check).

        ``PRAGMA data_version`` of the main connection changes with every commit of any
        other connection (this process's journal connection, other processes); the main
        connection's own commits are counted here; a reopened connection is another object.
        """
        with self.connections.operation(MAIN) as conn:
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, "query the registry index") from exc
            return conn, int(version), self.connections.main_writes

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A deferred read transaction: one consistent snapshot for several SELECTs.

        The transaction ends when the block does: never ``yield`` or call back
        into other code inside it (§4a: no read transaction across a return of control).
        SQLite errors raised inside the block become :class:`RegistryError`
        (:class:`RegistryCorruptError` for corruption).
        """
        try:
            with self.connections.operation(MAIN) as conn:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path, "read the registry index") from exc

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run one SELECT in autocommit mode."""
        shared = self.connections
        with shared.lock:
            conn = shared.enter(MAIN)
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, "query the registry index") from exc
            finally:
                shared.depth -= 1

    @contextlib.contextmanager
    def journal_write(self, step: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on the *journal* connection (``synchronous = NORMAL``).

        Same transaction discipline as :meth:`write`. In WAL mode a commit then
        reaches the OS (it survives SIGKILL of this process) without an fsync per
        Run close; a power loss can drop the last few journal rows, never corrupt
        the database. Ref writes keep the main connection.
        """
        with self.connections.operation(JOURNAL) as conn, write_transaction(conn, self.path, step):
            yield conn

    def journal_execute(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """One statement on the journal connection in autocommit mode (one implicit transaction).

        Returns the row count; SQLite errors propagate unchanged (the Run-close
        fast path retries a busy one in :meth:`journal_write`), except corruption:
        :class:`RegistryCorruptError`, also before writing when the index is marked.
        """
        if _POISONED and self._path_str in _POISONED:
            raise _corrupt(self.path, "journal", "marked corrupt earlier")
        now = time.monotonic()
        if now - self._marker_checked > MARKER_RECHECK_S:  # the hot path stats the marker at most once a second
            self._marker_checked = now
            if self._marker_str and os.path.exists(self._marker_str):
                raise _corrupt(self.path, "journal", "marked corrupt by another process")
        shared = self.connections
        with shared.lock:
            conn = shared.enter(JOURNAL)
            try:
                return conn.execute(sql, params).rowcount
            except sqlite3.DatabaseError as exc:
                if is_corruption(exc):
                    raise translate_error(exc, self.path, "journal") from exc
                raise
            finally:
                shared.depth -= 1

    # --- corruption ----------------------------------------------------------

    @property
    def corrupt_marker(self) -> Path:
        return self.path.parent / CORRUPT_MARKER

    def is_poisoned(self) -> bool:
        """Whether this index is known to be corrupt (seen by this process, or marked by another)."""
        return str(self.path) in _POISONED or self.corrupt_marker.exists()

    def check_writable(self, step: str = "write") -> None:
        """Raise :class:`RegistryCorruptError` if the index is known to be corrupt (a set lookup and one ``stat``)."""
        check_writable(self.path, step)

    def quick_check(self) -> None:
        """``PRAGMA quick_check(1)``: raise :class:`RegistryCorruptError` (and mark the index) unless ok."""
        try:
            with self.connections.operation(MAIN) as conn:
                result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path, "check the registry index") from exc
        if result != "ok":
            raise _corrupt(self.path, "check the registry index", str(result))

    @contextlib.contextmanager
    def checkpoint_later(self) -> Iterator[None]:
        """No automatic checkpoint by the main connection's commits inside the block.

        A commit's ref write would otherwise copy the sweep's whole journal (the WAL the
        journal connection grew) into the database file and fsync it: ~800 pages for
        10,000 params-only runs, work no guarantee of the commit needs. The committing
        writer's release runs :meth:`checkpoint_passive` in a helper thread instead
        (``format.journal_sweep``), so the WAL file stays as small as before.
        """
        with self.connections.operation(MAIN) as conn:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            with self.connections.operation(MAIN) as conn:
                conn.execute(f"PRAGMA wal_autocheckpoint = {MAIN_WAL_AUTOCHECKPOINT_PAGES}")

    def checkpoint_passive(self) -> None:
        """``PRAGMA wal_checkpoint(PASSIVE)``: copy what no reader still needs, never wait for anyone."""
        with self.connections.operation(JOURNAL) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def checkpoint(self) -> None:
        """Move every WAL frame into the database file (``recover`` renames a freshly built file)."""
        with self.connections.operation(MAIN) as conn:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise RegistryError(f"Failed to checkpoint {self.path}: the WAL is busy")

    # --- schema --------------------------------------------------------------

    def initialise(self, *, rebuild: bool = False) -> None:
        """Create OMMX's schema if the file is new, then bring our tables and triggers up to date.

        A missing or logically empty index (no tables, whatever the file size) in a
        root that already holds blobs or ``index.json`` refs is not new: it was
        lost. Unless ``rebuild`` (``recover``), :class:`RegistryIndexLostError` is
        raised and nothing is created or rewritten. So is an index with OMMX's
        schema that we never opened (no ``oxe_meta``) and no refs, while
        ``index.json`` lists refs (re-created by another tool after a loss).
        """
        if not rebuild and not self.path.exists():
            self._refuse_if_used("is missing")
        try:
            self._initialise(rebuild)
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path, "open the registry index") from exc

    def _initialise(self, rebuild: bool) -> None:
        with self.connections.operation(MAIN) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if not rebuild and not _table_names(conn) - {"sqlite_sequence"}:
                    self._refuse_if_used("is empty (no tables)")
                with self.write("create registry schema") as wconn:
                    if wconn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        if _table_names(wconn) - {"sqlite_sequence"}:
                            raise RegistryError(
                                f"{self.path} has tables but user_version 0: not an OMMX registry index"
                            )
                        for stmt in OMMX_DDL:
                            wconn.execute(stmt)
                        wconn.execute(f"PRAGMA user_version = {OMMX_USER_VERSION}")
                version = OMMX_USER_VERSION
            if version != OMMX_USER_VERSION:
                raise RegistryError(
                    f"{self.path} has schema user_version {version}; this library shares only version "
                    f"{OMMX_USER_VERSION} with OMMX 3 (open the root once with OMMX 3 to migrate it)"
                )
            self._check_ommx_shape(conn)
            fresh_to_us = "oxe_meta" not in _table_names(conn)
            if not rebuild and fresh_to_us and conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0] == 0:
                self._refuse_if_used("has no refs and was never opened by ommx-experiment", blobs=False)
            self._migrate()
            self._ensure_refs_triggers(conn)

    def _refuse_if_used(self, state: str, *, blobs: bool = True) -> None:
        """Raise :class:`RegistryIndexLostError` if the root shows prior use (blobs, ``index.json`` refs)."""
        root = self.path.parent
        entries = index_json_entry_count(root)
        n_blobs = _count_blobs(root) if blobs else 0
        if entries or n_blobs:
            raise RegistryIndexLostError(
                f"{self.path} {state} but {root} holds {n_blobs} blobs and index.json lists {entries} refs; "
                f"nothing was changed. Run `{RECOVER_HINT} --root {root}` to rebuild the refs from index.json "
                "and the blobs"
            )

    def _check_ommx_shape(self, conn: sqlite3.Connection) -> None:
        for table, columns in OMMX_COLUMNS.items():
            actual = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if actual != columns:
                raise RegistryError(
                    f"{self.path}: table {table} has columns {actual}, expected OMMX 3's {columns}"
                )

    def _ensure_refs_triggers(self, conn: sqlite3.Connection) -> None:
        """Re-create the ``refs_version`` triggers if they are gone.

        OMMX's schema migration (``migrate_legacy_schema_to_v2``) renames ``refs``
        and drops the old table, and our triggers with it, without touching
        ``oxe_meta``. Refs may have changed unseen meanwhile, so ``refs_version``
        is bumped too: the next view refresh then rewrites ``index.json``.
        """
        present = {
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'refs'")
        }
        wanted = dict(REFS_TRIGGERS)
        if "oxe_refs_log" in _table_names(conn):
            wanted.update(LOG_TRIGGERS)
        if present >= set(wanted):
            return
        try:
            with self.write("re-create the refs triggers") as wconn:
                for name, stmt in wanted.items():
                    if name not in present:
                        wconn.execute(stmt)
                wconn.execute("INSERT OR IGNORE INTO oxe_meta(key, value) VALUES ('refs_version', '0')")
                wconn.execute(_BUMP)
                # refs changed unseen while the triggers were gone: the view is rebuilt from refs
                wconn.execute("DELETE FROM oxe_meta WHERE key = 'view_state'")
        except RegistryError:
            if os.access(self.path, os.W_OK):
                raise  # a read-only root still reads; its view cannot be refreshed anyway

    def schema_version(self) -> int:
        with self.connections.operation(MAIN) as conn:
            return self._schema_version_in(conn)

    def _migrate(self) -> None:
        steps = _all_migrations()
        if self.schema_version() >= len(steps):
            return
        with self.write("migrate oxe schema") as conn:
            current = self._schema_version_in(conn)
            for version in range(current, len(steps)):
                for stmt in steps[version]:
                    conn.execute(stmt)
            conn.execute(
                "INSERT INTO oxe_meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(len(steps)),),
            )

    @staticmethod
    def _schema_version_in(conn: sqlite3.Connection) -> int:
        if "oxe_meta" not in _table_names(conn):
            return 0
        row = conn.execute("SELECT value FROM oxe_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    # --- small shared facts --------------------------------------------------

    def registry_id(self) -> str:
        """The registry's id (32 lowercase hex), created with ``INSERT OR IGNORE`` as OMMX does.

        Usually created already by the transaction that started a journal session
        (:func:`create_registry_id`), so a first commit needs no durable write of its own.
        """
        rows = self.query("SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'")
        if rows:
            return str(rows[0][0])
        with self.write("create registry id") as conn:
            return create_registry_id(conn)

    def refs_version(self) -> int:
        rows = self.query("SELECT value FROM oxe_meta WHERE key = 'refs_version'")
        return int(str(rows[0][0])) if rows else 0


def create_registry_id(conn: sqlite3.Connection) -> str:
    """Inside a write transaction: the registry id, inserted (``INSERT OR IGNORE``, as OMMX) when absent.

    Safe on the journal connection (``synchronous = NORMAL``): every ref naming the id
    is written later by a fully synchronous transaction, whose WAL sync makes this
    earlier frame durable too.
    """
    conn.execute(
        "INSERT OR IGNORE INTO ommx_local_registry_metadata(key, value) VALUES ('registry_id', ?)", (uuid.uuid4().hex,)
    )
    row = conn.execute("SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'").fetchone()
    return str(row[0])


# --- this process's connections to one database file (spec/registry.md §4a) ------------------------

MAIN = "main"
JOURNAL = "journal"
#: The journal connection checkpoints every 8,192 WAL pages (~32 MiB) instead of SQLite's 1,000:
#: each Run close appends a page or two, and a checkpoint (two fsyncs) every 1,000 pages cost
#: ~25 µs per close on our disk.
JOURNAL_WAL_AUTOCHECKPOINT_PAGES = 8192
#: SQLite's default, which the main connection keeps outside :meth:`Database.checkpoint_later`.
MAIN_WAL_AUTOCHECKPOINT_PAGES = 1000

# SQLite's unix VFS locks (os_unix.c): a connection holds SHARED on the database as a read lock on
# SHARED_SIZE bytes from SHARED_FIRST; every connection with the -shm mapped holds a read lock on
# its DMS byte (UNIX_SHM_DMS = 120 + SQLITE_SHM_NLOCK).
_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510
_SHM_DMS = 128

#: ``struct flock`` on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid, padding (32 bytes).
_FLOCK = struct.Struct("hhqqi4x")
#: Whether the keepers hold *open file description* locks (Linux, 64-bit). Unlike the POSIX locks
#: SQLite takes, they belong to the keeper's descriptor, not to the process: closing another
#: descriptor of the file (OMMX's SQLite closing its connection, or ours) does not drop them, and
#: they conflict with the POSIX locks of this very process, so the EXCLUSIVE lock that either
#: library's last close needs to checkpoint and unlink ``-wal``/``-shm`` is refused. False selects
#: the checks of :meth:`SharedConnections.revalidate` instead (also per file when a file system
#: refuses them). Tests set it to exercise that fallback.
OFD_LOCKS = sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLK") and sys.maxsize > 2**32 and _FLOCK.size == 32

#: OMMX 3's extension module: it bundles its own SQLite, which opens ``index.sqlite3``.
_OMMX_EXTENSION = "ommx._ommx_rust"
_other_sqlite_seen = False


def other_sqlite_loaded() -> bool:
    """True once OMMX 3's SQLite is loaded in this process (OMMX 2's extension has no registry).

    Until then nothing else in the process can unlink our ``-wal`` or drop our
    POSIX locks, and :meth:`SharedConnections.enter` skips the fallback's checks.
    """
    global _other_sqlite_seen
    if not _other_sqlite_seen:
        module = sys.modules.get(_OMMX_EXTENSION)
        _other_sqlite_seen = module is not None and hasattr(module, "list_experiments")
    return _other_sqlite_seen


class SharedConnections:
    """This process's SQLite connections to one database file, and the rules that keep them safe.

    A second SQLite library in the process (OMMX 3's, statically linked) shares
    the file but not SQLite's in-process lock bookkeeping, and POSIX locks of one
    process never conflict. So its last close may checkpoint and unlink
    ``-wal``/``-shm`` under our open connections, ours under its, and any close
    of a file descriptor drops every POSIX lock the process holds on that file.
    The rules (spec/registry.md §4a):

    - one ``RLock`` serialises all our use of the file in this process;
    - no transaction outlives an operation;
    - once the main connection is open in WAL mode, two *keeper* descriptors hold
      open file description (OFD) read locks on SQLite's SHARED range of the
      database and on the ``-shm``'s DMS byte. OFD locks belong to the descriptor:
      no close of another descriptor drops them, and they conflict with the POSIX
      locks of this very process. So the EXCLUSIVE lock that any last close (OMMX's,
      ours, another process's) needs before it checkpoints and unlinks is refused
      while we hold the file, and another process can never reset the ``-shm``
      under OMMX's connection. Nothing is checked per operation.

    Where OFD locks are unavailable (not 64-bit Linux, or refused by the file
    system), the fallback: a read-only *sentinel* connection, closed last, keeps
    our closes from checkpointing; at the start of each outermost operation (while
    OMMX 3 is loaded) the keepers re-take the POSIX locks our SQLite believes it
    holds, and a third keeper on the ``-wal`` shows whether it was unlinked (then
    every connection is closed and reopened).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        #: Nesting of operations by the thread holding :attr:`lock` (checks run at depth 0 only).
        self.depth = 0
        self._conns: dict[str, sqlite3.Connection] = {}
        self._sentinel: sqlite3.Connection | None = None
        self._keep_db = -1
        self._keep_shm = -1
        self._keep_wal = -1
        #: The keepers hold open file description locks (no sentinel, no ``-wal`` keeper, no checks).
        self.ofd = False
        self._ofd_refused = False  # this file's file system refused them: the fallback from now on
        #: Keepers left holding their locks by :meth:`close` while OMMX still had the file open.
        self._parked: tuple[int, ...] = ()
        #: How often an unlinked ``-wal`` made us reopen (tests and benchmarks read it).
        self.reopens = 0
        #: Write transactions on the main connection (its own commits leave its data_version alone).
        self.main_writes = 0

    # --- operations ------------------------------------------------------------------------------

    def enter(self, kind: str) -> sqlite3.Connection:
        """Start an operation (the caller holds :attr:`lock`; it decrements :attr:`depth` at the end)."""
        if self.depth == 0 and self._keep_wal >= 0 and (_other_sqlite_seen or other_sqlite_loaded()):
            self.revalidate()
        conn = self._conns.get(kind)
        if conn is None:
            conn = self._open(kind)
        elif self.depth == 0 and conn.in_transaction:
            _rollback_leftover(conn)  # an operation interrupted between BEGIN and its body: never reuse it
        self.depth += 1
        return conn

    @contextlib.contextmanager
    def operation(self, kind: str) -> Iterator[sqlite3.Connection]:
        with self.lock:
            conn = self.enter(kind)
            try:
                yield conn
            finally:
                self.depth -= 1

    def revalidate(self) -> None:
        """The fallback's check: re-take our POSIX locks, then reopen everything if the ``-wal`` was unlinked."""
        self._retake_locks()
        if os.fstat(self._keep_wal).st_nlink == 0:
            self.reopens += 1
            self._close_all(keep_shared_lock=True)

    def tidy_at_exit(self) -> None:
        """Best effort at exit (no durability step: every commit is in the WAL already).

        1. Free pages (a committed journal's run rows, pruned pin cache rows) that are at least
           a fifth of a small file (:data:`EXIT_VACUUM_MIN_FREE_BYTES`, :data:`EXIT_VACUUM_MAX_USED_BYTES`)
           are given back by ``VACUUM``: one write transaction copying the used pages only.
        2. A ``-wal`` over :data:`EXIT_CHECKPOINT_WAL_BYTES` (or one the ``VACUUM`` filled) is
           checkpointed into the database file and truncated, which our last close does not do
           (the keepers refuse it the exclusive lock).

        ``busy_timeout = 0`` throughout: another process writing (or, for the checkpoint, reading
        an older snapshot) makes a step skip, never wait. Skipped while OMMX 3's SQLite is in the
        process (spec/registry.md §4a).
        """
        try:
            if other_sqlite_loaded():
                return
            with self.lock:
                conn = self._conns.get(MAIN)
                if conn is None or conn.in_transaction:
                    return
                conn.execute("PRAGMA busy_timeout = 0")
                try:
                    vacuumed = not _known_corrupt(Path(self.path)) and _vacuum_if_mostly_free(conn)
                    if vacuumed or _wal_size(self.path) > EXIT_CHECKPOINT_WAL_BYTES:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error):
            return

    def close(self, *, release: bool = False) -> None:
        """Close every connection of ours to the file, then the keepers.

        If OMMX 3's SQLite still has the file open (a descriptor of it remains once
        ours are closed), the keepers' open file description locks stay, *parked*:
        our closes dropped that connection's POSIX locks, and without ours a last
        close in another process could unlink the ``-wal`` under it. Parked keepers
        are released when the file is next opened (new ones are taken first) and at
        interpreter exit (``release``).
        """
        with self.lock:
            keepers = (self._keep_db, self._keep_shm)
            park = self.ofd and not release and (_other_sqlite_seen or other_sqlite_loaded())
            if park:
                self._keep_db = self._keep_shm = -1  # out of _close_all's reach
            self._close_all(keep_shared_lock=False)
            if park and _descriptor_open_elsewhere(self.path, keepers):
                self._release_parked()
                self._parked = keepers
            else:
                for fd in keepers if park else ():
                    _close_fd(fd)
            if release:
                self._release_parked()

    def _release_parked(self) -> None:
        for fd in self._parked:
            _close_fd(fd)
        self._parked = ()

    # --- opening ---------------------------------------------------------------------------------

    def _open(self, kind: str) -> sqlite3.Connection:
        if kind != MAIN and MAIN not in self._conns:
            self._open(MAIN)
        try:
            if kind == MAIN:
                conn, wal = _open_main(self.path)
            else:
                conn, wal = connect(self.path), False
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA wal_autocheckpoint = {JOURNAL_WAL_AUTOCHECKPOINT_PAGES}")
            self._conns[kind] = conn
            if wal:
                self._guard(conn)
        except sqlite3.Error as exc:
            raise translate_error(exc, Path(self.path), "open the registry index") from exc
        return conn

    def _guard(self, conn: sqlite3.Connection) -> None:
        """After the main connection opened in WAL mode: the keepers' locks (or the sentinel).

        Not for a rollback journal (WAL unsupported there: no ``-wal`` to lose, no
        lock held between transactions) nor a read-only fallback (it cannot
        checkpoint, and ``immutable=1`` takes no locks).
        """
        if self.ofd:
            return
        try:
            if OFD_LOCKS and not self._ofd_refused:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # a new file's -shm exists from now on
                if self._take_ofd_locks():
                    return
            self._guard_fallback()
        finally:
            self._release_parked()  # after new locks were taken: the file is never without ours

    def _guard_fallback(self) -> None:
        """Without open file description locks: the sentinel, and the keepers the checks use."""
        if self._sentinel is None:
            sentinel = connect(_uri(self.path, "mode=ro"), uri=True)
            sentinel.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # holds SHARED from now on
            self._sentinel = sentinel
        try:
            if self._keep_db < 0:
                self._keep_db = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            if self._keep_shm < 0:
                self._keep_shm = os.open(self.path + "-shm", os.O_RDONLY | os.O_CLOEXEC)
            if self._keep_wal < 0:
                self._keep_wal = os.open(self.path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._close_keepers()  # an unreadable -shm or -wal: reads fail anyway; nothing to re-take

    def _take_ofd_locks(self) -> bool:
        """Read-lock SHARED on the database and DMS on the ``-shm`` with open file description locks.

        Our connection has just read, so our SQLite holds both as POSIX read locks and
        no other process can hold them exclusively: the locks are granted at once (the
        wait covers the impossible). Then the database's lock is read back with a POSIX
        ``F_GETLK`` for a write lock, which must see a read lock over the range: a
        ``struct flock`` laid out otherwise, or a file system without these locks, makes
        this return False and the sentinel and the checks take over.
        """
        fds: list[int] = []
        try:
            fds.append(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
            fds.append(os.open(self.path + "-shm", os.O_RDONLY | os.O_CLOEXEC))
            def take() -> None:
                _ofd_read_lock(fds[0], _SHARED_FIRST, _SHARED_SIZE)
                _ofd_read_lock(fds[1], _SHM_DMS, 1)

            self._lock_until_granted(take)
            probe = _FLOCK.unpack(fcntl.fcntl(fds[0], fcntl.F_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET,
                                                                                  _SHARED_FIRST, _SHARED_SIZE, 0)))
            if probe[0] != fcntl.F_RDLCK or not probe[2] <= _SHARED_FIRST + _SHARED_SIZE - 1 < probe[2] + probe[3]:
                raise OSError(errno.EINVAL, f"F_GETLK does not see the lock: {probe}")
        except (OSError, RegistryError):
            for fd in fds:
                _close_fd(fd)  # closing the descriptor releases its open file description locks
            self._ofd_refused = True
            return False
        self._keep_db, self._keep_shm = fds
        self.ofd = True
        return True

    # --- the checks ------------------------------------------------------------------------------

    def _retake_locks(self) -> None:
        """Read-lock what our SQLite believes it holds (another library's close may have dropped it).

        Waits (up to the busy timeout) while another process holds the bytes
        exclusively: a process closing the file last (its checkpoint), or one
        initialising the ``-shm``; the ``-wal`` check that follows then sees what it did.
        """
        def take() -> None:
            fcntl.lockf(self._keep_db, fcntl.LOCK_SH | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
            fcntl.lockf(self._keep_shm, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, _SHM_DMS)

        self._lock_until_granted(take)

    def _lock_until_granted(self, take: Callable[[], None]) -> None:
        """Call ``take`` (non-blocking lock calls) until it succeeds, up to the busy timeout."""
        deadline: float | None = None
        while True:
            try:
                take()
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise RegistryError(f"Failed to lock the registry index {self.path}: {exc}") from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + BUSY_TIMEOUT_MS / 1000
                elif now > deadline:
                    raise RegistryError(f"Failed to lock the registry index {self.path}: {exc} (waited 60 s)") from exc
                time.sleep(0.001)

    def _close_all(self, *, keep_shared_lock: bool) -> None:
        """Close every connection, the sentinel last, then the keepers: none of these closes checkpoints or unlinks.

        A connection of ours still open would pin SQLite's mapping of the old
        ``-shm`` for the new ones (one mapping per inode per library), so a
        reopen closes them all. Closing drops every lock the process holds on the
        file, OMMX's included: on a reopen the database's SHARED lock is taken
        back through its keeper at once.
        """
        conns = [*self._conns.values(), *([self._sentinel] if self._sentinel is not None else [])]
        self._conns.clear()
        self._sentinel = None
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        keep_db = self._keep_db if keep_shared_lock else -1
        if keep_db >= 0:
            with contextlib.suppress(OSError):
                fcntl.lockf(keep_db, fcntl.LOCK_SH | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
            self._keep_db = -1  # kept open, not closed: closing it would drop the lock again
        self._close_keepers()
        self._keep_db = keep_db

    def _close_keepers(self) -> None:
        for fd in (self._keep_wal, self._keep_shm, self._keep_db):
            _close_fd(fd)
        self._keep_db = self._keep_shm = self._keep_wal = -1
        self.ofd = False

    def _forget(self) -> None:
        """In a forked child: the parent's connections and locks are not ours (never close them here)."""
        _INHERITED.extend([*self._conns.values(), *([self._sentinel] if self._sentinel is not None else [])])
        self._conns.clear()
        self._sentinel = None
        self._close_keepers()  # the child holds no POSIX locks: closing its copies releases nothing
        for fd in self._parked:  # nor do copies of open file descriptions the parent still has open
            _close_fd(fd)
        self._parked = ()
        self.lock = threading.RLock()
        self.depth = 0


#: Kept for the life of the process: dropping one would let the garbage collector close its
#: connections in any order, the sentinel possibly first.
_SHARED: dict[str, SharedConnections] = {}
_SHARED_LOCK = threading.Lock()
#: Connections inherited through fork(): kept referenced so the child never closes them.
_INHERITED: list[sqlite3.Connection] = []


def shared_connections(path: Path) -> SharedConnections:
    """The process-wide :class:`SharedConnections` of the database file at ``path`` (by real path)."""
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = SharedConnections(key)
            _SHARED[key] = shared
        return shared


EXIT_CHECKPOINT_WAL_BYTES = 1 << 20
"""At interpreter exit a ``-wal`` larger than this is checkpointed into the database and truncated."""
EXIT_VACUUM_MIN_FREE_BYTES = 256 << 10
"""At interpreter exit free pages of at least this many bytes, and at least a quarter of the used ones, are given back."""
EXIT_VACUUM_MAX_USED_BYTES = 8 << 20
"""... unless the used pages exceed this: the ``VACUUM`` holds the write lock while it copies them."""


def _vacuum_if_mostly_free(conn: sqlite3.Connection) -> bool:
    """``VACUUM`` when a fifth or more of a small file is free pages (the caller set ``busy_timeout = 0``); True if done."""
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    used = pages - free
    if free * size < EXIT_VACUUM_MIN_FREE_BYTES or 4 * free < used or used * size > EXIT_VACUUM_MAX_USED_BYTES:
        return False
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError:  # busy (another writer): the pages stay free for the next rows
        return False
    return True


def _known_corrupt(path: Path) -> bool:
    """Marked corrupt (seen by this process, or marked by another): no write of ours, the exit ``VACUUM`` included."""
    return str(path) in _POISONED or (path.name == DB_NAME and os.path.exists(path.parent / CORRUPT_MARKER))


def _wal_size(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


def _close_every_file() -> None:
    with _SHARED_LOCK:
        every = list(_SHARED.values())
    for shared in every:
        shared.tidy_at_exit()
        shared.close(release=True)


def _forget_after_fork() -> None:
    for shared in list(_SHARED.values()):
        shared._forget()
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()


atexit.register(_close_every_file)  # the sentinel last, before the interpreter frees them in any order
os.register_at_fork(after_in_child=_forget_after_fork)


def _open_main(path: str) -> tuple[sqlite3.Connection, bool]:
    """The main connection, and whether it is read-write in WAL mode.

    A root we may not write (permissions, read-only mount) still reads:
    ``mode=ro`` first (needs a readable ``-shm`` when a WAL is present). With
    no ``-wal`` file the database file alone is complete, so ``immutable=1``
    (no locks, no ``-shm``) reads it; with a WAL we cannot read it is an error.
    Writes on such a connection fail with "attempt to write a readonly
    database", wrapped by :meth:`Database.write` in a RegistryError naming the file.
    """
    conn = connect(path)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if not _is_read_only_error(exc) or not os.path.exists(path):
            raise
        return _open_read_only(path), False
    mode = ""
    with contextlib.suppress(sqlite3.OperationalError):
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    return conn, mode == "wal"


def _open_read_only(path: str) -> sqlite3.Connection:
    try:
        conn = connect(_uri(path, "mode=ro"), uri=True)
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError:
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise
    conn = connect(_uri(path, "mode=ro&immutable=1"), uri=True)
    conn.execute("PRAGMA user_version").fetchone()
    return conn


def _uri(path: str, query: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?" + query


def _ofd_read_lock(fd: int, start: int, length: int) -> None:
    """A non-blocking open file description read lock on ``length`` bytes from ``start``."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, start, length, 0))


def _descriptor_open_elsewhere(path: str, ours: tuple[int, ...]) -> bool:
    """Whether a descriptor of this process other than ``ours`` refers to ``path`` (Linux ``/proc/self/fd``)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return True  # cannot tell: keep the locks (released at the next open or at exit)
    for name in names:
        if int(name) in ours:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == path:
                return True
    return False


def _close_fd(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def _is_read_only_error(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "readonly" in text or "unable to open" in text


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def connect(target: Path | str, *, uri: bool = False) -> sqlite3.Connection:
    """A new autocommit connection (we issue BEGIN ourselves) with OMMX's busy timeout."""
    conn = sqlite3.connect(
        target, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, uri=uri
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection, path: Path, step: str) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction on ``conn`` (a connection to ``path``).

    Committed on success, rolled back on any exception; a failed BEGIN or COMMIT,
    and an SQLite error raised by the body, raise RegistryError naming ``step``
    and ``path`` (:class:`RegistryCorruptError` for corruption). Refused before
    BEGIN once the index is known to be corrupt. :meth:`Database.write` runs it
    on the main connection, :meth:`Database.journal_write` on the journal's.
    """
    check_writable(path, step)
    _rollback_leftover(conn)
    try:
        _begin_immediate(conn, path, step)
    except BaseException:  # e.g. KeyboardInterrupt right after BEGIN returned: never leave it open
        _rollback_leftover(conn)
        raise
    try:
        yield conn
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise translate_error(exc, path, step) from exc
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if is_corruption(exc):
            raise translate_error(exc, path, f"commit {step}") from exc
        raise RegistryError(f"Failed to commit {step} in {path}: {exc}") from exc


def _rollback_leftover(conn: sqlite3.Connection) -> None:
    """Roll back a transaction an interrupted operation left open on ``conn`` (its writes were never committed)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _begin_immediate(conn: sqlite3.Connection, path: Path, step: str) -> None:
    # The busy handler normally absorbs contention; this loop covers the rare
    # SQLITE_BUSY that bypasses it (e.g. WAL recovery by another process).
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise translate_error(exc, path, f"begin {step}") from exc
            if not isinstance(exc, sqlite3.OperationalError) or ("locked" not in str(exc) and "busy" not in str(exc)):
                raise RegistryError(f"Failed to begin {step} in {path}: {exc}") from exc
            if time.monotonic() > deadline:
                raise RegistryError(f"Failed to begin {step} in {path}: {exc} (waited {BUSY_TIMEOUT_MS / 1000:g} s)") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
# --- corruption and loss ---------------------------------------------------------------------------


def is_corruption(exc: BaseException) -> bool:
    """Whether an SQLite error means a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), by error code."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text)


def translate_error(exc: sqlite3.Error, path: Path, step: str) -> RegistryError:
    """The error of our tree for an SQLite error during ``step`` on the index at ``path``.

    Corruption marks the index (in this process and with ``<root>/.oxe-index-corrupt``,
    so other processes stop writing too) and gives :class:`RegistryCorruptError`.
    """
    if is_corruption(exc):
        _mark_corrupt(path, step, exc)
        return _corrupt(path, step, str(exc))
    return RegistryError(f"Failed to {step} in {path}: {exc}")


def check_writable(path: Path, step: str) -> None:
    """Raise :class:`RegistryCorruptError` if the index at ``path`` is known to be corrupt."""
    if _known_corrupt(path):
        raise _corrupt(path, step, "marked corrupt earlier")


def clear_corruption(path: Path) -> None:
    """Forget the corruption of the index at ``path`` (``recover`` rebuilt it)."""
    _POISONED.discard(str(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path.parent / CORRUPT_MARKER)


def _corrupt(path: Path, step: str, detail: str) -> RegistryCorruptError:
    root = path.parent
    return RegistryCorruptError(
        f"{path} is corrupt ({detail}, while trying to {step}); writes to this registry are stopped. "
        f"Run `{RECOVER_HINT} --root {root}` to rebuild it (the damaged file is kept beside it)"
    )


def _mark_corrupt(path: Path, step: str, exc: BaseException) -> None:
    _POISONED.add(str(path))
    marker = path.parent / CORRUPT_MARKER
    if marker.exists():
        return
    note = json.dumps({"time": datetime.now(UTC).isoformat(), "pid": os.getpid(), "step": step, "error": str(exc)})
    with contextlib.suppress(OSError):  # a read-only root: the in-process flag still stops our writes
        atomic.create_new_bytes(marker, note.encode() + b"\n")


def index_json_entry_count(root: Path) -> int:
    """Entries in ``<root>/index.json`` (0 if absent; 1 if present but unreadable: it held something)."""
    try:
        document = json.loads((root / "index.json").read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError):
        return 1
    manifests = document.get("manifests") if isinstance(document, dict) else None
    return len(manifests) if isinstance(manifests, list) else 0


def _count_blobs(root: Path) -> int:
    try:
        entries = os.scandir(root / "blobs" / "sha256")
    except FileNotFoundError:
        return 0
    with entries:
        return sum(1 for e in entries if len(e.name) == 64 and all(c in "0123456789abcdef" for c in e.name))
