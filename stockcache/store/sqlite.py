"""The store in one SQLite file (``<data_dir>/store.sqlite``), through :mod:`stockcache.sqlitefile`.

Durability: WAL with ``synchronous=FULL`` and a commit before every write
method returns, so a write a client saw acknowledged survives a crash or a
power cut. The file is created 0600 (its -wal and -shm follow). A bad store
stops start-up (ConfigError) instead of being set aside: losing users and
portfolios is not a cache miss.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..sqlitefile import SqliteDb, create_private
from .base import Row, Violation
from .interface import Store
from .schema import for_dialect

logger = logging.getLogger(__name__)

STORE_FILENAME = "store.sqlite"
BUSY_TIMEOUT_S = 5.0


def store_path(data_dir: Path) -> Path:
    """Where the store lives inside a data folder."""
    return Path(data_dir) / STORE_FILENAME


def _violation(exc: sqlite3.IntegrityError) -> Violation:
    """SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY, _FOREIGNKEY, _CHECK, _NOTNULL as a Violation kind."""
    name = getattr(exc, "sqlite_errorname", "") or str(exc).upper()
    if "FOREIGN" in name:
        return Violation("foreign_key", str(exc))
    if "CHECK" in name:
        return Violation("check", str(exc))
    if "NOTNULL" in name or "NOT NULL" in name:
        return Violation("not_null", str(exc))
    return Violation("unique", str(exc))


class _SqliteTx:
    """A write transaction on one sqlite3 connection; integrity errors come out as Violation."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc


class SqliteStore(Store):
    """The store on SQLite. Thread-safe: each thread gets its own connection.

    Why a connection per thread rather than one shared connection behind a
    lock: in WAL mode readers never wait for a writer, but a shared connection
    would make every read wait behind a writer's fsync (``synchronous=FULL``),
    which can take tens of milliseconds on an SD card. Writers still take
    SQLite's own write lock (``BEGIN IMMEDIATE``, waiting up to the busy
    timeout). Connections are remembered so :meth:`close` closes them all;
    waitress's thread pool is fixed, so their number stays small.
    """

    dialect = "sqlite"
    shared = False

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._db = SqliteDb(self.path, label="store", synchronous="FULL", foreign_keys=True,
                            busy_timeout=BUSY_TIMEOUT_S, per_thread=True)

    def describe(self) -> str:
        return str(self.path)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (tests look at its pragmas)."""
        return self._db.connection()

    def _rows(self, sql: str | Mapping[str, str], params: Sequence[Any] = ()) -> list[Row]:
        return self._db.rows(self._pick(sql), params)

    @contextmanager
    def _tx(self, operation: str) -> Iterator[_SqliteTx]:
        with self._db.transaction(operation) as conn:
            yield _SqliteTx(conn)

    def _close_engine(self) -> None:
        self._db.close()

    def open(self) -> SqliteStore:
        """Create the file (0600), switch to WAL and apply migrations. Called by :func:`open_store`."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private(self.path)
        try:
            conn = self._db.connection()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("store %s: WAL not available (journal_mode=%s)", self.path, mode)
            self.migrated_from = int(conn.execute("PRAGMA user_version").fetchone()[0])
            self._db.migrate(for_dialect(self.dialect))
            self.check_for_changes()  # the baseline later commits by others are compared with
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigError(f"{self.path} cannot be opened as the store: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def schema_version(self) -> int:
        return int(self._rows("PRAGMA user_version")[0][0])

    def integrity_check(self) -> str:
        """``"ok"``, or SQLite's list of problems, one per line."""
        return "\n".join(str(row[0]) for row in self._rows("PRAGMA integrity_check"))

    def sequence_floor(self, table: str) -> int:
        """The highest id ``table`` ever handed out (AUTOINCREMENT remembers deleted ones): ``store copy`` keeps it."""
        rows = self._rows("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        return int(rows[0][0]) if rows else 0


def open_sqlite_store(path: Path, *, clock: Callable[[], float] = time.time) -> SqliteStore:
    """Open (creating and migrating if needed) the store in a file, or in ``store.sqlite`` of a folder that exists."""
    path = Path(path)
    if path.is_dir():
        path = store_path(path)
    return SqliteStore(path, clock=clock).open()
