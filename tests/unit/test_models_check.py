"""models.check: one sanity check per kind, for provider answers and cache entries alike."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockcache import validation
from stockcache.errors import UpstreamError
from stockcache.kinds import KINDS, check
from stockcache.models import Candle, FxRates, History, ListingInfo, NewsItem, Profile, Quote
from stockcache.upstream.providers import METRIC_NAMES
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig, AlphaVantageProvider
from stockcache.upstream.providers.demo import DemoMarket, DemoProvider
from stockcache.upstream.providers.finnhub import FinnhubConfig, FinnhubProvider
from stockcache.upstream.router import checked
from stockcache.validation import (
    CANDLE_FIELDS,
    MAX_PRICE,
    METRIC_BOUNDS,
    MIN_PRICE,
    NEWS_ITEM_FIELDS,
    PROFILE_FIELDS,
    QUOTE_FIELDS,
)

NOW = 1_767_000_000.0


def _subject(kind: str, symbol: str = "AAPL") -> str:
    if kind == "lookup":  # listings are asked by ISIN (a crypto pair has none: Apple's)
        return DemoMarket().isin(symbol) or "US0378331005"
    return "USD" if kind == "fx" else symbol  # rates are asked by base currency


def _demo(kind: str, symbol: str = "AAPL") -> Any:
    model = DemoProvider(clock=lambda: NOW).produce(kind, _subject(kind, symbol),
                                                    {"q": "apple"} if kind == "search" else {})
    return model.to_dict() if hasattr(model, "to_dict") else model


def test_check_has_a_rule_for_every_field_of_every_model() -> None:
    for model, fields in ((Quote, QUOTE_FIELDS), (Profile, PROFILE_FIELDS), (Candle, CANDLE_FIELDS),
                          (NewsItem, NEWS_ITEM_FIELDS), (History, validation._HISTORY_FIELDS),
                          (ListingInfo, validation._LISTING_FIELDS), (FxRates, validation._FX_FIELDS)):
        assert set(fields) == {f.name for f in dataclasses.fields(model)}, model.__name__
    assert set(METRIC_BOUNDS) == set(METRIC_NAMES)
    for kind in sorted(DemoProvider.kinds):
        check(kind, _subject(kind), _demo(kind))  # every kind the demo serves has a check


@pytest.mark.parametrize("kind", sorted(DemoProvider.kinds))
@pytest.mark.parametrize("symbol", ["MSFT", "VOD.L", "SAP.DE", "BTC-EUR"])
def test_check_passes_the_demo_data_of_every_kind_as_model_and_as_cached_dict(kind: str, symbol: str) -> None:
    subject = _subject(kind, symbol)
    model = DemoProvider(clock=lambda: NOW).produce(kind, subject, {"q": "micro"} if kind == "search" else {})
    check(kind, subject, model)
    check(kind, subject, _demo(kind, symbol))


def _changed(kind: str, path: tuple[Any, ...], value: Any) -> Any:
    data = _demo(kind)
    holder = data
    for step in path[:-1]:
        holder = holder[step]
    if value is _DROP:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return data


_DROP = object()

BAD = [
    ("quote", ("price",), -5), ("quote", ("price",), 0), ("quote", ("price",), 1e308), ("quote", ("price",), 1e-320),
    ("quote", ("price",), math.nan), ("quote", ("price",), math.inf), ("quote", ("price",), "261.74"),
    ("quote", ("price",), True), ("quote", ("price",), None), ("quote", ("price",), _DROP),
    ("quote", ("price",), 10**400), ("quote", ("price",), MIN_PRICE / 2), ("quote", ("price",), MAX_PRICE * 2),
    ("quote", ("change",), 1e300), ("quote", ("change_percent",), math.inf), ("quote", ("high",), 0.0),
    ("quote", ("previous_close",), -1.0), ("quote", ("timestamp",), 253402214400), ("quote", ("timestamp",), 1.5),
    ("quote", ("timestamp",), 0), ("quote", ("symbol",), "OTHER"), ("quote", ("extra",), {"a": 1}),
    ("profile", ("market_cap",), -1.0), ("profile", ("shares_outstanding",), 1e300),
    ("profile", ("ipo",), "9999-12-31"), ("profile", ("ipo",), "2024-02-30"), ("profile", ("ipo",), "20240506"),
    ("profile", ("name",), "x" * 100_000),
    ("profile", ("name",), 5), ("profile", ("symbol",), "OTHER"),
    ("history", ("candles", 0, "date"), "9999-12-31"), ("history", ("candles", 0, "open"), -5.0),
    ("history", ("candles", 0, "volume"), -1), ("history", ("candles", 0, "volume"), 1.5),
    ("history", ("candles", 0, "volume"), 10**20), ("history", ("candles", 0, "close"), _DROP),
    ("history", ("candles", 1, "date"), "1999-01-01"), ("history", ("interval",), "1m"), ("history", ("candles",), "x"),
    ("news", ("articles", 0, "published_at"), "9999-01-01T00:00:00Z"),
    ("news", ("articles", 0, "published_at"), "1969-12-31T23:59:55Z"),
    ("news", ("articles", 0, "published_at"), "2025-01-01T25:00:00Z"), ("news", ("articles", 0, "headline"), None),
    ("news", ("articles", 0, "summary"), "x" * 100_000), ("news", ("articles", 0, "url"), ["u"]),
    ("metric", ("metrics", "52_week_high"), 1e308), ("metric", ("metrics", "dividend_yield"), -1.0),
    ("metric", ("metrics", "beta"), None), ("metric", ("metrics", "made_up"), 1.0), ("metric", ("symbol",), "X"),
    ("search", (0, "name"), "x" * 100_000), ("search", (0, "symbol"), ""), ("search", (0, "type"), 7),
    # A quote's currency is a major unit: pence never leave the provider module unconverted.
    ("quote", ("currency",), "GBp"), ("quote", ("currency",), "GBX"), ("quote", ("currency",), "usd"),
    ("quote", ("currency",), "EURO"), ("quote", ("currency",), 840), ("quote", ("exchange",), "Xetra"),
    ("history", ("currency",), "GBp"), ("listing", ("currency",), "POUND"), ("listing", ("symbol",), "OTHER"),
    ("listing", ("exchange",), "LSE"), ("fx", ("base",), "EUR"), ("fx", ("rates",), {}),
    ("fx", ("rates", "EUR"), -1.0), ("fx", ("rates", "EUR"), 0.0), ("fx", ("rates", "EUR"), math.inf),
    ("fx", ("rates", "EUR"), "0.92"), ("fx", ("rates", "USD"), 1.0), ("fx", ("rates", "eur"), 0.9),
    ("fx", ("date",), "2026-02-30"),
]


@pytest.mark.parametrize(("kind", "path", "value"), BAD, ids=[f"{k}-{'.'.join(map(str, p))}" for k, p, _ in BAD])
def test_check_refuses_a_bad_value_naming_the_field_never_the_value(kind: str, path: tuple[Any, ...],
                                                                     value: Any) -> None:
    data = _changed(kind, path, value)
    with pytest.raises(ValueError) as info:
        check(kind, _subject(kind), data)
    message = str(info.value)
    assert len(message) < 120 and "xxxx" not in message and "OTHER" not in message


def test_check_refuses_lists_too_long_and_out_of_order() -> None:
    history = _demo("history")
    history["candles"] = list(reversed(history["candles"]))
    with pytest.raises(ValueError, match="oldest first"):
        check("history", "AAPL", history)
    news = _demo("news")
    news["articles"] = list(reversed(news["articles"]))
    if len(news["articles"]) > 1:
        with pytest.raises(ValueError, match="newest first"):
            check("news", "AAPL", news)
    results = _demo("search") * (validation.MAX_ITEMS + 1)
    with pytest.raises(ValueError, match="more than"):
        check("search", "AAPL", results)


def test_check_accepts_the_edges_of_its_bounds() -> None:
    for price in (MIN_PRICE, MAX_PRICE, 1, 0.5):
        check("quote", "AAPL", _changed("quote", ("price",), price))
    check("quote", "AAPL", _changed("quote", ("timestamp",), None))
    check("profile", "AAPL", _changed("profile", ("ipo",), "1800-01-01"))
    check("news", "AAPL", {"symbol": "AAPL", "articles": []})  # a quiet week


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@given(kind=st.sampled_from(sorted(KINDS)), data=json_values)
def test_check_raises_only_value_error_whatever_the_data(kind: str, data: Any) -> None:
    try:
        check(kind, "AAPL", data)
    except ValueError:
        pass


# -- every provider's output goes through it --------------------------------------------------------


@pytest.mark.parametrize(("body", "what"), [
    (b'{"c": -5, "d": 1, "dp": 1, "h": 1, "l": 1, "o": 1, "pc": 1, "t": 1582641000}', "negative price"),
    (b'{"c": 1e308, "d": 1, "dp": 1, "h": 1, "l": 1, "o": 1, "pc": 1, "t": 1582641000}', "huge price"),
    (b'{"c": 1e-320, "d": 1, "dp": 1, "h": 1, "l": 1, "o": 1, "pc": 1, "t": 1582641000}', "subnormal price"),
    (b'{"c": 10, "d": 1, "dp": 1, "h": 1, "l": 1, "o": 1, "pc": 1, "t": 253402214400}', "a time in 9999"),
])
def test_finnhub_quote_out_of_range_is_upstream_error(body: bytes, what: str) -> None:
    provider = FinnhubProvider(FinnhubConfig(api_key="TESTKEY_fh", url="https://fh.test"), clock=lambda: NOW)
    with pytest.raises(UpstreamError, match="out-of-range quote"):
        checked("finnhub", "quote", "AAPL", provider.parse("quote", "AAPL", {}, 200, {}, body))


def test_finnhub_quote_zero_optional_prices_mean_none_not_a_bad_answer() -> None:
    provider = FinnhubProvider(FinnhubConfig(api_key="TESTKEY_fh", url="https://fh.test"), clock=lambda: NOW)
    quote = provider.parse("quote", "AAPL", {}, 200, {},
                           b'{"c": 10.5, "d": null, "dp": null, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 1582641000}')
    assert (quote.price, quote.high, quote.low, quote.open, quote.previous_close) == (10.5, None, None, None, None)


def test_finnhub_profile_cap_that_overflows_in_millions_is_upstream_error() -> None:
    provider = FinnhubProvider(FinnhubConfig(api_key="TESTKEY_fh", url="https://fh.test"), clock=lambda: NOW)
    with pytest.raises(UpstreamError):
        provider.parse("profile", "AAPL", {}, 200, {}, b'{"name": "Apple", "marketCapitalization": 1e308}')


def test_alphavantage_history_bar_in_9999_is_upstream_error() -> None:
    provider = AlphaVantageProvider(AlphaVantageConfig(api_key="TESTKEY_av", url="https://av.test/query"),
                                    clock=lambda: NOW)
    body = (b'{"Time Series (Daily)": {"9999-12-31": {"1. open": "1", "2. high": "1", "3. low": "1",'
            b' "4. close": "1", "5. volume": "1"}}}')
    with pytest.raises(UpstreamError, match="out-of-range history"):
        checked("alphavantage", "history", "IBM", provider.parse("history", "IBM", {"days": 30}, 200, {}, body))


def test_demo_provider_output_is_checked_like_any_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = DemoProvider(clock=time.time)
    good = demo.produce("quote", "AAPL", {})
    monkeypatch.setattr(type(demo._market), "quote", lambda self, symbol, now: dataclasses.replace(good, price=-5.0))
    with pytest.raises(UpstreamError, match="demo sent an out-of-range quote"):
        checked("demo", "quote", "AAPL", demo.produce("quote", "AAPL", {}))
