"""The demo provider: deterministic, plausible, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import responses

from stockcache.errors import CurrencyNotFound, SymbolNotFound
from stockcache.kinds import KINDS
from stockcache.models import History, News, Profile, Quote
from stockcache.symbols import CRYPTO, listing
from stockcache.upstream.providers import DemoMarket, DemoProvider

MONDAY_MIDDAY = 1_767_009_600.0  # 2025-12-29T12:00Z, before the session opens
MONDAY_SESSION = 1_767_020_400.0  # 2025-12-29T15:00Z, mid-session
SATURDAY = 1_767_355_200.0  # 2026-01-02 is a Friday; this is 2026-01-03T12:00Z
SYMBOLS = ["AAPL", "MSFT", "BRK.B", "TSLA", "QWERTY", "BINANCE:BTCUSDT", "X", "SAP.DE", "VOD.L", "7203.T",
           "0700.HK", "^GSPC", "BTC-EUR", "SHIB-USD", "EURUSD=X", "GC=F"]


def params(kind: str) -> dict:
    return {"days": 100} if kind == "history" else {"days": 7, "q": "apple"} if kind == "news" else {"q": "apple"}


@pytest.fixture
def offline():
    """Any attempt at HTTP through requests fails: no URL is registered."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_demo_serves_every_kind_offline(offline, clock):
    provider = DemoProvider(clock=clock)
    assert provider.local and provider.kinds >= {"quote", "profile", "history", "news", "metric", "search"}
    assert provider.kinds <= set(KINDS)
    for kind in provider.kinds:
        # Rates are asked by base currency, listings by ISIN.
        subject = {"fx": "USD", "lookup": "US0378331005"}.get(kind, "AAPL")
        assert provider.produce(kind, subject, params(kind))
    assert len(offline.calls) == 0


def test_demo_is_deterministic(clock):
    a, b = DemoProvider(clock=clock), DemoProvider(clock=clock)
    for symbol in SYMBOLS:
        for kind in sorted(DemoProvider.kinds - {"fx", "lookup"}):
            assert a.produce(kind, symbol, params(kind)) == b.produce(kind, symbol, params(kind))
    assert a.produce("fx", "GBP", {}) == b.produce("fx", "GBP", {})
    assert a.produce("lookup", "DE0007164600", {}) == b.produce("lookup", "DE0007164600", {})


def test_demo_price_moves_over_the_day_but_not_between_calls():
    market = DemoMarket()
    start = MONDAY_SESSION
    prices = {market.quote("AAPL", start + minute * 60).price for minute in range(0, 300, 5)}
    assert len(prices) > 10
    assert market.quote("AAPL", start) == market.quote("AAPL", start + 30)  # same minute


@pytest.mark.parametrize("now", [MONDAY_MIDDAY, MONDAY_SESSION, SATURDAY])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_demo_quote_plausible(symbol, now):
    quote = DemoProvider(clock=lambda: now).produce("quote", symbol, {})
    assert isinstance(quote, Quote) and quote.symbol == symbol
    assert quote.price > 0 and quote.previous_close > 0
    assert quote.high >= quote.price >= quote.low > 0
    assert quote.high >= quote.open >= quote.low
    assert quote.change == pytest.approx(quote.price - quote.previous_close, abs=0.011)
    assert abs(quote.change_percent) < 15
    assert quote.timestamp <= now


def test_demo_known_names_are_realistic_and_marked(clock):
    provider = DemoProvider(clock=clock)
    profile = provider.produce("profile", "AAPL", {})
    assert isinstance(profile, Profile)
    assert profile.name == "Apple Inc (demo)" and profile.exchange.startswith("NASDAQ")
    assert 100 < provider.produce("quote", "AAPL", {}).price < 500
    assert 1e12 < profile.market_cap < 6e12
    assert provider.produce("profile", "QWERTY", {}).name.endswith("(demo)")


