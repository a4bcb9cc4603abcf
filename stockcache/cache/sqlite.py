"""The persistent tier: one SQLite file written through sqlitedict, values as JSON.

Layout: sqlitedict's own table (``key TEXT PRIMARY KEY, value``) plus a real
``expires_at`` column with an index, created with plain sqlite3 before
sqlitedict opens the file. sqlitedict only ever runs ``CREATE TABLE IF NOT
EXISTS`` and reads/writes key and value, so the extra column is invisible to
it, and purging expired rows is an indexed range delete instead of decoding
every value. ``value`` is :mod:`.codec`'s JSON text ``[value, stored_at, expires_at]``.

Writes go through sqlitedict's single worker thread and are committed without
waiting. Reads do not: a round trip through that worker costs about 0.1 ms
(two thread hand-offs), more than a Redis GET over loopback, so reads use a
small pool of read-only connections in the calling thread. WAL lets them read
alongside the writer, but they only see committed rows, so writes not yet
committed are kept in an overlay (``_pending``) until the worker acknowledges
their commit; that keeps read-your-writes.

When writes fail (a full disk, an I/O error), the tier does not die with its
worker. sqlitedict's worker keeps the first error and raises it at whichever
call comes next, and it dies outright if its own commit request fails, so
each batch ends with a ``COMMIT`` statement (an error the worker survives) and
any error or dead worker switches writes off: the overlay's unconfirmed
entries are dropped and counted (``dropped_writes``), the worker is retired
(closing its connection rolls back what it held), and writes are refused
(counted, a CacheError the tiered cache skips) for ``WRITE_RETRY_SECONDS``.
The next write after that opens a new worker and tries again, so the tier
comes back by itself once space returns. Reads go on throughout, and the
memory tier above keeps what the requests wrote.
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
from typing import Any, TypeVar

import sqlitedict

from ..errors import CacheError
from ..sqlitefile import create_private, open_sound
from . import codec
from .base import Entry, Tier

log = logging.getLogger(__name__)

T = TypeVar("T")

# sqlitedict's worker protocol marker (stable through 2.x, pinned in setup.cfg). It lets us wait
# on the worker with a timeout and a liveness check: its own select() waits forever if the
# worker thread has died.
_RESPONSE_NO_MORE = sqlitedict._RESPONSE_NO_MORE

_DB_ERRORS = (sqlite3.Error, OSError, OverflowError, RuntimeError)
_CHUNK = 500  # SQLite's default limit on ? parameters is 999 on old builds
_WAL_LIMIT_BYTES = 8 * 1024 * 1024  # the WAL file is truncated back to this after checkpoints
_WAIT_SLICE = 0.25  # seconds between liveness checks while waiting on the worker
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
WRITE_RETRY_SECONDS = 2.0  # after a failed write, writes are dropped this long, then a new worker tries

# sqlitedict's worker logs a dozen ERROR lines (a stack dump) for every failed statement; the
# failure reaches us as an exception anyway and is logged once, here, in one line.
_QUIET = logging.Logger("stockcache.cache.sqlite.worker")
_QUIET.disabled = True


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _decode(text: Any) -> Any:
    return json.loads(text)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class SQLiteTier(Tier):
    """Entries in one table of a SQLite file; survives restarts and is shared by processes.

    Thread-safe: writes are queued to sqlitedict's worker thread (enqueued under
    a lock so the overlay and the queue agree on order); reads use pooled
    connections without any lock held during I/O. Opening a new worker after
    failed writes happens outside the lock, in the one writer that is due.
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
        self._acks: queue.Queue[Any] = queue.Queue()  # one per worker: a retired one answers into its own
        self._readers: deque[sqlite3.Connection] = deque()  # append/pop are atomic
        self._closing = False
        self._closed = False
        self._bad_rows = 0
        self._last_bad_row_log = float("-inf")
        # Write failures: while _writes_off_until is set, writes are dropped until that time.
        self._writes_off_until: float | None = None
        self._reopening = False
        self._write_error = ""
        self._failing = False  # from the first failed write until a batch is confirmed again
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
        self._db = self._open_worker()

    def _open_worker(self) -> Any:
        """A new sqlitedict on the file, set up; CacheError if it cannot be opened."""
        try:
            db = sqlitedict.SqliteDict(
                str(self.path),
                tablename=self._table,
                flag="c",
                autocommit=False,
                journal_mode="WAL",
                encode=_encode,
                decode=_decode,
                outer_stack=False,
            )
        except _DB_ERRORS as exc:
            raise CacheError(f"cannot open the SQLite cache {self.path}: {exc}") from exc
        worker = db.conn
        worker.log = _QUIET
        try:
            # sqlitedict sets synchronous=OFF, which can corrupt the file on power
            # loss; NORMAL in WAL mode only risks losing the last commits.
            for pragma in ("PRAGMA synchronous=NORMAL", f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}"):
                results: queue.Queue[Any] = queue.Queue()
                worker.execute(pragma, (), results)
                self._collect(worker, results)
                worker.check_raise_error()
        except _DB_ERRORS as exc:
            db.close(do_log=False, force=True)
            raise CacheError(f"cannot set up the SQLite cache {self.path}: {exc}") from exc
        except CacheError:
            db.close(do_log=False, force=True)
            raise
        return db

    # reads ---------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        if self._pending:
            held = self._pending_lookup([key])
            if key in held:
                return self._within_grace(held[key])
        conn = self._reader()
        try:
            rows = conn.execute(self._sql_get, (key,)).fetchall()
        except _DB_ERRORS as exc:
            self._discard(conn)
            raise CacheError(f"SQLite cache read failed: {exc}") from exc
        self._release(conn)
        return self._within_grace(self._entry(key, rows[0][0])) if rows else None

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
        return {k: e for k, e in found.items() if e is not None and e.expires_at > cutoff}

    def _within_grace(self, entry: Entry | None) -> Entry | None:
        if entry is None or entry.expires_at <= self._clock() - self.grace:
            return None
        return entry

    def _pending_lookup(self, keys: list[str]) -> dict[str, Entry]:
        with self._lock:
            self._trim_pending()
            pending = self._pending
            found = {key: pending[key][1] for key in keys if key in pending}
        self._write_notes()
        return found

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
            rows = [(key, codec.encode(e), e.expires_at) for key, e in entries.items()]
        except ValueError as exc:
            raise CacheError(str(exc)) from exc
        tagged = [
            (key, e if e.tier == self.name else Entry(e.value, e.stored_at, e.expires_at, self.name))
            for key, e in entries.items()
        ]

        # Enqueued under the lock (queue puts, no I/O) so the overlay's order is
        # the worker's order, which the commit acknowledgements rely on.
        def enqueue(worker: Any) -> None:
            self._trim_pending()
            if self._writes_off_until is not None:  # the trim found the worker failed
                raise self._writes_off()
            self._seq += 1
            seq = self._seq
            for row in rows:
                worker.execute(self._sql_put, row)
            worker.execute("COMMIT")
            # Acknowledges the commit above: answered by the worker in order.
            worker.execute("SELECT ?", (seq,), self._acks)
            pending = self._pending
            for key, entry in tagged:
                pending[key] = (seq, entry)
                pending.move_to_end(key)

        try:
            self._on_writer(enqueue)
        except CacheError:
            with self._lock:
                self._dropped += len(rows)
            raise

    def _trim_pending(self) -> None:
        """Drop overlay entries whose commit the worker has acknowledged (lock held).

        Acknowledgements are read first and the worker's error after them: an
        error the worker met before answering is then never missed, and every
        batch not confirmed by then counts as dropped.
        """
        acks = self._acks
        acked = self._acked
        while True:
            try:
                item = acks.get_nowait()
            except queue.Empty:
                break
            if type(item) is tuple and item[0] > acked:
                acked = item[0]
        worker = self._db.conn
        if self._writes_off_until is None and worker is not None:
            error = worker.exception
            if error is not None or not worker.is_alive():
                self._writes_failed(worker, error[1] if error else None)
                return
            if acked > self._acked:
                self._confirmed()
        self._acked = acked
        pending = self._pending
        while pending:
            key = next(iter(pending))
            if pending[key][0] > acked:
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
        # Every batch commits itself; waiting for the worker to answer a query
        # queued after them is waiting for all of them.
        self._query("SELECT 1")

    # worker plumbing -----------------------------------------------------

    def _on_writer(self, work: Callable[[Any], T]) -> tuple[Any, T]:
        """``work(worker)`` (queue puts only) under the lock, on a worker that has not failed.

        When writes are off and their retry time has come, this caller opens a
        new worker first (outside the lock); everyone else meanwhile, and
        everyone before the retry time, gets CacheError at once.
        """
        try:
            for attempt in range(2):
                with self._lock:
                    worker = self._usable_worker(may_reopen=attempt == 0)
                    if worker is not None:
                        try:
                            return worker, work(worker)
                        except _DB_ERRORS as exc:  # the worker raising an earlier statement's error
                            self._writes_failed(worker, exc)
                            raise self._writes_off() from exc
                self._reopen()
            raise self._writes_off()
        finally:
            self._write_notes()

    def _usable_worker(self, *, may_reopen: bool) -> Any:
        """The live worker; None when this caller is to open a new one; CacheError while writes are off (lock held)."""
        if self._closed:
            raise CacheError("the SQLite cache is closed")
        if self._writes_off_until is None:
            worker = self._db.conn  # None if the handle was closed under us
            error = worker.exception if worker is not None else None
            if error is None and worker is not None and worker.is_alive():
                return worker
            self._writes_failed(worker, error[1] if error else None)
        if not may_reopen or self._reopening or self._clock() < self._writes_off_until:  # type: ignore[operator]
            raise self._writes_off()
        self._reopening = True
        return None

    def _reopen(self) -> None:
        """Open a new worker to replace a failed one (no lock held: this is I/O)."""
        try:
            db = self._open_worker()
        except CacheError as exc:
            with self._lock:
                self._reopening = False
                self._write_failures += 1
                self._writes_off_until = self._clock() + WRITE_RETRY_SECONDS
                self._write_error = _reason(exc)
            raise self._writes_off() from exc
        with self._lock:
            self._reopening = False
            if not self._closed:
                self._db, db = db, self._db
                self._acks = queue.Queue()
                self._writes_off_until = None
        db.close(do_log=False, force=True)  # the failed one (or the new one, if we closed meanwhile)

    def _writes_failed(self, worker: Any, exc: BaseException | None) -> None:
        """A write failed or the worker died: switch writes off for a while (lock held)."""
        if worker is not self._db.conn or self._writes_off_until is not None:
            return  # already handled, for this worker
        self._write_failures += 1
        self._write_error = _reason(exc) if exc is not None else "the SQLite cache worker stopped"
        self._writes_off_until = self._clock() + WRITE_RETRY_SECONDS
        # Nothing in the overlay is confirmed any more: drop it rather than promise reads it.
        self._dropped += len(self._pending)
        self._pending.clear()
        # Retire the worker: it finishes what is queued, then its connection closes, which
        # rolls back a transaction left open by the failure. (A queue put, no I/O.)
        if worker is not None:
            worker.close(force=True)
        if not self._failing:
            self._failing = True
            self._notes.append((logging.WARNING, f"SQLite cache writes failed ({self._write_error}); "
                                                 "serving from memory and dropping cache writes, "
                                                 f"retrying every {WRITE_RETRY_SECONDS:.0f} s"))

    def _confirmed(self) -> None:
        """A write was committed: if writes had failed, say they work again (lock held)."""
        if self._failing:
            self._failing = False
            self._notes.append((logging.INFO, f"SQLite cache writes work again ({self._dropped} cache writes "
                                              "were dropped while they failed)"))

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

    def _query(
        self,
        sql: str,
        args: tuple[Any, ...] = (),
        *,
        commit: bool = False,
        forget: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement (and a commit) on the worker and wait for its rows.

        When it is answered, every write queued before it has been done, so the
        overlay up to that point is dropped (unless the worker reported an error).
        """
        results: queue.Queue[Any] = queue.Queue()
        done: queue.Queue[Any] = queue.Queue()

        def enqueue(worker: Any) -> int:
            if forget is not None:
                self._pending.pop(forget, None)
            worker.execute(sql, args, results)
            if commit:
                worker.execute("COMMIT", (), done)
            return self._seq

        worker, seq = self._on_writer(enqueue)
        try:
            rows = self._collect(worker, results)
            if commit:
                self._collect(worker, done)
        except CacheError as exc:
            with self._lock:
                self._writes_failed(worker, exc)
            self._write_notes()
            raise
        # The worker records an error before it answers, so it is visible by now.
        with self._lock:
            error = worker.exception
            if error is not None:
                self._writes_failed(worker, error[1])
            failed = self._writes_off_until is not None  # ours, or one noticed meanwhile
            if not failed:
                if commit:
                    self._confirmed()
                self._trim_pending()  # reads the batches' own acknowledgements first
                self._acked = max(self._acked, seq)
                self._trim_pending()
        self._write_notes()
        if failed:
            raise self._writes_off()
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

    def health(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._failing:
                return None
            return {"status": "failing", "error": self._write_error, "dropped_writes": self._dropped}

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
                "file_bytes": file_bytes,
                "pending_writes": len(self._pending),
                "bad_rows": self._bad_rows,
                "writes": "failing" if self._failing else "ok",
                "write_failures": self._write_failures,
                "dropped_writes": self._dropped,
            }

    def close(self) -> None:
        with self._lock:
            if self._closing:  # a second close must not send the worker a second stop
                return
            self._closing = True
            failing = self._writes_off_until is not None
        error: Exception | None = None
        if not failing:
            try:
                self.flush()
            except CacheError as exc:
                error = exc
        with self._lock:
            self._closed = True
            db = self._db
        db_conn = getattr(db, "conn", None)
        try:
            db.close(do_log=False, force=db_conn is None or not db_conn.is_alive() or failing)
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
