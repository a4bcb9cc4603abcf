"""The store in PostgreSQL (``STOCKCACHE_DATABASE_URL``), shared by every instance. psycopg 3 with psycopg_pool.

Imported only when the URL is set (``pip install 'stockcache[postgres]'``),
as redis-py is only for ``REDIS_URL``. What it guarantees:

- A write method returns once PostgreSQL has committed it (``synchronous_commit``
  as the server has it, ``on`` by default: flushed to its WAL).
- Migrations are the SQLite store's, applied in one transaction under an
  advisory lock, so instances starting at once apply them once.
- The URL is a secret: it is never logged, and :meth:`PostgresStore.describe`
  and every error show it with its password masked (:func:`mask_url`);
  driver messages, which can echo a connection string, are scrubbed.
- An unreachable database is :class:`~stockcache.errors.StoreUnavailable`
  (503 ``store_unavailable``). Once one call has found it down, calls fail at
  once (no connect timeout each) until the watcher's next poll gets through;
  the pool reconnects by itself when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, StockcacheError, StorageFull, StoreError, StoreUnavailable
from ..sqlitefile import FULL_RETRY_AFTER_S
from .base import Row, Violation
from .interface import Store
from .schema import for_dialect
from .urls import mask_url

logger = logging.getLogger(__name__)

URL_SETTING = "STOCKCACHE_DATABASE_URL"
MIGRATE_LOCK = 0x5C0_0001  # advisory lock key held while migrating
CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout (whole seconds, at least 2)
POOL_TIMEOUT_S = 3.0  # how long a call waits for a pooled connection
PROBE_TIMEOUT_S = 1.0  # the watcher's wait, so it notices a recovery soon
RECONNECT_TIMEOUT_S = 2.0  # the pool stops retrying a lost connection after this; the next call starts anew
DOWN_PAUSE_S = 1.0  # after a failure, calls fail at once for this long unless the watcher sees it back
RETRY_AFTER_S = 5


def _secrets_in(url: str) -> list[str]:
    """The substrings of ``url`` no message may show: the URL itself, and the password however it is written."""
    found = [url]
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    except ValueError:
        pass
    try:
        password = conninfo_to_dict(url).get("password")
        if password:
            found.append(str(password))
    except psycopg.Error:
        pass
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL and its password replaced (driver messages can echo a connection string)."""
    for secret in _secrets_in(url):
        text = text.replace(secret, mask_url(url) if secret == url else "***")
    return " ".join(text.split())