@pytest.mark.parametrize("now", [MONDAY_MIDDAY, MONDAY_SESSION, SATURDAY])
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_demo_history_100_trading_days_consistent_with_quote(symbol, now):
    provider = DemoProvider(clock=lambda: now)
    history = provider.produce("history", symbol, {"days": 100})
    assert isinstance(history, History) and len(history.candles) == 100
    dates = [date.fromisoformat(c.date) for c in history.candles]
    assert dates == sorted(set(dates)) and all(DemoMarket().is_trading_day(symbol, d) for d in dates)
    if listing(symbol).asset != CRYPTO and "BINANCE:" not in symbol:
        assert all(d.weekday() < 5 for d in dates)
    assert dates[-1] < datetime.fromtimestamp(now, UTC).date()
    for candle in history.candles:
        assert candle.high >= max(candle.open, candle.close) and candle.low <= min(candle.open, candle.close)
        assert candle.low > 0 and candle.volume >= 0
    assert history.candles[-1].close == provider.produce("quote", symbol, {}).previous_close
    assert provider.produce("history", symbol, {"days": 5}).candles == history.candles[-5:]


def test_demo_news_handful_newest_first_marked(clock):
    news = DemoProvider(clock=clock).produce("news", "AAPL", {"days": 30})
    assert isinstance(news, News) and 2 <= len(news.articles) <= 6
    stamps = [a.published_at for a in news.articles]
    assert stamps == sorted(stamps, reverse=True)
    for article in news.articles:
        assert article.headline.startswith("[demo] ")
        assert article.url.startswith("https://example.com/")
        assert article.published_at.endswith("Z")


def test_demo_metric_and_search(clock):
    provider = DemoProvider(clock=clock)
    metric = provider.produce("metric", "MSFT", {})
    assert metric["symbol"] == "MSFT"
    m = metric["metrics"]
    assert m["52_week_high"] > m["52_week_low"] > 0 and m["market_cap"] > 0
    assert provider.produce("search", "", {"q": "apple"})[0] == {
        "symbol": "AAPL", "name": "Apple Inc (demo)", "type": "Common Stock"}
    assert provider.produce("search", "", {"q": "ZZZZ1"}) == []


# Not analysis: it is written from the context the service read, which has said whether the symbol exists
# (beside real market data the demo writes analyses of listings it does not know).
@pytest.mark.parametrize("kind", sorted(DemoProvider.kinds - {"search", "fx", "analysis", "lookup"}))
def test_demo_unknown_symbols_are_not_found(clock, kind):
    with pytest.raises(SymbolNotFound) as info:
        DemoProvider(clock=clock).produce(kind, "ZZZZ1", params(kind))
    assert info.value.fields["symbol"] == "ZZZZ1"


def test_demo_rates_of_an_unknown_currency_are_not_found(clock):
    with pytest.raises(CurrencyNotFound) as info:
        DemoProvider(clock=clock).produce("fx", "XYZ", {})
    assert info.value.fields["currency"] == "XYZ"


def test_demo_has_no_network_methods(clock):
    provider = DemoProvider(clock=clock)
    with pytest.raises(NotImplementedError):
        provider.build_request("quote", "AAPL", {})
    with pytest.raises(NotImplementedError):
        provider.parse("quote", "AAPL", {}, 200, {}, b"{}")


# -- the world: listings, currencies, classes, calendars, FX --------------------------------------------

THANKSGIVING_2026 = date(2026, 11, 26)
XMAS_EVE_2026 = date(2026, 12, 24)
WINTER_MONDAY = date(2025, 12, 29)  # CET = UTC+1, JST = UTC+9


def utc(day: date, hh: int, mm: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC).timestamp()


def isin_check_digit_ok(isin: str) -> bool:
    """ISO 6166: letters to numbers (A=10), then Luhn over the digits."""
    digits = "".join(str(int(ch, 36)) for ch in isin[:-1]) + isin[-1]
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n // 10 + n % 10
    return len(isin) == 12 and total % 10 == 0


