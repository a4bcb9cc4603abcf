"""The one SQLite helper: private files, the right pragmas per use, translated errors, versioned migrations.

Used by the user store (``store.sqlite``), the usage ledger (``usage.sqlite``)
and the KPI history (``kpis.sqlite``); the cache tier uses the file functions
(check, set aside, create private) under sqlitedict.

- :class:`SqliteDb` opens connections with WAL, a busy timeout and the
  ``synchronous`` level its use needs (``FULL`` where an acknowledged write
  must survive a power cut, ``NORMAL`` where losing the last second is fine),
  runs write transactions with ``BEGIN IMMEDIATE`` and turns sqlite3's errors
  into ours once (:func:`translate`): a full disk is StorageFull, a lock held
  too long StoreUnavailable, anything else StoreError. Integrity errors pass
  through untranslated: only the caller knows which constraint means what.
- :func:`migrate` applies an ordered list of migrations inside one
  ``BEGIN IMMEDIATE`` transaction, recording the count in ``PRAGMA
  user_version``: two processes starting at once queue on the write lock,
  and a crash mid-upgrade leaves the old schema.
- The rebuildable files (cache, ledger, KPIs) can all start empty without
  losing anything a user wrote, so a corrupt one must not stop the service:
  :func:`open_sound` moves it to ``<name>.corrupt-<UTC time>`` (with its
  ``-wal`` and ``-shm``, which would otherwise be replayed into the new file),
  logs a warning and opens a fresh one. The store (users, portfolios) is never
  set aside: losing it is not a cache miss, so a bad store stops start-up.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from .errors import CacheError, ConfigError, StockcacheError, StorageFull, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_ERRORS = (sqlite3.Error, OSError, OverflowError, RuntimeError)
FULL_RETRY_AFTER_S = 30  # what a client is told to wait when the disk is full: space needs a person
BUSY_RETRY_AFTER_S = 2

Migration = Sequence[str]  # single statements (not a script), so they share one transaction


def translate(exc: sqlite3.Error, *, label: str, operation: str = "") -> StockcacheError:
    """sqlite3's error as ours: StorageFull, StoreUnavailable (locked too long) or StoreError; logged once here."""
    what = f"{label} {operation}".strip()
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        log.error("%s failed: %s (the disk is full)", what, exc)
        return StorageFull(retry_after=FULL_RETRY_AFTER_S)
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        log.warning("%s failed: %s", what, exc)
        return StoreUnavailable(f"The {label} is busy; try again shortly.", retry_after=BUSY_RETRY_AFTER_S)
    log.error("%s failed: %s", what, exc, exc_info=exc)
    return StoreError(f"The {label} is unavailable.")


