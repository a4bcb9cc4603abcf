"""Twelve Data through real HTTP: the service on waitress, the fake Twelve Data as unkind as the real API.

Expected prices come from the fake's ground truth (``DemoMarket``), computed
here from its own tables, never from stockcache's code. The fake's clock and
the service's clock are one fake clock standing on a Wednesday when New York,
Xetra and London all trade, so every series upstream ends in today's
unfinished bar.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.refresher import Refresher
from stockcache.refresher import from_settings as refresher_from_settings
from stockcache.settings import Settings
from stockcache.upstream.providers import DemoMarket
from tests.conftest import FakeClock
from tests.integration.conftest import AV_KEY, FINNHUB_KEY, Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)

TD_KEY = "TESTKEY_twelvedata_7a8b9c"
# Wednesday 2026-11-25, 15:00:20 UTC: New York, Xetra and London all trading; 40 s left in the clock minute.
WEDNESDAY = datetime(2026, 11, 25, 15, 0, 20, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
MARKET = DemoMarket(marked=False, unknown=())
STYLES = pytest.mark.parametrize("style", ["real", "200"], ids=["real-status", "http-200"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WEDNESDAY)


@pytest.fixture
def fake(clock) -> Iterator[FakeUpstream]:
    server = FakeUpstream(clock=clock)
    server.start()
    td = server.api("twelvedata")
    td.expected_key = TD_KEY
    td.set_limits(per_minute=None, per_day=None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def td(fake) -> Any:
    return fake.api("twelvedata")


@pytest.fixture
def start(tmp_path, fake, clock) -> Iterator[Callable[..., Live]]:
    """start(**settings) -> the service with a Twelve Data key only (unless told otherwise), on the fake."""
    started: list[Live] = []

    def make(**overrides: Any) -> Live:
        values: dict[str, Any] = {
            "twelvedata_api_key": TD_KEY, "twelvedata_url": fake.url("twelvedata"),
            "twelvedata_per_minute": 0, "twelvedata_per_day": 0,
            "finnhub_api_key": "", "alphavantage_api_key": "",
        }
        values.update(overrides)
        live = start_service(upstream_settings(tmp_path / f"s{len(started)}", fake, **values), clock=clock)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


def user_of(live: Live) -> Api:
    return live.add_user(f"u{id(live)}")


def truth(symbol: str) -> tuple[float, str]:
    """(price in the major unit, its currency), from the fake market's own tables."""
    _, major, factor = MARKET.currency(symbol)
    return MARKET.quote(symbol, WEDNESDAY).price / factor, major


def td_calls(fake: FakeUpstream, endpoint: str | None = None) -> list[Any]:
    return [c for c in fake.call_log() if c.provider == "twelvedata" and (endpoint is None or c.endpoint == endpoint)]


# -- quotes, history, search -----------------------------------------------------------------------


def test_twelvedata_quotes_us_and_european_listings_in_their_own_currencies(start, fake):
    user = user_of(start())
    expected_mic = {"AAPL": "XNGS", "SAP.DE": "XETR", "MC.PA": "XPAR", "ASML.AS": "XAMS", "VOD.L": "XLON",
                    "VWRA.L": "XLON"}
    served = {}
    for symbol, mic in expected_mic.items():
        answer = user.get(f"/api/quote/{symbol}")
        assert answer.status_code == 200, answer.text
        body = served[symbol] = answer.json()
        price, currency = truth(symbol)
        assert (body["symbol"], body["source"], body["currency"], body["exchange"]) == (
            symbol, "twelvedata", currency, mic)
        assert body["price"] == pytest.approx(price, abs=1e-5)
        change = MARKET.quote(symbol, WEDNESDAY).change / MARKET.currency(symbol)[2]
        assert body["change"] == pytest.approx(change, abs=1e-5)
    assert served["VOD.L"]["currency"] == "GBP" and served["VOD.L"]["price"] < 10  # pounds, not pence
    assert served["VWRA.L"]["currency"] == "USD"  # a London ETF priced in dollars stays in dollars
    # Each listing was named by ticker and MIC, never by an exchange name; the key went in the header.
    sent = {(c.params.get("symbol"), c.params.get("mic_code")) for c in td_calls(fake, "quote")}
    assert sent == {("AAPL", None), ("SAP", "XETR"), ("MC", "XPAR"), ("ASML", "XAMS"), ("VOD", "XLON"),
                    ("VWRA", "XLON")}
    assert all("exchange" not in c.params and c.key_in == "header" for c in td_calls(fake))


