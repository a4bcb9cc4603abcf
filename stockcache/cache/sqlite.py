"""The persistent tier: one SQLite file through the standard sqlite3 module, values as JSON.

Layout: one table ``(key TEXT PRIMARY KEY, value, expires_at REAL)`` with an
index on ``expires_at``, so purging expired rows is an indexed range delete
instead of decoding every value. ``value`` is :mod:`.codec`'s JSON text
``[value, stored_at, expires_at]``. (It is the table sqlitedict used to lay
out for earlier versions, so their files open as they are.)

Reads run in the calling thread on a small pool of read-only connections:
WAL lets them read alongside the writer, and a read costs a few microseconds,
where a round trip through a worker thread costs about 0.1 ms (two thread
hand-offs), more than a Redis GET over loopback.

Writes go to one writer thread of our own, with its own connection, and are
not waited for: the writer takes everything queued, runs it as one
transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) and then confirms it.
Readers see committed rows only, so writes not yet confirmed are kept in an
overlay (``_pending``; deletions as tombstones) that reads look at first:
read-your-writes. ``delete``, ``delete_pattern_keys``, ``purge`` and
``flush`` wait for the writer's answer.

When writes fail (a full disk, an I/O error), the tier does not die: the
transaction is rolled back and the writer's connection closed, the overlay's
unconfirmed entries are dropped and counted (``dropped_writes``), and writes
are refused at once (counted, a CacheError the tiered cache skips) for
``WRITE_RETRY_SECONDS``. The next write after that is taken again and the
writer opens a new connection for it, so the tier comes back by itself once
space returns. Reads go on throughout, and the memory tier above keeps what
the requests wrote.
"""

from __future__ import annotations

import builtins
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..sqlitefile import create_private, open_sound
from . import codec
from .base import Entry, Tier, glob_to_regex

log = logging.getLogger(__name__)

_DB_ERRORS = (sqlite3.Error, OSError, OverflowError, RuntimeError)
_CHUNK = 500  # SQLite's default limit on ? parameters is 999 on old builds
_WAL_LIMIT_BYTES = 8 * 1024 * 1024  # the WAL file is truncated back to this after checkpoints
_WAIT_SLICE = 0.25  # seconds between liveness checks while waiting on the writer
_BUSY_TIMEOUT = 5.0  # seconds the writer waits for another process's write lock
_MAX_JOBS = 256  # queued jobs the writer runs as one transaction
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
WRITE_RETRY_SECONDS = 2.0  # after a failed write, writes are dropped this long, then taken again