@pytest.mark.parametrize(("symbol", "currency", "low", "high"), [
    ("AAPL", ("USD", "USD", 1), 100, 500),
    ("SAP.DE", ("EUR", "EUR", 1), 100, 400),
    ("SAP.F", ("EUR", "EUR", 1), 100, 400),
    ("VOD.L", ("GBp", "GBP", 100), 30, 200),  # pence: 0.30 .. 2.00 GBP
    ("AZN.L", ("GBp", "GBP", 100), 5000, 20000),
    ("ISF.L", ("GBp", "GBP", 100), 400, 2000),  # an ETF priced in pence
    ("VWRA.L", ("USD", "USD", 1), 60, 300),  # a London ETF priced in dollars
    ("VUSA.L", ("GBP", "GBP", 1), 40, 200),  # and one in pounds
    ("ABCD.L", ("GBp", "GBP", 100), 10, 10000),  # a generated London share: pence too
    ("MC.PA", ("EUR", "EUR", 1), 300, 1200),
    ("ASML.AS", ("EUR", "EUR", 1), 300, 1400),
    ("ENEL.MI", ("EUR", "EUR", 1), 2, 15),
    ("NESN.SW", ("CHF", "CHF", 1), 40, 160),
    ("ERIC-B.ST", ("SEK", "SEK", 1), 40, 160),
    ("RY.TO", ("CAD", "CAD", 1), 80, 350),
    ("0700.HK", ("HKD", "HKD", 1), 200, 900),
    ("7203.T", ("JPY", "JPY", 1), 1400, 5600),
    ("^GSPC", ("USD", "USD", 1), 5000, 7000),
    ("^GDAXI", ("EUR", "EUR", 1), 15000, 25000),
    ("^FTSE", ("GBP", "GBP", 1), 6500, 10500),
    ("^N225", ("JPY", "JPY", 1), 28000, 50000),
    ("BTC-USD", ("USD", "USD", 1), 10000, 200000),
    ("ETH-EUR", ("EUR", "EUR", 1), 1000, 10000),
    ("DOGE-USD", ("USD", "USD", 1), 0.01, 1),
    ("EURUSD=X", ("USD", "USD", 1), 1.0, 1.25),
    ("GC=F", ("USD", "USD", 1), 1000, 5000),
])
def test_demo_listing_prices_are_plausible_in_their_reported_currency(symbol, currency, low, high):
    market = DemoMarket()
    assert market.currency(symbol) == currency
    start = date(2025, 1, 1)
    closes = [market.candle(symbol, day).close for day in (start + timedelta(days=d) for d in range(0, 730, 7))
              if market.is_trading_day(symbol, day)]
    assert closes and low <= min(closes) and max(closes) <= high


def test_demo_profile_says_how_the_listing_is_priced(clock):
    market = DemoMarket(marked=False)
    vod = market.profile("VOD.L", clock())
    assert (vod.name, vod.currency, vod.country, vod.exchange) == (
        "Vodafone Group PLC", "GBp", "GB", "LONDON STOCK EXCHANGE")
    # Market cap is in pounds: pence price / 100 * shares, not 100x too big.
    pence = market.quote("VOD.L", clock()).previous_close
    assert vod.market_cap == pytest.approx(pence / 100 * vod.shares_outstanding, rel=0.01)
    assert market.profile("SAP.DE", clock()).currency == "EUR"
    assert market.profile("AAPL", clock()).currency == "USD"


def test_demo_isins_are_real_and_map_to_their_listings():
    market = DemoMarket()
    assert market.isin("AAPL") == "US0378331005" and market.isin("SAP.DE") == "DE0007164600"
    assert market.listings_by_isin("DE0007164600") == ("SAP.DE", "SAP.F")
    assert market.listings_by_isin("CA82509L1076") == ("SHOP", "SHOP.TO")  # one share, two venues
    assert market.currency("SAP") == ("USD", "USD", 1)  # the ADR is not the Xetra listing
    isins = {market.isin(symbol) for symbol in market.listings()}
    assert None not in isins and len(isins) >= 50
    assert [isin for isin in isins if not isin_check_digit_ok(isin)] == []


def test_demo_one_company_on_two_venues_closes_alike():
    market = DemoMarket()
    assert market.candle("SAP.F", WINTER_MONDAY).close == market.candle("SAP.DE", WINTER_MONDAY).close


def test_demo_us_listings_have_no_bar_on_thanksgiving():
    market = DemoMarket()
    friday_session = utc(date(2026, 11, 27), 16)
    history = market.history("AAPL", friday_session, 5)
    dates = [c.date for c in history.candles]
    assert THANKSGIVING_2026.isoformat() not in dates and dates[-1] == "2026-11-25"
    assert market.quote("AAPL", friday_session).previous_close == history.candles[-1].close
    # Thanksgiving itself belongs to the session before it.
    assert market.session_day(utc(THANKSGIVING_2026, 17), "AAPL") == date(2026, 11, 25)
    assert "2026-11-26" in [c.date for c in market.history("SAP.DE", friday_session, 5).candles]  # Xetra traded


