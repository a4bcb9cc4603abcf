"""Sanity checks of market data: what no answer, upstream or cached, may hold.

One check per kind (referenced by ``kinds.KINDS``), for a provider's parsed
answer and for a cache entry alike: the fields of the kind's model and no
others, every number finite and within bounds, dates real, strings of bounded
length, lists bounded and in order, and the subject the one asked for. Each
raises ValueError only; its message names the field and the rule, never the
value (a cached value may be anyone's data).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .currency import is_code

# Every piece of market data the service serves passed one of these once: a
# provider's answer where its parsed model comes out (``upstream.router``), and a
# cache entry read from SQLite or Redis (``readthrough``). The bounds are wide enough
# for any real listing (BRK.A is about 7e5 USD, Korean and Indonesian prices run
# to 1e6 in their currencies, crypto pairs tick in 1e-8) and narrow enough that
# the portfolio maths on them stays finite: 1e15 shares x 1e9 is 1e24 per
# position. Messages name the field and the rule, never the value (a cached
# value may be anyone's data).

MIN_PRICE = 1e-8  # the smallest tick of any exchange we know (crypto pairs); below it is junk
MAX_PRICE = 1e9
MAX_PERCENT = 1e6  # a 10,000-fold move in a day; beyond that it is an artefact
MAX_VOLUME = 10**15
MAX_MARKET_CAP = 1e18  # units of currency: 1e15 USD, or an Indonesian giant in IDR
MAX_SHARES_OUTSTANDING = 1e15
MAX_RATIO = 1e9  # beta, P/E, EPS: signed, finite
# Unix times from 1970 up to 2100, and calendar dates from 1800 (old listings' IPO dates) up to 2100.
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z
FIRST_YEAR, FIRST_TIMESTAMP_YEAR, LAST_YEAR = 1800, 1970, 2099
MAX_ITEMS = 10_000  # candles, articles, search results in one answer
SHORT_TEXT = 200  # names, exchanges, industries, sources
LONG_TEXT = 20_000  # summaries and descriptions
URL_TEXT = 4096

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ")

Check = Callable[[Any, str], None]


def _number(low: float, high: float, *, optional: bool = False, integer: bool = False) -> Check:
    """A JSON number within [low, high] (NaN and infinities never are); ``integer`` wants an int."""
    what = "a whole number" if integer else "a number"

    def check(value: Any, name: str) -> None:
        kind = type(value)  # exact types: a bool is not a number here
        if not (kind is int or (kind is float and not integer)):
            if value is None and optional:
                return
            raise ValueError(f"{name} is not {what}")
        if not low <= value <= high:  # False for NaN too
            raise ValueError(f"{name} is not within {low:g} .. {high:g}")

    return check


def _text(most: int, *, optional: bool = False, least: int = 0) -> Check:
    def check(value: Any, name: str) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        if not least <= len(value) <= most:
            raise ValueError(f"{name} is not {least} to {most} characters long")

    return check


def _date(*, optional: bool = False) -> Check:
    """``YYYY-MM-DD``, a real calendar day from FIRST_YEAR to LAST_YEAR."""
    def check(value: Any, name: str) -> None:
        if value is None and optional:
            return
        _day(value, name, FIRST_YEAR, 10)

    return check


def _instant(value: Any, name: str) -> None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (what ``clock.iso_utc`` writes) from 1970 to LAST_YEAR."""
    _day(value, name, FIRST_TIMESTAMP_YEAR, 20)
    if not _TIME_RE.fullmatch(value, 10):
        raise ValueError(f"{name} is not an ISO 8601 UTC time")


def _day(value: Any, name: str, first_year: int, length: int) -> None:
    # fromisoformat alone would also take "20240506" and week dates; the shape is checked first.
    if not isinstance(value, str) or len(value) != length or not _DATE_RE.match(value):
        raise ValueError(f"{name} is not a YYYY-MM-DD date" if length == 10 else f"{name} is not an ISO 8601 UTC time")
    try:
        year = datetime.date.fromisoformat(value[:10]).year
    except ValueError:
        raise ValueError(f"{name} is not a calendar day") from None
    if not first_year <= year <= LAST_YEAR:
        raise ValueError(f"{name} is not within the years {first_year} .. {LAST_YEAR}")


def _pattern(regex: str, what: str, *, optional: bool = True) -> Check:
    compiled = re.compile(regex)

    def check(value: Any, name: str) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{name} is not {what}")

    return check


def _currency(value: Any, name: str) -> None:
    """A currency in major units, what every price we serve is in: never pence (``GBX``)."""
    if value is not None and not is_code(value):
        raise ValueError(f"{name} is not an ISO 4217 code of a major unit")


# A currency as a provider reports it (GBp, ZAc: any case).
_reported_currency = _pattern(r"[A-Za-z]{3}", "a currency code")
_mic = _pattern(r"[A-Z0-9]{4}", "an ISO 10383 MIC")


def _no_check(value: Any, name: str) -> None:
    """A field its kind's checker looks at itself."""