# What the writer is asked to do. A job is (kind, generation, seq, payload, reply).
_PUT, _QUERY, _FLUSH, _STOP = range(4)
Job = tuple[int, int, int, Any, "Future[Any] | None"]


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class SQLiteTier(Tier):
    """Entries in one table of a SQLite file; survives restarts and is shared by processes.

    Thread-safe: one lock guards the overlay, the queue order and the
    counters, and is never held during I/O; reads use pooled connections, and
    only the writer thread touches the write connection.
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
        self._lock = threading.Lock()  # guards everything below except the reader deque and the connection
        self._pending: OrderedDict[str, tuple[int, Entry | None]] = OrderedDict()
        self._seq = 0
        # Bumped when writes fail: jobs queued before that are not run (their entries were dropped).
        self._generation = 0
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._readers: deque[sqlite3.Connection] = deque()  # append/pop are atomic
        self._closing = False
        self._closed = False
        self._bad_rows = 0
        self._last_bad_row_log = float("-inf")
        # Write failures: while _writes_off_until is set, writes are refused until that time.
        self._writes_off_until: float | None = None
        self._write_error = ""
        self._failing = False  # from the first failed write until a transaction commits again
        self._dropped = 0
        self._write_failures = 0
        self._notes: list[tuple[int, str]] = []  # log lines decided under the lock, written after it

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
        self._conn: sqlite3.Connection | None = self._connect()  # the writer's; CacheError if it cannot open
        self._writer = self._start_writer()

    def _connect(self) -> sqlite3.Connection:
        """A write connection on the file, set up; CacheError if it cannot be opened."""
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except _DB_ERRORS as exc:
            raise CacheError(f"cannot open the SQLite cache {self.path}: {exc}") from exc
        try:
            # NORMAL in WAL mode only risks the last commits on power loss, never the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        except _DB_ERRORS as exc:
            conn.close()
            raise CacheError(f"cannot set up the SQLite cache {self.path}: {exc}") from exc
        return conn

    def _start_writer(self) -> threading.Thread:
        thread = threading.Thread(target=self._write_loop, name="stockcache-sqlite-writer", daemon=True)
        thread.start()
        return thread

    # reads ---------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        if self._pending:
            with self._lock:
                held = self._pending.get(key)
            if held is not None:
                return self._within_grace(held[1])
        conn = self._reader()
        try:
            rows = conn.execute(self._sql_get, (key,)).fetchall()
        except _DB_ERRORS as exc:
            self._discard(conn)
            raise CacheError(f"SQLite cache read failed: {exc}") from exc
        self._release(conn)
        return self._within_grace(self._entry(key, rows[0][0])) if rows else None

    def _within_grace(self, entry: Entry | None) -> Entry | None:
        if entry is None or entry.expires_at <= self._clock() - self.grace:
            return None
        return entry

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        rest = list(dict.fromkeys(keys))
        found: dict[str, Entry | None] = {}
        if self._pending:
            with self._lock:
                pending = self._pending
                found = {key: pending[key][1] for key in rest if key in pending}
            if found:
                rest = [key for key in rest if key not in found]
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
        return {k: e for k, e in found.items() if e is not None and e.expires_at > cutoff}

    def _select_in(self, count: int) -> str:
        sql = self._sql_in.get(count)
        if sql is None:
            marks = ",".join("?" * count)
            sql = f'SELECT key, value FROM "{self._table}" WHERE key IN ({marks})'
            self._sql_in[count] = sql
        return sql

    def _entry(self, key: str, text: Any) -> Entry | None:
        # Anything that is not our JSON triple (a planted pickle, garbage) is a miss.
        try:
            return codec.decode(text, self.name)
        except ValueError:
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
            rows = [(_storable_key(key), codec.encode(e), e.expires_at) for key, e in entries.items()]
        except ValueError as exc:
            raise CacheError(str(exc)) from exc
        tagged = [
            (key, e if e.tier == self.name else Entry(e.value, e.stored_at, e.expires_at, self.name))
            for key, e in entries.items()
        ]
        with self._lock:
            refused = self._refusal()
            if refused is None:
                # Queued under the lock, so the overlay's order is the writer's order,
                # which trimming confirmed entries relies on.
                self._seq += 1
                seq = self._seq
                pending = self._pending
                for key, entry in tagged:
                    pending[key] = (seq, entry)
                    pending.move_to_end(key)
                self._jobs.put((_PUT, self._generation, seq, rows, None))
            else:
                self._dropped += len(rows)
        self._write_notes()
        if refused is not None:
            raise refused

    def delete(self, key: str) -> bool:
        return bool(self._query(self._sql_delete, (key,), forget=key))

    def delete_pattern_keys(self, pattern: str) -> builtins.set[str]:
        return {row[0] for row in self._query(self._sql_delete_glob, (pattern,), forget=glob_to_regex(pattern))}

    def purge(self, limit: int) -> int:
        if limit <= 0:
            return 0
        cutoff = self._clock() - self.grace
        return len(self._query(self._sql_purge, (cutoff, limit)))

    def flush(self) -> None:
        """Wait until every write queued before this call is committed (CacheError if it was not)."""
        self._call(_FLUSH, None)

    def _query(
        self, sql: str, args: tuple[Any, ...] = (), *, forget: str | re.Pattern[str] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the writer, after every write queued before it, and return its rows.

        Overlay entries for the key (or matching the pattern) ``forget`` names
        become tombstones at once, so no read serves them while the statement
        waits its turn.
        """
        return self._call(_QUERY, (sql, args), forget)  # type: ignore[no-any-return]

    def _call(self, kind: int, payload: Any, forget: str | re.Pattern[str] | None = None) -> Any:
        reply: Future[Any] = Future()
        with self._lock:
            refused = self._refusal()
            if refused is None:
                self._seq += 1
                seq = self._seq
                pending = self._pending
                if forget is not None and pending:
                    if isinstance(forget, str):
                        doomed = [forget] if forget in pending else []
                    else:
                        doomed = [key for key in pending if forget.fullmatch(key)]
                    for key in doomed:
                        pending[key] = (seq, None)
                        pending.move_to_end(key)
                self._jobs.put((kind, self._generation, seq, payload, reply))
        self._write_notes()
        if refused is not None:
            raise refused
        return self._wait(reply)

    def _wait(self, reply: Future[Any]) -> Any:
        """The writer's answer; CacheError if it failed, or if the writer is gone."""
        while True:
            try:
                return reply.result(timeout=_WAIT_SLICE)
            except FutureTimeout:
                if not self._writer.is_alive() and not reply.done():
                    raise CacheError("the SQLite cache writer has stopped") from None

    def _refusal(self) -> CacheError | None:
        """Why a write must be refused now, or None; takes writes again once their retry time has come (lock held)."""
        if self._closing:
            return CacheError("the SQLite cache is closed")
        if self._writes_off_until is not None:
            if self._clock() < self._writes_off_until:
                return self._writes_off()
            self._writes_off_until = None  # the writer opens a new connection for the next job
            if not self._writer.is_alive():
                self._writer = self._start_writer()
        elif not self._writer.is_alive():  # it never should; never queue work nobody will do
            self._writes_failed(self._generation, RuntimeError("the SQLite cache writer stopped"))
            return self._writes_off()
        return None

    def _writes_failed(self, generation: int, exc: BaseException) -> None:
        """A write failed: drop the overlay, refuse writes for a while (lock held). Once per generation."""
        if generation != self._generation:
            return  # already handled
        self._generation += 1
        self._write_failures += 1
        self._write_error = _reason(exc)
        self._writes_off_until = self._clock() + WRITE_RETRY_SECONDS
        # Nothing in the overlay is confirmed any more: drop it rather than promise reads it.
        self._dropped += sum(1 for _, entry in self._pending.values() if entry is not None)
        self._pending.clear()
        if not self._failing:
            self._failing = True
            self._notes.append((logging.WARNING, f"SQLite cache writes failed ({self._write_error}); "
                                                 "serving from memory and dropping cache writes, "
                                                 f"retrying every {WRITE_RETRY_SECONDS:.0f} s"))

    def _writes_off(self) -> CacheError:
        return CacheError(f"SQLite cache writes are failing ({self._write_error}); dropped until they work again")

    def _write_notes(self) -> None:
        """Log what the locked sections decided (never under the lock: logging writes to a stream)."""
        if not self._notes:
            return
        with self._lock:
            notes, self._notes = self._notes, []
        for level, text in notes:
            log.log(level, "%s", text)

    # the writer thread ---------------------------------------------------

    def _write_loop(self) -> None:
        jobs = self._jobs
        while True:
            batch = [jobs.get()]
            while len(batch) < _MAX_JOBS:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                error = self._run(batch)
            except Exception as exc:  # a bug of ours: answer everyone, keep writing
                log.exception("SQLite cache writer failed")
                error = CacheError(f"SQLite cache writer failed: {_reason(exc)}")
                for job in batch:
                    if job[4] is not None and not job[4].done():
                        job[4].set_exception(error)
            stop = next((job for job in batch if job[0] == _STOP), None)
            if stop is not None:
                conn, self._conn = self._conn, None
                if conn is not None:
                    self._discard(conn)
                if error is None:
                    stop[4].set_result(None)  # type: ignore[union-attr]
                elif not stop[4].done():  # type: ignore[union-attr]
                    stop[4].set_exception(error)  # type: ignore[union-attr]
                return

    def _run(self, batch: list[Job]) -> CacheError | None:
        """Run the jobs of the current generation as one transaction and answer them; the error, if any."""
        with self._lock:
            generation = self._generation
            off = self._writes_off() if any(job[1] != generation for job in batch) else None
        live = []
        for job in batch:
            if job[1] == generation or job[0] == _STOP:
                live.append(job)
            elif job[4] is not None:  # queued before writes failed: not run
                job[4].set_exception(off)  # type: ignore[arg-type]
        work = [job for job in live if job[0] in (_PUT, _QUERY)]
        results: dict[int, list[tuple[Any, ...]]] = {}
        if work:
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                for index, job in enumerate(work):
                    if job[0] == _PUT:
                        conn.executemany(self._sql_put, job[3])
                    else:
                        results[index] = conn.execute(*job[3]).fetchall()
                conn.execute("COMMIT")
            except Exception as exc:  # noqa: BLE001 - any failure here is a failed write
                self._abandon_connection()
                with self._lock:
                    self._writes_failed(generation, exc)
                    error = self._writes_off()
                self._write_notes()
                for job in live:
                    if job[4] is not None and job[0] != _STOP:
                        job[4].set_exception(error)
                return error
            with self._lock:
                self._confirmed(max(job[2] for job in work), wrote=any(job[0] == _PUT for job in work))
            self._write_notes()
            for index, job in enumerate(work):
                if job[0] == _QUERY:
                    job[4].set_result(results[index])  # type: ignore[union-attr]
        for job in live:
            if job[0] == _FLUSH:
                job[4].set_result(None)  # type: ignore[union-attr]
        return None

    def _abandon_connection(self) -> None:
        """Roll back and close the write connection after a failure; the next job opens a new one."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except _DB_ERRORS:
            pass  # closing rolls back too
        self._discard(conn)

    def _confirmed(self, seq: int, *, wrote: bool) -> None:
        """Everything up to ``seq`` is committed: drop it from the overlay (lock held).

        If writes had failed and this transaction stored entries, say they work
        again (a purge that found nothing to delete proves nothing).
        """
        pending = self._pending
        while pending:
            key = next(iter(pending))
            if pending[key][0] > seq:
                break
            del pending[key]
        if self._failing and wrote:
            self._failing = False
            self._notes.append((logging.INFO, f"SQLite cache writes work again ({self._dropped} cache writes "
                                              "were dropped while they failed)"))

    # admin ---------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._failing:
                return None
            return {"status": "failing", "error": self._write_error, "dropped_writes": self._dropped}

    def stats(self) -> dict[str, Any]:
        # count(*) walks the key index: a few ms per 100k rows, fine for stats
        # and metrics scrapes, and exact (a REPLACE cannot tell us whether it
        # added a row, so a running count would drift).
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
                "file_bytes": file_bytes,
                "pending_writes": len(self._pending),
                "bad_rows": self._bad_rows,
                "writes": "failing" if self._failing else "ok",
                "write_failures": self._write_failures,
                "dropped_writes": self._dropped,
            }

    def close(self) -> None:
        """Commit what is queued (unless writes are failing), stop the writer, close every connection. Idempotent."""
        reply: Future[Any] = Future()
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._jobs.put((_STOP, self._generation, 0, None, reply))
        error: CacheError | None = None
        try:
            self._wait(reply)
        except CacheError as exc:
            error = exc
        self._writer.join(timeout=30)
        with self._lock:
            self._closed = True
        if not self._writer.is_alive() and self._conn is not None:  # a writer that died left it
            conn, self._conn = self._conn, None
            self._discard(conn)
        while self._readers:
            try:
                self._discard(self._readers.pop())
            except IndexError:
                break
        if error is not None:
            raise CacheError(f"closing the SQLite cache failed: {error}") from error


def _storable_key(key: str) -> str:
    """``key`` if SQLite can store it (UTF-8 text); ValueError for a lone surrogate, before the writer meets it."""
    if not key.isascii():
        key.encode("utf-8")  # UnicodeEncodeError is a ValueError
    return key


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
        if "expires_at" not in columns:  # a table sqlitedict created on its own, before expiry had a column
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN expires_at REAL')
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}_expires_at" ON "{table}" (expires_at)')
    finally:
        conn.close()