def test_demo_xetra_has_no_bar_on_christmas_eve_and_crypto_trades_every_day():
    market = DemoMarket()
    after = utc(date(2026, 12, 30), 12)
    xetra = [c.date for c in market.history("SAP.DE", after, 5).candles]
    assert "2026-12-24" not in xetra and "2026-12-25" not in xetra and "2026-12-28" in xetra
    crypto = [c.date for c in market.history("BTC-USD", after, 10).candles]
    assert crypto == [(date(2026, 12, 20) + timedelta(days=d)).isoformat() for d in range(10)]
    assert market.is_trading_day("ETH-EUR", XMAS_EVE_2026) and not market.is_trading_day("SAP.DE", XMAS_EVE_2026)


def test_demo_session_follows_the_venues_hours_and_time_zone():
    market = DemoMarket()
    before_xetra = utc(WINTER_MONDAY, 7, 30)  # 08:30 in Frankfurt
    during_xetra = utc(WINTER_MONDAY, 9, 0)  # 10:00 in Frankfurt, 04:00 in New York
    assert market.session_day(before_xetra, "SAP.DE") == date(2025, 12, 23)  # 24th to 26th: Xetra closed
    assert market.session_day(during_xetra, "SAP.DE") == WINTER_MONDAY
    assert market.quote("SAP.DE", during_xetra).timestamp == int(during_xetra)
    # New York has not opened: its quote is Friday's close, stamped at Friday's close (16:00 EST).
    aapl = market.quote("AAPL", during_xetra)
    friday = date(2025, 12, 26)
    assert aapl.price == market.candle("AAPL", friday).close and aapl.timestamp == utc(friday, 21)
    assert market.quote("AAPL", utc(WINTER_MONDAY, 14, 29)).timestamp == utc(friday, 21)  # 09:29 EST
    assert market.quote("AAPL", utc(WINTER_MONDAY, 14, 45)).timestamp == utc(WINTER_MONDAY, 14, 45)


def test_demo_lunch_break_holds_the_price():
    market = DemoMarket()
    lunch_starts = utc(WINTER_MONDAY, 2, 30)  # 11:30 in Tokyo
    at_lunch = [market.quote("7203.T", lunch_starts + minutes * 60) for minutes in (1, 30, 59)]
    assert len({(q.price, q.timestamp) for q in at_lunch}) == 1 and at_lunch[0].timestamp == lunch_starts
    assert market.quote("7203.T", utc(WINTER_MONDAY, 3, 40)).timestamp == utc(WINTER_MONDAY, 3, 40)


def test_demo_crypto_moves_at_the_weekend_and_agrees_across_quote_currencies():
    market = DemoMarket()
    saturday = utc(date(2026, 1, 3), 10)
    assert market.quote("BTC-USD", saturday).price != market.quote("BTC-USD", saturday + 3600).price
    for now in (saturday, MONDAY_SESSION, utc(WINTER_MONDAY, 15, 30)):  # 15:30 UTC: the ECB has published
        usd = market.quote("BTC-USD", now).price
        for quote in ("EUR", "GBP", "JPY", "CHF"):
            rate = market.fx_rate("USD", quote, now).rate
            assert market.quote(f"BTC-{quote}", now).price == pytest.approx(usd * rate, abs=0.006 * rate + 0.006)
    assert market.quote("BINANCE:BTCUSDT", saturday).price == market.quote("BTC-USD", saturday).price
    eth_btc = market.quote("ETH-BTC", saturday).price
    assert eth_btc == pytest.approx(market.quote("ETH-USD", saturday).price / market.quote("BTC-USD", saturday).price,
                                    rel=1e-3)
    # A crypto day closes at 24:00 UTC; the next day opens where it closed.
    sunday = date(2026, 1, 4)
    assert market.candle("SOL-EUR", sunday).open == market.candle("SOL-EUR", date(2026, 1, 3)).close