_price = _number(MIN_PRICE, MAX_PRICE)
_maybe_price = _number(MIN_PRICE, MAX_PRICE, optional=True)

QUOTE_FIELDS: dict[str, Check] = {
    "symbol": _no_check,  # the caller compares it with the symbol asked for
    "price": _price,
    "change": _number(-MAX_PRICE, MAX_PRICE, optional=True),
    "change_percent": _number(-MAX_PERCENT, MAX_PERCENT, optional=True),
    "high": _maybe_price,
    "low": _maybe_price,
    "open": _maybe_price,
    "previous_close": _maybe_price,
    "timestamp": _number(1, MAX_TIMESTAMP, optional=True, integer=True),
    "currency": _currency,
    "exchange": _mic,
}
PROFILE_FIELDS: dict[str, Check] = {
    "symbol": _no_check,
    "name": _text(SHORT_TEXT, optional=True),
    "exchange": _text(SHORT_TEXT, optional=True),
    "currency": _text(10, optional=True),
    "country": _text(SHORT_TEXT, optional=True),
    "industry": _text(SHORT_TEXT, optional=True),
    "ipo": _date(optional=True),
    "market_cap": _number(0, MAX_MARKET_CAP, optional=True),
    "shares_outstanding": _number(0, MAX_SHARES_OUTSTANDING, optional=True),
    "logo": _text(URL_TEXT, optional=True),
    "weburl": _text(URL_TEXT, optional=True),
    "phone": _text(50, optional=True),
    "description": _text(LONG_TEXT, optional=True),
}
CANDLE_FIELDS: dict[str, Check] = {
    "date": _date(),
    "open": _price,
    "high": _price,
    "low": _price,
    "close": _price,
    "volume": _number(0, MAX_VOLUME, integer=True),
}
NEWS_ITEM_FIELDS: dict[str, Check] = {
    "headline": _text(1000),
    "summary": _text(LONG_TEXT),
    "url": _text(URL_TEXT),
    "source": _text(SHORT_TEXT),
    "published_at": _instant,
    "image": _text(URL_TEXT, optional=True),
}
SEARCH_RESULT_FIELDS: dict[str, Check] = {
    "symbol": _text(50, least=1),
    "name": _text(500),
    "type": _text(100),
}
# The metric names of providers.base.METRIC_NAMES and their bounds; each one is there only if the provider gave it.
METRIC_BOUNDS: dict[str, Check] = {
    "52_week_high": _number(0, MAX_PRICE, optional=True),
    "52_week_low": _number(0, MAX_PRICE, optional=True),
    "beta": _number(-MAX_RATIO, MAX_RATIO, optional=True),
    "market_cap": _number(0, MAX_MARKET_CAP, optional=True),
    "pe_ratio": _number(-MAX_RATIO, MAX_RATIO, optional=True),
    "eps": _number(-MAX_RATIO, MAX_RATIO, optional=True),
    "dividend_yield": _number(0, MAX_PERCENT, optional=True),
}


