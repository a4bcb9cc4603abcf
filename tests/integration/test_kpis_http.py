"""GET /api/kpis, /api/cache/stats and /metrics over real HTTP: admin only, counting exactly what happened."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from tests.integration.conftest import Live, start_service, upstream_settings


@pytest.fixture
def priced(tmp_path, upstream):
    """The service with a price per Finnhub call, so the estimated cost is visible."""
    live = start_service(upstream_settings(tmp_path, upstream, finnhub_cost_per_call=0.002))
    try:
        yield live
    finally:
        live.stop()


def test_kpis_http_count_todays_requests_hits_and_calls(priced: Live, upstream):
    admin = priced.add_user("root", admin=True)
    alice = priced.add_user("alice")
    assert alice.get("/api/quote/AAPL").json()["cache"] == "upstream"
    assert alice.get("/api/quote/AAPL").json()["cache"] == "memory"
    batch = alice.post("/api/batch-quotes", json={"tickers": ["AAPL", "MSFT"]}).json()
    assert {s: q["cache"] for s, q in batch["quotes"].items()} == {"AAPL": "memory", "MSFT": "upstream"}
    assert priced.api.get("/healthz").status_code == 200  # monitoring: not counted

    answer = admin.get("/api/kpis")
    assert answer.status_code == 200
    (today,) = answer.json()["days"]
    # Two logins and alice's three requests; this request is counted once it has been answered.
    assert today["requests"] == 5
    assert (today["hit_rate"], today["calls_saved"]) == (0.5, 2)
    assert today["upstream_calls"] == {"alphavantage": 0, "finnhub": 2, "ecb": 0, "coingecko": 0, "openfigi": 0} == {
        "alphavantage": upstream.calls("alphavantage"), "finnhub": upstream.calls("finnhub"),
        "ecb": upstream.calls("frankfurter"), "coingecko": upstream.calls("coingecko"),
        "openfigi": upstream.calls("openfigi")}
    assert today["estimated_cost"] == 0.004
    assert 0 < today["p50_ms"] <= today["p95_ms"] <= today["p99_ms"]
    assert admin.get("/api/kpis?days=1").json()["days"][0]["requests"] == 6


@pytest.mark.parametrize(("query", "status"), [("?days=0", 400), ("?days=367", 400), ("?days=x", 400),
                                               ("?days=366", 200)])
def test_kpis_http_days_must_be_1_to_366(live: Live, admin, query, status):
    answer = admin.get("/api/kpis" + query)
    assert answer.status_code == status
    if status == 400:
        assert answer.json()["error"]["code"] == "invalid_request"


def test_kpis_http_are_for_admins_only(live: Live, alice):
    assert alice.get("/api/kpis").status_code == 403
    assert alice.get("/api/kpis").json()["error"]["code"] == "forbidden"
    anonymous = live.api.get("/api/kpis")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"


def test_cache_stats_http_keep_the_contract_keys_and_add_reads_latency_refresher(live: Live, admin, alice):
    alice.get("/api/quote/AAPL")
    alice.get("/api/quote/AAPL")
    stats = admin.get("/api/cache/stats").json()
    for key in ("memory", "sqlite", "redis", "hit_rate", "by_kind", "upstream", "coalesced", "stale_served"):
        assert key in stats, key
    assert {"calls", "errors", "rate_limited", "budget_left"} <= set(stats["upstream"]["finnhub"])
    assert stats["reads"]["by_kind"]["quote"] == {"memory": 1, "miss": 1, "hits": 1, "misses": 1,
                                                  "hit_rate": 0.5}
    assert stats["latency"]["/api/quote/<symbol>"]["count"] == 2
    assert stats["refresher"] == {"enabled": False, "hours": "market", "runs": 0, "refreshed": {}, "failed": {},
                                  "skipped_budget": {}}


def test_metrics_http_export_reads_by_kind_and_tier(live: Live, admin, alice):
    alice.get("/api/quote/AAPL")
    alice.get("/api/quote/AAPL")
    text = admin.get("/metrics").text
    assert 'stockcache_read_hits_total{kind="quote",tier="memory"} 1.0' in text
    assert 'stockcache_read_misses_total{kind="quote"} 1.0' in text
    assert 'stockcache_http_request_latency_quantile_seconds{quantile="0.99",route="/api/quote/<symbol>"}' in text
    assert alice.get("/metrics").status_code == 403


def test_kpis_and_metrics_http_report_latency_per_route_group(tmp_path, upstream):
    """Logins with the real password hash (0.15-0.9 s) no longer hide how fast market data is."""
    live = start_service(upstream_settings(tmp_path, upstream), hasher=PasswordHasher())
    try:
        admin = live.add_user("root", admin=True)
        alice = live.add_user("alice")
        live.api.post("/api/auth/login", json={"username": "alice", "password": "wrong password"})
        assert alice.get("/api/quote/AAPL").status_code == 200
        for _ in range(30):
            assert alice.get("/api/quote/AAPL").json()["cache"] == "memory"
        assert alice.post("/api/watchlist", json={"symbol": "MSFT"}).status_code in (200, 201)
        assert admin.get("/api/cache/stats").status_code == 200

        (today,) = admin.get("/api/kpis?days=1").json()["days"]
        groups = today["latency"]
        assert {g: f["requests"] for g, f in groups.items()} == {
            "market_data": 31, "portfolio": 1, "auth": 3, "admin": 1, "other": 0}
        assert sum(f["requests"] for f in groups.values()) == today["requests"]
        login_median = groups["auth"]["p50_ms"]
        # 30 of the 31 data requests are memory hits: their p95 stays far below any login.
        assert groups["market_data"]["p95_ms"] < login_median
        assert today["p95_ms"] > groups["market_data"]["p95_ms"]  # the all-routes figure the dashboard showed

        text = admin.get("/metrics").text
        assert 'stockcache_http_group_request_duration_seconds_count{group="market_data"} 31.0' in text
        assert 'stockcache_http_group_latency_quantile_seconds{group="auth",quantile="0.5"}' in text
        assert ('stockcache_http_request_duration_seconds_count{group="market_data",route="/api/quote/<symbol>"} 31.0'
                in text)
    finally:
        live.stop()