def test_demo_ecb_rates_are_published_on_target_days_only():
    market = DemoMarket()
    friday, saturday = date(2026, 1, 2), date(2026, 1, 3)
    assert market.ecb_publication(saturday) == friday
    with pytest.raises(ValueError):
        market.ecb_rates(saturday)
    assert market.ecb_publication(date(2025, 12, 26)) == date(2025, 12, 24)  # Christmas holidays
    assert market.ecb_publication(date(2026, 4, 6)) == date(2026, 4, 2)  # Good Friday, Easter Monday
    rates = market.ecb_rates(friday)
    assert len(rates) >= 29 and {"USD", "GBP", "CHF", "SEK", "JPY", "HKD", "CAD"} <= set(rates)
    assert "EUR" not in rates and "BGN" not in rates  # Bulgaria uses the euro from 2026
    assert "BGN" in market.ecb_rates(date(2025, 12, 30))
    # Published at 16:00 in Frankfurt: before that, yesterday's rates are the latest.
    assert market.ecb_latest(utc(WINTER_MONDAY, 14, 59))[0] == date(2025, 12, 24)
    assert market.ecb_latest(utc(WINTER_MONDAY, 15, 0))[0] == WINTER_MONDAY


def test_demo_ecb_rates_move_in_plausible_ranges_and_cross_through_eur():
    market = DemoMarket()
    day, usd, gbp = date(2025, 1, 2), [], []
    while day < date(2027, 1, 1):
        if market.ecb_publication(day) == day:
            rates = market.ecb_rates(day)
            usd.append(rates["USD"])
            gbp.append(rates["GBP"])
        day += timedelta(days=1)
    assert 1.05 <= min(usd) and max(usd) <= 1.20 and max(usd) - min(usd) > 0.05
    assert 0.83 <= min(gbp) and max(gbp) <= 0.88
    at = utc(date(2026, 1, 3), 12)
    rates = market.ecb_rates(date(2026, 1, 2))
    cross = market.fx_rate("USD", "GBP", at)
    assert cross.date == date(2026, 1, 2) and cross.rate == rates["GBP"] / rates["USD"]
    assert market.fx_rate("EUR", "USD", at).rate == rates["USD"]
    with pytest.raises(ValueError):
        market.fx_rate("USD", "XXX", at)


@pytest.mark.parametrize("symbol", ["XXXY", "QWERTY", "^XYZ", "FOO-USD", "ABCD.L", "ZZZ", "AZZZZ", "NOPE=F"])
def test_demo_knows_every_symbol_but_zzzz_and_the_contracts_xxxx(symbol, clock):
    assert DemoProvider(clock=clock).produce("quote", symbol, {}).price > 0


@pytest.mark.parametrize("symbol", ["ZZZZ", "ZZZZ1", "ZZZZ.DE", "ZZZZ-USD"])
def test_demo_zzzz_symbols_are_not_found(symbol, clock):
    with pytest.raises(SymbolNotFound):
        DemoProvider(clock=clock).produce("quote", symbol, {})


def test_demo_search_finds_listings_on_every_venue(clock):
    hits = DemoProvider(clock=clock).produce("search", "", {"q": "sap"})
    assert [hit["symbol"] for hit in hits][:3] == ["SAP", "SAP.DE", "SAP.F"]  # the US ADR, Xetra, Frankfurt
    assert DemoProvider(clock=clock).produce("search", "", {"q": "vanguard"})[0]["type"] == "ETF"


def test_demo_is_the_same_in_another_process():
    script = ("import json; from stockcache.upstream.providers import DemoMarket; m = DemoMarket(marked=False); "
              "print(json.dumps([m.quote(s, 1767020400.0).to_dict() for s in ('AAPL', 'VOD.L', 'BTC-EUR', '^N225')]"
              " + [m.fx_rate('USD', 'GBP', 1767020400.0).rate]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).parents[2], env={**os.environ, "PYTHONHASHSEED": "12345"})
    market = DemoMarket(marked=False)
    here = [market.quote(s, 1767020400.0).to_dict() for s in ("AAPL", "VOD.L", "BTC-EUR", "^N225")]
    assert json.loads(out.stdout) == [*here, market.fx_rate("USD", "GBP", 1767020400.0).rate]


def test_demo_contract_examples_behave_as_the_contract_says(clock):
    """The contract's batch example answers XXXX with symbol_not_found; in demo mode it must too."""
    demo = DemoProvider(clock=clock)
    with pytest.raises(SymbolNotFound):
        demo.produce("quote", "XXXX", {})
    with pytest.raises(SymbolNotFound):
        demo.produce("quote", "ZZZZ1", {})
    assert demo.produce("quote", "XXXY", {}).price > 0  # only the example itself, not its neighbours
    assert demo.produce("quote", "AAPL", {}).price > 0