def _record(value: Any, fields: Mapping[str, Check], what: str) -> Mapping[str, Any]:
    """``value`` as an object holding only ``fields``, each passing its check (absent is None)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    if not value.keys() <= fields.keys():
        raise ValueError(f"{what} has a field it should not have")
    get = value.get
    for name, check in fields.items():
        check(get(name), name)
    return value


def _items(value: Any, what: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} is not a list")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"{what} has more than {MAX_ITEMS} items")
    return value


def _symbol_of(data: Mapping[str, Any], symbol: str, what: str) -> None:
    if data.get("symbol") != symbol:
        raise ValueError(f"{what} is for another symbol")


def quote(symbol: str, data: Any) -> None:
    _symbol_of(_record(data, QUOTE_FIELDS, "quote"), symbol, "quote")
    _required(data, ("currency", "exchange"), "quote")


def _required(data: Mapping[str, Any], names: tuple[str, ...], what: str) -> None:
    """Fields that must be there, even as null: an entry without them was written before prices carried
    their currency (a London price then was in pence), so it is not served."""
    if any(name not in data for name in names):
        raise ValueError(f"{what} has no {' or '.join(names)} field (written by an older version)")


def profile(symbol: str, data: Any) -> None:
    _symbol_of(_record(data, PROFILE_FIELDS, "profile"), symbol, "profile")


def history(symbol: str, data: Any) -> None:
    history = _record(data, _HISTORY_FIELDS, "history")
    _symbol_of(history, symbol, "history")
    _required(history, ("currency",), "history")
    previous = ""
    for candle in _items(history.get("candles"), "candles"):
        _record(candle, CANDLE_FIELDS, "candle")
        if candle["date"] <= previous:
            raise ValueError("candles are not oldest first, one a day")
        previous = candle["date"]


def news(symbol: str, data: Any) -> None:
    news = _record(data, _NEWS_FIELDS, "news")
    _symbol_of(news, symbol, "news")
    previous = None
    for article in _items(news.get("articles"), "articles"):
        _record(article, NEWS_ITEM_FIELDS, "article")
        if previous is not None and article["published_at"] > previous:
            raise ValueError("articles are not newest first")
        previous = article["published_at"]


def metric(symbol: str, data: Any) -> None:
    metric = _record(data, _METRIC_FIELDS, "metric")
    _symbol_of(metric, symbol, "metric")
    figures = _record(metric.get("metrics"), METRIC_BOUNDS, "metrics")
    if any(value is None for value in figures.values()):  # an absent metric passes; a present one is a number
        raise ValueError("metrics hold a null")


def search(symbol: str, data: Any) -> None:
    for result in _items(data, "search results"):
        _record(result, SEARCH_RESULT_FIELDS, "search result")


def _interval(value: Any, name: str) -> None:
    if value != "1d":
        raise ValueError(f"{name} is not 1d")


_HISTORY_FIELDS: dict[str, Check] = {"symbol": _no_check, "candles": _no_check, "interval": _interval,
                                     "currency": _currency}
_LISTING_FIELDS: dict[str, Check] = {
    "symbol": _no_check,
    "name": _text(500, optional=True),
    "currency": _reported_currency,
    "exchange": _mic,
    "type": _text(100, optional=True),
    "id": _text(200, optional=True),
}
_FX_FIELDS: dict[str, Check] = {"base": _no_check, "date": _date(), "rates": _no_check}
MIN_RATE, MAX_RATE = 1e-9, 1e9  # 1 unit of any currency in any other (VND, IDR and the like included)
_rate = _number(MIN_RATE, MAX_RATE)
_CODE_RE = re.compile(r"[A-Z]{3}")


def listing(symbol: str, data: Any) -> None:
    _symbol_of(_record(data, _LISTING_FIELDS, "listing"), symbol, "listing")


def fx(base: str, data: Any) -> None:
    """One publication of rates from ``base``: ISO codes to positive finite rates, ``base`` itself not among them."""
    record = _record(data, _FX_FIELDS, "rates")
    if record.get("base") != base:
        raise ValueError("rates are for another base currency")
    rates = record.get("rates")
    if not isinstance(rates, Mapping) or not 0 < len(rates) <= 500:
        raise ValueError("rates is not an object of 1 to 500 currencies")
    for code, rate in rates.items():
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code) or code == base:
            raise ValueError("rates holds a key that is not another currency's ISO code")
        _rate(rate, "rate")
LOOKUP_LISTING_FIELDS: dict[str, Check] = {
    "symbol": _pattern(r"[A-Z0-9.\-^=:_]{1,20}", "a symbol", optional=False),
    "name": _text(500, optional=True),
    "exchange": _mic,
    "figi": _pattern(r"[B-DF-HJ-NP-TV-Z0-9]{12}", "a FIGI"),
    "currency": _currency,
}


def lookup(isin: str, data: Any) -> None:
    """The listings of one ISIN: ``{"isin", "listings": [...]}``, each a symbol as stockcache writes it."""
    record = _record(data, {"isin": _no_check, "listings": _no_check}, "lookup")
    if record.get("isin") != isin:
        raise ValueError("lookup is for another ISIN")
    for item in _items(record.get("listings"), "listings"):
        _record(item, LOOKUP_LISTING_FIELDS, "listing")


_NEWS_FIELDS: dict[str, Check] = {"symbol": _no_check, "articles": _no_check}
_METRIC_FIELDS: dict[str, Check] = {"symbol": _no_check, "metrics": _no_check}


OUTLOOKS = ("positive", "neutral", "negative")
MAX_ANALYSIS_TEXT = 2000

_ANALYSIS_FIELDS: dict[str, Check] = {
    "symbol": _no_check,
    "analysis": _text(MAX_ANALYSIS_TEXT, least=1),
    "outlook": _no_check,
    "model": _text(SHORT_TEXT),
    "based_on": _no_check,
    "tokens": _no_check,
}
_BASED_ON_FIELDS: dict[str, Check] = {
    "quote_fetched_at": _text(40, optional=True),
    "profile": _no_check,
    "metrics": _no_check,
    "history_days": _number(0, MAX_ITEMS, integer=True),
    "news": _number(0, MAX_ITEMS, integer=True),
}
_TOKEN_FIELDS: dict[str, Check] = {
    "prompt": _number(0, 10**9, integer=True),
    "completion": _number(0, 10**9, integer=True),
}


def analysis(symbol: str, data: Any) -> None:
    record = _record(data, _ANALYSIS_FIELDS, "analysis")
    _symbol_of(record, symbol, "analysis")
    if record.get("outlook") not in OUTLOOKS:
        raise ValueError("outlook is not one of " + ", ".join(OUTLOOKS))
    based_on = _record(record.get("based_on"), _BASED_ON_FIELDS, "based_on")
    if not isinstance(based_on.get("profile"), bool) or not isinstance(based_on.get("metrics"), bool):
        raise ValueError("based_on.profile and based_on.metrics are not booleans")
    _record(record.get("tokens"), _TOKEN_FIELDS, "tokens")
