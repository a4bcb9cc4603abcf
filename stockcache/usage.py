"""Upstream calls per provider per UTC day, shared by every process on one data dir.

Alpha Vantage's free plan allows 25 calls a day; a restart that forgot the
morning's calls would blow the quota by lunch, and so would a cron'd
``python -m stockcache warm`` next to the server if each counted alone. The
ledger is also the source of "upstream calls per day" for the KPI history.

Counting is in memory and never touches the disk on the request path:
``record()`` adds to a pending counter; a flusher thread (started lazily,
every ``flush_interval`` seconds, and once more at close) adds the pending
counts to the SQLite file in one transaction and reads back the day's totals
across all processes. So another process's calls reach this one's
:meth:`UsageLedger.today` within about one interval (1 s by default): for a
daily budget that small lag can let through at most the calls two processes
make in the same second. A crash loses at most the last interval's counts.

A corrupt ledger file is set aside at start (``sqlitefile.open_sound``: renamed to
``usage.sqlite.corrupt-<time>``) and a fresh one started. Today's counts went
with it, and what is still readable in a damaged file cannot be trusted to be
complete, so the fresh file records today as *lost*: every budget with a
daily limit then counts its day as spent until UTC midnight
(:meth:`UsageLedger.lost_on`). Losing a few hours of one provider's daily
calls is the price of never spending past a daily budget; other processes on
the data dir read the mark from the file too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .clock import utc_day
from .errors import StockcacheError
from .sqlitefile import open_db

log = logging.getLogger(__name__)

__all__ = ["UsageLedger", "utc_day", "USAGE_MIGRATIONS"]  # utc_day lives in clock; importable from here as before

_Key = tuple[str, str]  # (day, provider)

# Versioned like the store's (sqlitefile.migrate). 1 is the layout files had before versions were
# recorded, hence IF NOT EXISTS: an old file (user_version 0) is adopted as it is.
USAGE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS usage (day TEXT NOT NULL, provider TEXT NOT NULL,"
        " calls INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, provider))",
        "CREATE TABLE IF NOT EXISTS lost_days (day TEXT PRIMARY KEY)",
    ),
)


class UsageLedger:
    """Counts calls per (day, provider); persisted in SQLite by a background flusher. Thread-safe.

    Two locks: ``_lock`` guards only the in-memory counters (never held
    across I/O), ``_db_lock`` serialises flushes, history reads and close
    (never taken by :meth:`record` or :meth:`today`). Pass ``path=None`` for
    a ledger that lives in memory only (tests, the Python API without a data
    dir), and ``flush_interval=None`` for no flusher thread (flush only on
    :meth:`flush`, :meth:`days` and :meth:`close`). ``set_aside=False`` raises
    StoreError for a corrupt file instead of starting a fresh one (readers
    such as ``stats``).
    """

    def __init__(
        self, path: Path | None, *, clock: Callable[[], float] = time.time, flush_interval: float | None = 1.0,
        set_aside: bool = True,
    ) -> None:
        self._clock = clock
        self._interval = flush_interval
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._pending: dict[_Key, int] = {}
        self._inflight: dict[_Key, int] = {}  # taken from _pending by the flush now writing them
        self._totals: dict[_Key, int] = {}  # the file's counts for one day, all processes, at the last flush
        self._lost: frozenset[str] = frozenset()  # days whose counts were lost with a corrupt file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # synchronous=NORMAL: a power cut may lose the last flush (a second of counts), never the file.
        self._db, lost = open_db(path, USAGE_MIGRATIONS, label="usage ledger", set_aside=set_aside,
                                 synchronous="NORMAL", busy_timeout=10.0)
        try:
            today = utc_day(clock())
            if lost is not None:
                with self._db.transaction("mark lost") as conn:
                    conn.execute("INSERT OR IGNORE INTO lost_days (day) VALUES (?)", (today,))
                log.warning("the usage ledger was lost with today's (%s UTC) upstream call counts: every daily "
                            "budget counts as spent until UTC midnight, so none can be overspent", today)
            self._totals = self._read_day(today)
            self._lost = self._read_lost(today)
        except BaseException:
            self._db.close()
            raise

    def start(self) -> None:
        """Start the flusher now (idempotent): a budget calls it so an idle process still learns others' calls."""
        self._start_flusher()

    def record(self, provider: str, calls: int = 1) -> None:
        """Add ``calls`` to today's count, in memory only: no I/O, so it is safe under a caller's lock."""
        key = (utc_day(self._clock()), provider)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + calls
        self._start_flusher()

    def today(self, provider: str) -> int:
        """Today's calls to ``provider`` by every process, as of the last flush, plus this one's since. No I/O."""
        return self.calls_on(utc_day(self._clock()), provider)

    def lost_on(self, day: str) -> bool:
        """Whether ``day``'s counts were lost with a corrupt ledger (so its daily budgets are spent). No I/O."""
        return day in self._lost

    def calls_on(self, day: str, provider: str) -> int:
        """Calls on ``day`` (today, or a day not yet flushed) as this process knows them. No I/O."""
        key = (day, provider)
        with self._lock:
            return self._totals.get(key, 0) + self._inflight.get(key, 0) + self._pending.get(key, 0)

    def flush(self) -> None:
        """Write the pending counts and learn today's totals of every process; a failure is logged and retried."""
        with self._db_lock:
            if self._closed:
                return
            with self._lock:
                self._inflight, self._pending = self._pending, {}
                batch = dict(self._inflight)
            today = utc_day(self._clock())
            try:
                if batch:
                    with self._db.transaction("flush") as conn:
                        conn.executemany(
                            "INSERT INTO usage (day, provider, calls) VALUES (?, ?, ?)"
                            " ON CONFLICT(day, provider) DO UPDATE SET calls = calls + excluded.calls",
                            [(day, provider, calls) for (day, provider), calls in batch.items()],
                        )
                totals = self._read_day(today)
                lost = self._read_lost(today)
            except StockcacheError as exc:  # translated by the helper (a full disk, a lock held too long)
                log.warning("could not record upstream usage (will retry): %s", exc.message)
                with self._lock:
                    for key, calls in self._inflight.items():
                        self._pending[key] = self._pending.get(key, 0) + calls
                    self._inflight = {}
                return
            with self._lock:
                self._totals, self._inflight = totals, {}
                self._lost = self._lost | lost  # a mark only ever appears (another process may have set it)

    def days(self, limit: int) -> dict[str, dict[str, int]]:
        """The last ``limit`` days that have counts: ``{day: {provider: calls}}``, newest first (flushes first)."""
        self.flush()
        with self._db_lock:
            if self._closed:
                return {}
            rows = self._db.rows(
                "SELECT day, provider, calls FROM usage WHERE day IN"
                " (SELECT DISTINCT day FROM usage ORDER BY day DESC LIMIT ?) ORDER BY day DESC",
                (limit,),
            )
        out: dict[str, dict[str, int]] = {}
        for day, provider, calls in rows:
            out.setdefault(day, {})[provider] = calls
        return out

    def close(self) -> None:
        """Stop the flusher, write what is pending and close the file. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()
        with self._db_lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def _read_day(self, day: str) -> dict[_Key, int]:
        rows = self._db.rows("SELECT provider, calls FROM usage WHERE day = ?", (day,))
        return {(day, provider): int(calls) for provider, calls in rows}

    def _read_lost(self, day: str) -> frozenset[str]:
        rows = self._db.rows("SELECT day FROM lost_days WHERE day = ?", (day,))
        return frozenset(row[0] for row in rows)

    def _start_flusher(self) -> None:
        if self._thread is not None or self._interval is None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self._interval or 1.0
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # the flusher must outlive a surprise; the next round retries
                log.exception("usage ledger flush failed")

