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
- ``latency``: the same figures per route group (:data:`~stockcache.metrics.ROUTE_GROUPS`:
  ``market_data``, ``portfolio``, ``auth``, ``admin``, ``other``), each
  ``{"requests", "p50_ms", "p95_ms", "p99_ms"}``: logins spend 0.15-0.9 s hashing a
  password, so the figures over all requests say little about market data.
- ``estimated_cost``: ``upstream_calls`` times ``STOCKCACHE_*_COST_PER_CALL``.

:class:`KpiRecorder` turns the live :class:`~stockcache.metrics.Metrics` into
per-day deltas: it flushes every minute, just before each UTC midnight and at
close. It also stores the latest ``stats()`` snapshot, so the ``stats`` command
(a separate process) can show what the running server sees.

Several instances on one shared store (``STOCKCACHE_DATABASE_URL``): each still
counts its own day here, and at each flush publishes that day's totals (with its
ledger's calls) to the store under an instance id kept in this file; ``/api/kpis``
then shows the sum over every instance (:func:`summed`), the others as they last
published, at most a flush interval ago.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .clock import seconds_to_utc_midnight
from .errors import StockcacheError
from .metrics import LATENCY_BUCKETS, ROUTE_GROUPS, Metrics, percentiles_ms, route_group
from .sqlitefile import open_db
from .usage import UsageLedger, utc_day

log = logging.getLogger(__name__)

KPI_FILE = "kpis.sqlite"
EXCLUDED_ROUTES = frozenset({"/healthz", "/metrics"})
MAX_DAYS = 366
FLUSH_INTERVAL = 60.0

# Versioned migrations (sqlitefile.migrate). 1 is the layout files had before versions were
# recorded, hence IF NOT EXISTS: an old file (user_version 0) is adopted as it is.
KPI_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS kpi_days (day TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,"
        " hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,"
        " latency TEXT NOT NULL DEFAULT '[]', latency_sum REAL NOT NULL DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL,"
        " stats TEXT NOT NULL)",
    ),
    # 2: the instance id these counts belong to, for the sum over instances in a shared store.
    # It lives with the counts: a file set aside takes its id along, so nothing is counted twice.
    (
        "CREATE TABLE instance (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL)",
        "INSERT INTO instance (id, name) VALUES (1, lower(hex(randomblob(8))))",
    ),
    # 3: latency bucket counts per route group, {group: counts} as JSON (issue 17).
    ("ALTER TABLE kpi_days ADD COLUMN latency_groups TEXT NOT NULL DEFAULT '{}'",),
)


@dataclass
class DayFigures:
    """Counts for one UTC day (or a delta to add to one)."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    groups: dict[str, list[int]] = field(default_factory=dict)  # latency bucket counts by route group

    def empty(self) -> bool:
        return not (self.requests or self.hits or self.misses or any(self.latency))

    def minus(self, other: DayFigures) -> DayFigures:
        """What happened between ``other`` (earlier totals) and these totals."""
        zero = [0] * len(LATENCY_BUCKETS)
        return DayFigures(
            self.requests - other.requests, self.hits - other.hits, self.misses - other.misses,
            [a - b for a, b in zip(self.latency, other.latency, strict=True)],
            self.latency_sum - other.latency_sum,
            {group: [a - b for a, b in zip(counts, other.groups.get(group, zero), strict=True)]
             for group, counts in self.groups.items()},
        )


class KpiStore:
    """The KPI table in SQLite (0600, through :mod:`~stockcache.sqlitefile`). Thread-safe: one connection.

    ``path=None`` keeps it in memory (tests, the Python API without a data dir).
    Several processes may add to one file: every write is an increment. A
    corrupt file is set aside and a fresh one started (the history is a
    convenience, not a record anyone relies on); ``set_aside=False`` raises
    StoreError instead (readers such as ``stats``).
    """

    def __init__(self, path: Path | None, *, set_aside: bool = True) -> None:
        self.path = path
        self._db, _ = open_db(path, KPI_MIGRATIONS, label="KPI history", set_aside=set_aside,
                              synchronous="NORMAL", busy_timeout=10.0)
        try:
            self.instance = str(self._db.rows("SELECT name FROM instance WHERE id = 1")[0][0])
        except BaseException:
            self._db.close()
            raise

    def add(self, day: str, delta: DayFigures) -> None:
        """Add ``delta`` to ``day``'s row (created on first use)."""
        with self._db.transaction("add") as db:
            row = db.execute("SELECT latency, latency_groups FROM kpi_days WHERE day = ?", (day,)).fetchone()
            # Counts of other buckets (another version's) cannot be added: the day's start over.
            counts = _added(json.loads(row[0]) if row is not None else [], delta.latency)
            old_groups = _groups(row[1]) if row is not None else {}
            groups = {group: _added(old_groups.get(group, []), delta.groups.get(group, []))
                      for group in ROUTE_GROUPS if group in old_groups or group in delta.groups}
            db.execute(
                "INSERT INTO kpi_days (day, requests, hits, misses, latency, latency_sum, latency_groups)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(day) DO UPDATE SET"
                " requests = requests + excluded.requests, hits = hits + excluded.hits,"
                " misses = misses + excluded.misses, latency = excluded.latency,"
                " latency_sum = latency_sum + excluded.latency_sum, latency_groups = excluded.latency_groups",
                (day, delta.requests, delta.hits, delta.misses, json.dumps(counts), delta.latency_sum,
                 json.dumps(groups)),
            )

    def rows(self, first: str, last: str) -> dict[str, DayFigures]:
        """Stored days from ``first`` to ``last`` (``YYYY-MM-DD``, inclusive)."""
        found = self._db.rows(
            "SELECT day, requests, hits, misses, latency, latency_sum, latency_groups FROM kpi_days"
            " WHERE day >= ? AND day <= ?", (first, last))
        return {day: _figures(requests, hits, misses, latency, latency_sum, _groups(groups))
                for day, requests, hits, misses, latency, latency_sum, groups in found}

    def save_snapshot(self, at: float, stats: Mapping[str, Any]) -> None:
        text = json.dumps(stats, default=list, allow_nan=False)
        with self._db.transaction("snapshot") as db:
            db.execute("INSERT INTO snapshot (id, at, stats) VALUES (1, ?, ?)"
                       " ON CONFLICT(id) DO UPDATE SET at = excluded.at, stats = excluded.stats", (at, text))

    def snapshot(self) -> tuple[float, dict[str, Any]] | None:
        """``(unix time, stats)`` of the last snapshot a server saved, or None."""
        rows = self._db.rows("SELECT at, stats FROM snapshot WHERE id = 1")
        return None if not rows else (float(rows[0][0]), json.loads(rows[0][1]))

    def close(self) -> None:
        self._db.close()


