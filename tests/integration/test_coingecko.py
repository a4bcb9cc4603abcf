"""Crypto pairs from CoinGecko through real HTTP against the fake CoinGecko.

The fake answers as the real API does (``24h`` field names, history in
milliseconds with an intraday last point, namesakes in search, keyless and
keyed per-minute limits, the ``status.error_code`` 429 body) from the same
deterministic market the expected figures are computed from here, with
``DemoMarket`` directly, never with the provider's code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.refresher import from_settings as refresher_from_settings
from stockcache.upstream.providers import DemoMarket
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SATURDAY = datetime(2026, 1, 3, 15, 17, 42, tzinfo=UTC).timestamp()  # crypto trades; the stock markets do not
MARKET = DemoMarket(marked=False, unknown=())
KEY = "TESTKEY_coingecko_7d8e9f"


@pytest.fixture
def world(tmp_path) -> Iterator[Callable[..., tuple[FakeUpstream, Live, Api]]]:
    """world(**settings) -> (the fake upstream at SATURDAY, the service on it, a logged-in admin)."""
    started: list[tuple[FakeUpstream, Live]] = []

    def make(**overrides: Any) -> tuple[FakeUpstream, Live, Api]:
        fake = FakeUpstream(clock=lambda: SATURDAY)
        fake.start()
        fake.api("coingecko").set_limits(keyless_per_minute=None, keyed_per_minute=None)
        live = start_service(upstream_settings(tmp_path / f"w{len(started)}", fake, **overrides))
        started.append((fake, live))
        return fake, live, live.add_user("root", admin=True)

    yield make
    for fake, live in started:
        live.stop()
        fake.stop()


def _calls(fake: FakeUpstream, endpoint: str | None = None) -> int:
    return fake.calls("coingecko", endpoint=endpoint)


def _check_quote(body: dict[str, Any], symbol: str) -> None:
    """``body`` is ``symbol``'s price at SATURDAY, its change against the price 24 hours before."""
    now, day_ago = MARKET.quote(symbol, SATURDAY), MARKET.quote(symbol, SATURDAY - 86400)
    assert body["symbol"] == symbol and body["source"] == "coingecko" and body["stale"] is False
    assert body["currency"] == symbol.split("-")[1] and body["exchange"] is None
    assert body["price"] == now.price
    assert body["previous_close"] == pytest.approx(day_ago.price, rel=1e-9)
    assert body["change"] == pytest.approx(now.price - day_ago.price, rel=1e-6)
    assert body["change_percent"] == pytest.approx((now.price - day_ago.price) / day_ago.price * 100, abs=1e-4)
    assert SATURDAY - 60 < body["timestamp"] <= SATURDAY


def _check_history(body: dict[str, Any], symbol: str, days: int) -> None:
    """``body`` holds the market's last ``days`` complete UTC-day bars: dates, opens and closes."""
    truth = MARKET.history(symbol, SATURDAY, days).candles
    assert body["symbol"] == symbol and body["source"] == "coingecko" and body["currency"] == symbol.split("-")[1]
    candles = body["candles"]
    assert [c["date"] for c in candles] == [c.date for c in truth]
    assert candles[-1]["date"] == "2026-01-02"  # yesterday's: today's is not complete, and "now" is dropped
    assert [c["close"] for c in candles] == [c.close for c in truth]
    assert [c["open"] for c in candles] == [c.open for c in truth]
    for candle in candles:
        assert candle["low"] <= min(candle["open"], candle["close"]) <= max(candle["open"], candle["close"]) \
            <= candle["high"]


# -- quotes and history --------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTC-USD", "ETH-EUR"])
def test_coingecko_quote_of_a_pair_is_the_fakes_price_with_the_24h_change_as_previous_close(world, symbol):
    fake, _, api = world()
    answer = api.get(f"/api/quote/{symbol}")
    assert answer.status_code == 200, answer.text
    _check_quote(answer.json(), symbol)
    assert api.get(f"/api/quote/{symbol}").json()["cache"] == "memory"
    assert _calls(fake, "simple/price") == 1


@pytest.mark.parametrize("symbol", ["BTC-USD", "ETH-EUR"])
def test_coingecko_history_of_a_pair_is_the_fakes_daily_closes_from_milliseconds(world, symbol):
    fake, _, api = world()
    answer = api.get(f"/api/history/{symbol}?days=30")
    assert answer.status_code == 200, answer.text
    _check_history(answer.json(), symbol, 30)
    _check_history(api.get(f"/api/history/{symbol}?days=100").json(), symbol, 100)
    assert _calls(fake, "coins/market_chart") == 1  # one fetch of the longest window serves every days=


