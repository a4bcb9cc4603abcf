"""Users, API tokens, portfolios and watchlists in one SQLite file (standard ``sqlite3``).

Durability: WAL with ``synchronous=FULL`` and a commit before every write
method returns, so a write a client saw acknowledged survives a crash or a
power cut. Isolation between users: every query about positions, watch items
or tokens of a user is scoped by that user's id, so another user's id behaves
exactly like a missing one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, Conflict, InvalidRequest, NotFound, StockcacheError, StorageFull
from . import validate
from .rows import ApiToken, Position, User, WatchItem
from .schema import migrate

logger = logging.getLogger(__name__)

STORE_FILENAME = "store.sqlite"
BUSY_TIMEOUT_S = 5.0
# How often the watcher looks for other processes' commits: the bound on how long a token
# revoked or a user removed from another process (the command line) keeps working here.
WATCH_INTERVAL = 0.25
TOUCH_INTERVAL = 60.0  # seconds between last_used_at writes for one API token
FULL_RETRY_AFTER_S = 30  # what a client is told to wait when the disk is full: space needs a person

F = TypeVar("F", bound=Callable[..., Any])


def store_path(data_dir: Path) -> Path:
    """Where the store lives inside a data folder."""
    return Path(data_dir) / STORE_FILENAME


def iso_utc(timestamp: float) -> str:
    """``2024-05-06T12:34:56Z``: fixed width, so text order is time order in SQL."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _translated(method: F) -> F:
    """Turn sqlite3 failures (disk full, I/O error, locked too long) into StockcacheError once, here.

    A full disk (SQLITE_FULL: no space for the WAL, or the database's size
    limit) is StorageFull, a 503 with Retry-After: the write was rolled back
    and will work once there is space. Anything else is a 500, logged with
    its traceback.
    """

    @wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
                logger.error("store.%s failed: %s (the disk is full)", method.__name__, exc)
                raise StorageFull(retry_after=FULL_RETRY_AFTER_S) from exc
            logger.error("store.%s failed: %s", method.__name__, exc, exc_info=True)
            raise StockcacheError("The store is unavailable.") from exc

    return wrapper  # type: ignore[return-value]


def _user(row: sqlite3.Row) -> User:
    return User(id=row["id"], username=row["username"], is_admin=bool(row["is_admin"]), created_at=row["created_at"])


def _token(row: sqlite3.Row) -> ApiToken:
    return ApiToken(
        id=row["id"], user_id=row["user_id"], label=row["label"], created_at=row["created_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"],
    )


def _position(row: sqlite3.Row) -> Position:
    # float(): UPDATE ... RETURNING hands back whole REAL values as ints.
    return Position(id=row["id"], symbol=row["symbol"], shares=float(row["shares"]),
                    cost_basis=float(row["cost_basis"]))


def _constraint(exc: sqlite3.IntegrityError) -> str:
    """SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY, _FOREIGNKEY, _CHECK, _NOTNULL ..."""
    return getattr(exc, "sqlite_errorname", "") or str(exc)


