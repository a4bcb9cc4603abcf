"""Our normalised, cached market data rendered back into Finnhub's and Alpha Vantage's own bodies.

The drop-in routes (``web/dropin.py``) let scripts written against the
providers' APIs and official clients use stockcache by changing one URL. They
read through the same service as the native API and hand its answers (the
dicts of ``/api/quote`` and friends) to these pure functions, which rebuild
the providers' exact shapes: Finnhub's short keys and market cap in millions,
Alpha Vantage's numbered keys with numbers as strings and dates descending.

What our cache does not keep is filled the way each provider fills a missing
value, and listed in the README ("Drop-in for Finnhub and Alpha Vantage
clients"): Alpha Vantage's quote volume ("0"), news sentiment (neutral), search
region/market hours (empty strings).

Errors: Finnhub speaks HTTP statuses with ``{"error": "..."}``; Alpha Vantage
answers everything with HTTP 200 and ``Error Message`` / ``Information``,
because its official client never looks at the status. No function here ever
puts a token or key into a body. Pure functions of their arguments: thread-safe.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    InvalidRequest,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    Unauthorized,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from .symbols import strip_ascii

try:
    from zoneinfo import ZoneInfo

    _NEW_YORK: Any = ZoneInfo("America/New_York")
except Exception:  # no tz database on this box: US/Eastern standard time is near enough for a date
    _NEW_YORK = timezone(-timedelta(hours=5))

Json = dict[str, Any]

# News is cached per window of days; a request's window is rounded up to one of
# these, so windows that slide by a day (a script asking for "the last 10 days"
# every morning) share one cached fetch and are then filtered to the exact range.
NEWS_WINDOWS = (7, 30, 90, 365)
HISTORY_POINTS = 100  # Alpha Vantage "compact", all a free key gets and all we cache

# -- Finnhub ---------------------------------------------------------------------------------

FINNHUB_QUOTE_NOT_FOUND: Json = {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
FINNHUB_PROFILE_NOT_FOUND: Json = {}
FINNHUB_METRIC_NOT_FOUND: Json = {"metric": {}, "metricType": "all", "series": {}}
FINNHUB_NO_DATA: Json = {"s": "no_data"}

FINNHUB_NO_TOKEN = "Please use an API key."
FINNHUB_BAD_TOKEN = "Invalid API key"
FINNHUB_LIMIT = "API limit reached. Please try again later. Remaining Limit: 0"
FINNHUB_NO_ACCESS = "You don't have access to this resource."

# Normalised metric name -> (Finnhub name, factor from our unit to Finnhub's).
_FINNHUB_METRICS = {
    "52_week_high": ("52WeekHigh", 1.0),
    "52_week_low": ("52WeekLow", 1.0),
    "beta": ("beta", 1.0),
    "market_cap": ("marketCapitalization", 1e-6),
    "pe_ratio": ("peTTM", 1.0),
    "eps": ("epsTTM", 1.0),
    "dividend_yield": ("dividendYieldIndicatedAnnual", 1.0),
}

# Security types: Finnhub's words <-> Alpha Vantage's, for results cached from either.
_TO_AV_TYPE = {"Common Stock": "Equity", "ETP": "ETF"}
_TO_FINNHUB_TYPE = {v: k for k, v in _TO_AV_TYPE.items()}


def finnhub_quote(quote: Mapping[str, Any]) -> Json:
    """``/quote``: ``{"c","d","dp","h","l","o","pc","t"}``."""
    return {
        "c": quote["price"], "d": quote.get("change"), "dp": quote.get("change_percent"),
        "h": _zero(quote.get("high")), "l": _zero(quote.get("low")), "o": _zero(quote.get("open")),
        "pc": _zero(quote.get("previous_close")), "t": int(quote.get("timestamp") or 0),
    }


def finnhub_profile(profile: Mapping[str, Any]) -> Json:
    """``/stock/profile2``: market cap and shares back in millions; missing text as "" like Finnhub."""
    currency = _text(profile.get("currency"))
    return {
        "country": _text(profile.get("country")),
        "currency": currency,
        "estimateCurrency": currency,
        "exchange": _text(profile.get("exchange")),
        "finnhubIndustry": _text(profile.get("industry")),
        "ipo": _text(profile.get("ipo")),
        "logo": _text(profile.get("logo")),
        "marketCapitalization": _millions(profile.get("market_cap")),
        "name": _text(profile.get("name")),
        "phone": _text(profile.get("phone")),
        "shareOutstanding": _millions(profile.get("shares_outstanding")),
        "ticker": profile["symbol"],
        "weburl": _text(profile.get("weburl")),
    }


def finnhub_news(news: Mapping[str, Any], start: float, end: float) -> list[Json]:
    """``/company-news``: a bare array, newest first, of articles published within [start, end]."""
    symbol = news["symbol"]
    out = []
    for article in news.get("articles", ()):
        ts = _unix(article["published_at"])
        if start <= ts <= end:
            out.append({
                "category": "company", "datetime": ts, "headline": article["headline"],
                "id": _article_id(article["url"]), "image": _text(article.get("image")),
                "related": symbol, "source": _text(article.get("source")),
                "summary": _text(article.get("summary")), "url": article["url"],
            })
    return out


def finnhub_metric(metric: Mapping[str, Any]) -> Json:
    """``/stock/metric?metric=all``: the key figures we cache, under Finnhub's names and units."""
    values = metric.get("metrics") or {}
    out: Json = {}
    for ours, (theirs, factor) in _FINNHUB_METRICS.items():
        value = values.get(ours)
        if value is not None:
            out[theirs] = round(float(value) * factor, 6)
    return {"metric": out, "metricType": "all", "series": {}, "symbol": metric["symbol"]}