class SqliteDb:
    """Connections to one SQLite file with fixed pragmas. Thread-safe.

    ``per_thread=True`` gives each thread its own connection (in WAL mode
    readers then never wait behind a writer's fsync); otherwise one connection
    is shared behind a lock (a ledger or KPI file, written by one flusher).
    ``path=None`` is a private in-memory database (always one shared
    connection). Every connection made is closed by :meth:`close`.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        label: str,
        synchronous: str = "FULL",
        foreign_keys: bool = False,
        busy_timeout: float = 5.0,
        per_thread: bool = False,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous level {synchronous!r}")
        self.path = path
        self.label = label
        self._synchronous = synchronous
        self._foreign_keys = foreign_keys
        self._busy_timeout = busy_timeout
        self._per_thread = per_thread and path is not None
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _connections and _closed
        self._shared_lock = threading.RLock()  # serialises use of the shared connection
        self._shared: sqlite3.Connection | None = None
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<SqliteDb {self.label} {str(self.path or ':memory:')!r}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def connect(self) -> sqlite3.Connection:
        """A new connection with this file's pragmas, remembered for :meth:`close`."""
        with self._lock:
            if self._closed:
                raise StoreError(f"The {self.label} is closed.")
            # isolation_level=None: BEGIN/COMMIT are ours, so a read never leaves a transaction open.
            conn = sqlite3.connect(self.path if self.path is not None else ":memory:",
                                   timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            self._connections.append(conn)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            if self._foreign_keys:
                conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (per-thread mode) or the shared one; hold :meth:`locked` with the shared one."""
        if self._per_thread:
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is not None and not self._closed:
                return conn
            conn = self._local.conn = self.connect()
            return conn
        if self._shared is None or self._closed:
            with self._shared_lock:
                if self._shared is None or self._closed:
                    self._shared = self.connect()
        return self._shared

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection to use now, held exclusively when it is the shared one."""
        if self._per_thread:
            yield self.connection()
            return
        with self._shared_lock:
            yield self.connection()

    @contextmanager
    def transaction(self, operation: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed before the caller goes on.

        IMMEDIATE takes the write lock up front, so two writers queue on the
        busy timeout instead of one failing at its first write. Errors other
        than integrity errors come out translated.
        """
        try:
            with self.locked() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise translate(exc, label=self.label, operation=operation) from exc

    def rows(self, sql: str, params: Sequence[object] = (), *, operation: str = "read") -> list[sqlite3.Row]:
        """Every row of one query (fetched whole: a half-read cursor would hold a read transaction open)."""
        try:
            with self.locked() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, label=self.label, operation=operation) from exc

    def migrate(self, migrations: Sequence[Migration]) -> int:
        """Apply the migrations not yet applied (see :func:`migrate`); the schema version."""
        with self.locked() as conn:
            return migrate(conn, migrations, label=f"the {self.label} {self.path or ':memory:'}")

    def close(self) -> None:
        """Close every connection; later calls raise StoreError. Idempotent."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.warning("%s: a connection failed to close", self.label, exc_info=True)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *, label: str) -> int:
    """Bring the schema up to ``len(migrations)`` in one transaction; return the version.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    ``PRAGMA user_version`` records how many migrations have been applied. A
    file from a newer stockcache is refused (ConfigError) rather than guessed
    at. Append a migration to change a schema; never edit one that has shipped.
    """
    target = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > target:
            raise ConfigError(
                f"{label} has schema version {version}, but this stockcache knows only up to "
                f"{target}: upgrade stockcache, or point --data-dir elsewhere"
            )
        for number in range(version, target):
            for statement in migrations[number]:
                conn.execute(statement)
        if version != target:
            # Inside the transaction: the version moves only with the tables.
            conn.execute(f"PRAGMA user_version = {target:d}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return target


def open_db(
    path: Path | None,
    migrations: Sequence[Migration],
    *,
    label: str,
    set_aside: bool,
    check_seconds: float = 10.0,
    **options: object,
) -> tuple[SqliteDb, str | None]:
    """A migrated :class:`SqliteDb` on ``path`` (0600, WAL), and the problem of a file set aside first, if any.

    With ``set_aside`` a corrupt file is moved aside and a fresh one started
    (:func:`open_sound`); without it, a corrupt file is a StoreError. Options
    go to :class:`SqliteDb`.
    """

    def setup(target: Path | None) -> SqliteDb:
        if target is not None:
            create_private(target)
        db = SqliteDb(target, label=label, **options)  # type: ignore[arg-type]
        try:
            with db.locked() as conn:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if target is not None and str(mode).lower() != "wal":
                    log.warning("%s %s: WAL not available (journal_mode=%s)", label, target, mode)
            db.migrate(migrations)
        except BaseException:
            db.close()
            raise
        return db

    if path is None:
        return setup(None), None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if set_aside:
        return open_sound(path, setup, label=label, check_seconds=check_seconds, error=StoreError)
    try:
        return setup(path), None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the {label} {path}: {exc}") from exc


def open_sound(path: Path, setup: Callable[[Path], T], *, label: str,
               check_seconds: float = 10.0, error: type[StockcacheError] = CacheError) -> tuple[T, str | None]:
    """``setup(path)`` on a sound file, and the problem of the file set aside first (None if none was).

    An existing file is checked first with plain sqlite3 and a time limit
    (sqlitedict can hang on some corrupt files). ``setup`` creates the file if
    needed and lays out its schema; if it finds the file is not a database the
    file is set aside too and ``setup`` runs once more on a fresh one. A file
    locked by another process is an ``error``, never set aside.
    """
    problem = check(path, check_seconds, label=label, error=error) if path.exists() else None
    if problem is not None:
        move_aside(path, problem, label=label, error=error)
    try:
        return setup(path), problem
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            raise error(f"the {label} {path} is locked by another process") from exc
        if not path.exists() or not _is_not_a_database(exc):
            raise error(f"cannot open the {label} {path}: {exc}") from exc
        problem = str(exc)
        move_aside(path, problem, label=label, error=error)
    except StoreError as exc:  # SqliteDb's translation of the same errors
        cause = exc.__cause__
        if not isinstance(cause, sqlite3.DatabaseError) or not path.exists() or not _is_not_a_database(cause):
            raise error(f"cannot open the {label} {path}: {cause or exc}") from exc
        problem = str(cause)
        move_aside(path, problem, label=label, error=error)
    try:
        return setup(path), problem
    except _ERRORS as exc:
        raise error(f"cannot create the {label} {path}: {exc}") from exc
    except StoreError as exc:
        raise error(f"cannot create the {label} {path}: {exc.__cause__ or exc}") from exc


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_not_a_database(exc: sqlite3.DatabaseError) -> bool:
    """Whether the error says the file's content is bad (not "cannot open", "read-only", "disk full")."""
    if type(exc) is sqlite3.DatabaseError:  # SQLITE_NOTADB, SQLITE_CORRUPT
        return True
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def check(path: Path, check_seconds: float, *, label: str,
          error: type[StockcacheError] = CacheError) -> str | None:
    """None if ``path`` is a readable, consistent SQLite database, else the problem."""
    try:
        conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    except _ERRORS as exc:
        return str(exc)
    try:
        deadline = time.monotonic() + check_seconds
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc).lower():
            log.warning("%s %s: quick_check took more than %.0f s; opening it unchecked",
                        label, path, check_seconds)
            return None
        if is_busy(exc):
            raise error(f"the {label} {path} is locked by another process") from exc
        return str(exc)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    if rows != [("ok",)]:
        return "; ".join(str(row[0]) for row in rows[:3]) or "quick_check failed"
    return None


def move_aside(path: Path, problem: str, *, label: str, error: type[StockcacheError] = CacheError) -> Path:
    """Rename ``path`` (and its -wal/-shm) to ``<name>.corrupt-<UTC time>``; the new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            # A WAL left next to a new file would be replayed into it.
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{target}{suffix}"))
    except OSError as exc:
        raise error(f"the {label} {path} is unusable ({problem}) and cannot be moved aside: {exc}") from exc
    log.warning("%s %s is corrupt or unreadable (%s); moved it to %s and starting empty",
                label[:1].upper() + label[1:], path, problem, target.name)
    return target


def create_private(path: Path) -> None:
    """Create ``path`` readable by its owner only (sqlite3 would use 0644), and tighten it and its -wal/-shm.

    SQLite gives new -wal and -shm files the main file's mode, so they follow.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        side = f"{path}{suffix}"
        try:
            mode = os.stat(side).st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(side, 0o600)
            log.warning("%s was readable by others (mode %o); tightened to 0600", side, mode)
