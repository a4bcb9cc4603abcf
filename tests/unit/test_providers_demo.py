"""The demo provider: deterministic, plausible, offline."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import responses

from stockcache.errors import SymbolNotFound
from stockcache.kinds import KINDS
from stockcache.models import History, News, Profile, Quote
from stockcache.upstream.providers import DemoMarket, DemoProvider

MONDAY_MIDDAY = 1_767_009_600.0  # 2025-12-29T12:00Z, before the session opens
MONDAY_SESSION = 1_767_020_400.0  # 2025-12-29T15:00Z, mid-session
SATURDAY = 1_767_355_200.0  # 2026-01-02 is a Friday; this is 2026-01-03T12:00Z
SYMBOLS = ["AAPL", "MSFT", "BRK.B", "TSLA", "QWERTY", "BINANCE:BTCUSDT", "X"]


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
        assert provider.produce(kind, "AAPL", params(kind))
    assert len(offline.calls) == 0


def test_demo_is_deterministic(clock):
    a, b = DemoProvider(clock=clock), DemoProvider(clock=clock)
    for symbol in SYMBOLS:
        for kind in sorted(DemoProvider.kinds):
            assert a.produce(kind, symbol, params(kind)) == b.produce(kind, symbol, params(kind))


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
def test_demo_history_100_weekdays_consistent_with_quote(symbol, now):
    provider = DemoProvider(clock=lambda: now)
    history = provider.produce("history", symbol, {"days": 100})
    assert isinstance(history, History) and len(history.candles) == 100
    dates = [date.fromisoformat(c.date) for c in history.candles]
    assert dates == sorted(set(dates)) and all(d.weekday() < 5 for d in dates)
    assert dates[-1] < datetime.fromtimestamp(now, UTC).date()
    for candle in history.candles:
        assert candle.high >= max(candle.open, candle.close) and candle.low <= min(candle.open, candle.close)
        assert candle.low > 0 and candle.volume > 0
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


@pytest.mark.parametrize("kind", sorted(DemoProvider.kinds - {"search"}))
def test_demo_unknown_symbols_are_not_found(clock, kind):
    with pytest.raises(SymbolNotFound) as info:
        DemoProvider(clock=clock).produce(kind, "ZZZZ1", params(kind))
    assert info.value.fields["symbol"] == "ZZZZ1"


def test_demo_has_no_network_methods(clock):
    provider = DemoProvider(clock=clock)
    with pytest.raises(NotImplementedError):
        provider.build_request("quote", "AAPL", {})
    with pytest.raises(NotImplementedError):
        provider.parse("quote", "AAPL", {}, 200, {}, b"{}")