def finnhub_search(search: Mapping[str, Any]) -> Json:
    """``/search``: ``{"count", "result": [{"description","displaySymbol","symbol","type"}]}``."""
    result = [
        {"description": _text(hit.get("name")), "displaySymbol": hit["symbol"], "symbol": hit["symbol"],
         "type": _TO_FINNHUB_TYPE.get(hit.get("type") or "", _text(hit.get("type")))}
        for hit in search.get("results", ())
    ]
    return {"count": len(result), "result": result}


def finnhub_candles(history: Mapping[str, Any], start: float, end: float) -> Json:
    """``/stock/candle`` at resolution D: columns of the daily bars whose day starts within [start, end].

    Finnhub stamps a daily bar with 00:00 UTC of its day. No bar in range is ``{"s": "no_data"}``.
    """
    bars = [(int(_day_start(c["date"])), c) for c in history.get("candles", ())]
    bars = [(t, c) for t, c in bars if start <= t <= end]
    if not bars:
        return dict(FINNHUB_NO_DATA)
    return {
        "c": [c["close"] for _, c in bars], "h": [c["high"] for _, c in bars],
        "l": [c["low"] for _, c in bars], "o": [c["open"] for _, c in bars], "s": "ok",
        "t": [t for t, _ in bars], "v": [int(c["volume"]) for _, c in bars],
    }


def finnhub_error(error: StockcacheError) -> tuple[int, Json, dict[str, str]]:
    """(status, body, extra headers) for an error, in Finnhub's words where Finnhub has them."""
    if isinstance(error, Unauthorized):
        return 401, {"error": FINNHUB_BAD_TOKEN}, {}
    if isinstance(error, RateLimited):
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after is not None else {}
        return 429, {"error": FINNHUB_LIMIT}, headers
    if isinstance(error, UpstreamAuthError):
        return 403, {"error": FINNHUB_NO_ACCESS}, {}
    if isinstance(error, UpstreamTimeout):
        return 504, {"error": "The upstream data provider did not answer in time. Please try again later."}, {}
    if isinstance(error, UpstreamError):
        return 502, {"error": "The upstream data provider failed. Please try again later."}, {}
    if isinstance(error, InvalidRequest):
        return 422, {"error": error.message}, {}
    if isinstance(error, SymbolNotFound):
        return 404, {"error": "Symbol not found."}, {}
    return 500, {"error": "Internal error."}, {}