@pytest.mark.parametrize("reported", ["GBp", "GBP"])
def test_twelvedata_london_in_pence_or_in_pounds_is_served_in_pounds(start, td, reported):
    td.lse_currency = reported
    user = user_of(start())
    price, currency = truth("VOD.L")
    quote = user.get("/api/quote/VOD.L").json()
    assert (quote["currency"], quote["price"]) == (currency, pytest.approx(price, abs=1e-7))
    history = user.get("/api/history/VOD.L?days=3").json()
    bars = MARKET.history("VOD.L", WEDNESDAY, 3).candles
    assert history["currency"] == "GBP"
    assert [c["close"] for c in history["candles"]] == pytest.approx([b.close / 100 for b in bars], abs=1e-7)


@pytest.mark.parametrize("symbol", ["SAP.DE", "AAPL", "ASML.AS"])
def test_twelvedata_history_is_completed_daily_bars_oldest_first(start, fake, symbol):
    user = user_of(start())
    answer = user.get(f"/api/history/{symbol}?days=5")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    _, currency = truth(symbol)
    assert (body["source"], body["currency"], body["interval"]) == ("twelvedata", currency, "1d")
    # The fake's series starts with today's bar while the venue trades; a daily bar it is not yet.
    expected = MARKET.history(symbol, WEDNESDAY, 5).candles
    assert [c["date"] for c in body["candles"]] == [c.date for c in expected]
    for got, bar in zip(body["candles"], expected, strict=True):
        assert [got[k] for k in ("open", "high", "low", "close")] == pytest.approx(
            [bar.open, bar.high, bar.low, bar.close], abs=1e-5)
        assert got["volume"] == bar.volume
    (call,) = td_calls(fake, "time_series")
    assert call.params["interval"] == "1day"


def test_twelvedata_search_lists_listings_in_stockcaches_own_form(start, fake):
    live = start()
    user = user_of(live)
    token = user.token
    url = live.url + "/finnhub/api/v1/search"  # search is served over HTTP by the drop-ins
    found = requests.get(url, params={"q": "SAP", "token": token}, timeout=30).json()["result"]
    symbols = {hit["symbol"] for hit in found}
    assert {"SAP.DE", "SAP.F", "SAP"} <= symbols
    assert symbols <= set(MARKET.listings())  # every hit is a listing, written with its venue's suffix
    vodafone = requests.get(url, params={"q": "vodafone", "token": token}, timeout=30).json()["result"]
    assert "VOD.L" in {hit["symbol"] for hit in vodafone}
    assert len(td_calls(fake, "symbol_search")) == 2


# -- errors, in both status styles -----------------------------------------------------------------


@STYLES
def test_twelvedata_bad_key_is_an_upstream_error(start, td, style):
    td.error_status = style
    answer = user_of(start(twelvedata_api_key="not-the-key")).get("/api/quote/AAPL")
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_error"
    assert "not-the-key" not in answer.text


@STYLES
def test_twelvedata_minute_limit_waits_for_the_next_minute_then_serves(start, fake, td, clock, style):
    td.error_status = style
    td.set_limits(per_minute=1, per_day=None)
    user = user_of(start())
    assert user.get("/api/quote/AAPL").status_code == 200
    limited = user.get("/api/quote/MSFT")
    assert limited.status_code == 503 and limited.json()["error"]["code"] == "rate_limited"
    assert limited.headers["Retry-After"] == "40"  # the rest of the clock minute
    calls = len(td_calls(fake))
    assert user.get("/api/quote/IBM").status_code == 503  # the pause holds: no call is spent on it
    assert len(td_calls(fake)) == calls
    clock.advance(41)
    answer = user.get("/api/quote/IBM")
    assert answer.status_code == 200 and answer.json()["source"] == "twelvedata"


@STYLES
def test_twelvedata_day_limit_waits_until_the_utc_day_ends(start, fake, td, clock, style):
    td.error_status = style
    td.set_limits(per_minute=None, per_day=1)
    user = user_of(start())
    assert user.get("/api/quote/AAPL").status_code == 200
    limited = user.get("/api/quote/MSFT")
    assert limited.status_code == 503 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) == math.ceil(MIDNIGHT - WEDNESDAY)
    calls = len(td_calls(fake))
    clock.advance(1800)  # half an hour later the day's credits are still spent: no call is made
    assert user.get("/api/quote/IBM").status_code == 503
    assert len(td_calls(fake)) == calls


@STYLES
def test_twelvedata_unknown_symbol_is_found_unknown_by_the_next_provider(start, fake, td, style):
    td.error_status = style
    user = user_of(start(alphavantage_api_key=AV_KEY))
    answer = user.get("/api/quote/ZZZZ1")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_found"
    assert len(td_calls(fake, "quote")) == 1 and fake.calls("alphavantage", symbol="ZZZZ1") == 1


