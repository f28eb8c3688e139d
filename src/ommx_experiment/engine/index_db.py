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
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import RegistryError

DB_NAME = "index.sqlite3"
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

# Our migrations: entry i brings oxe schema_version from i to i+1. Append only, never edit.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE IF NOT EXISTS oxe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT OR IGNORE INTO oxe_meta(key, value) VALUES ('refs_version', '0')",
        f"CREATE TRIGGER IF NOT EXISTS oxe_refs_after_insert AFTER INSERT ON refs BEGIN {_BUMP} END",
        f"CREATE TRIGGER IF NOT EXISTS oxe_refs_after_update AFTER UPDATE ON refs BEGIN {_BUMP} END",
        f"CREATE TRIGGER IF NOT EXISTS oxe_refs_after_delete AFTER DELETE ON refs BEGIN {_BUMP} END",
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
    """Thread-local SQLite connections to one registry's index, plus transactions."""

    def __init__(self, root: Path) -> None:
        self.path = root / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    # --- connections ---------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; use :meth:`write` to change data)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = self._open(self.path, uri=False)
            try:
                conn.execute("PRAGMA user_version").fetchone()
            except sqlite3.OperationalError as exc:
                if not _is_read_only_error(exc) or not self.path.exists():
                    raise
                conn.close()
                conn = self._open_read_only()
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise RegistryError(f"Failed to open the registry index {self.path}: {exc}") from exc
        return conn

    @staticmethod
    def _open(target: Path | str, *, uri: bool) -> sqlite3.Connection:
        return connect(target, uri=uri)

    def _open_read_only(self) -> sqlite3.Connection:
        """A root we may not write (permissions, read-only mount): reads still work.

        ``mode=ro`` first (needs a readable ``-shm`` when a WAL is present). With
        no ``-wal`` file the database file alone is complete, so ``immutable=1``
        (no locks, no ``-shm``) reads it; with a WAL we cannot read it is an error.
        Writes on such a connection fail with "attempt to write a readonly
        database", wrapped by :meth:`write` in a RegistryError naming the file.
        """
        base = "file:" + urllib.parse.quote(str(self.path.absolute()))
        try:
            conn = self._open(base + "?mode=ro", uri=True)
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        except sqlite3.OperationalError:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise
        conn = self._open(base + "?mode=ro&immutable=1", uri=True)
        conn.execute("PRAGMA user_version").fetchone()
        return conn

    def close(self) -> None:
        with self._guard:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- transactions --------------------------------------------------------

    @contextlib.contextmanager
    def write(self, step: str = "write") -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; committed on success, rolled back on any exception.

        ``step`` names the operation in error messages. Keep the body short and
        free of file I/O: OMMX waits at most 30 s for our write lock.
        """
        with write_transaction(self.conn(), self.path, step) as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A deferred read transaction: one consistent snapshot for several SELECTs."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run one SELECT in autocommit mode."""
        try:
            return self.conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"Failed to query the registry index {self.path}: {exc}") from exc

    # --- schema --------------------------------------------------------------

    def initialise(self) -> None:
        """Create OMMX's schema if the file is new, then bring our tables up to date."""
        conn = self.conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
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
        self._migrate()

    def _check_ommx_shape(self, conn: sqlite3.Connection) -> None:
        for table, columns in OMMX_COLUMNS.items():
            actual = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if actual != columns:
                raise RegistryError(
                    f"{self.path}: table {table} has columns {actual}, expected OMMX 3's {columns}"
                )

    def schema_version(self) -> int:
        conn = self.conn()
        if "oxe_meta" not in _table_names(conn):
            return 0
        row = conn.execute("SELECT value FROM oxe_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

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
        """The registry's id (32 lowercase hex), created with ``INSERT OR IGNORE`` as OMMX does."""
        row = self.conn().execute(
            "SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'"
        ).fetchone()
        if row:
            return str(row[0])
        with self.write("create registry id") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO ommx_local_registry_metadata(key, value) VALUES ('registry_id', ?)",
                (uuid.uuid4().hex,),
            )
            row = conn.execute(
                "SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'"
            ).fetchone()
        return str(row[0])

    def refs_version(self) -> int:
        row = self.conn().execute("SELECT value FROM oxe_meta WHERE key = 'refs_version'").fetchone()
        return int(row[0]) if row else 0


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

    Committed on success, rolled back on any exception; a failed BEGIN or COMMIT
    raises RegistryError naming ``step`` and ``path``. :meth:`Database.write` runs
    on the registry's connection; callers that need other connection settings
    (the checkpoint journal's ``synchronous = NORMAL``) pass their own.
    """
    _begin_immediate(conn, path, step)
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise RegistryError(f"Failed to commit {step} in {path}: {exc}") from exc


def _begin_immediate(conn: sqlite3.Connection, path: Path, step: str) -> None:
    # The busy handler normally absorbs contention; this loop covers the rare
    # SQLITE_BUSY that bypasses it (e.g. WAL recovery by another process).
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise RegistryError(f"Failed to begin {step} in {path}: {exc}") from exc
            if time.monotonic() > deadline:
                raise RegistryError(f"Failed to begin {step} in {path}: {exc} (waited {BUSY_TIMEOUT_MS / 1000:g} s)") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
