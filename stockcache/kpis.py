"""KPI history: what the cache did for each UTC day, persisted in ``<data_dir>/kpis.sqlite``.

One row per UTC day (``GET /api/kpis``, ``python -m stockcache stats``):

- ``requests``: HTTP requests answered, every route except ``/healthz`` and ``/metrics``
  (monitoring would otherwise dominate a quiet day).
- ``hit_rate``: of the market-data items those requests asked for (a batch of 20
  symbols is 20 items), the share answered fresh from the cache (memory or
  SQLite, a remembered "not found" included). Background refreshes are not reads.
  ``null`` on a day without reads.
- ``calls_saved``: those cache hits, counted one each: every hit is an upstream
  call the request would otherwise have made (at least one: a fallback to the
  second provider would have cost two). It is a gross figure: the refresher's
  own calls, which make many of these hits possible, are in ``upstream_calls``.
- ``upstream_calls``: calls per provider from the usage ledger (``usage.sqlite``),
  which counts every call from every process (``warm`` included).
- ``p50_ms``/``p95_ms``/``p99_ms``: latency of those requests, read off a per-day
  histogram (interpolated inside buckets; ``null`` without requests).
- ``llm_tokens``: model tokens (prompt and completion) spent that day, from the same ledger
  (the model API's budget counts tokens, not calls, so it is not among ``upstream_calls``).
- ``estimated_cost``: ``upstream_calls`` times ``STOCKCACHE_*_COST_PER_CALL``, plus ``llm_tokens``
  times ``STOCKCACHE_LLM_COST_PER_1K_TOKENS`` / 1000.

:class:`KpiRecorder` turns the live :class:`~stockcache.metrics.Metrics` into
per-day deltas: it flushes every minute, just before each UTC midnight and at
close. It also stores the latest ``stats()`` snapshot, so the ``stats`` command
(a separate process) can show what the running server sees.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clock import seconds_to_utc_midnight
from .errors import CacheError
from .metrics import LATENCY_BUCKETS, Metrics, percentiles_ms
from .sqlitefile import create_private, open_sound
from .usage import UsageLedger, utc_day

log = logging.getLogger(__name__)

KPI_FILE = "kpis.sqlite"
EXCLUDED_ROUTES = frozenset({"/healthz", "/metrics"})
MAX_DAYS = 366
FLUSH_INTERVAL = 60.0

_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS kpi_days (day TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,"
     " hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,"
     " latency TEXT NOT NULL DEFAULT '[]', latency_sum REAL NOT NULL DEFAULT 0)"),
    ("CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL,"
     " stats TEXT NOT NULL)"),
)


@dataclass
class DayFigures:
    """Counts for one UTC day (or a delta to add to one)."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0

    def empty(self) -> bool:
        return not (self.requests or self.hits or self.misses or any(self.latency))


class KpiStore:
    """The KPI table in SQLite (0600). Thread-safe: one connection behind a lock.

    ``path=None`` keeps it in memory (tests, the Python API without a data dir).
    Several processes may add to one file: every write is an increment. A
    corrupt file is set aside and a fresh one started (the history is a
    convenience, not a record anyone relies on); ``set_aside=False`` raises
    CacheError instead (readers such as ``stats``).
    """

    def __init__(self, path: Path | None, *, set_aside: bool = True) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            if path is None:
                self._db = _connect(":memory:")
            elif set_aside:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db, _ = open_sound(path, _open_file, label="KPI history")
            else:
                self._db = _open_file(path)
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open the KPI history {path}: {exc}") from exc

    def add(self, day: str, delta: DayFigures) -> None:
        """Add ``delta`` to ``day``'s row (created on first use)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT latency FROM kpi_days WHERE day = ?", (day,)).fetchone()
                counts = list(delta.latency)
                old = json.loads(row[0]) if row is not None else []
                # Different lengths mean the buckets changed between versions: start the day's over.
                if len(old) == len(counts):
                    counts = [a + b for a, b in zip(old, counts, strict=True)]
                db.execute(
                    "INSERT INTO kpi_days (day, requests, hits, misses, latency, latency_sum)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(day) DO UPDATE SET"
                    " requests = requests + excluded.requests, hits = hits + excluded.hits,"
                    " misses = misses + excluded.misses, latency = excluded.latency,"
                    " latency_sum = latency_sum + excluded.latency_sum",
                    (day, delta.requests, delta.hits, delta.misses, json.dumps(counts), delta.latency_sum),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def rows(self, first: str, last: str) -> dict[str, DayFigures]:
        """Stored days from ``first`` to ``last`` (``YYYY-MM-DD``, inclusive)."""
        with self._lock:
            found = self._db.execute(
                "SELECT day, requests, hits, misses, latency, latency_sum FROM kpi_days"
                " WHERE day >= ? AND day <= ?", (first, last)).fetchall()
        out = {}
        for day, requests, hits, misses, latency, latency_sum in found:
            counts = json.loads(latency)
            if len(counts) != len(LATENCY_BUCKETS):
                counts = [0] * len(LATENCY_BUCKETS)
            out[day] = DayFigures(requests, hits, misses, counts, latency_sum)
        return out

    def save_snapshot(self, at: float, stats: Mapping[str, Any]) -> None:
        text = json.dumps(stats, default=list, allow_nan=False)
        with self._lock:
            self._db.execute("INSERT INTO snapshot (id, at, stats) VALUES (1, ?, ?)"
                             " ON CONFLICT(id) DO UPDATE SET at = excluded.at, stats = excluded.stats", (at, text))

    def snapshot(self) -> tuple[float, dict[str, Any]] | None:
        """``(unix time, stats)`` of the last snapshot a server saved, or None."""
        with self._lock:
            row = self._db.execute("SELECT at, stats FROM snapshot WHERE id = 1").fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _connect(target: str) -> sqlite3.Connection:
    db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            db.execute(statement)
    except BaseException:
        db.close()
        raise
    return db


def _open_file(path: Path) -> sqlite3.Connection:
    create_private(path)
    return _connect(str(path))


def kpi_days(
    store: KpiStore | None,
    ledger: UsageLedger | None,
    *,
    now: float,
    days: int,
    costs: Mapping[str, float],
    providers: Iterable[str] = (),
    token_providers: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The contract's KPI rows for the last ``days`` UTC days (today included), newest first.

    Only days with any activity appear. ``providers`` are listed in
    ``upstream_calls`` even on days they made no call. ``costs`` are per budget
    unit; the ledger counts of ``token_providers`` are tokens (``llm_tokens``).
    """
    tokened = set(token_providers)
    days = max(1, min(int(days), MAX_DAYS))
    last = utc_day(now)
    first = utc_day(now - (days - 1) * 86400)
    figures = store.rows(first, last) if store is not None else {}
    usage = {day: calls for day, calls in (ledger.days(days) if ledger is not None else {}).items()
             if first <= day <= last}
    out = []
    for day in sorted(set(figures) | set(usage), reverse=True):
        fig = figures.get(day, DayFigures())
        units = {name: 0 for name in providers if name not in tokened}
        units.update(usage.get(day, {}))
        cost = sum(n * costs.get(name, 0.0) for name, n in units.items())
        tokens = sum(n for name, n in units.items() if name in tokened)
        calls = {name: n for name, n in units.items() if name not in tokened}
        reads = fig.hits + fig.misses
        out.append({
            "date": day,
            "requests": fig.requests,
            "hit_rate": round(fig.hits / reads, 4) if reads else None,
            "upstream_calls": dict(sorted(calls.items())),
            "calls_saved": fig.hits,
            **percentiles_ms(fig.latency),
            "llm_tokens": tokens,
            "estimated_cost": round(float(cost), 6),
        })
    return out