def _figures(requests: int, hits: int, misses: int, latency: str | list[int], latency_sum: float,
             groups: dict[str, list[int]] | None = None) -> DayFigures:
    counts = json.loads(latency) if isinstance(latency, str) else list(latency)
    if len(counts) != len(LATENCY_BUCKETS):
        counts = [0] * len(LATENCY_BUCKETS)
    return DayFigures(int(requests), int(hits), int(misses), [int(n) for n in counts], float(latency_sum),
                      dict(groups or {}))


def _by_group(groups: Mapping[str, list[int]]) -> dict[str, dict[str, Any]]:
    """``{group: {"requests", "p50_ms", "p95_ms", "p99_ms"}}`` for every route group, in report order."""
    out = {}
    for group in ROUTE_GROUPS:
        counts = groups.get(group) or [0] * len(LATENCY_BUCKETS)
        out[group] = {"requests": sum(counts), **percentiles_ms(counts)}
    return out


def _added(old: list[int], new: list[int]) -> list[int]:
    """Bucket counts added; an empty side (or one from other buckets, an older version) counts as nothing."""
    size = len(LATENCY_BUCKETS)
    old = old if len(old) == size else [0] * size
    new = new if len(new) == size else [0] * size
    return [a + b for a, b in zip(old, new, strict=True)]


def _groups(text: str | None) -> dict[str, list[int]]:
    """The stored ``latency_groups`` JSON, keeping only known groups with counts of the current buckets."""
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {group: counts for group, counts in found.items()
            if group in ROUTE_GROUPS and isinstance(counts, list) and len(counts) == len(LATENCY_BUCKETS)
            and all(isinstance(n, int) for n in counts)}


