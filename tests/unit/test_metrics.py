"""Metrics: percentiles read off histograms, and exact counts of reads, calls, errors and stale answers."""

from __future__ import annotations

import pytest

from bench.fake_upstream import FakeUpstream
from bench.replay import InProcessSession, bench_settings
from stockcache.metrics import LATENCY_BUCKETS, Histogram, Metrics, quantile
from stockcache.runtime import Runtime
from stockcache.web import prometheus
from tests.conftest import cheap_hasher


def test_histogram_quantiles_interpolate_inside_buckets():
    hist = Histogram()
    for seconds in (0.002, 0.004, 0.2):
        hist.observe(seconds)
    assert hist.summary_ms() == {"count": 3, "p50_ms": 3.75, "p95_ms": 227.5, "p99_ms": 245.5}
    assert hist.quantile(0.0) == 0.001  # the lower edge of the lowest bucket in use


def test_histogram_quantiles_of_nothing_are_none_and_of_the_open_bucket_the_top_bound():
    assert Histogram().summary_ms() == {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    slow = Histogram()
    slow.observe(120.0)
    assert slow.quantile(0.99) == LATENCY_BUCKETS[-2]
    assert quantile((1.0, 2.0), (0, 4), 0.5) == 1.5


@pytest.fixture
def runtime(tmp_path, clock):
    fake = FakeUpstream(clock=clock)
    session = InProcessSession(fake, clock)
    rt = Runtime(bench_settings(tmp_path / "data", finnhub_per_minute=3, finnhub_per_second=0),
                 clock=clock, session=session, janitor_interval=None, kpi_interval=None,
                 hasher=cheap_hasher())
    rt.fake, rt.session = fake, session
    yield rt
    rt.close()


def test_metrics_count_reads_calls_errors_and_stale_answers_exactly(runtime, clock):
    service = runtime.service
    service.get_quote("AAPL")  # miss
    service.get_quote("AAPL")  # memory
    service.fetch_multiple_quotes(["AAPL", "MSFT", "ZZZZ"])  # memory, miss, miss (not found)
    service.fetch_multiple_quotes(["AAPL", "MSFT", "ZZZZ"])  # three memory hits, "not found" included
    clock.advance(400)
    runtime.fake.set_fault("500")
    assert service.get_quote("AAPL")["stale"] is True  # miss; both providers fail; stale served
    runtime.fake.clear_faults()
    for symbol in ("B1", "B2", "B3"):  # Finnhub allows 3 a minute: B3 is refused, Alpha Vantage answers
        service.get_quote(symbol)

    stats = service.stats()
    assert stats["reads"] == {"hits": 5, "misses": 7, "hit_rate": 0.4167, "by_kind": {
        "quote": {"memory": 5, "miss": 7, "hits": 5, "misses": 7, "hit_rate": 0.4167}}}
    assert {name: {k: v[k] for k in ("calls", "errors", "rate_limited")}
            for name, v in stats["upstream"].items()} == {
        "finnhub": {"calls": 6, "errors": 1, "rate_limited": 1},
        "alphavantage": {"calls": 2, "errors": 1, "rate_limited": 0},
        "ecb": {"calls": 0, "errors": 0, "rate_limited": 0},  # no FX rate was asked for
        "coingecko": {"calls": 0, "errors": 0, "rate_limited": 0},  # keyless beside Finnhub; no crypto pair asked
        "openfigi": {"calls": 0, "errors": 0, "rate_limited": 0},  # nor an ISIN looked up
    }
    assert stats["upstream"]["finnhub"]["budget_left"]["minute"] == 0
    assert stats["stale_served"] == 1
    assert (runtime.session.calls("finnhub"), runtime.session.calls("alphavantage")) == (6, 2)


def test_metrics_prometheus_text_has_reads_latency_and_refresher_figures(runtime, clock):
    service, metrics = runtime.service, runtime.metrics
    service.get_quote("AAPL")
    service.get_quote("AAPL")
    metrics.observe(Metrics.REQUEST_LATENCY, "/api/quote/<symbol>", 0.004)
    metrics.inc(Metrics.REFRESH_RUNS, amount=2)
    metrics.inc(Metrics.REFRESHED, "quote", amount=7)
    metrics.inc(Metrics.REFRESH_SKIPPED, "history", amount=3)
    text = prometheus.render(runtime).decode()
    for line in (
        'stockcache_read_hits_total{kind="quote",tier="memory"} 1.0',
        'stockcache_read_misses_total{kind="quote"} 1.0',
        'stockcache_http_request_latency_quantile_seconds{quantile="0.5",route="/api/quote/<symbol>"} 0.00375',
        "stockcache_refresh_runs_total 2.0",
        'stockcache_refresh_refreshed_total{kind="quote"} 7.0',
        'stockcache_refresh_skipped_budget_total{kind="history"} 3.0',
        'stockcache_upstream_calls_total{provider="finnhub"} 1.0',
    ):
        assert line in text, line
