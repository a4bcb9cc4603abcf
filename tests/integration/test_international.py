"""A European portfolio through real HTTP against the fake upstreams: right prices, right currencies, right totals.

The fake upstream answers as the real APIs do (Finnhub's free plan refuses
non-US listings, Alpha Vantage quotes London in pence and names the unit only
in its symbol search, Frankfurter carries the last ECB publication over
weekends and holidays), from the same deterministic market the tests compute
the expected figures from, independently of stockcache's code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket
from tests.integration.conftest import Api, Live, start_service, upstream_settings

# Wednesday 2026-11-25, 15:00 UTC: New York, Xetra and London all trading.
WEDNESDAY = datetime(2026, 11, 25, 15, 0, tzinfo=UTC).timestamp()
MARKET = DemoMarket(marked=False, unknown=())
HOLDINGS = [("AAPL", 10.0, 150.0), ("SAP.DE", 20.0, 180.0), ("VOD.L", 1000.0, 0.65)]  # cost in listing currency


@pytest.fixture
def world(tmp_path) -> Iterator[Callable[..., tuple[FakeUpstream, Live]]]:
    """world(at=..., **settings) -> (a fake upstream whose clock stands at ``at``, the service on it)."""
    started: list[tuple[FakeUpstream, Live]] = []

    def make(at: float = WEDNESDAY, **overrides: Any) -> tuple[FakeUpstream, Live]:
        fake = FakeUpstream(clock=lambda: at)
        fake.start()
        live = start_service(upstream_settings(tmp_path / f"w{len(started)}", fake, **overrides))
        started.append((fake, live))
        return fake, live

    yield make
    for fake, live in started:
        live.stop()
        fake.stop()


def _holder(live: Live, holdings=HOLDINGS) -> Api:
    user = live.add_user("alice")
    for symbol, shares, cost in holdings:
        answer = user.post("/api/portfolio", json={"symbol": symbol, "shares": shares, "cost_basis": cost})
        assert answer.status_code == 201, answer.text
    return user


def _truth(symbol: str, at: float = WEDNESDAY) -> tuple[float, str]:
    """(price in the major unit, its currency) as the fake's market has it, computed here from its own tables."""
    reported, major, factor = MARKET.currency(symbol)
    return MARKET.quote(symbol, at).price / factor, major


def _eur_per(currency: str, at: float = WEDNESDAY) -> float:
    """What one unit of ``currency`` is worth in EUR at the ECB publication in force at ``at``."""
    _, rates = MARKET.ecb_latest(at)
    return 1.0 if currency == "EUR" else 1.0 / rates[currency]


# -- a portfolio in EUR ---------------------------------------------------------------------------


def test_portfolio_of_us_xetra_and_london_listings_totals_in_eur_match_the_fakes_prices_and_ecb_rates(world):
    fake, live = world()
    body = _holder(live).get("/api/portfolio/performance?currency=EUR").json()
    assert body["errors"] == {}
    value = cost = day = 0.0
    by_symbol = {p["symbol"]: p for p in body["positions"]}
    for symbol, shares, cost_basis in HOLDINGS:
        price, currency = _truth(symbol)
        row = by_symbol[symbol]
        assert row["currency"] == currency and row["price"] == pytest.approx(price, abs=1e-9)
        assert row["value"] == pytest.approx(shares * price, abs=1e-4)
        assert row["fx_rate"] == pytest.approx(_eur_per(currency), rel=1e-7)
        assert row["value_base"] == pytest.approx(shares * price * _eur_per(currency), abs=1e-3)
        value += shares * price * _eur_per(currency)
        cost += shares * cost_basis * _eur_per(currency)
        change = MARKET.quote(symbol, WEDNESDAY).change / MARKET.currency(symbol)[2]
        day += shares * change * _eur_per(currency)
    assert by_symbol["VOD.L"]["currency"] == "GBP" and by_symbol["VOD.L"]["price"] < 10  # pounds, not pence
    totals = body["totals"]
    assert totals["currency"] == "EUR" and totals["complete"] is True
    assert totals["value"] == pytest.approx(value, abs=1e-3)
    assert totals["cost"] == pytest.approx(cost, abs=1e-3)
    assert totals["gain"] == pytest.approx(value - cost, abs=1e-3)
    assert totals["day_change"] == pytest.approx(day, abs=1e-3)
    assert body["fx"]["base"] == "EUR" and body["fx"]["date"] == "2026-11-25"
    # Finnhub's free plan was never asked for the Xetra or London listing.
    assert fake.calls("finnhub", symbol="SAP.DE") == fake.calls("finnhub", symbol="VOD.L") == 0