@STYLES
def test_twelvedata_unknown_symbol_alone_is_a_refusal_not_a_guess(start, td, style):
    # Twelve Data's 404 means "not found, or not on your plan": alone it cannot say which.
    td.error_status = style
    answer = user_of(start()).get("/api/quote/ZZZZ1")
    assert answer.status_code == 502
    assert "twelvedata" in answer.json()["error"]["message"] and "plan" in answer.json()["error"]["message"]


@STYLES
def test_twelvedata_plan_refusal_is_remembered_per_symbol(start, fake, td, style):
    td.error_status = style
    td.set_off_plan(["NESN.SW"])
    user = user_of(start())
    first = user.get("/api/quote/NESN.SW")
    assert first.status_code == 502 and first.json()["error"]["symbol"] == "NESN.SW"
    assert len(td_calls(fake)) == 1
    again = user.get("/api/quote/NESN.SW")
    assert again.status_code == 502 and len(td_calls(fake)) == 1  # remembered: no second call
    assert user.get("/api/history/NESN.SW?days=3").status_code == 502 and len(td_calls(fake)) == 1
    # The refusal is the symbol's: the provider is healthy for everyone else.
    assert user.get("/api/quote/SAP.DE").status_code == 200 and len(td_calls(fake)) == 2


@STYLES
def test_twelvedata_plan_refusal_moves_the_symbol_to_the_next_provider(start, fake, td, style):
    td.error_status = style
    td.set_off_plan(["SAP.DE"])
    live = start(alphavantage_api_key=AV_KEY)
    user, admin = user_of(live), live.add_user("root", admin=True)
    price, _ = truth("SAP.DE")
    body = user.get("/api/quote/SAP.DE").json()
    assert (body["source"], body["currency"]) == ("alphavantage", "EUR")
    assert body["price"] == pytest.approx(price, abs=1e-5)
    assert admin.delete("/api/cache?pattern=quote:SAP.DE*").json()["deleted"] == 1
    assert user.get("/api/quote/SAP.DE").json()["source"] == "alphavantage"
    assert user.get("/api/history/SAP.DE?days=3").json()["source"] == "alphavantage"
    assert len(td_calls(fake)) == 1  # asked once; afterwards the route skipped it for this symbol


# -- routes and budgets ----------------------------------------------------------------------------


