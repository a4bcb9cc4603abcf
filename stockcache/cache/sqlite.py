"""The persistent tier: one SQLite file written through sqlitedict, values as JSON.

Layout: sqlitedict's own table (``key TEXT PRIMARY KEY, value``) plus a real
``expires_at`` column with an index, created with plain sqlite3 before
sqlitedict opens the file. sqlitedict only ever runs ``CREATE TABLE IF NOT
EXISTS`` and reads/writes key and value, so the extra column is invisible to
it, and purging expired rows is an indexed range delete instead of decoding
every value. ``value`` is the JSON text ``[value, stored_at, expires_at]``.

Writes go through sqlitedict's single worker thread and are committed without
waiting. Reads do not: a round trip through that worker costs about 0.1 ms
(two thread hand-offs), more than a Redis GET over loopback, so reads use a
small pool of read-only connections in the calling thread. WAL lets them read
alongside the writer, but they only see committed rows, so writes not yet
committed are kept in an overlay (``_pending``) until the worker acknowledges
their commit; that keeps read-your-writes.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlitedict

from ..errors import CacheError
from ..sqlitefile import create_private, open_sound
from .base import Entry, Tier
from .frozen import loads_frozen

log = logging.getLogger(__name__)

# sqlitedict's worker protocol markers (stable through 2.x, pinned in setup.cfg).
# They let us wait on the worker with a timeout and a liveness check: its own
# select() waits forever if the worker thread has died (e.g. a failed COMMIT).
_REQUEST_COMMIT = sqlitedict._REQUEST_COMMIT
_RESPONSE_NO_MORE = sqlitedict._RESPONSE_NO_MORE

_DB_ERRORS = (sqlite3.Error, OSError, OverflowError, RuntimeError)
_CHUNK = 500  # SQLite's default limit on ? parameters is 999 on old builds
_WAL_LIMIT_BYTES = 8 * 1024 * 1024  # the WAL file is truncated back to this after checkpoints
_WAIT_SLICE = 0.25  # seconds between liveness checks while waiting on the worker
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _decode(text: Any) -> Any:
    return json.loads(text)


class SQLiteTier(Tier):
    """Entries in one table of a SQLite file; survives restarts and is shared by processes.

    Thread-safe: writes are queued to sqlitedict's worker thread (enqueued under
    a lock so the overlay and the queue agree on order); reads use pooled
    connections without any lock held during I/O.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        grace: float,
        clock: Callable[[], float] = time.time,
        table: str = "cache",
        check_seconds: float = 10.0,
        max_idle_readers: int = 16,
    ) -> None:
        if not _TABLE_RE.fullmatch(table):
            raise ValueError(f"invalid table name {table!r}")
        self.path = Path(path)
        self.grace = grace
        self._clock = clock
        self._table = table
        self._max_idle_readers = max_idle_readers
        self._lock = threading.Lock()  # guards everything below except the reader deque
        self._pending: OrderedDict[str, tuple[int, Entry]] = OrderedDict()
        self._seq = 0
        self._acked = 0
        self._acks: queue.Queue[Any] = queue.Queue()
        self._readers: deque[sqlite3.Connection] = deque()  # append/pop are atomic
        self._closing = False
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._bad_rows = 0
        self._last_bad_row_log = float("-inf")

        t = f'"{table}"'
        self._sql_get = f"SELECT value FROM {t} WHERE key = ?"
        self._sql_put = f"REPLACE INTO {t} (key, value, expires_at) VALUES (?, ?, ?)"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ? RETURNING key"
        self._sql_delete_glob = f"DELETE FROM {t} WHERE key GLOB ? RETURNING key"
        self._sql_purge = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t}"
            f" WHERE expires_at IS NULL OR expires_at <= ? LIMIT ?) RETURNING key"
        )
        self._sql_count = f"SELECT count(*) FROM {t}"
        self._sql_in: dict[int, str] = {}

        open_sound(self.path, lambda p: _create(p, table), label="SQLite cache", check_seconds=check_seconds)
        self._uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._db = sqlitedict.SqliteDict(
                str(self.path),
                tablename=table,
                flag="c",
                autocommit=False,
                journal_mode="WAL",
                encode=_encode,
                decode=_decode,
                outer_stack=False,
            )
        except _DB_ERRORS as exc:
            raise CacheError(f"cannot open the SQLite cache {self.path}: {exc}") from exc
        try:
            # sqlitedict sets synchronous=OFF, which can corrupt the file on power
            # loss; NORMAL in WAL mode only risks losing the last commits.
            self._query("PRAGMA synchronous=NORMAL")
            self._query(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        except CacheError:
            self._db.close(do_log=False, force=True)
            raise

    # reads ---------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        if self._pending:
            held = self._pending_lookup([key])
            if key in held:
                return self._count_one(held[key])
        conn = self._reader()
        try:
            rows = conn.execute(self._sql_get, (key,)).fetchall()
        except _DB_ERRORS as exc:
            self._discard(conn)
            raise CacheError(f"SQLite cache read failed: {exc}") from exc
        self._release(conn)
        entry = self._entry(key, rows[0][0]) if rows else None
        return self._count_one(entry)

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Entry | None] = {}
        if self._pending:
            found.update(self._pending_lookup(wanted))
            rest = [key for key in wanted if key not in found]
        else:
            rest = wanted
        if rest:
            conn = self._reader()
            try:
                for start in range(0, len(rest), _CHUNK):
                    chunk = rest[start : start + _CHUNK]
                    for key, text in conn.execute(self._select_in(len(chunk)), chunk).fetchall():
                        found[key] = self._entry(key, text)
            except _DB_ERRORS as exc:
                self._discard(conn)
                raise CacheError(f"SQLite cache read failed: {exc}") from exc
            self._release(conn)
        cutoff = self._clock() - self.grace
        out = {k: e for k, e in found.items() if e is not None and e.expires_at > cutoff}
        with self._lock:
            self._hits += len(out)
            self._misses += len(wanted) - len(out)
        return out

    def _count_one(self, entry: Entry | None) -> Entry | None:
        if entry is not None and entry.expires_at <= self._clock() - self.grace:
            entry = None
        with self._lock:
            if entry is None:
                self._misses += 1
            else:
                self._hits += 1
        return entry

    def _pending_lookup(self, keys: list[str]) -> dict[str, Entry]:
        with self._lock:
            self._trim_pending()
            pending = self._pending
            return {key: pending[key][1] for key in keys if key in pending}

    def _select_in(self, count: int) -> str:
        sql = self._sql_in.get(count)
        if sql is None:
            marks = ",".join("?" * count)
            sql = f'SELECT key, value FROM "{self._table}" WHERE key IN ({marks})'
            self._sql_in[count] = sql
        return sql

    def _entry(self, key: str, text: Any) -> Entry | None:
        # Anything that is not our JSON triple (a planted pickle, garbage) is a
        # miss: json.loads never executes anything, whatever the bytes are.
        try:
            value, stored_at, expires_at = loads_frozen(text)
            return Entry(value, float(stored_at), float(expires_at), self.name)
        except (ValueError, TypeError):
            self._note_bad_row(key)
            return None

    def _note_bad_row(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._bad_rows += 1
            if now - self._last_bad_row_log < 60:
                return
            self._last_bad_row_log = now
        log.warning("SQLite cache row %r is not valid cache JSON; treated as missing", key)

    def _reader(self) -> sqlite3.Connection:
        try:
            return self._readers.pop()
        except IndexError:
            pass
        if self._closed:
            raise CacheError("the SQLite cache is closed")
        try:
            return sqlite3.connect(
                self._uri, uri=True, timeout=2.0, isolation_level=None, check_same_thread=False
            )
        except _DB_ERRORS as exc:
            raise CacheError(f"cannot open a SQLite cache reader: {exc}") from exc

    def _release(self, conn: sqlite3.Connection) -> None:
        if self._closed or len(self._readers) >= self._max_idle_readers:
            conn.close()
        else:
            self._readers.append(conn)

    @staticmethod
    def _discard(conn: sqlite3.Connection) -> None:
        try:
            conn.close()
        except _DB_ERRORS:
            pass

    # writes --------------------------------------------------------------

    def set(self, key: str, entry: Entry) -> None:
        self.set_many({key: entry})

    def set_many(self, entries: Mapping[str, Entry]) -> None:
        if not entries:
            return
        try:
            rows = [(key, _encode([e.value, e.stored_at, e.expires_at]), e.expires_at)
                    for key, e in entries.items()]
        except (TypeError, ValueError) as exc:
            raise CacheError(f"value cannot be stored as JSON: {exc}") from exc
        tagged = [
            (key, e if e.tier == self.name else Entry(e.value, e.stored_at, e.expires_at, self.name))
            for key, e in entries.items()
        ]
        worker = self._worker()
        # Enqueued under the lock (queue puts, no I/O) so the overlay's order is
        # the worker's order, which the commit acknowledgements rely on.
        with self._lock:
            self._trim_pending()
            self._seq += 1
            seq = self._seq
            try:
                for row in rows:
                    worker.execute(self._sql_put, row)
                worker.execute(_REQUEST_COMMIT)
                # Acknowledges the commit above: answered by the worker in order.
                worker.execute("SELECT ?", (seq,), self._acks)
            except _DB_ERRORS as exc:
                raise CacheError(f"SQLite cache write failed: {exc}") from exc
            pending = self._pending
            for key, entry in tagged:
                pending[key] = (seq, entry)
                pending.move_to_end(key)

    def _trim_pending(self) -> None:
        """Drop overlay entries whose commit the worker has acknowledged (lock held)."""
        acks = self._acks
        while True:
            try:
                item = acks.get_nowait()
            except queue.Empty:
                break
            if type(item) is tuple and item[0] > self._acked:
                self._acked = item[0]
        pending = self._pending
        while pending:
            key = next(iter(pending))
            if pending[key][0] > self._acked:
                break
            del pending[key]

    def delete(self, key: str) -> bool:
        return bool(self._query(self._sql_delete, (key,), commit=True, forget=key))

    def delete_pattern_keys(self, pattern: str) -> builtins.set[str]:
        return {row[0] for row in self._query(self._sql_delete_glob, (pattern,), commit=True)}

    def purge(self, limit: int) -> int:
        if limit <= 0:
            return 0
        cutoff = self._clock() - self.grace
        return len(self._query(self._sql_purge, (cutoff, limit), commit=True))

    def flush(self) -> None:
        self._query(None, commit=True)

    # worker plumbing -----------------------------------------------------

    def _worker(self) -> Any:
        conn = getattr(self._db, "conn", None)
        if self._closed or conn is None:
            raise CacheError("the SQLite cache is closed")
        if not conn.is_alive():
            raise CacheError("the SQLite cache worker has stopped")
        return conn

    def _query(
        self,
        sql: str | None,
        args: tuple[Any, ...] = (),
        *,
        commit: bool = False,
        forget: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement (and/or a commit) on the worker and wait for it.

        After a commit, every write queued before it is durable and visible to
        the readers, so the overlay up to that point is dropped.
        """
        worker = self._worker()
        results: queue.Queue[Any] = queue.Queue()
        done: queue.Queue[Any] = queue.Queue()
        try:
            with self._lock:
                if forget is not None:
                    self._pending.pop(forget, None)
                seq = self._seq
                if sql is not None:
                    worker.execute(sql, args, results)
                if commit:
                    worker.execute(_REQUEST_COMMIT, None, done)
            rows = self._collect(worker, results) if sql is not None else []
            if commit:
                self._collect(worker, done)
            worker.check_raise_error()
        except _DB_ERRORS as exc:
            raise CacheError(f"SQLite cache operation failed: {exc}") from exc
        if commit:
            with self._lock:
                self._acked = max(self._acked, seq)
                self._trim_pending()
        return rows

    @staticmethod
    def _collect(worker: Any, results: queue.Queue[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        while True:
            try:
                row = results.get(timeout=_WAIT_SLICE)
            except queue.Empty:
                if not worker.is_alive():
                    raise CacheError("the SQLite cache worker has stopped") from None
                continue
            if row == _RESPONSE_NO_MORE:
                return rows
            rows.append(row)

    # admin ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        # count(*) walks the key index: a few ms per 100k rows, fine for stats
        # and metrics scrapes, and exact (sqlitedict's REPLACE cannot tell us
        # whether a write added a row, so a running count would drift).
        conn = self._reader()
        try:
            size = conn.execute(self._sql_count).fetchone()[0]
        except _DB_ERRORS as exc:
            self._discard(conn)
            raise CacheError(f"SQLite cache stats failed: {exc}") from exc
        self._release(conn)
        file_bytes = 0
        for suffix in ("", "-wal"):
            try:
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
            except OSError:
                pass
        with self._lock:
            return {
                "size": size,
                "hits": self._hits,
                "misses": self._misses,
                "file_bytes": file_bytes,
                "pending_writes": len(self._pending),
                "bad_rows": self._bad_rows,
            }

    def close(self) -> None:
        with self._lock:
            if self._closing:  # a second close must not send the worker a second stop
                return
            self._closing = True
        error: Exception | None = None
        try:
            self.flush()
        except CacheError as exc:
            error = exc
        with self._lock:
            self._closed = True
        db_conn = getattr(self._db, "conn", None)
        try:
            self._db.close(do_log=False, force=db_conn is None or not db_conn.is_alive())
        except _DB_ERRORS as exc:
            error = error or exc
        while self._readers:
            try:
                self._discard(self._readers.pop())
            except IndexError:
                break
        if error is not None:
            raise CacheError(f"closing the SQLite cache failed: {error}") from error


# opening the file ------------------------------------------------------


def _create(path: Path, table: str) -> None:
    create_private(path)  # owner-only before SQLite ever opens it
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, value BLOB, expires_at REAL)'
        )
        columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if "expires_at" not in columns:  # a table sqlitedict created on its own
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN expires_at REAL')
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}_expires_at" ON "{table}" (expires_at)')
    finally:
        conn.close()