def test_coingecko_coin_outside_the_shipped_table_is_found_by_search_once(world):
    fake, _, api = world()
    quote = api.get("/api/quote/LTC-USD")
    assert quote.status_code == 200, quote.text
    _check_quote(quote.json(), "LTC-USD")
    history = api.get("/api/history/LTC-USD?days=10")
    assert history.status_code == 200, history.text
    _check_history(history.json(), "LTC-USD", 10)
    # The coin id came from one /search, cached for both kinds.
    assert _calls(fake, "search") == 1
    assert [c.params.get("ids") for c in fake.call_log() if c.endpoint == "simple/price"] == ["litecoin"]


def test_coingecko_stale_price_has_no_change_and_no_previous_close(world):
    fake, _, api = world()
    fake.api("coingecko").set_stale(["bitcoin"])
    body = api.get("/api/quote/BTC-EUR").json()
    assert body["price"] == MARKET.quote("BTC-EUR", SATURDAY).price
    assert (body["change"], body["change_percent"], body["previous_close"]) == (None, None, None)


def test_coingecko_unknown_coin_in_the_shipped_table_is_symbol_not_found(world):
    fake, _, api = world()
    fake.api("coingecko").set_unknown(["TRON"])  # CoinGecko leaves the id out of its answer
    answer = api.get("/api/quote/TRX-USD")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_found"


# -- keys, keyless, demo -------------------------------------------------------------------------


def test_coingecko_runs_keyless_with_only_a_finnhub_key_on_the_keyless_budget(world):
    fake, live, api = world(alphavantage_api_key="")
    _check_served(api, "BTC-USD")
    assert [c.key_in for c in fake.call_log() if c.provider == "coingecko"] == [None]
    stats = api.get("/api/cache/stats").json()["upstream"]["coingecko"]
    assert stats["calls"] == 1 and stats["budget_left"]["minute"] == 4  # 5 a minute keyless
    assert live.runtime.settings.demo is False


def _check_served(api: Api, symbol: str) -> None:
    answer = api.get(f"/api/quote/{symbol}")
    assert answer.status_code == 200, answer.text
    _check_quote(answer.json(), symbol)


def test_coingecko_demo_key_travels_only_in_its_header(world):
    fake, _, api = world(coingecko_api_key=KEY)
    fake.api("coingecko").expected_key = KEY
    _check_served(api, "ETH-EUR")
    log = [c for c in fake.call_log() if c.provider == "coingecko"]
    assert [c.key_in for c in log] == ["header"] and all(KEY not in str(c.params) for c in log)
    assert api.get("/api/cache/stats").json()["upstream"]["coingecko"]["budget_left"]["minute"] == 29


def test_coingecko_key_alone_leaves_demo_mode_and_says_which_key_serves_stocks(world):
    fake, live, api = world(coingecko_api_key=KEY, finnhub_api_key="", alphavantage_api_key="")
    assert live.runtime.settings.demo is False
    _check_served(api, "BTC-USD")
    stock = api.get("/api/quote/AAPL")
    assert stock.status_code == 404 and stock.json()["error"]["code"] == "symbol_not_covered"
    assert "FINNHUB_API_KEY" in stock.json()["error"]["message"]
    assert fake.calls("finnhub") == 0


def test_coingecko_no_keys_at_all_stays_offline_on_the_demo(world):
    fake, live, api = world(finnhub_api_key="", alphavantage_api_key="")
    assert live.runtime.settings.demo is True
    body = api.get("/api/quote/BTC-USD").json()
    assert body["source"] == "demo" and body["currency"] == "USD"
    assert api.get("/api/history/ETH-EUR?days=5").json()["source"] == "demo"
    assert fake.call_log() == []  # nothing left the machine, CoinGecko's keyless API included


def test_coingecko_a_bad_key_is_upstream_error_and_never_echoed(world):
    fake, _, api = world(coingecko_api_key=KEY)
    fake.api("coingecko").expected_key = "another"
    answer = api.get("/api/quote/BTC-USD")
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_error"
    assert KEY not in answer.text