def test_portfolio_quotes_and_rates_are_asked_in_one_concurrent_batch(world):
    fake, live = world()
    user = live.add_user("alice")
    # Positions kept from an earlier day: adding them now would fetch (and cache) each quote.
    [alice] = [u for u in live.runtime.store.list_users() if u.username == "alice"]
    for symbol, shares, cost in HOLDINGS:
        live.runtime.store.add_position(alice.id, symbol, shares, cost)
    fake.set_fault("hang")  # every upstream request is held until released
    answers: list[requests.Response] = []
    page = threading.Thread(target=lambda: answers.append(user.get("/api/portfolio/performance?currency=CHF")))
    page.start()
    try:
        # AAPL (Finnhub), SAP.DE and VOD.L (Alpha Vantage) and the CHF rates all wait at once:
        # none of them waited for another to be answered first.
        assert fake.wait_hanging(4, timeout=5)
        assert fake.calls("frankfurter", symbol="CHF") == 1
    finally:
        fake.clear_faults()
        fake.release_hangs()
        page.join(timeout=30)
    body = answers[0].json()
    assert answers[0].status_code == 200 and body["totals"]["currency"] == "CHF", body


def test_portfolio_position_without_a_rate_is_left_out_of_every_total(world):
    fake, live = world()
    user = _holder(live)
    fake.set_fault("500", provider="frankfurter")  # no rates at all
    body = user.get("/api/portfolio/performance?currency=EUR").json()
    by_symbol = {p["symbol"]: p for p in body["positions"]}
    price, _ = _truth("SAP.DE")
    # Only SAP.DE is already in EUR: it alone is in the totals, its value and its cost alike.
    assert body["totals"]["complete"] is False
    assert body["totals"]["value"] == pytest.approx(20 * price, abs=1e-3)
    assert body["totals"]["cost"] == pytest.approx(20 * 180.0, abs=1e-6)
    assert body["totals"]["gain"] == pytest.approx(20 * price - 3600, abs=1e-3)
    assert set(body["errors"]) == {"AAPL", "VOD.L"}
    assert by_symbol["AAPL"]["value"] is not None and by_symbol["AAPL"]["value_base"] is None
    assert by_symbol["AAPL"]["fx_rate"] is None and by_symbol["SAP.DE"]["fx_rate"] == 1.0


def test_portfolio_base_currency_is_the_users_own_then_the_servers(world):
    fake, live = world(base_currency="GBP")
    user = _holder(live)
    assert user.get("/api/me").json()["base_currency"] == "GBP"  # the server's STOCKCACHE_BASE_CURRENCY
    assert user.get("/api/portfolio/performance").json()["totals"]["currency"] == "GBP"
    answer = user.put("/api/me", json={"base_currency": "eur"})
    assert answer.status_code == 200 and answer.json()["base_currency"] == "EUR"
    assert user.get("/api/portfolio/performance").json()["totals"]["currency"] == "EUR"
    assert user.get("/api/portfolio/performance?currency=USD").json()["totals"]["currency"] == "USD"
    other = live.add_user("bob")
    assert other.get("/api/me").json()["base_currency"] == "GBP"  # each user has their own
    assert user.put("/api/me", json={"base_currency": None}).json()["base_currency"] == "GBP"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"base_currency": "XYZ"}, 404, "currency_not_found"),
    ({"base_currency": "EURO"}, 400, "invalid_request"),
    ({"base_currency": "€"}, 400, "invalid_request"),
    ({"base_currency": 978}, 400, "invalid_request"),
    ({"base_currency": "EUR", "theme": "dark"}, 400, "invalid_request"),
    ({}, 400, "invalid_request"),
])
def test_portfolio_base_currency_that_is_not_one_is_refused_and_nothing_changes(world, body, status, code):
    _, live = world()
    user = live.add_user("alice")
    answer = user.put("/api/me", json=body)
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text
    assert user.get("/api/me").json()["base_currency"] == "USD"


@pytest.mark.parametrize(("query", "status", "code"), [
    ("currency=XYZ", 404, "currency_not_found"), ("currency=US", 400, "invalid_request"),
    ("currency=", 400, "invalid_request"), ("currency=%C2%A3", 400, "invalid_request"),
])
def test_portfolio_in_a_currency_that_is_not_one_is_a_clear_error(world, query, status, code):
    _, live = world()
    answer = _holder(live).get(f"/api/portfolio/performance?{query}")
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text


# -- coverage -------------------------------------------------------------------------------------