# -- Alpha Vantage -----------------------------------------------------------------------------

AV_QUOTE_NOT_FOUND: Json = {"Global Quote": {}}
AV_OVERVIEW_NOT_FOUND: Json = {}
AV_BAD_KEY = (
    "the parameter apikey is invalid or missing. Use a stockcache API token as apikey "
    "(stockcache tokens create NAME)."
)
AV_INVALID_INPUTS = (
    "Invalid inputs. Please refer to the API documentation "
    "https://www.alphavantage.co/documentation#newsapi and try again."
)
AV_PREMIUM_FULL = (
    "Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for "
    "the TIME_SERIES_DAILY endpoint. stockcache serves outputsize=compact (the latest 100 points)."
)
AV_FUNCTIONS = ("GLOBAL_QUOTE", "OVERVIEW", "TIME_SERIES_DAILY", "NEWS_SENTIMENT", "SYMBOL_SEARCH")

_AV_EXCHANGES = {"NASDAQ NMS - GLOBAL MARKET": "NASDAQ", "NEW YORK STOCK EXCHANGE, INC.": "NYSE"}
_AV_COUNTRIES = {"US": "USA"}
_SENTIMENT_DEFINITION = (
    "x <= -0.35: Bearish; -0.35 < x <= -0.15: Somewhat-Bearish; -0.15 < x < 0.15: Neutral; "
    "0.15 <= x < 0.35: Somewhat_Bullish; x >= 0.35: Bullish"
)
_RELEVANCE_DEFINITION = "0 < x <= 1, with a higher score indicating higher relevance."


def av_invalid_call(function: str) -> Json:
    """Alpha Vantage's answer to a call it cannot serve (missing or unknown symbol, bad parameter)."""
    return {"Error Message": "Invalid API call. Please retry or visit the documentation "
                             f"(https://www.alphavantage.co/documentation/) for {function}."}


def av_unknown_function(function: str) -> Json:
    shown = "".join(ch for ch in function[:40] if ch.isalnum() or ch == "_")
    return {"Error Message": f"This API function ({shown}) does not exist. stockcache serves "
                             + ", ".join(AV_FUNCTIONS) + "."}


def av_global_quote(quote: Mapping[str, Any]) -> Json:
    """``GLOBAL_QUOTE``. Our cached quote has no volume, so ``06. volume`` is "0"."""
    change_percent = quote.get("change_percent")
    return {"Global Quote": {
        "01. symbol": quote["symbol"],
        "02. open": _av_number(quote.get("open")),
        "03. high": _av_number(quote.get("high")),
        "04. low": _av_number(quote.get("low")),
        "05. price": _av_number(quote["price"]),
        "06. volume": "0",
        "07. latest trading day": _trading_day(quote),
        "08. previous close": _av_number(quote.get("previous_close")),
        "09. change": _av_number(quote.get("change")),
        "10. change percent": "None" if change_percent is None else f"{float(change_percent):.4f}%",
    }}