# -- rate limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "expected"), [(None, 60), (30, 30)])
def test_coingecko_429_is_rate_limited_and_pauses_the_provider(world, retry_after, expected):
    fake, _, api = world()
    cg = fake.api("coingecko")
    cg.set_limits(keyless_per_minute=1, keyed_per_minute=1)
    cg.retry_after = retry_after
    assert api.get("/api/quote/BTC-USD").status_code == 200
    limited = api.get("/api/quote/ETH-USD")
    assert limited.status_code == 503 and limited.json()["error"]["code"] == "rate_limited"
    assert limited.headers["Retry-After"] == str(expected)
    assert cg.rate_limited() == 1
    # Paused: the next symbol is not sent while the pause lasts, and the cached one still serves.
    assert api.get("/api/quote/SOL-USD").status_code == 503
    assert cg.rate_limited() == 1 and _calls(fake, "simple/price") == 2
    assert api.get("/api/quote/BTC-USD").json()["cache"] == "memory"
    health = api.get("/api/cache/stats").json()["upstream"]["coingecko"]
    assert health["rate_limited"] >= 1


# -- routes --------------------------------------------------------------------------------------


def test_coingecko_default_routes_and_route_settings(world):
    fake, live, api = world()
    service = live.runtime.service
    assert service.route("quote", "BTC-USD") == ["coingecko"] and service.route("history", "ETH-EUR") == ["coingecko"]
    assert "coingecko" not in service.route("quote", "AAPL")
    assert service.route("search")[-1] == "coingecko"  # coin search only behind the stock providers

    fake2, live2, api2 = world(route_quote=("finnhub",))
    refused = api2.get("/api/quote/BTC-USD")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "symbol_not_covered"
    assert _calls(fake2) == 0
    assert api2.get("/api/history/BTC-USD?days=5").json()["source"] == "coingecko"  # other kinds: by default

    fake3, live3, api3 = world(route_quote=("coingecko", "finnhub"))
    assert api3.get("/api/quote/ETH-EUR").json()["source"] == "coingecko"
    assert api3.get("/api/quote/AAPL").json()["source"] == "finnhub"


# -- many pairs in one call (issue 15, point 5) -------------------------------------------------

PAIRS = [f"{coin}-{cur}" for coin in ("BTC", "ETH", "USDT", "XRP", "BNB", "SOL", "USDC", "DOGE", "ADA", "TRX")
         for cur in ("USD", "EUR", "GBP", "JPY")]


def test_coingecko_batch_of_40_cold_pairs_costs_one_call(world):
    fake, _, api = world(coingecko_per_minute=0)
    answer = api.post("/api/batch-quotes", json={"tickers": PAIRS})
    assert answer.status_code == 200 and answer.json()["errors"] == {}
    quotes = answer.json()["quotes"]
    for symbol in PAIRS:
        _check_quote(quotes[symbol], symbol)
    assert _calls(fake, "simple/price") == 1
    assert api.get("/api/cache/stats").json()["upstream"]["coingecko"]["calls"] == 1


def test_coingecko_batch_with_unknown_and_looked_up_coins_fails_only_those(world):
    fake, _, api = world(coingecko_per_minute=0)
    fake.api("coingecko").set_unknown(["TRON"])
    tickers = ["BTC-USD", "ETH-EUR", "TRX-USD", "LTC-USD", "DOT-EUR", "ZZZZ-USD"]
    body = api.post("/api/batch-quotes", json={"tickers": tickers}).json()
    assert set(body["quotes"]) == {"BTC-USD", "ETH-EUR", "LTC-USD", "DOT-EUR"}
    for symbol in body["quotes"]:
        _check_quote(body["quotes"][symbol], symbol)
    assert {s: e["code"] for s, e in body["errors"].items()} == {"TRX-USD": "symbol_not_found",
                                                                 "ZZZZ-USD": "symbol_not_found"}
    # One /search per coin outside the table, then one price call for every pair.
    assert _calls(fake, "search") == 3 and _calls(fake, "simple/price") == 1


def test_coingecko_coin_no_search_knows_is_symbol_not_found_without_a_price_call(world):
    fake, _, api = world()
    for _ in range(2):
        answer = api.get("/api/quote/ZZZZ-USD")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_found"
    # Its lookup said "no such coin": that is CoinGecko's answer, remembered; no price is asked for.
    assert _calls(fake, "search") == 1 and _calls(fake, "simple/price") == 0


