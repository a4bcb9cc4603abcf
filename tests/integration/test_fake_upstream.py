"""The fake upstream over real HTTP: plain requests, and our provider adapters end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.fake_upstream import FINNHUB_PREFIX, FakeUpstream
from stockcache.errors import RateLimited, SymbolNotFound, SymbolRefused, UpstreamAuthError, UpstreamError
from stockcache.models import History, News, Profile, Quote
from stockcache.upstream.providers import AlphaVantageProvider, DemoMarket, FinnhubProvider
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig
from stockcache.upstream.providers.base import seconds_to_utc_midnight
from stockcache.upstream.providers.finnhub import FinnhubConfig
from stockcache.upstream.router import checked

FH_KEY = "TESTKEY_finnhub_9f8e7d"
AV_KEY = "TESTKEY_alphavantage_1a2b3c"
NOW = 1_767_020_400.0  # 2025-12-29T15:00Z, a Monday mid-session
ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def fake():
    with FakeUpstream(clock=lambda: NOW, expected_keys={"finnhub": FH_KEY, "alphavantage": AV_KEY}) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


@pytest.fixture
def finnhub(fake) -> FinnhubProvider:
    return FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=fake.finnhub_url), clock=lambda: NOW)


@pytest.fixture
def alphavantage(fake) -> AlphaVantageProvider:
    return AlphaVantageProvider(AlphaVantageConfig(api_key=AV_KEY, url=fake.alphavantage_url), clock=lambda: NOW)


def via(provider, kind: str, symbol: str, params: dict[str, Any] | None = None, session=requests) -> Any:
    """What the router does: build, send, parse, check."""
    params = params or {}
    request = provider.build_request(kind, symbol, params)
    response = session.request(request.method, request.url, params=request.params, headers=request.headers,
                               timeout=10)
    model = provider.parse(kind, symbol, params, response.status_code, response.headers, response.content)
    return checked(provider.name, kind, symbol, model)


def fh_get(fake, session, path: str, **params: str) -> requests.Response:
    return session.get(fake.finnhub_url + path, params={"token": FH_KEY, **params}, timeout=10)


def av_get(fake, session, **params: str) -> requests.Response:
    return session.get(fake.alphavantage_url, params={"apikey": AV_KEY, **params}, timeout=10)


# -- good data ---------------------------------------------------------------


def test_fake_finnhub_serves_demo_market_data(finnhub):
    market = DemoMarket(marked=False)
    assert via(finnhub, "quote", "AAPL") == market.quote("AAPL", NOW)
    profile = via(finnhub, "profile", "AAPL")
    assert isinstance(profile, Profile) and profile.name == "Apple Inc"
    assert profile.market_cap == market.profile("AAPL", NOW).market_cap
    news = via(finnhub, "news", "AAPL", {"days": 7})
    assert isinstance(news, News) and news.articles
    stamps = [a.published_at for a in news.articles]
    assert stamps == sorted(stamps, reverse=True)
    assert via(finnhub, "metric", "AAPL") == market.metrics("AAPL", NOW)
    assert via(finnhub, "search", "", {"q": "apple"})[0]["symbol"] == "AAPL"


def test_fake_alphavantage_serves_demo_market_data(alphavantage):
    market = DemoMarket(marked=False)
    quote = via(alphavantage, "quote", "MSFT")
    expected = market.quote("MSFT", NOW)
    assert isinstance(quote, Quote)
    assert (quote.price, quote.previous_close, quote.change, quote.change_percent) == (
        expected.price, expected.previous_close, expected.change, expected.change_percent)
    history = via(alphavantage, "history", "MSFT", {"days": 100})
    assert isinstance(history, History) and history.candles == market.history("MSFT", NOW, 100).candles
    assert history.candles[-1].close == quote.previous_close
    assert via(alphavantage, "profile", "MSFT").shares_outstanding == market.company("MSFT").shares
    assert via(alphavantage, "metric", "MSFT") == market.metrics("MSFT", NOW)
    assert via(alphavantage, "news", "MSFT", {"days": 7}).articles
    assert via(alphavantage, "search", "", {"q": "MSFT"})[0] == {
        "symbol": "MSFT", "name": "Microsoft Corp", "type": "Equity"}


def test_fake_finnhub_candles_only_when_enabled(fake, session):
    provider = FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=fake.finnhub_url), clock=lambda: NOW, candles=True)
    response = fh_get(fake, session, "/stock/candle", symbol="AAPL", resolution="D", **{"from": "0", "to": "1"})
    assert response.status_code == 403
    with pytest.raises(UpstreamAuthError):
        via(provider, "history", "AAPL", {"days": 30})
    fake.candles = True
    history = via(provider, "history", "AAPL", {"days": 30})
    assert history.candles == DemoMarket().history("AAPL", NOW, 30).candles


@pytest.mark.parametrize("status", [403, 401])
def test_fake_finnhub_free_plan_refuses_non_us_listings_like_the_real_one(fake, session, finnhub, status):
    fake.set_no_access_status(status)
    for path in ("/quote", "/stock/profile2", "/stock/metric"):
        response = fh_get(fake, session, path, symbol="SAP.DE", metric="all")
        assert response.status_code == status
        assert response.json() == {"error": "You don't have access to this resource."}
    for symbol in ("VOD.L", "MC.PA", "ASML.AS", "7203.T"):
        with pytest.raises(SymbolRefused):
            via(finnhub, "quote", symbol)
    assert via(finnhub, "quote", "BRK.B").price > 0  # a US share class, not a venue suffix
    assert via(finnhub, "quote", "AAPL").price > 0
    fake.finnhub_plan = "paid"
    assert via(finnhub, "quote", "SAP.DE").price > 0


def test_fake_trickle_headers_sends_no_status_line_in_time(fake):
    """Every read gets a byte, so only a deadline on the whole exchange ends it; release sends the rest."""
    fake.set_fault("trickle_headers", symbol="AAPL")
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as conn:
        conn.sendall(f"GET {FINNHUB_PREFIX}/quote?symbol=AAPL&token={FH_KEY} "
                     "HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert fake.wait_hanging(1, timeout=5)
        first = conn.recv(64)
        assert 0 < len(first) < 16  # a byte or a few: the status line itself trickles
        fake.release_hangs()
        received = first
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            received += conn.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"X-Fake-Padding" in head
    assert json.loads(body)["c"] > 0


def test_fake_alphavantage_full_outputsize_is_premium(fake, session):
    body = av_get(fake, session, function="TIME_SERIES_DAILY", symbol="IBM", outputsize="full").json()
    assert "premium" in body["Information"]
    compact = av_get(fake, session, function="TIME_SERIES_DAILY", symbol="IBM").json()
    assert len(compact["Time Series (Daily)"]) == 100


def test_fake_finnhub_double_slash_paths_and_both_key_places(fake, session):
    url = fake.finnhub_url + "//quote"
    assert session.get(url, params={"symbol": "AAPL", "token": FH_KEY}).json()["c"] > 0
    assert session.get(url, params={"symbol": "AAPL"}, headers={"X-Finnhub-Token": FH_KEY}).json()["c"] > 0
    assert [c.key_in for c in fake.call_log()] == ["query", "header"]
    assert all("token" not in c.params for c in fake.call_log())


# -- unknown symbols ----------------------------------------------------------


def test_fake_unknown_symbols_answer_real_not_found_shapes(fake, session, finnhub, alphavantage):
    assert fh_get(fake, session, "/quote", symbol="ZZZZ1").json() == {
        "c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
    assert fh_get(fake, session, "/stock/profile2", symbol="ZZZZ1").json() == {}
    assert av_get(fake, session, function="GLOBAL_QUOTE", symbol="ZZZZ1").json() == {"Global Quote": {}}
    for provider in (finnhub, alphavantage):
        for kind in ("quote", "profile", "metric"):
            with pytest.raises(SymbolNotFound):
                via(provider, kind, "ZZZZ1")
    for kind in ("history", "news"):
        with pytest.raises(SymbolNotFound):
            via(alphavantage, kind, "ZZZZ1", {"days": 7})
    assert via(finnhub, "news", "ZZZZ1", {"days": 7}).articles == ()


def test_fake_unknown_set_is_configurable(fake, finnhub):
    fake.set_unknown(["DELISTED"])
    with pytest.raises(SymbolNotFound):
        via(finnhub, "quote", "DELISTED")
    assert via(finnhub, "quote", "ZZZZ1").price > 0


# -- faults ---------------------------------------------------------------------


@pytest.mark.parametrize("fault,status", [("500", 500), ("502", 502), ("503", 503), ("html", 502),
                                           ("badjson", 200), ("wrongshape", 200)])
def test_fake_fault_bodies_become_upstream_errors(fake, session, finnhub, alphavantage, fault, status):
    fake.set_fault(fault, symbol="AAPL")
    assert fh_get(fake, session, "/quote", symbol="AAPL").status_code == status
    for provider in (finnhub, alphavantage):
        with pytest.raises(UpstreamError) as info:
            via(provider, "quote", "AAPL")
        assert type(info.value) is UpstreamError
    assert via(finnhub, "quote", "MSFT").price > 0  # other symbols unaffected


@pytest.mark.parametrize(("variant", "finnhub_c", "av_price"), [
    ("negative", -5, "-5"), ("huge", 1e308, "1e+308"), ("tiny", 1e-320, "1e-320")])
def test_fake_fault_outofrange_sends_the_right_shape_with_one_bad_number(
        fake, session, finnhub, alphavantage, variant, finnhub_c, av_price):
    fake.set_fault("outofrange", symbol="AAPL", variant=variant)
    body = fh_get(fake, session, "/quote", symbol="AAPL").json()
    assert body["c"] == finnhub_c and set(body) == {"c", "d", "dp", "h", "l", "o", "pc", "t"}
    assert av_get(fake, session, function="GLOBAL_QUOTE", symbol="AAPL").json()["Global Quote"]["05. price"] == av_price
    for provider in (finnhub, alphavantage):
        with pytest.raises(UpstreamError, match="out-of-range quote"):
            via(provider, "quote", "AAPL")
    assert via(finnhub, "quote", "MSFT").price > 0  # other symbols unaffected


def test_fake_fault_outofrange_future_and_long_reach_dates_and_texts(fake, session):
    fake.set_fault("outofrange", variant="future")
    assert fh_get(fake, session, "/quote", symbol="AAPL").json()["t"] == 253402214400  # 9999-12-31
    assert fh_get(fake, session, "/stock/profile2", symbol="AAPL").json()["ipo"] == "9999-12-31"
    series = av_get(fake, session, function="TIME_SERIES_DAILY", symbol="IBM").json()["Time Series (Daily)"]
    assert max(series) == "9999-12-31" and len(series) == 100
    feed = av_get(fake, session, function="NEWS_SENTIMENT", tickers="IBM").json()["feed"]
    assert feed[0]["time_published"] == "99991231T000000"
    fake.set_fault("outofrange", variant="long")
    assert len(fh_get(fake, session, "/stock/profile2", symbol="AAPL").json()["name"]) == 100_000
    assert fh_get(fake, session, "/quote", symbol="AAPL").json()["c"] > 0  # a quote has no text: unchanged
    with pytest.raises(ValueError):
        fake.set_fault("outofrange", variant="sideways")


def test_fake_fault_429(fake, session, finnhub, alphavantage):
    fake.set_fault("429", symbol="AAPL", retry_after=7)
    response = fh_get(fake, session, "/quote", symbol="AAPL")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert "API limit reached" in response.json()["error"]
    with pytest.raises(RateLimited) as info:
        via(finnhub, "quote", "AAPL")
    assert info.value.retry_after == 7
    with pytest.raises(RateLimited) as info:
        via(alphavantage, "quote", "AAPL")  # AV's own way: HTTP 200 burst Information
    assert info.value.retry_after == 1


def test_fake_fault_reset_drops_the_connection(fake, session, finnhub):
    fake.set_fault("reset", symbol="AAPL")
    with pytest.raises(requests.ConnectionError):
        fh_get(fake, session, "/quote", symbol="AAPL")
    assert fh_get(fake, session, "/quote", symbol="MSFT").status_code == 200


def test_fake_fault_scopes_and_times(fake, finnhub, alphavantage):
    fake.set_fault("500", provider="finnhub")
    with pytest.raises(UpstreamError):
        via(finnhub, "quote", "AAPL")
    assert via(alphavantage, "quote", "AAPL").price > 0  # the fallback path stays healthy
    fake.set_fault(None, provider="finnhub")
    fake.set_fault("500", symbol="AAPL", times=2)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            via(finnhub, "quote", "AAPL")
    assert via(finnhub, "quote", "AAPL").price > 0


def test_fake_hang_released_answers_normally(fake, finnhub):
    fake.set_fault("hang", symbol="AAPL")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(via, finnhub, "quote", "AAPL")
        assert fake.wait_hanging(1, timeout=5)
        assert via(finnhub, "quote", "MSFT").price > 0  # a hang blocks nobody else
        assert not future.done()
        fake.release_hangs()
        assert future.result(timeout=5).price > 0


def test_fake_stop_ends_hanging_requests_at_once():
    fake = FakeUpstream(max_hang=30).start()
    fake.set_fault("hang")
    errors: list[Exception] = []

    def call() -> None:
        try:
            requests.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL", "token": "k"}, timeout=20)
        except requests.RequestException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert fake.wait_hanging(3, timeout=5)
    started = time.monotonic()
    fake.stop()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    assert time.monotonic() - started < 3
    assert len(errors) == 3 and all(isinstance(e, requests.ConnectionError) for e in errors)


def test_fake_holds_40_concurrent_requests_without_blocking_others(fake, session):
    fake.set_fault("hang", symbol="SLOW")
    with ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(requests.get, fake.finnhub_url + "/quote",
                               params={"symbol": "SLOW", "token": FH_KEY}, timeout=20) for _ in range(40)]
        assert fake.wait_hanging(40, timeout=10)
        assert fh_get(fake, session, "/quote", symbol="AAPL").status_code == 200
        assert fake.max_in_flight >= 41
        fake.release_hangs()
        assert all(f.result(timeout=10).status_code == 200 for f in futures)
    assert fake.calls(symbol="SLOW") == 40


def test_fake_error_rate_is_seeded(fake, session):
    def failures(seed: int) -> list[int]:
        fake.set_error_rate(0.3, faults=("500", "503"), seed=seed)
        return [fh_get(fake, session, "/quote", symbol="AAPL").status_code for _ in range(40)]

    first = failures(42)
    assert first == failures(42)
    assert 0 < sum(code != 200 for code in first) < 40
    assert set(first) <= {200, 500, 503}


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_fake_outage(fake, session, mode):
    fake.set_outage(True, mode=mode)
    if mode == "503":
        assert fh_get(fake, session, "/quote", symbol="AAPL").status_code == 503
        assert av_get(fake, session, function="GLOBAL_QUOTE", symbol="AAPL").status_code == 503
    else:
        with pytest.raises(requests.ConnectionError):
            fh_get(fake, session, "/quote", symbol="AAPL")
    fake.outage = False
    assert fh_get(fake, session, "/quote", symbol="AAPL").status_code == 200


def test_fake_latency_global_and_per_symbol(fake, session):
    fake.set_latency(0.3, symbol="AAPL")
    started = time.monotonic()
    fh_get(fake, session, "/quote", symbol="AAPL")
    assert time.monotonic() - started >= 0.3
    fake.latency = 0.2
    assert fake.latency == 0.2
    started = time.monotonic()
    fh_get(fake, session, "/quote", symbol="MSFT")
    assert time.monotonic() - started >= 0.2


# -- keys and rate limits -----------------------------------------------------------


def test_fake_rejects_wrong_and_missing_keys(fake, session):
    response = session.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL", "token": "nope"})
    assert response.status_code == 401 and response.json() == {"error": "Invalid API key"}
    response = session.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL"})
    assert response.status_code == 401 and response.json() == {"error": "Please use an API key."}
    response = session.get(fake.alphavantage_url, params={"function": "GLOBAL_QUOTE", "symbol": "AAPL"})
    assert response.status_code == 200 and "apikey is invalid or missing" in response.json()["Error Message"]
    for provider in (FinnhubProvider(FinnhubConfig(api_key="nope", url=fake.finnhub_url)),
                     AlphaVantageProvider(AlphaVantageConfig(api_key="nope", url=fake.alphavantage_url))):
        with pytest.raises(UpstreamAuthError):
            via(provider, "quote", "AAPL")
    fake.set_expected_key("finnhub", None)  # any non-empty key
    assert session.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL", "token": "nope"}).ok


def test_fake_finnhub_rate_limit_per_minute(fake, finnhub):
    fake.set_rate_limit("finnhub", per_minute=3)
    for _ in range(3):
        via(finnhub, "quote", "AAPL")
    with pytest.raises(RateLimited) as info:
        via(finnhub, "quote", "AAPL")
    assert info.value.retry_after is None
    assert fake.rate_limited("finnhub") == 1 and fake.calls("finnhub") == 4


def test_fake_alphavantage_daily_cap_quotes_the_key_and_we_redact_it(fake, session, alphavantage):
    fake.set_rate_limit("alphavantage", per_day=2)
    via(alphavantage, "quote", "AAPL")
    via(alphavantage, "quote", "MSFT")
    raw = av_get(fake, session, function="GLOBAL_QUOTE", symbol="AAPL")
    assert raw.status_code == 200 and AV_KEY in raw.json()["Information"]  # as the real one does
    with pytest.raises(RateLimited) as info:
        via(alphavantage, "quote", "AAPL")
    error = info.value
    assert error.retry_after == seconds_to_utc_midnight(NOW)
    assert AV_KEY not in str(error.to_dict()) + str(error) + repr(error)


@pytest.mark.parametrize("limit,retry_after", [({"per_second": 1}, 1), ({"per_minute": 1}, 60)])
def test_fake_alphavantage_burst_and_legacy_answers(fake, alphavantage, limit, retry_after):
    fake.set_rate_limit("alphavantage", **limit)
    via(alphavantage, "quote", "AAPL")
    with pytest.raises(RateLimited) as info:
        via(alphavantage, "quote", "AAPL")
    assert info.value.retry_after == retry_after


# -- counting ---------------------------------------------------------------------


def test_fake_counts_calls_by_provider_endpoint_symbol(fake, finnhub, alphavantage):
    via(finnhub, "quote", "AAPL")
    via(finnhub, "quote", "MSFT")
    via(finnhub, "profile", "AAPL")
    via(alphavantage, "history", "AAPL", {"days": 5})
    via(finnhub, "search", "", {"q": "apple"})
    assert fake.calls() == 5
    assert fake.calls("finnhub") == 4
    assert fake.calls(endpoint="quote") == 2
    assert fake.calls("finnhub", "stock/profile2", "aapl") == 1
    assert fake.calls("alphavantage", "TIME_SERIES_DAILY", "AAPL") == 1
    assert fake.calls(symbol="AAPL") == 3
    av_call = [c for c in fake.call_log() if c.provider == "alphavantage"][0]
    assert av_call.params["outputsize"] == "compact" and "apikey" not in av_call.params
    fake.set_fault("500")
    fake.reset()
    assert fake.calls() == 0
    assert via(finnhub, "quote", "AAPL").price > 0  # faults are gone too


def test_fake_runs_from_the_command_line():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", "--port", "0", "--latency", "0.01"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        urls = dict(line.split("=", 1) for line in lines)
        assert urls["STOCKCACHE_FINNHUB_URL"].endswith("/finnhub/api/v1")
        assert urls["STOCKCACHE_ALPHAVANTAGE_URL"].endswith("/alphavantage/query")
        response = requests.get(urls["STOCKCACHE_FINNHUB_URL"] + "/quote", params={"symbol": "AAPL", "token": "k"},
                                timeout=10)
        assert response.json()["c"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