def test_non_us_listings_never_reach_finnhub_free_and_never_open_its_circuit(world):
    fake, live = world()
    user = live.add_user("alice")
    symbols = ["SAP.DE", "VOD.L", "MC.PA", "ASML.AS", "RY.TO", "SAP.F", "0700.HK", "AIR.PA"]
    batch = user.post("/api/batch-quotes", json={"tickers": symbols}).json()
    assert set(batch["quotes"]) == set(symbols) and batch["errors"] == {}
    assert {q["source"] for q in batch["quotes"].values()} == {"alphavantage"}
    for symbol, quote in batch["quotes"].items():
        price, currency = _truth(symbol)
        assert (quote["currency"], quote["price"]) == (currency, pytest.approx(price, abs=1e-9)), symbol
        assert quote["exchange"] == MARKET.instrument(symbol).mic
    assert fake.calls("finnhub") == 0
    stats = live.runtime.service.stats()["upstream"]["finnhub"]
    assert stats["circuit"] == "closed" and stats["errors"] == 0
    assert user.get("/api/quote/AAPL").json()["source"] == "finnhub"


def test_symbol_no_configured_provider_covers_is_symbol_not_covered_naming_the_key(world):
    fake, live = world(alphavantage_api_key="")
    user = live.add_user("alice")
    answer = user.get("/api/quote/SAP.DE")
    error = answer.json()["error"]
    assert answer.status_code == 404 and error["code"] == "symbol_not_covered" and error["symbol"] == "SAP.DE"
    # CoinGecko runs keyless beside the Finnhub key, and covers only crypto pairs.
    assert error["message"].startswith("SAP.DE (Xetra) is not covered by Finnhub's free plan or CoinGecko; "
                                       "set ALPHAVANTAGE_API_KEY or TWELVEDATA_API_KEY")
    batch = user.post("/api/batch-quotes", json={"tickers": ["AAPL", "VOD.L"]}).json()
    assert set(batch["quotes"]) == {"AAPL"} and batch["errors"]["VOD.L"]["code"] == "symbol_not_covered"
    assert fake.calls("finnhub", symbol="SAP.DE") == fake.calls("finnhub", symbol="VOD.L") == 0


# -- FX rates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "published"), [
    (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), "2026-11-27"),  # a Sunday: Friday's rates
    (datetime(2026, 11, 27, 12, 0, tzinfo=UTC), "2026-11-26"),  # Friday before the 16:00 CET publication
    (datetime(2026, 12, 27, 12, 0, tzinfo=UTC), "2026-12-24"),  # after Christmas (a TARGET holiday)
])
def test_fx_rate_on_a_weekend_or_holiday_is_the_last_publication_and_says_which(world, at, published):
    fake, live = world(at=at.timestamp())
    answer = live.add_user("alice").get("/api/fx/USD/EUR")
    body = answer.json()
    assert answer.status_code == 200 and (body["from"], body["to"], body["date"]) == ("USD", "EUR", published)
    # The rate is the upstream's own (Frankfurter rebases EUR rates to the base asked for).
    direct = requests.get(fake.url("frankfurter") + "/latest", params={"from": "USD"}, timeout=5).json()
    assert body["rate"] == direct["rates"]["EUR"] and body["source"] == "ecb" and body["stale"] is False


def test_fx_one_call_serves_every_pair_from_one_base(world):
    fake, live = world()
    user = live.add_user("alice")
    rates = {to: user.get(f"/api/fx/EUR/{to}").json() for to in ("USD", "GBP", "CHF", "JPY", "EUR")}
    _, ecb = MARKET.ecb_latest(WEDNESDAY)
    assert {to: body["rate"] for to, body in rates.items()} == {**{to: ecb[to] for to in ("USD", "GBP", "CHF",
                                                                                          "JPY")}, "EUR": 1.0}
    assert fake.calls("frankfurter") == 1
    assert rates["JPY"]["cache"] == "memory" and user.get("/api/fx/eur/usd").json()["to"] == "USD"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/fx/XYZ/EUR", 404, "currency_not_found"), ("/api/fx/USD/XYZ", 404, "currency_not_found"),
    ("/api/fx/US/EUR", 400, "invalid_request"), ("/api/fx/USD/EURO", 400, "invalid_request"),
    ("/api/fx/U$D/EUR", 400, "invalid_request"), ("/api/fx/%C3%BCSD/EUR", 400, "invalid_request"),
])
def test_fx_code_that_is_malformed_or_unknown_is_a_clear_error(world, path, status, code):
    _, live = world()
    answer = live.add_user("alice").get(path)
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text