def test_coingecko_batch_joins_a_pair_already_in_flight_instead_of_asking_twice(world):
    fake, _, api = world(coingecko_per_minute=0)
    fake.set_fault("hang", provider="coingecko")  # every request is held until released
    answers: dict[str, Any] = {}

    def ask(name: str, method: str, path: str, **kwargs: Any) -> None:
        answers[name] = api.request(method, path, **kwargs)

    single = threading.Thread(target=ask, args=("single", "GET", "/api/quote/BTC-USD"))
    batch = threading.Thread(target=ask, args=("batch", "POST", "/api/batch-quotes"),
                             kwargs={"json": {"tickers": ["BTC-USD", "ETH-USD", "SOL-USD"]}})
    single.start()
    try:
        assert fake.wait_hanging(1, timeout=10)
        batch.start()
        assert fake.wait_hanging(2, timeout=10)  # BTC's request, and one for the two pairs not in flight
    finally:
        fake.clear_faults()
        fake.release_hangs()
        single.join(timeout=30)
        if batch.ident is not None:  # started: a failed wait above must keep its own message
            batch.join(timeout=30)
    assert answers["single"].status_code == 200
    quotes = answers["batch"].json()["quotes"]
    assert set(quotes) == {"BTC-USD", "ETH-USD", "SOL-USD"}
    for symbol, quote in quotes.items():
        _check_quote(quote, symbol)
    asked = [sorted(str(c.params.get("ids")).split(",")) for c in fake.call_log() if c.endpoint == "simple/price"]
    assert asked == [["bitcoin"], ["ethereum", "solana"]]


def test_coingecko_batch_route_setting_sends_pairs_to_coingecko_and_stocks_to_finnhub(world):
    fake, _, api = world(route_quote=("coingecko", "finnhub"), coingecko_per_minute=0)
    body = api.post("/api/batch-quotes", json={"tickers": ["BTC-USD", "AAPL", "ETH-EUR", "MSFT"]}).json()
    assert body["errors"] == {}
    assert {s: q["source"] for s, q in body["quotes"].items()} == {
        "BTC-USD": "coingecko", "ETH-EUR": "coingecko", "AAPL": "finnhub", "MSFT": "finnhub"}
    assert _calls(fake, "simple/price") == 1 and fake.calls("finnhub", "quote") == 2


def test_coingecko_refresher_refreshes_held_pairs_in_one_price_call(world):
    fake, live, api = world(coingecko_per_minute=0, refresh_hours="always")
    store = live.runtime.store
    owner = store.create_user("holder", "unused-hash")
    held = PAIRS[:12]
    for symbol in held:
        store.add_watch(owner.id, symbol)
    refresher_from_settings(live.runtime.service, store.held_symbol_counts).run_once()
    assert _calls(fake, "simple/price") == 1
    body = api.post("/api/batch-quotes", json={"tickers": held}).json()
    assert {q["cache"] for q in body["quotes"].values()} == {"memory"} and _calls(fake, "simple/price") == 1


# -- start-up ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _startup_lines(tmp_path: Path, **keys: str) -> str:
    """stderr of ``python -m stockcache serve`` until it says where it listens; then it is stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCACHE_") and k not in (
        "FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "COINGECKO_API_KEY", "REDIS_URL")}
    env.update(STOCKCACHE_REFRESH="off", **keys)
    log = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}.log"
    port = _free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stockcache", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "Try: curl" not in log.read_text():  # an external process: poll with a deadline
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return log.read_text()


def test_coingecko_startup_says_whether_it_runs_keyless_or_with_a_key(tmp_path):
    keyless = _startup_lines(tmp_path, FINNHUB_API_KEY="TESTKEY_finnhub_startup")
    assert "CoinGecko: keyless (no COINGECKO_API_KEY; 5 calls/minute, shared per IP)" in keyless
    keyed = _startup_lines(tmp_path, COINGECKO_API_KEY=KEY)
    assert "CoinGecko: with a Demo key (30 calls/minute)" in keyed and "DEMO MODE" not in keyed
    assert KEY not in keyed
    demo = _startup_lines(tmp_path)
    assert "DEMO MODE" in demo and "CoinGecko" not in demo
    assert all(name in demo for name in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "TWELVEDATA_API_KEY",
                                         "COINGECKO_API_KEY"))  # every key that would end demo mode