class PublishedDay(Protocol):
    """One instance's day as the shared store keeps it (``store.shared.KpiDay``)."""

    @property
    def day(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def latency(self) -> Sequence[int]: ...
    @property
    def latency_sum(self) -> float: ...
    @property
    def upstream_calls(self) -> Mapping[str, int]: ...


class SharedKpis(Protocol):
    """Where every instance publishes its days: the shared store (``store.shared.SharedQueries``)."""

    def publish_kpi_days(self, instance: str, days: Sequence[Any]) -> None: ...

    def kpi_days_published(self, first: str, last: str) -> Sequence[tuple[str, PublishedDay]]: ...


def _window(now: float, days: int) -> tuple[int, str, str]:
    days = max(1, min(int(days), MAX_DAYS))
    return days, utc_day(now - (days - 1) * 86400), utc_day(now)


def summed(published: Iterable[tuple[str, PublishedDay]]) -> tuple[dict[str, DayFigures], dict[str, dict[str, int]]]:
    """Every instance's published days added up per day: ``(figures, upstream calls)``."""
    figures: dict[str, DayFigures] = {}
    usage: dict[str, dict[str, int]] = {}
    for _, d in published:
        fig = figures.setdefault(d.day, DayFigures())
        fig.requests += d.requests
        fig.hits += d.hits
        fig.misses += d.misses
        fig.latency_sum += d.latency_sum
        if len(d.latency) == len(fig.latency):  # another version's buckets cannot be added
            fig.latency = [a + b for a, b in zip(fig.latency, d.latency, strict=True)]
        calls = usage.setdefault(d.day, {})
        for name, n in d.upstream_calls.items():
            calls[name] = calls.get(name, 0) + n
    return figures, usage


def kpi_days(
    store: KpiStore | None,
    ledger: UsageLedger | None,
    *,
    now: float,
    days: int,
    costs: Mapping[str, float],
    providers: Iterable[str] = (),
    published: Iterable[tuple[str, PublishedDay]] | None = None,
) -> list[dict[str, Any]]:
    """The contract's KPI rows for the last ``days`` UTC days (today included), newest first.

    From this data folder's ``store`` and ``ledger``, or, given ``published``,
    the sum of every instance's days. Only days with any activity appear.
    ``providers`` are listed in ``upstream_calls`` even on days they made no call.
    """
    days, first, last = _window(now, days)
    if published is not None:
        figures, usage = summed(published)
        # Route-group latency is not published: each instance shows its own (docs/reliability.md).
        local = store.rows(first, last) if store is not None else {}
        for day, fig in figures.items():
            fig.groups = local[day].groups if day in local else {}
    else:
        figures = store.rows(first, last) if store is not None else {}
        usage = ledger.days(days) if ledger is not None else {}
    usage = {day: calls for day, calls in usage.items() if first <= day <= last}
    figures = {day: fig for day, fig in figures.items() if first <= day <= last}
    out = []
    for day in sorted(set(figures) | set(usage), reverse=True):
        fig = figures.get(day, DayFigures())
        calls = {name: 0 for name in providers}
        calls.update(usage.get(day, {}))
        reads = fig.hits + fig.misses
        cost = sum(n * costs.get(name, 0.0) for name, n in calls.items())
        out.append({
            "date": day,
            "requests": fig.requests,
            "hit_rate": round(fig.hits / reads, 4) if reads else None,
            "upstream_calls": dict(sorted(calls.items())),
            "calls_saved": fig.hits,
            **percentiles_ms(fig.latency),
            "latency": _by_group(fig.groups),
            "estimated_cost": round(float(cost), 6),
        })
    return out


@dataclass(frozen=True)
class InstanceDay:
    """One instance's totals for one day, as published to the shared store (a :class:`PublishedDay`)."""

    day: str
    requests: int
    hits: int
    misses: int
    latency: Sequence[int]
    latency_sum: float
    upstream_calls: Mapping[str, int]


def costs_from(settings: Any) -> dict[str, float]:
    """Price per call by provider, from each provider's settings section."""
    from .upstream.providers import provider_classes

    return {cls.name: float(getattr(settings.section(cls.config), "cost_per_call", 0.0))
            for cls in provider_classes()}


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
        snapshot: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        shared: SharedKpis | None = None,
    ) -> None:
        self.store = store
        self._shared = shared
        self._published_through: str | None = None  # days before this one are published as they are
        self._metrics = metrics
        self._ledger = ledger
        self._costs = dict(costs or {})
        self._providers = list(providers)
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
            group = route_group(route)
            out.groups[group] = _added(out.groups.get(group, []), hist.counts)
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
            delta = total.minus(last)
            try:
                if not delta.empty():
                    self.store.add(utc_day(now), delta)
                self._last = total
                if self._snapshot is not None:
                    self.store.save_snapshot(now, self._snapshot())
            except StockcacheError as exc:
                # Counting must never fail a request; the delta is kept for the next flush.
                log.warning("could not save KPIs: %s", exc.message)
            if self._shared is not None:
                self._publish(now)

    def _publish(self, now: float) -> None:
        """Publish this data folder's days to the shared store (the whole history once, then from the last day on).

        The figures published are totals, not increments, so a publish that
        failed (the database down) is simply made again, complete, next time.
        """
        assert self._shared is not None
        today = utc_day(now)
        first = self._published_through or utc_day(now - (MAX_DAYS - 1) * 86400)
        try:
            figures = self.store.rows(first, today)
            # The ledger's recent days only, once the history went out (the last published day and today).
            span = MAX_DAYS if self._published_through is None else 2
            usage = self._ledger.days(span) if self._ledger is not None else {}
            days = sorted(set(figures) | {d for d in usage if first <= d <= today})
            rows = []
            for day in days:
                fig = figures.get(day, DayFigures())
                rows.append(InstanceDay(day, fig.requests, fig.hits, fig.misses, list(fig.latency),
                                        fig.latency_sum, dict(usage.get(day, {}))))
            self._shared.publish_kpi_days(self.store.instance, rows)
        except StockcacheError as exc:
            log.warning("could not publish KPIs to the shared store (will retry): %s", exc.message)
            return
        self._published_through = today

    def days(self, days: int) -> list[dict[str, Any]]:
        """The contract's KPI rows, newest first, including what happened up to now.

        With a shared store: the sum over every instance, each as it last
        published (this one now, the others at most a flush interval ago). If
        the shared store cannot be read, this instance's own days.
        """
        self.flush()
        now = self._clock()
        published = None
        if self._shared is not None:
            _, first, last = _window(now, days)
            try:
                published = self._shared.kpi_days_published(first, last)
            except StockcacheError as exc:
                log.warning("could not read every instance's KPIs; showing this instance's: %s", exc.message)
        return kpi_days(self.store, self._ledger, now=now, days=days, costs=self._costs,
                        providers=self._providers, published=published)

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