def av_overview(profile: Mapping[str, Any], metric: Mapping[str, Any] | None) -> Json:
    """``OVERVIEW``: a flat object of strings from the cached profile and key figures.

    Fields we do not cache are left out; values we do not have are "None", as Alpha Vantage writes them.
    """
    metrics = (metric or {}).get("metrics") or {}
    industry = _text(profile.get("industry")).upper() or "None"
    dividend = metrics.get("dividend_yield")
    return {
        "Symbol": profile["symbol"],
        "AssetType": "Common Stock",
        "Name": _text(profile.get("name")),
        "Description": _text(profile.get("description")) or "None",
        "Exchange": _AV_EXCHANGES.get(_text(profile.get("exchange")), _text(profile.get("exchange"))) or "None",
        "Currency": _text(profile.get("currency")) or "None",
        "Country": _AV_COUNTRIES.get(_text(profile.get("country")), _text(profile.get("country"))) or "None",
        "Sector": industry,
        "Industry": industry,
        "OfficialSite": _text(profile.get("weburl")) or "None",
        "MarketCapitalization": _av_int(profile.get("market_cap") or metrics.get("market_cap")),
        "PERatio": _av_plain(metrics.get("pe_ratio")),
        "EPS": _av_plain(metrics.get("eps")),
        # Ours is percent (0.44 means 0.44 %); Alpha Vantage gives a fraction.
        "DividendYield": "None" if dividend is None else _av_plain(round(float(dividend) / 100, 6)),
        "52WeekHigh": _av_plain(metrics.get("52_week_high")),
        "52WeekLow": _av_plain(metrics.get("52_week_low")),
        "Beta": _av_plain(metrics.get("beta")),
        "SharesOutstanding": _av_int(profile.get("shares_outstanding")),
    }


