"""KPI history: per-UTC-day rows from controlled counters, a fake clock and real SQLite files."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from stockcache.kpis import KpiRecorder, KpiStore, kpi_days
from stockcache.metrics import Metrics
from stockcache.usage import UsageLedger

QUOTE = "/api/quote/<symbol>"
COSTS = {"finnhub": 0.01, "alphavantage": 0.5}


@pytest.fixture
def parts(tmp_path, clock):
    store = KpiStore(tmp_path / "kpis.sqlite")
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock)
    metrics = Metrics()
    recorder = KpiRecorder(store, metrics, ledger=ledger, costs=COSTS, providers=["finnhub", "alphavantage"],
                           snapshot=lambda: {"coalesced": 3}, clock=clock)
    yield metrics, ledger, recorder
    recorder.close()
    ledger.close()


def request(metrics: Metrics, route: str, seconds: float, status: str = "200") -> None:
    """What the access log records for one request."""
    metrics.observe(Metrics.REQUEST_LATENCY, route, seconds)
    metrics.inc(Metrics.REQUESTS, route, status)


def test_kpis_count_exactly_what_happened_today(parts, clock):
    metrics, ledger, recorder = parts
    for seconds in (0.002, 0.004, 0.2):
        request(metrics, QUOTE, seconds)
    request(metrics, "/healthz", 9.0)  # monitoring is not a request of the day
    request(metrics, "/metrics", 9.0)
    metrics.inc(Metrics.READS, "quote", "memory", amount=6)
    metrics.inc(Metrics.READS, "quote", "sqlite", amount=2)
    metrics.inc(Metrics.READS, "quote", Metrics.READ_MISS, amount=2)
    ledger.record("finnhub", 2)
    ledger.record("alphavantage", 1)

    assert recorder.days(7) == [{
        "date": "2025-12-29", "requests": 3, "hit_rate": 0.8,
        "upstream_calls": {"alphavantage": 1, "finnhub": 2}, "calls_saved": 8,
        # Interpolated inside the buckets (2.5-5 ms, 100-250 ms), as Prometheus does.
        "p50_ms": 3.75, "p95_ms": 227.5, "p99_ms": 245.5,
        "latency": {"market_data": {"requests": 3, "p50_ms": 3.75, "p95_ms": 227.5, "p99_ms": 245.5},
                    **{group: {"requests": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
                       for group in ("portfolio", "auth", "admin", "other")}},
        "estimated_cost": 0.52,
    }]


def test_kpis_latency_per_route_group_keeps_slow_logins_out_of_market_data(parts, clock):
    metrics, _, recorder = parts
    for _ in range(20):
        request(metrics, QUOTE, 0.002)
    request(metrics, "/api/auth/login", 0.6)
    request(metrics, "/api/portfolio/performance", 0.04)
    request(metrics, "/", 0.0003)
    recorder.flush()
    request(metrics, "/api/kpis", 0.003)
    (today,) = recorder.days(1)
    groups = today["latency"]
    assert {g: f["requests"] for g, f in groups.items()} == {
        "market_data": 20, "portfolio": 1, "auth": 1, "admin": 1, "other": 1}
    assert groups["market_data"]["p99_ms"] <= 2.5  # the 2.5 ms bucket: no login in it
    assert today["p99_ms"] > 250 and 500 <= groups["auth"]["p50_ms"] <= 1000
    assert sum(f["requests"] for f in groups.values()) == today["requests"]


def test_kpis_file_from_before_route_groups_is_read_and_extended(tmp_path, clock):
    path = tmp_path / "kpis.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE kpi_days (day TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,"
                " hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,"
                " latency TEXT NOT NULL DEFAULT '[]', latency_sum REAL NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO kpi_days (day, requests) VALUES ('2025-12-29', 4)")
    old.commit()
    old.close()
    metrics = Metrics()
    recorder = KpiRecorder(KpiStore(path), metrics, clock=clock)
    try:
        request(metrics, QUOTE, 0.002)
        (today,) = recorder.days(1)
    finally:
        recorder.close()
    assert today["requests"] == 5 and today["latency"]["market_data"]["requests"] == 1


def test_kpis_flushing_twice_counts_nothing_twice(parts, clock):
    metrics, _, recorder = parts
    request(metrics, QUOTE, 0.01)
    recorder.flush()
    recorder.flush()
    assert recorder.days(1)[0]["requests"] == 1


def test_kpis_keep_one_row_per_utc_day_newest_first(parts, clock):
    metrics, ledger, recorder = parts
    request(metrics, QUOTE, 0.01)
    ledger.record("finnhub")
    recorder.flush()
    clock.advance(86400)
    request(metrics, QUOTE, 0.01)
    request(metrics, QUOTE, 0.01)
    metrics.inc(Metrics.READS, "quote", Metrics.READ_MISS)
    rows = recorder.days(7)
    assert [(r["date"], r["requests"], r["upstream_calls"]["finnhub"], r["hit_rate"]) for r in rows] == [
        ("2025-12-30", 2, 0, 0.0), ("2025-12-29", 1, 1, None)]
    assert [r["date"] for r in recorder.days(1)] == ["2025-12-30"]


def test_kpis_flush_just_before_utc_midnight(parts, clock):
    _, _, recorder = parts
    clock.set(1_767_052_800 - 600)  # 23:50 UTC
    assert recorder._next_wait(60.0) == 60.0
    clock.set(1_767_052_800 - 30)
    assert recorder._next_wait(60.0) == 29.5
    clock.set(1_767_052_800 - 0.2)
    assert recorder._next_wait(60.0) == pytest.approx(0.7)


def test_kpis_survive_a_restart_in_a_private_file(tmp_path, clock):
    path = tmp_path / "kpis.sqlite"
    metrics = Metrics()
    recorder = KpiRecorder(KpiStore(path), metrics, clock=clock, snapshot=lambda: {"coalesced": 3})
    request(metrics, QUOTE, 0.01)
    recorder.close()  # the last flush happens at close
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = KpiStore(path)
    try:
        rows = kpi_days(reopened, None, now=clock(), days=7, costs=COSTS)
        assert [(r["date"], r["requests"], r["upstream_calls"]) for r in rows] == [("2025-12-29", 1, {})]
        at, stats = reopened.snapshot()
        assert at == clock() and stats == {"coalesced": 3}
    finally:
        reopened.close()


def test_kpis_rows_add_up_across_processes_sharing_a_file(tmp_path, clock):
    path = tmp_path / "kpis.sqlite"
    for _ in range(2):  # two processes, one after the other, each with its own counters
        metrics = Metrics()
        recorder = KpiRecorder(KpiStore(path), metrics, clock=clock)
        request(metrics, QUOTE, 0.01)
        metrics.inc(Metrics.READS, "quote", "memory")
        recorder.close()
    store = KpiStore(path)
    try:
        (row,) = kpi_days(store, None, now=clock(), days=1, costs={})
        assert (row["requests"], row["calls_saved"]) == (2, 2)
    finally:
        store.close()


def test_kpis_leave_out_days_older_than_asked(parts, clock):
    metrics, ledger, recorder = parts
    ledger.record("finnhub")
    clock.advance(3 * 86400)
    request(metrics, QUOTE, 0.01)
    assert [r["date"] for r in recorder.days(3)] == ["2026-01-01"]
    assert [r["date"] for r in recorder.days(4)] == ["2026-01-01", "2025-12-29"]