@lru_cache(maxsize=512)
def _q(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _violation(exc: psycopg.errors.IntegrityError) -> Violation:
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return Violation("foreign_key", exc.sqlstate or "")
    if isinstance(exc, psycopg.errors.CheckViolation):
        return Violation("check", exc.sqlstate or "")
    if isinstance(exc, psycopg.errors.NotNullViolation):
        return Violation("not_null", exc.sqlstate or "")
    return Violation("unique", exc.sqlstate or "")


class _PgTx:
    """A write transaction on one pooled connection; integrity errors come out as Violation."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            cur = self._conn.execute(_q(sql), tuple(params))
            return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.IntegrityError as exc:
            raise _violation(exc) from exc

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return int(self._conn.execute(_q(sql), tuple(params)).rowcount)
        except psycopg.errors.IntegrityError as exc:
            raise _violation(exc) from exc


class PostgresStore(Store):
    """The store on PostgreSQL through a connection pool. Thread-safe (the pool is; each call has a connection)."""

    dialect = "postgresql"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout: float = POOL_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        # The pool logs every failed reconnection attempt as a warning; the store reports an outage
        # once when it starts and once when it ends (StoreBase._set_health), naming no secret.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self._url = url
        self._masked = mask_url(url)
        self._monotonic = monotonic
        self._down_until = 0.0
        try:
            options = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(f"{URL_SETTING}: not a usable PostgreSQL URL ({scrub(str(exc), url)})") from None
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "connect_timeout" not in options:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in options:
            kwargs["application_name"] = "stockcache"
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=min_size, max_size=max(min_size, max_size), kwargs=kwargs, open=False,
            timeout=pool_timeout, check=ConnectionPool.check_connection, reconnect_timeout=RECONNECT_TIMEOUT_S,
            name="stockcache-store",
        )

    def describe(self) -> str:
        return self._masked

    # -- the engine seam ------------------------------------------------------------------

    def _check_up(self) -> None:
        if self._monotonic() < self._down_until:
            raise StoreUnavailable(retry_after=RETRY_AFTER_S)

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (Violation, StockcacheError):
            raise
        except (PoolTimeout, psycopg.OperationalError) as exc:
            if isinstance(exc, psycopg.errors.DiskFull):
                logger.error("store %s failed: the database's disk is full", operation)
                raise StorageFull(retry_after=FULL_RETRY_AFTER_S) from None
            self._down_until = self._monotonic() + DOWN_PAUSE_S
            message = scrub(str(exc) or type(exc).__name__, self._url)
            logger.warning("store %s failed: %s is unreachable (%s)", operation, self._masked, message)
            self._set_health(False, f"{type(exc).__name__}: {message}")
            raise StoreUnavailable(retry_after=RETRY_AFTER_S) from None
        except psycopg.Error as exc:
            logger.error("store %s failed on %s: %s", operation, self._masked,
                         scrub(f"{type(exc).__name__}: {exc}", self._url))
            raise StoreError("The store failed.") from None

    def _rows(self, sql: str | Mapping[str, str], params: Sequence[Any] = ()) -> list[Row]:
        self._check_up()
        with self._translated("read"), self._pool.connection() as conn:
            cur = conn.execute(_q(self._pick(sql)), tuple(params))
            return cur.fetchall() if cur.description is not None else []

    @contextmanager
    def _tx(self, operation: str) -> Iterator[_PgTx]:
        self._check_up()
        with self._translated(operation), self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    def _serialize(self, tx: Any, key: int) -> None:
        tx.rows("SELECT pg_advisory_xact_lock(?)", (key,))

    def _poll(self) -> dict[str, int]:
        # The watcher's look: past the fail-fast pause (it is how a recovery is noticed), and brief.
        with self._translated("poll"), self._pool.connection(timeout=PROBE_TIMEOUT_S) as conn:
            rows = conn.execute("SELECT name, version FROM store_state").fetchall()
        self._down_until = 0.0
        return {str(r["name"]): int(r["version"]) for r in rows}

    def _close_engine(self) -> None:
        self._pool.close()

    # -- opening and migrating ------------------------------------------------------------

    def open(self, *, wait: float = CONNECT_TIMEOUT_S + 2.0) -> PostgresStore:
        """Connect, apply migrations and read the version counters; ConfigError (URL masked) if that fails."""
        try:
            self._pool.open(wait=True, timeout=wait)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            reason = self._last_connect_error() or scrub(str(exc) or type(exc).__name__, self._url)
            raise ConfigError(f"{URL_SETTING}: cannot reach the database {self._masked}: {reason}") from None
        try:
            self.migrate()
            self.check_for_changes()
        except BaseException:
            self.close()
            raise
        return self

    def _last_connect_error(self) -> str | None:
        """Why connecting failed, from a direct attempt (the pool only says it timed out)."""
        try:
            psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            return scrub(str(exc), self._url)
        return None

    def migrate(self) -> int:
        """Apply the migrations not applied yet, under an advisory lock; the schema version.

        A database from a newer stockcache is refused (ConfigError).
        """
        migrations = for_dialect(self.dialect)
        target = len(migrations)
        try:
            with self._translated("migration"), self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS stockcache_schema"
                             " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
                found = conn.execute("SELECT version FROM stockcache_schema WHERE id = 1").fetchone()
                version = int(found["version"]) if found else 0
                self.migrated_from = version
                if version > target:
                    raise ConfigError(
                        f"{URL_SETTING}: the database {self._masked} has schema version {version}, but this "
                        f"stockcache knows only up to {target}: upgrade stockcache")
                for number in range(version, target):
                    for statement in migrations[number]:
                        conn.execute(statement)
                if version != target:
                    conn.execute("INSERT INTO stockcache_schema (id, version) VALUES (1, %s)"
                                 " ON CONFLICT (id) DO UPDATE SET version = excluded.version", (target,))
                    logger.info("store %s: schema migrated from version %d to %d", self._masked, version, target)
        except Violation as exc:  # a migration's own statement; never expected
            raise StoreError(f"a store migration failed: {exc.kind}") from None
        return target

    def schema_version(self) -> int:
        rows = self._rows("SELECT version FROM stockcache_schema WHERE id = 1")
        return int(rows[0]["version"]) if rows else 0

    def integrity_check(self) -> str:
        """``"ok"`` when every position and watch item belongs to a user (PostgreSQL checks the rest itself)."""
        rows = self._rows(
            """SELECT (SELECT count(*) FROM positions p LEFT JOIN users u ON u.id = p.user_id WHERE u.id IS NULL)
                    + (SELECT count(*) FROM watchlist w LEFT JOIN users u ON u.id = w.user_id WHERE u.id IS NULL)
                    AS orphans""")
        orphans = int(rows[0]["orphans"])
        return "ok" if orphans == 0 else f"{orphans} rows without their user"

    def is_empty(self) -> bool:
        """Whether no user, token, position or watch item is stored (``store copy`` writes only into an empty one)."""
        rows = self._rows("""SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM api_tokens)
                                  + (SELECT count(*) FROM positions) + (SELECT count(*) FROM watchlist) AS n""")
        return int(rows[0]["n"]) == 0


def open_postgres_store(url: str, *, clock: Callable[[], float] = time.time, max_size: int = 10) -> PostgresStore:
    """Open (migrating if needed) the store at ``url``; ConfigError naming the setting when it cannot."""
    return PostgresStore(url, clock=clock, max_size=max_size).open()