def _env(tmp_path, fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {"STOCKCACHE_DATA_DIR": str(tmp_path / "env"), "STOCKCACHE_REFRESH": "off", "STOCKCACHE_PORT": "0",
            "FINNHUB_API_KEY": FINNHUB_KEY, "ALPHAVANTAGE_API_KEY": AV_KEY, "TWELVEDATA_API_KEY": TD_KEY,
            "STOCKCACHE_FINNHUB_URL": fake.finnhub_url, "STOCKCACHE_ALPHAVANTAGE_URL": fake.alphavantage_url,
            "STOCKCACHE_TWELVEDATA_URL": fake.url("twelvedata"), "STOCKCACHE_FX_URL": fake.url("frankfurter"),
            "STOCKCACHE_ALPHAVANTAGE_PER_SECOND": "0", "STOCKCACHE_TWELVEDATA_PER_MINUTE": "0", **extra}


def test_twelvedata_default_route_after_finnhub_for_us_quotes_first_for_europe_and_history(tmp_path, fake, clock):
    live = start_service(Settings.from_env(_env(tmp_path, fake)), clock=clock)
    try:
        user = user_of(live)
        assert user.get("/api/quote/AAPL").json()["source"] == "finnhub"
        assert user.get("/api/quote/SAP.DE").json()["source"] == "twelvedata"
        assert user.get("/api/history/AAPL?days=3").json()["source"] == "twelvedata"
        assert fake.calls("alphavantage") == 0
    finally:
        live.stop()


@pytest.mark.parametrize(("route", "us", "europe"), [("twelvedata,finnhub", "twelvedata", "twelvedata"),
                                                     ("alphavantage,twelvedata", "alphavantage", "alphavantage"),
                                                     ("finnhub", "finnhub", None)])
def test_twelvedata_route_setting_orders_the_providers(tmp_path, fake, clock, route, us, europe):
    settings = Settings.from_env(_env(tmp_path, fake, STOCKCACHE_ROUTE_QUOTE=route))
    live = start_service(settings, clock=clock)
    try:
        user = user_of(live)
        assert user.get("/api/quote/AAPL").json()["source"] == us
        answer = user.get("/api/quote/SAP.DE")
        if europe is None:  # Finnhub's free plan does not reach Xetra, and the route names no one else
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_covered"
        else:
            assert answer.json()["source"] == europe
        assert (len(td_calls(fake, "quote")) > 0) == ("twelvedata" in (us, europe))
        # The quote route leaves the other kinds' default routes alone: history is Twelve Data's first.
        assert user.get("/api/history/AAPL?days=3").json()["source"] == "twelvedata"
    finally:
        live.stop()


def test_twelvedata_budget_counts_credits_and_stops_before_the_upstream_does(start, fake, td):
    user = user_of(start(twelvedata_per_minute=3, twelvedata_per_day=800))
    assert [user.get(f"/api/quote/{s}").status_code for s in ("AAPL", "MSFT", "IBM")] == [200, 200, 200]
    answer = user.get("/api/quote/KO")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "rate_limited"
    assert len(td_calls(fake)) == 3 and td.credits() == 3  # refused here, not by Twelve Data


def test_twelvedata_profile_budget_counts_its_ten_credits(start, fake, td):
    td.plan = "grow"
    user = user_of(start(twelvedata_plan="grow", twelvedata_per_minute=10))
    profile = user.get("/api/profile/SAP.DE")
    assert profile.status_code == 200 and profile.json()["source"] == "twelvedata"
    assert td.credits() == 10
    answer = user.get("/api/quote/SAP.DE")  # the minute's 10 credits are spent by the profile
    assert answer.status_code == 503 and len(td_calls(fake)) == 1


# -- many symbols per call -------------------------------------------------------------------------


def test_twelvedata_batch_of_cold_symbols_is_one_call_with_each_symbols_own_answer(start, fake, td):
    user = user_of(start())
    symbols = ["AAPL", "MSFT", "SAP.DE", "VOD.L", "ZZZZ1"]
    body = user.get("/api/quotes?symbols=" + ",".join(symbols)).json()
    assert set(body["quotes"]) == {"AAPL", "MSFT", "SAP.DE", "VOD.L"} and set(body["errors"]) == {"ZZZZ1"}
    for symbol, quote in body["quotes"].items():
        price, currency = truth(symbol)
        assert (quote["currency"], quote["source"]) == (currency, "twelvedata")
        assert quote["price"] == pytest.approx(price, abs=1e-5)
    assert len(td_calls(fake, "quote")) == 1 and td.credits() == 5


def test_twelvedata_batch_joins_a_symbol_already_in_flight_instead_of_asking_twice(start, fake):
    user = user_of(start())
    fake.set_fault("hang", provider="twelvedata")  # every request is held until released
    answers: dict[str, requests.Response] = {}

    def ask(name: str, path: str) -> None:
        answers[name] = user.get(path)

    single = threading.Thread(target=ask, args=("single", "/api/quote/AAPL"))
    batch = threading.Thread(target=ask, args=("batch", "/api/quotes?symbols=AAPL,MSFT,IBM"))
    single.start()
    try:
        assert fake.wait_hanging(1, timeout=10)
        batch.start()
        assert fake.wait_hanging(2, timeout=10)  # AAPL's request, and one for the two symbols not in flight
    finally:
        fake.clear_faults()
        fake.release_hangs()
        single.join(timeout=30)
        if batch.is_alive():
            batch.join(timeout=30)
    assert answers["single"].status_code == 200
    assert set(answers["batch"].json()["quotes"]) == {"AAPL", "MSFT", "IBM"}
    assert [sorted(str(c.symbol).split(",")) for c in td_calls(fake, "quote")] == [["AAPL"], ["IBM", "MSFT"]]


def _sent(call: Any) -> list[str]:
    """The symbols one logged Twelve Data call carried (``symbol=A,B,C``)."""
    return str(call.symbol).split(",")


def test_twelvedata_batch_larger_than_the_credits_left_is_cut_to_them_and_the_rest_refused_one_by_one(
        start, fake, td):
    td.set_limits(per_minute=8, per_day=800)  # the fake refuses what the real Basic plan refuses
    user = user_of(start(twelvedata_per_minute=8, twelvedata_per_day=800))
    first = user.get("/api/quotes?symbols=AAPL,MSFT,IBM,KO,NVDA").json()
    assert set(first["quotes"]) == {"AAPL", "MSFT", "IBM", "KO", "NVDA"}  # 5 of the minute's 8 credits
    wanted = ["GOOGL", "AMZN", "TSLA", "META", "JPM", "V"]
    body = user.get("/api/quotes?symbols=" + ",".join(wanted)).json()
    calls = td_calls(fake, "quote")
    assert len(calls) == 2 and len(_sent(calls[1])) == 3  # cut to the 3 credits left, in one call
    served = {s for s in wanted if s.upper() in _sent(calls[1])}
    assert set(body["quotes"]) == served
    for symbol in served:
        assert body["quotes"][symbol]["price"] == pytest.approx(truth(symbol)[0], abs=1e-5)
    # The other three are each refused by the budget, on their own, before any call.
    assert set(body["errors"]) == set(wanted) - served
    assert {e["code"] for e in body["errors"].values()} == {"rate_limited"}
    assert all(e["retry_after"] >= 1 for e in body["errors"].values())
    # Every call was paid for: Twelve Data charged each symbol sent and refused nothing (0 overruns).
    assert td.credits() == sum(len(_sent(c)) for c in td_calls(fake)) == 8


def test_twelvedata_batch_route_setting_sends_the_batch_to_twelvedata_and_a_refusal_on_alone(
        tmp_path, fake, clock, td):
    td.set_off_plan(["IBM"])
    live = start_service(Settings.from_env(_env(tmp_path, fake, STOCKCACHE_ROUTE_QUOTE="twelvedata,finnhub")),
                         clock=clock)
    try:
        body = user_of(live).get("/api/quotes?symbols=AAPL,MSFT,IBM,KO").json()
        assert body["errors"] == {}
        assert {s: q["source"] for s, q in body["quotes"].items()} == {
            "AAPL": "twelvedata", "MSFT": "twelvedata", "IBM": "finnhub", "KO": "twelvedata"}
        assert [sorted(_sent(c)) for c in td_calls(fake, "quote")] == [["AAPL", "IBM", "KO", "MSFT"]]
        assert fake.calls("finnhub", "quote") == 1 and fake.calls("finnhub", "quote", "IBM") == 1
    finally:
        live.stop()


def test_twelvedata_batch_route_setting_finnhub_first_asks_finnhub_one_by_one(tmp_path, fake, clock):
    live = start_service(Settings.from_env(_env(tmp_path, fake, STOCKCACHE_ROUTE_QUOTE="finnhub,twelvedata")),
                         clock=clock)
    try:
        body = user_of(live).get("/api/quotes?symbols=AAPL,MSFT,IBM").json()
        assert {q["source"] for q in body["quotes"].values()} == {"finnhub"} and body["errors"] == {}
        assert fake.calls("finnhub", "quote") == 3 and td_calls(fake, "quote") == []
    finally:
        live.stop()


HELD = ["AAPL", "MSFT", "IBM", "KO", "NVDA", "GOOGL", "AMZN", "TSLA", "META", "JPM"]


def _refresher(live: Live, clock: FakeClock) -> Refresher:
    """The service's refresher, run by hand (no thread), holding :data:`HELD` in one watchlist."""
    store = live.runtime.store
    owner = store.create_user("holder", "unused-hash")
    for symbol in HELD:
        store.add_watch(owner.id, symbol)
    return refresher_from_settings(live.runtime.service, store.held_symbol_counts, clock=clock)


def test_twelvedata_refresher_refreshes_held_symbols_in_one_call_per_kind(start, fake, td, clock):
    live = start(refresh_hours="always")
    _refresher(live, clock).run_once()
    assert [sorted(_sent(c)) for c in td_calls(fake, "quote")] == [sorted(HELD)]
    assert [sorted(_sent(c)) for c in td_calls(fake, "time_series")] == [sorted(HELD)]
    body = user_of(live).get("/api/quotes?symbols=" + ",".join(HELD)).json()
    assert {q["cache"] for q in body["quotes"].values()} == {"memory"} and len(td_calls(fake, "quote")) == 1


def test_twelvedata_refresher_batch_keeps_to_its_share_of_the_credits(start, fake, td, clock):
    td.set_limits(per_minute=8, per_day=800)
    live = start(refresh_hours="always", twelvedata_per_minute=8, twelvedata_per_day=800,
                 refresh_budget_share=0.5)
    _refresher(live, clock).run_once()
    calls = td_calls(fake)
    assert len(calls) == 1 and calls[0].endpoint == "quote" and len(_sent(calls[0])) == 4  # half of 8, one call
    assert td.credits() == 4
    # The other half of the minute is the users': a batch of four cold symbols is one call, paid in full.
    cold = [s for s in HELD if s not in _sent(calls[0])][:4]
    body = user_of(live).get("/api/quotes?symbols=" + ",".join(cold)).json()
    assert set(body["quotes"]) == set(cold) and td.credits() == 8