# -- upstream defects, against a fake as unkind as the real APIs ------------------------------------


def test_alphavantage_news_no_articles_found_is_an_empty_list_served_from_the_cache(world):
    fake, live = world(finnhub_api_key="")  # Alpha Vantage is the news source
    user = live.add_user("alice")
    quiet = next(s for s in ("SAP.DE", "MC.PA", "AIR.PA", "ASML.AS", "VOD.L", "BP.L", "SIE.DE", "ALV.DE")
                 if not MARKET.news(s, WEDNESDAY - 86400, WEDNESDAY).articles)
    for cached in (False, True):
        answer = user.get(f"/api/news/{quiet}?days=1")
        body = answer.json()
        assert answer.status_code == 200 and body["articles"] == [], body
        assert (body["cache"] != "upstream") is cached
    assert fake.calls("alphavantage", "NEWS_SENTIMENT") == 1


def test_alphavantage_news_of_a_long_window_has_every_article_and_reads_every_timestamp(world):
    fake, live = world(finnhub_api_key="")
    assert fake.av_news_quirks  # time_published with a trailing Z or without seconds, now and then
    body = live.add_user("alice").get("/api/news/AAPL?days=365").json()
    stamps = [a["published_at"] for a in body["articles"]]
    assert len(stamps) > 50  # the fake, like the real feed, sends 50 unless asked for up to 1000
    assert stamps == sorted(stamps, reverse=True)
    assert all(s.endswith("Z") and len(s) == 20 for s in stamps)


def test_alphavantage_overview_fills_profile_and_key_figures_with_one_call(world):
    fake, live = world(finnhub_api_key="")
    user = live.add_user("alice")
    profile = user.get("/api/profile/IBM").json()
    assert profile["source"] == "alphavantage" and profile["currency"] == "USD"
    script = live.runtime.service.get_metric("IBM")
    assert script["cache"] == "memory" and script["metrics"]
    assert fake.calls("alphavantage", "OVERVIEW") == 1


def test_finnhub_empty_profile_of_a_known_symbol_asks_the_next_provider(world):
    fake, live = world()
    fake.set_no_fundamentals(["SPY"])
    answer = live.add_user("alice").get("/api/profile/SPY")
    assert fake.calls("finnhub", "stock/profile2", symbol="SPY") == 1
    assert fake.calls("alphavantage", "OVERVIEW", symbol="SPY") == 1  # asked before "not found"
    assert answer.status_code in (200, 404)
    assert answer.status_code == 404 or answer.json()["source"] == "alphavantage"


def test_finnhub_metric_without_figures_never_counts_against_finnhub(world):
    fake, live = world()
    fake.set_no_fundamentals(["SPY", "QQQ", "VOO", "DIA", "IWM", "VTI", "EEM"])
    service = live.runtime.service
    for symbol in ("SPY", "QQQ", "VOO", "DIA", "IWM", "VTI", "EEM"):
        try:
            service.get_metric(symbol)
        except Exception as exc:  # noqa: BLE001 - Alpha Vantage may have none either: not found, never a 500
            assert getattr(exc, "code", None) == "symbol_not_found", exc
    stats = service.stats()["upstream"]["finnhub"]
    assert stats["errors"] == 0 and stats["circuit"] == "closed"
    assert fake.calls("alphavantage", "OVERVIEW") == 7


def test_alphavantage_dropin_takes_alpha_vantages_own_suffixes_and_answers_in_the_quotes_currency(world):
    fake, live = world()
    live.runtime.store.create_user("script", "not-a-password-hash")
    token, _ = live.runtime.auth.create_api_token("script", label="drop-in")
    base = live.url + "/alphavantage/query"
    dex = requests.get(base, params={"function": "GLOBAL_QUOTE", "symbol": "SAP.DEX", "apikey": token},
                       timeout=10).json()["Global Quote"]
    price, _ = _truth("SAP.DE")
    assert dex["01. symbol"] == "SAP.DEX" and float(dex["05. price"]) == pytest.approx(price, abs=1e-4)
    lon = requests.get(base, params={"function": "GLOBAL_QUOTE", "symbol": "vod.lon", "apikey": token},
                       timeout=10).json()["Global Quote"]
    assert lon["01. symbol"] == "VOD.LON" and float(lon["05. price"]) == pytest.approx(_truth("VOD.L")[0], abs=1e-4)
    quote = live.api.as_user(token).get("/api/quote/VOD.L").json()
    assert float(lon["05. price"]) == pytest.approx(quote["price"], abs=1e-4)  # consistent with the quote