def costs_from(settings: Any) -> dict[str, float]:
    """Price per budget unit (a call, or a model token) by provider, from each provider's settings section."""
    from .upstream.providers import provider_classes

    return {cls.name: cls.unit_cost(settings.section(cls.config)) for cls in provider_classes()}


def token_providers() -> list[str]:
    """The providers whose budget and ledger count model tokens, not calls."""
    from .upstream.providers import provider_classes

    return [cls.name for cls in provider_classes() if cls.unit == "token"]


class KpiRecorder:
    """Turns live Metrics into per-day KPI rows. Thread-safe (flushes are serialised).

    ``snapshot`` (``StockService.stats``) is saved at every flush for the
    ``stats`` command. ``start()`` runs the periodic flush in a daemon thread;
    tests call :meth:`flush` with a fake clock instead.
    """

    def __init__(
        self,
        store: KpiStore,
        metrics: Metrics,
        *,
        ledger: UsageLedger | None = None,
        costs: Mapping[str, float] | None = None,
        providers: Iterable[str] = (),
        token_providers: Iterable[str] = (),
        snapshot: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._ledger = ledger
        self._costs = dict(costs or {})
        self._providers = list(providers)
        self._token_providers = list(token_providers)
        self._snapshot = snapshot
        self._clock = clock
        self._lock = threading.Lock()
        self._last = DayFigures()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _totals(self) -> DayFigures:
        metrics = self._metrics
        out = DayFigures()
        out.requests = sum(n for (route, *_), n in metrics.by_label(Metrics.REQUESTS).items()
                           if route not in EXCLUDED_ROUTES)
        for route, hist in metrics.histograms(Metrics.REQUEST_LATENCY).items():
            if route in EXCLUDED_ROUTES:
                continue
            out.latency = [a + b for a, b in zip(out.latency, hist.counts, strict=True)]
            out.latency_sum += hist.total
        for (_, tier), n in metrics.by_label(Metrics.READS).items():
            if tier == Metrics.READ_MISS:
                out.misses += n
            else:
                out.hits += n
        return out

    def flush(self) -> None:
        """Add what happened since the last flush to today's row; save the stats snapshot."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            total = self._totals()
            last = self._last
            delta = DayFigures(
                total.requests - last.requests, total.hits - last.hits, total.misses - last.misses,
                [a - b for a, b in zip(total.latency, last.latency, strict=True)],
                total.latency_sum - last.latency_sum,
            )
            try:
                if not delta.empty():
                    self.store.add(utc_day(now), delta)
                self._last = total
                if self._snapshot is not None:
                    self.store.save_snapshot(now, self._snapshot())
            except (sqlite3.Error, CacheError) as exc:
                # Counting must never fail a request; the delta is kept for the next flush.
                log.warning("could not save KPIs: %s", exc)

    def days(self, days: int) -> list[dict[str, Any]]:
        """The contract's KPI rows, newest first, including what happened up to now."""
        self.flush()
        return kpi_days(self.store, self._ledger, now=self._clock(), days=days, costs=self._costs,
                        providers=self._providers, token_providers=self._token_providers)

    def start(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every ``interval`` seconds, and just before each UTC midnight, in a daemon thread."""
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="stockcache-kpis",
                                        daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(self._next_wait(interval)):
            try:
                self.flush()
            except Exception:
                log.exception("KPI flush failed")

    def _next_wait(self, interval: float) -> float:
        # Flush half a second before midnight so a day's requests land on that day.
        to_midnight = seconds_to_utc_midnight(self._clock())
        if to_midnight > 1.0:
            return min(interval, to_midnight - 0.5)
        return min(interval, to_midnight + 0.5)

    def close(self) -> None:
        """Stop the thread, flush once more and close the store. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.store.close()