class Store:
    """The user store. Thread-safe: each thread gets its own connection.

    Why a connection per thread (``threading.local``) rather than one shared
    connection behind a lock: in WAL mode readers never wait for a writer, but
    a shared connection would make every read wait behind a writer's fsync
    (``synchronous=FULL``), which can take tens of milliseconds on an SD card.
    Writers still take SQLite's own write lock (``BEGIN IMMEDIATE``, waiting up
    to ``busy_timeout``). Connections are remembered so :meth:`close` closes
    them all; waitress's thread pool is fixed, so their number stays small.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _connections, _closed and _generation
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        # Changes whenever anyone may have changed the store; see generation().
        self._generation = 0
        self._used: dict[str, float] = {}  # API token id -> last use not yet written (see note_token_use)
        self._watcher: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._watch_conn: sqlite3.Connection | None = None
        self._watch_seen: int | None = None
        self._holdings_listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}>"

    # -- connections and transactions ------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write's
        # commit is explicit and a read never leaves a transaction open.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                raise StockcacheError("The store is closed.")
            conn = self._connect()
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably) before the caller returns."""
        conn = conn or self._conn()
        # IMMEDIATE takes the write lock up front, so two writers queue on
        # busy_timeout instead of one failing at its first write.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._bump()

    def _bump(self) -> None:
        with self._lock:
            self._generation += 1

    # -- noticing changes without I/O on the request path ------------------------------

    def generation(self) -> int:
        """A number that changes whenever anyone may have changed the store. No I/O.

        For caches of what the store says (the authenticator's verified tokens),
        read on every request. Writes through this Store change it before they
        return. Commits by anyone else (the command line in another process)
        are noticed by :meth:`watch`'s thread within its interval, or at the
        next :meth:`check_for_changes`.
        """
        return self._generation

    def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Start the thread that notices other processes' commits every ``interval`` seconds (idempotent).

        It also writes the API-token uses noted by :meth:`note_token_use`, so
        the request path never writes either.
        """
        with self._lock:
            if self._watcher is not None or self._closed:
                return
            self._watcher = threading.Thread(target=self._watch_loop, args=(interval,),
                                             name="stockcache-store-watch", daemon=True)
        self._watcher.start()

    def _watch_loop(self, interval: float) -> None:
        while not self._watch_stop.wait(interval):
            try:
                if self.check_for_changes():
                    self._tell_holdings_listeners()  # another process may have added a held symbol
                self.flush_token_uses()
            except StockcacheError:
                pass  # logged by _translated; the next round tries again
            except Exception:  # the watcher must outlive any surprise
                logger.exception("store watcher step failed")

    @contextmanager
    def _holdings_write(self) -> Iterator[sqlite3.Connection]:
        """A write that may make a symbol held: the listeners hear of it once it is committed."""
        with self._write() as conn:
            yield conn
        self._tell_holdings_listeners()

    def _tell_holdings_listeners(self) -> None:
        for listener in list(self._holdings_listeners):
            try:
                listener()
            except Exception:
                logger.exception("store %s: a holdings listener failed", self.path)

    def add_holdings_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each commit that may add a held symbol (a new or changed position, a watch).

        So the background refresher need not poll. It runs in the writing thread and
        must not block. Commits by other processes call it too, from the watcher
        thread, once it notices them (within ``WATCH_INTERVAL``).
        """
        self._holdings_listeners.append(listener)

    @_translated
    def check_for_changes(self) -> bool:
        """One look for commits by other connections (``PRAGMA data_version``); True if there were."""
        conn = self._watch_conn
        if conn is None:
            with self._lock:
                if self._closed:
                    return False
                conn = self._watch_conn = self._connect()
                self._connections.append(conn)
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        changed = self._watch_seen is not None and version != self._watch_seen
        self._watch_seen = version
        if changed:
            self._bump()
        return changed

    def note_token_use(self, token_id: str) -> None:
        """Remember that an API token was used now; written by the watcher, never on the request path.

        No lock: one dict store is atomic, and a use noted while a flush swaps
        the dict is at worst a last-use time a minute old.
        """
        self._used[token_id] = self._clock()

    @_translated
    def flush_token_uses(self) -> int:
        """Write the noted token uses (each token at most once a TOUCH_INTERVAL); how many rows changed.

        These writes do not change :meth:`generation`: a last-use time never
        makes a token valid or invalid.
        """
        with self._lock:
            used, self._used = self._used, {}
        if not used:
            return 0
        conn = self._watch_conn or self._conn()
        changed = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for token_id, at in used.items():
                changed += conn.execute(
                    """UPDATE api_tokens SET last_used_at = ?
                       WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)""",
                    (iso_utc(at), token_id, iso_utc(at - TOUCH_INTERVAL)),
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return changed

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        # fetchall: a half-read cursor would keep a read transaction open
        # and stop WAL checkpoints.
        return self._conn().execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _now(self) -> str:
        return iso_utc(self._clock())

    def open(self) -> Store:
        """Create the file (0600), switch to WAL and apply migrations. Called by :func:`open_store`."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private(self.path)
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("store %s: WAL not available (journal_mode=%s)", self.path, mode)
            migrate(conn, path=self.path)
            self.check_for_changes()  # the baseline later commits by others are compared with
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigError(f"{self.path} cannot be opened as the store: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Write pending token uses, stop the watcher, close every connection. Later calls raise StockcacheError."""
        self._watch_stop.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=10)
        if not self._closed:
            try:
                self.flush_token_uses()
            except StockcacheError:
                pass
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                logger.warning("store %s: a connection failed to close", self.path, exc_info=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_translated
    def integrity_check(self) -> str:
        """``"ok"``, or SQLite's list of problems, one per line."""
        return "\n".join(str(row[0]) for row in self._all("PRAGMA integrity_check"))

    # -- users --------------------------------------------------------------------------

    @_translated
    def create_user(self, username: str, password_hash: str, *, is_admin: bool = False) -> User:
        """A new user; Conflict when the name is taken (names compare case-insensitively)."""
        username = validate.username(username)
        now = self._now()
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                    (username, password_hash, int(bool(is_admin)), now),
                )
                user_id = cur.lastrowid
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"A user named {username!r} already exists.") from exc
        assert user_id is not None
        return User(id=user_id, username=username, is_admin=bool(is_admin), created_at=now)

    @_translated
    def get_user(self, user_id: int) -> User | None:
        row = self._one("SELECT id, username, is_admin, created_at FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    @_translated
    def get_user_by_name(self, name: str) -> tuple[User, str] | None:
        """The user and their password hash (for verification only)."""
        row = self._one("SELECT * FROM users WHERE username = ?", (name,))
        return (_user(row), row["password_hash"]) if row else None

    @_translated
    def list_users(self) -> list[User]:
        return [_user(r) for r in self._all("SELECT id, username, is_admin, created_at FROM users ORDER BY id")]

    @_translated
    def count_users(self) -> int:
        row = self._one("SELECT count(*) AS n FROM users")
        return int(row["n"]) if row else 0

    @_translated
    def delete_user(self, username: str) -> bool:
        """Remove a user with their tokens, positions and watch items (ON DELETE CASCADE)."""
        with self._write() as conn:
            return conn.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount > 0

    @_translated
    def set_password(self, user_id: int, password_hash: str) -> bool:
        """Replace a user's hash (a new password, or a rehash with stronger parameters)."""
        with self._write() as conn:
            cur = conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            return cur.rowcount > 0

    @_translated
    def base_currency(self, user_id: int) -> str | None:
        """The user's base currency for portfolio totals, or None for the server's default."""
        row = self._one("SELECT base_currency FROM users WHERE id = ?", (user_id,))
        return row["base_currency"] if row else None

    @_translated
    def set_base_currency(self, user_id: int, code: str | None) -> bool:
        """Set (or with None, clear) the user's base currency; False when there is no such user."""
        with self._write() as conn:
            cur = conn.execute("UPDATE users SET base_currency = ? WHERE id = ?", (code, user_id))
            return cur.rowcount > 0

    # -- API tokens -----------------------------------------------------------------------

    @_translated
    def create_api_token(self, user_id: int, token_id: str, token_hash: str, label: str) -> ApiToken:
        """Record a token's hash; Conflict if the id is taken (the caller draws another), NotFound for no user."""
        now = self._now()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO api_tokens (id, user_id, token_hash, label, created_at) VALUES (?, ?, ?, ?, ?)",
                    (token_id, user_id, token_hash, label, now),
                )
        except sqlite3.IntegrityError as exc:
            if "FOREIGNKEY" in _constraint(exc):
                raise NotFound("No such user.") from exc
            raise Conflict("That token id is taken.") from exc
        return ApiToken(id=token_id, user_id=user_id, label=label, created_at=now, last_used_at=None, revoked_at=None)

    @_translated
    def find_api_token(self, token_id: str) -> tuple[ApiToken, str, User] | None:
        """The token, its hash and its owner, revoked or not; None when unknown."""
        row = self._one(
            """SELECT t.*, u.username, u.is_admin, u.created_at AS user_created_at
               FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?""",
            (token_id,),
        )
        if row is None:
            return None
        owner = User(id=row["user_id"], username=row["username"], is_admin=bool(row["is_admin"]),
                     created_at=row["user_created_at"])
        return _token(row), row["token_hash"], owner

    @_translated
    def revoke_api_token(self, token_id: str) -> bool:
        """True when a live token was revoked now; False when unknown or already revoked."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self._now(), token_id),
            )
            return cur.rowcount > 0

    @_translated
    def touch_api_token(self, token_id: str, *, min_interval: float = 60.0) -> bool:
        """Set ``last_used_at`` to now unless it was set within ``min_interval`` seconds.

        The condition is in SQL so concurrent requests with one token write at most once.
        """
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                """UPDATE api_tokens SET last_used_at = ?
                   WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)""",
                (iso_utc(now), token_id, iso_utc(now - min_interval)),
            )
            return cur.rowcount > 0

    @_translated
    def list_api_tokens(self, user_id: int) -> list[ApiToken]:
        rows = self._all("SELECT * FROM api_tokens WHERE user_id = ? ORDER BY created_at, id", (user_id,))
        return [_token(r) for r in rows]

    # -- portfolio ------------------------------------------------------------------------

    @_translated
    def list_positions(self, user_id: int) -> list[Position]:
        rows = self._all("SELECT id, symbol, shares, cost_basis FROM positions WHERE user_id = ? ORDER BY id",
                         (user_id,))
        return [_position(r) for r in rows]

    @_translated
    def add_position(self, user_id: int, symbol: str, shares: float, cost_basis: float) -> Position:
        """A new position (values already cleaned by :func:`validate.position_input`)."""
        now = self._now()
        try:
            with self._holdings_write() as conn:
                cur = conn.execute(
                    """INSERT INTO positions (user_id, symbol, shares, cost_basis, created_at, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?)""",
                    (user_id, symbol, float(shares), float(cost_basis), now, now),
                )
                position_id = cur.lastrowid
        except sqlite3.IntegrityError as exc:
            raise _position_error(exc) from exc
        assert position_id is not None
        return Position(id=position_id, symbol=symbol, shares=float(shares), cost_basis=float(cost_basis))

    @_translated
    def update_position(
        self,
        user_id: int,
        position_id: int,
        *,
        symbol: str | None = None,
        shares: float | None = None,
        cost_basis: float | None = None,
    ) -> Position | None:
        """Change the given fields of the user's position; None when the user has no such position."""
        changes: dict[str, Any] = {}
        if symbol is not None:
            changes["symbol"] = symbol
        if shares is not None:
            changes["shares"] = float(shares)
        if cost_basis is not None:
            changes["cost_basis"] = float(cost_basis)
        assignments = ", ".join(f"{name} = ?" for name in changes)  # names from the fixed set above
        sets = (assignments + ", " if assignments else "") + "updated_at = ?"
        try:
            with self._holdings_write() as conn:
                rows = conn.execute(
                    f"""UPDATE positions SET {sets} WHERE id = ? AND user_id = ?
                        RETURNING id, symbol, shares, cost_basis""",
                    (*changes.values(), self._now(), position_id, user_id),
                ).fetchall()
        except sqlite3.IntegrityError as exc:
            raise _position_error(exc) from exc
        return _position(rows[0]) if rows else None

    @_translated
    def delete_position(self, user_id: int, position_id: int) -> bool:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM positions WHERE id = ? AND user_id = ?", (position_id, user_id))
            return cur.rowcount > 0

    # -- watchlist ------------------------------------------------------------------------

    @_translated
    def list_watchlist(self, user_id: int) -> list[WatchItem]:
        rows = self._all(
            "SELECT symbol, added_at FROM watchlist WHERE user_id = ? ORDER BY added_at, rowid", (user_id,)
        )
        return [WatchItem(symbol=r["symbol"], added_at=r["added_at"]) for r in rows]

    @_translated
    def add_watch(self, user_id: int, symbol: str) -> WatchItem:
        """Watch a symbol; Conflict when the user already watches it."""
        now = self._now()
        try:
            with self._holdings_write() as conn:
                conn.execute("INSERT INTO watchlist (user_id, symbol, added_at) VALUES (?, ?, ?)",
                             (user_id, symbol, now))
        except sqlite3.IntegrityError as exc:
            if "FOREIGNKEY" in _constraint(exc):
                raise NotFound("No such user.") from exc
            raise Conflict(f"{symbol} is already on the watchlist.", symbol=symbol) from exc
        return WatchItem(symbol=symbol, added_at=now)

    @_translated
    def remove_watch(self, user_id: int, symbol: str) -> bool:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM watchlist WHERE user_id = ? AND symbol = ?", (user_id, symbol))
            return cur.rowcount > 0

    @_translated
    def held_symbols(self) -> set[str]:
        """Every symbol in any portfolio or watchlist: what the background refresher keeps warm."""
        rows = self._all("SELECT symbol FROM positions UNION SELECT symbol FROM watchlist")
        return {r["symbol"] for r in rows}

    @_translated
    def held_symbol_counts(self) -> dict[str, int]:
        """How many users hold each symbol (portfolio or watchlist, a user counted once).

        The background refresher's priority: when its budget share cannot keep
        every held symbol fresh, the most-held go first.
        """
        rows = self._all(
            """SELECT symbol, COUNT(DISTINCT user_id) AS holders
               FROM (SELECT user_id, symbol FROM positions UNION ALL SELECT user_id, symbol FROM watchlist)
               GROUP BY symbol"""
        )
        return {r["symbol"]: r["holders"] for r in rows}


def _position_error(exc: sqlite3.IntegrityError) -> StockcacheError:
    name = _constraint(exc)
    if "FOREIGNKEY" in name:
        return NotFound("No such user.")
    # CHECK / NOT NULL: a value validate.position_input would have refused (NaN is stored as NULL).
    return InvalidRequest("shares must be greater than 0 and cost_basis at least 0.")


def _create_private(path: Path) -> None:
    """Create ``path`` readable by its owner only, or tighten it if it is wider.

    SQLite gives the -wal and -shm files the main file's permissions, so they
    follow. Created here rather than by sqlite3 because sqlite3 uses 0644.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, 0o600)
            logger.warning("%s was readable by others (mode %o); tightened to 0600", path, mode)
    finally:
        os.close(fd)


def open_store(path: Path, *, clock: Callable[[], float] = time.time) -> Store:
    """Open (creating and migrating if needed) the store.

    ``path`` is the database file, or a data folder that exists (then
    ``store.sqlite`` inside it). Raises ConfigError when the file is not a
    store this version can use.
    """
    path = Path(path)
    if path.is_dir():
        path = store_path(path)
    return Store(path, clock=clock).open()