def av_daily(history: Mapping[str, Any]) -> Json:
    """``TIME_SERIES_DAILY`` compact: Meta Data, then the bars newest first, numbers as strings."""
    candles = list(history.get("candles", ()))[-HISTORY_POINTS:]
    series = {
        c["date"]: {"1. open": _av_number(c["open"]), "2. high": _av_number(c["high"]),
                    "3. low": _av_number(c["low"]), "4. close": _av_number(c["close"]),
                    "5. volume": str(int(c["volume"]))}
        for c in reversed(candles)
    }
    return {
        "Meta Data": {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": history["symbol"],
            "3. Last Refreshed": candles[-1]["date"] if candles else "",
            "4. Output Size": "Compact",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": series,
    }


def av_news(news: Mapping[str, Any], start: float, end: float, *, sort: str = "LATEST", limit: int = 50) -> Json:
    """``NEWS_SENTIMENT`` for one ticker: articles within [start, end]; sentiment is not cached (neutral)."""
    symbol = news["symbol"]
    feed = []
    for article in news.get("articles", ()):
        ts = _unix(article["published_at"])
        if not start <= ts <= end:
            continue
        feed.append({
            "title": article["headline"], "url": article["url"],
            "time_published": datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S"),
            "authors": [], "summary": _text(article.get("summary")),
            "banner_image": article.get("image"), "source": _text(article.get("source")),
            "category_within_source": "n/a", "source_domain": urlsplit(article["url"]).hostname or "",
            "topics": [], "overall_sentiment_score": 0.0, "overall_sentiment_label": "Neutral",
            "ticker_sentiment": [{"ticker": symbol, "relevance_score": "1.000000",
                                  "ticker_sentiment_score": "0.000000", "ticker_sentiment_label": "Neutral"}],
        })
    if sort.upper() == "EARLIEST":
        feed.reverse()
    feed = feed[:max(1, limit)]
    return {"items": str(len(feed)), "sentiment_score_definition": _SENTIMENT_DEFINITION,
            "relevance_score_definition": _RELEVANCE_DEFINITION, "feed": feed}


def av_search(search: Mapping[str, Any]) -> Json:
    """``SYMBOL_SEARCH``: best matches; region, hours and currency are not cached, so empty."""
    needle = str(search.get("query", "")).upper()
    matches = []
    for hit in search.get("results", ()):
        symbol, name = hit["symbol"], _text(hit.get("name"))
        matches.append({
            "1. symbol": symbol, "2. name": name,
            "3. type": _TO_AV_TYPE.get(hit.get("type") or "", _text(hit.get("type"))),
            "4. region": "", "5. marketOpen": "", "6. marketClose": "", "7. timezone": "", "8. currency": "",
            "9. matchScore": f"{_match_score(needle, symbol, name):.4f}",
        })
    return {"bestMatches": matches}


def av_error(error: StockcacheError, function: str) -> tuple[Json, dict[str, str]]:
    """(body, extra headers) for an error, always sent with HTTP 200 as Alpha Vantage does."""
    if isinstance(error, Unauthorized):
        return {"Error Message": AV_BAD_KEY}, {}
    if isinstance(error, RateLimited):
        wait = error.retry_after
        headers = {"Retry-After": str(int(wait))} if wait is not None else {}
        when = f"in {int(wait)} seconds" if wait is not None else "later"
        return {"Information": "Thank you for using stockcache! The upstream API rate limit is reached "
                               f"and nothing is cached for this request. Please try again {when}."}, headers
    if isinstance(error, UpstreamAuthError):
        return {"Information": "Thank you for using stockcache! This data is a premium feature of the "
                               "upstream plan stockcache uses."}, {}
    if isinstance(error, UpstreamError):
        return {"Information": "Thank you for using stockcache! The upstream data provider is not "
                               "answering right now and nothing is cached for this request. "
                               "Please try again later."}, {}
    if isinstance(error, InvalidRequest | SymbolNotFound):
        return av_invalid_call(function), {}
    return {"Error Message": "Internal error. Please try again later."}, {}


# -- request windows ---------------------------------------------------------------------------


def news_window(first_day: date, today: date) -> int:
    """The cached window (days) that covers ``first_day`` .. ``today``: one of :data:`NEWS_WINDOWS`."""
    wanted = (today - first_day).days
    for days in NEWS_WINDOWS:
        if wanted <= days:
            return days
    return NEWS_WINDOWS[-1]


def day_start(day: date) -> float:
    """Unix time of 00:00 UTC on ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


# -- helpers -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _zero(value: Any) -> Any:
    return 0 if value is None else value


def _millions(value: Any) -> float:
    # Finnhub writes 0 where it has no figure; we stored units, Finnhub speaks millions.
    return 0 if value is None else round(float(value) / 1e6, 6)


def _day_start(text: str) -> float:
    return day_start(date.fromisoformat(text))


def _unix(iso: str) -> int:
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _article_id(url: str) -> int:
    """A stable numeric id (Finnhub's ids are integers; we do not keep theirs), below 2**48."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=6).digest(), "big")


def _trading_day(quote: Mapping[str, Any]) -> str:
    ts = quote.get("timestamp")
    if not ts:
        ts = _unix(quote["fetched_at"]) if quote.get("fetched_at") else 0
    return datetime.fromtimestamp(float(ts), _NEW_YORK).strftime("%Y-%m-%d")


def _av_number(value: Any) -> str:
    """Alpha Vantage's price format: four decimals in a string; "None" when missing."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return "None"
    return f"{float(value):.4f}"


def _av_plain(value: Any) -> str:
    if value is None:
        return "None"
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) >= 1e6 else repr(number)


def _av_int(value: Any) -> str:
    return "None" if value is None else str(int(round(float(value))))


def _match_score(needle: str, symbol: str, name: str) -> float:
    """An approximation of Alpha Vantage's score: exact symbol, symbol prefix, name match."""
    if symbol.upper() == needle:
        return 1.0
    if symbol.upper().startswith(needle):
        return 0.8
    if needle and needle in name.upper():
        return 0.6
    return 0.4


def symbols_of(text: str | None) -> Sequence[str]:
    """The comma-separated tickers of an Alpha Vantage ``tickers`` parameter, stripped, non-empty.

    Only ASCII whitespace is stripped: "ORCL\u00a0" is no ticker (see :func:`~.models.strip_ascii`).
    """
    return [strip_ascii(part) for part in (text or "").split(",") if strip_ascii(part)]
