"""StockService over a real SQLite cache in a temp dir, `responses` for the upstream, a fake clock."""

from __future__ import annotations

import pytest
import responses

from stockcache.errors import InvalidRequest, RateLimited, SymbolNotFound, TooManySymbols, UpstreamError
from stockcache.runtime import build_service
from stockcache.settings import Settings

FH = "https://fh.test/api/v1"
AV = "https://av.test/query"
GOOD = {"c": 261.74, "d": 2.29, "dp": 0.8826, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 259.45, "t": 1582641000}
ZERO = {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}


def _settings(tmp_path, **overrides):
    values = dict(data_dir=tmp_path / "data", refresh=False, finnhub_api_key="TESTKEY_fh_0000",
                  finnhub_url=FH, alphavantage_url=AV, upstream_timeout=2.0)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def service(tmp_path, clock):
    svc = build_service(_settings(tmp_path), clock=clock)
    yield svc
    svc.close()


def _quote_calls():
    return [c for c in responses.calls if c.request.url.startswith(f"{FH}/quote")]


@responses.activate
def test_service_quote_reads_through_memory_then_sqlite(tmp_path, clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    svc = build_service(_settings(tmp_path), clock=clock)
    first = svc.get_quote("aapl")
    assert first["symbol"] == "AAPL" and first["price"] == 261.74
    assert (first["source"], first["cache"], first["stale"], first["age"]) == ("finnhub", "upstream", False, 0)
    clock.advance(10)
    second = svc.get_quote("AAPL")
    assert second["cache"] == "memory" and second["age"] == 10
    svc.close()
    reopened = build_service(_settings(tmp_path), clock=clock)
    third = reopened.get_quote("AAPL")
    assert third["cache"] == "sqlite" and third["price"] == 261.74
    assert reopened.get_quote("AAPL")["cache"] == "memory"
    reopened.close()
    assert len(_quote_calls()) == 1


@responses.activate
def test_service_quote_expires_after_its_ttl(service, clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    service.get_quote("AAPL")
    clock.advance(299)
    assert service.get_quote("AAPL")["cache"] == "memory"
    clock.advance(2)
    assert service.get_quote("AAPL")["cache"] == "upstream"
    assert len(_quote_calls()) == 2


@responses.activate
def test_service_serves_stale_data_flagged_when_the_upstream_fails(service, clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    service.get_quote("AAPL")
    clock.advance(400)
    responses.replace(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    answer = service.get_quote("AAPL")
    assert answer["stale"] is True and answer["age"] == 400 and answer["price"] == 261.74
    assert service.stats()["stale_served"] == 1


@responses.activate
def test_service_without_stale_data_raises_the_upstream_error(service):
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    with pytest.raises(UpstreamError) as info:
        service.get_quote("AAPL")
    assert info.value.status == 502 and info.value.fields["symbol"] == "AAPL"


@responses.activate
def test_service_remembers_not_found_briefly_and_never_as_data(service, clock):
    responses.add(responses.GET, f"{FH}/quote", json=ZERO)
    with pytest.raises(SymbolNotFound):
        service.get_quote("NOPE")
    with pytest.raises(SymbolNotFound):
        service.get_quote("NOPE")
    assert len(_quote_calls()) == 1
    clock.advance(601)
    with pytest.raises(SymbolNotFound):
        service.get_quote("NOPE")
    assert len(_quote_calls()) == 2


@responses.activate
def test_service_batch_folds_duplicates_and_reports_each_symbol_once(service):
    def answer(request):
        symbol = request.params["symbol"]
        body = ZERO if symbol == "ZZZZ" else {**GOOD, "c": float(len(symbol))}
        return 200, {"Content-Type": "application/json"}, __import__("json").dumps(body)

    responses.add_callback(responses.GET, f"{FH}/quote", callback=answer)
    out = service.fetch_multiple_quotes(["aapl", "AAPL", "msft", "ZZZZ"])
    assert set(out["quotes"]) == {"AAPL", "MSFT"} and set(out["errors"]) == {"ZZZZ"}
    assert out["errors"]["ZZZZ"]["code"] == "symbol_not_found"
    assert out["quotes"]["AAPL"]["price"] == 4.0
    assert len(_quote_calls()) == 3


@responses.activate
def test_service_batch_validates_symbols_one_by_one_and_its_size(service):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    answer = service.fetch_multiple_quotes(["AAPL", "../etc"])
    assert set(answer["quotes"]) == {"AAPL"} and answer["errors"]["../etc"]["code"] == "invalid_symbol"
    with pytest.raises(InvalidRequest):
        service.fetch_multiple_quotes([])
    with pytest.raises(TooManySymbols):
        service.fetch_multiple_quotes([f"S{i}" for i in range(101)])


@responses.activate
def test_service_spent_budget_serves_stale_or_rate_limited(tmp_path, clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    svc = build_service(_settings(tmp_path, finnhub_per_minute=1, ttl_quote=30), clock=clock)
    svc.get_quote("AAPL")
    clock.advance(31)
    stale = svc.get_quote("AAPL")  # the one call this minute is spent
    assert stale["stale"] is True
    with pytest.raises(RateLimited) as info:
        svc.get_quote("MSFT")
    assert info.value.retry_after and info.value.status == 503
    assert len(_quote_calls()) == 1
    svc.close()


@responses.activate
def test_service_portfolio_performance_math(service):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    positions = [{"id": 1, "symbol": "AAPL", "shares": 10, "cost_basis": 200.0},
                 {"id": 2, "symbol": "AAPL", "shares": 5, "cost_basis": 300.0}]
    out = service.fetch_portfolio_quotes(positions)
    first, second = out["positions"]
    assert first["value"] == pytest.approx(2617.4) and first["gain"] == pytest.approx(617.4)
    assert first["gain_percent"] == pytest.approx(30.87)
    assert first["day_change"] == pytest.approx(22.9)
    assert second["gain"] == pytest.approx(5 * 261.74 - 1500)
    totals = out["totals"]
    assert totals["value"] == pytest.approx(15 * 261.74)
    assert totals["cost"] == pytest.approx(3500.0)
    assert totals["gain"] == pytest.approx(15 * 261.74 - 3500)
    assert totals["day_change"] == pytest.approx(15 * 2.29)
    assert len(_quote_calls()) == 1  # one quote serves both positions


@responses.activate
def test_service_portfolio_numbers_are_finite_or_null_whatever_the_positions_hold(service):
    import json
    import math

    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    odd = [1e-320, 5e-324, 1e300, 1.7e308, math.inf, -math.inf, math.nan, None, "junk", True, 10**400, 0, -1]
    positions = [{"id": i, "symbol": "AAPL", "shares": shares, "cost_basis": cost}
                 for i, (shares, cost) in enumerate((s, c) for s in odd + [10] for c in odd + [200.0])]
    out = service.fetch_portfolio_quotes(positions)
    json.dumps(out, allow_nan=False)  # what the HTTP encoder demands
    sane = out["positions"][-1]
    assert sane["gain_percent"] == pytest.approx(30.87) and out["totals"]["value"] is not None
    trial = next(p for p in out["positions"] if p["shares"] == 10 and p["cost_basis"] == 1e-320)
    assert trial["gain_percent"] is None and trial["value"] == pytest.approx(2617.4)


def test_service_demo_source_serves_every_kind_without_keys(tmp_path, clock):
    svc = build_service(Settings(data_dir=tmp_path / "data", refresh=False), clock=clock)
    try:
        quote = svc.get_quote("AAPL")
        assert quote["source"] == "demo" and quote["price"] > 0
        assert svc.get_profile("MSFT")["source"] == "demo"
        history = svc.get_history("NVDA", days=30)
        assert len(history["candles"]) == 30
        assert history["candles"][0]["date"] < history["candles"][-1]["date"]
        assert svc.get_news("TSLA", days=7)["source"] == "demo"
        assert svc.get_quote("AAPL")["cache"] == "memory"
    finally:
        svc.close()


def test_service_history_days_must_be_in_range(service):
    from stockcache.errors import InvalidRequest

    for bad in (0, 101, "x", 2.5):
        with pytest.raises(InvalidRequest):
            service.get_history("AAPL", days=bad)


@pytest.mark.parametrize("foreign", [
    {"price": 1.0},  # the contract's own cache.set example
    {"data": {"price": 1.0}},  # half an envelope
    {"error": "not ours"},  # an "error" key that is not a remembered error
    [1, 2, 3],
    "text",
])
@responses.activate
def test_service_treats_a_foreign_cache_value_as_a_miss(service, clock, caplog, foreign):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    service.cache.set("quote:AAPL", foreign, ttl_level="quote")
    with caplog.at_level("WARNING", logger="stockcache.readthrough"):
        assert service.get_quote("AAPL")["price"] == 261.74  # fresh path and the leader's lookup
    assert service.cache.get("quote:AAPL")["data"]["price"] == 261.74  # the fetch overwrote it
    warnings = [r for r in caplog.records if r.name == "stockcache.readthrough"]
    assert len(warnings) == 1 and "quote" in warnings[0].getMessage()
    assert "1.0" not in warnings[0].getMessage() and "not ours" not in warnings[0].getMessage()

    service.cache.set("quote:AAPL", foreign, ttl_level="quote")
    out = service.fetch_multiple_quotes(["AAPL", "MSFT"])
    assert set(out["quotes"]) == {"AAPL", "MSFT"} and out["errors"] == {}
    assert len([r for r in caplog.records if r.name == "stockcache.readthrough"]) == 1  # once per kind

    # The stale path: the upstream fails and the only copy is foreign -> the upstream's error.
    service.cache.set("quote:AAPL", foreign, ttl=1)
    clock.advance(2)
    responses.replace(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    with pytest.raises(UpstreamError) as info:
        service.get_quote("AAPL")
    assert info.value.status == 502


@responses.activate
def test_service_kind_no_configured_provider_serves_names_the_key_it_needs(service):
    # Finnhub-only: history (candles are premium at Finnhub) needs an Alpha Vantage key. CoinGecko
    # (keyless beside Finnhub) serves history of crypto pairs only, so AAPL's is not covered.
    from stockcache.errors import SymbolNotCovered

    assert service.route("history") == [] and service.route("quote") == ["finnhub"]
    with pytest.raises(SymbolNotCovered) as info:
        service.get_history("AAPL", days=30)
    assert info.value.status == 404 and info.value.code == "symbol_not_covered"
    assert "AAPL" in info.value.message and "ALPHAVANTAGE_API_KEY" in info.value.message
    assert info.value.fields["symbol"] == "AAPL"
    assert len(responses.calls) == 0
    assert service.stats()["upstream"]["finnhub"]["calls"] == 0


def test_service_route_follows_the_agreed_order_and_each_provider_kinds(tmp_path, clock):
    svc = build_service(_settings(tmp_path, alphavantage_api_key="TESTKEY_av_0000"), clock=clock)
    try:
        assert svc.route("quote") == ["finnhub", "alphavantage"]
        assert svc.route("history") == ["alphavantage"]
    finally:
        svc.close()


def test_service_days_follow_the_providers_limits(tmp_path, clock):
    from stockcache.errors import InvalidRequest
    from stockcache.upstream.providers.base import MAX_HISTORY_DAYS, MAX_NEWS_DAYS

    svc = build_service(Settings(data_dir=tmp_path / "data", refresh=False), clock=clock)
    try:
        assert len(svc.get_history("AAPL", days=MAX_HISTORY_DAYS)["candles"]) == MAX_HISTORY_DAYS
        assert len(svc.get_history("AAPL", days="5")["candles"]) == 5
        assert svc.get_news("AAPL", days=MAX_NEWS_DAYS)["source"] == "demo"
        for call, most in ((svc.get_history, MAX_HISTORY_DAYS), (svc.get_news, MAX_NEWS_DAYS)):
            for bad in (0, most + 1, True, "x", 2.5, None):
                with pytest.raises(InvalidRequest) as info:
                    call("AAPL", days=bad)
                assert info.value.fields["field"] == "days" and str(most) in info.value.message
    finally:
        svc.close()
