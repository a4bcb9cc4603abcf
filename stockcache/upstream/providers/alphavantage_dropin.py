"""Alpha Vantage's own API (``/alphavantage/query?function=...``) answered from stockcache's cache.

``GLOBAL_QUOTE``, ``OVERVIEW``, ``TIME_SERIES_DAILY``, ``NEWS_SENTIMENT`` and
``SYMBOL_SEARCH``; the caller's ``apikey`` is a stockcache token. Every answer,
error or not, is HTTP 200 with Alpha Vantage's ``Error Message`` /
``Information`` bodies, because the official client never looks at the
status code. Numbered keys with numbers as strings and dates descending are
rebuilt from our models; what our cache does not keep is filled the way
Alpha Vantage fills a missing value (quote volume "0", neutral news
sentiment, empty search region and market hours).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ...errors import (
    InvalidRequest,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    Unauthorized,
    UpstreamAuthError,
    UpstreamError,
)
from ...symbols import strip_ascii
from .alphavantage_symbols import from_av, to_av
from .dropin import (
    HISTORY_POINTS,
    SECURITY_TYPES,
    Answer,
    DropIn,
    DropInAnswer,
    DropInRequest,
    Json,
    as_text,
    ascii_int,
    news_window,
    openapi_get,
    openapi_query,
    read_as,
    symbol_param,
    trading_day,
    unix_time,
)

log = logging.getLogger(__name__)

DEFAULT_NEWS_DAYS = 30  # NEWS_SENTIMENT without time_from: the latest articles of this window
_TO_AV_TYPE = SECURITY_TYPES

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
# Alpha Vantage's own words, which scripts match to tell "no articles" and "throttled" apart.
AV_NO_ARTICLES = (
    "No articles found. Please adjust the time range or refer to the API documentation "
    "https://www.alphavantage.co/documentation#newsapi and try again."
)
AV_BURST = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more "
    "sparingly (1 request per second). You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), raise "
    "the per-second burst limit, and instantly unlock all premium endpoints"
)
AV_DAILY_CAP = (
    "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please "
    "subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove "
    "all daily rate limits."
)
MAX_NEWS_TICKERS = 10
AV_PREMIUM_FULL = (
    "Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for "
    "the TIME_SERIES_DAILY endpoint. stockcache serves outputsize=compact (the latest 100 points)."
)
FUNCTIONS = ("GLOBAL_QUOTE", "OVERVIEW", "TIME_SERIES_DAILY", "NEWS_SENTIMENT", "SYMBOL_SEARCH")

_AV_EXCHANGES = {"NASDAQ NMS - GLOBAL MARKET": "NASDAQ", "NEW YORK STOCK EXCHANGE, INC.": "NYSE"}
_AV_COUNTRIES = {"US": "USA"}
_SENTIMENT_DEFINITION = (
    "x <= -0.35: Bearish; -0.35 < x <= -0.15: Somewhat-Bearish; -0.15 < x < 0.15: Neutral; "
    "0.15 <= x < 0.35: Somewhat_Bullish; x >= 0.35: Bullish"
)
_RELEVANCE_DEFINITION = "0 < x <= 1, with a higher score indicating higher relevance."




class AlphaVantageDropIn(DropIn):
    """``/alphavantage/query`` over the service. Thread-safe."""

    route = "/alphavantage/query"
    openapi: ClassVar[Mapping[str, Any]] = {"/alphavantage/query": openapi_get(
        "Drop-in for Alpha Vantage clients: GLOBAL_QUOTE, OVERVIEW, TIME_SERIES_DAILY (compact), "
        "NEWS_SENTIMENT (tickers AND-ed), SYMBOL_SEARCH; symbols in Alpha Vantage's form (SAP.DEX) or "
        "stockcache's (SAP.DE), prices in the major unit (pounds, not pence). Always HTTP 200; errors are "
        "Alpha Vantage's \"Error Message\" / \"Information\" bodies.",
        {"200": ({"type": "object"}, "Alpha Vantage's body, or its error body.")},
        [openapi_query("function", True, enum=list(FUNCTIONS)), openapi_query("apikey", True),
         *(openapi_query(name) for name in ("symbol", "tickers", "keywords")),
         openapi_query("outputsize", enum=["compact"]),
         *(openapi_query(name) for name in ("time_from", "time_to", "sort", "limit")),
         openapi_query("datatype", enum=["json"])])}

    def __init__(self, service: Any, authenticate: Callable[[str], Any], clock: Callable[[], float]) -> None:
        super().__init__(service, authenticate, clock)
        self._functions: dict[str, Callable[[Mapping[str, str]], Answer]] = {
            "GLOBAL_QUOTE": self._av_quote, "OVERVIEW": self._av_overview, "TIME_SERIES_DAILY": self._av_daily,
            "NEWS_SENTIMENT": self._av_news, "SYMBOL_SEARCH": self._av_search,
        }

    def handle(self, request: DropInRequest) -> DropInAnswer:
        """``/alphavantage/query``: Alpha Vantage's bodies, always with HTTP 200."""
        query = request.query
        function = strip_ascii(query.get("function") or "")
        function = function.upper() if function.isascii() else function  # "newſ_sentiment" is no function
        source: Mapping[str, Any] | None = None
        headers: dict[str, str] = {}
        try:
            apikey = query.get("apikey")
            if not apikey:
                raise Unauthorized()
            self.authenticate(apikey)
            handler = self._functions.get(function)
            if handler is None:
                body: Any = av_unknown_function(function) if function else av_invalid_call("")
            elif (query.get("datatype") or "json").lower() != "json":
                body = {"Error Message": "stockcache serves datatype=json only."}
            else:
                body, source = handler(query)
        except StockcacheError as exc:
            body, headers = av_error(exc, function)
        except Exception:
            log.exception("unexpected error in an Alpha Vantage drop-in request")
            body = {"Error Message": "Internal error. Please try again later."}
        return DropInAnswer(200, body, headers, source)

    def _av_quote(self, query: Mapping[str, str]) -> Answer:
        symbol, shown = self._av_symbol(query, "GLOBAL_QUOTE")
        return read_as(symbol, dict(AV_QUOTE_NOT_FOUND), self.service.get_quote,
                       lambda quote: av_global_quote(quote, shown))

    def _av_overview(self, query: Mapping[str, str]) -> Answer:
        symbol, shown = self._av_symbol(query, "OVERVIEW")

        def overview(profile: Mapping[str, Any]) -> Any:
            assert symbol is not None  # _read shapes an answer only after reading it by symbol
            try:
                metric: Mapping[str, Any] | None = self.service.get_metric(symbol)
            except StockcacheError as exc:  # the profile alone is still a useful OVERVIEW
                log.info("OVERVIEW %s without key figures: %s", symbol, exc.code)
                metric = None
            return av_overview(profile, metric, shown)

        return read_as(symbol, {}, self.service.get_profile, overview)

    def _av_daily(self, query: Mapping[str, str]) -> Answer:
        if (query.get("outputsize") or "compact").lower() == "full":
            return {"Information": AV_PREMIUM_FULL}, None
        symbol, shown = self._av_symbol(query, "TIME_SERIES_DAILY")
        if symbol is None:
            return av_invalid_call("TIME_SERIES_DAILY"), None
        answer = self.service.get_history(symbol, days=HISTORY_POINTS)
        return av_daily(answer, shown), answer

    def _av_news(self, query: Mapping[str, str]) -> Answer:
        """Articles about every one of ``tickers`` (AND, as Alpha Vantage does), from each one's cached news."""
        invalid = {"Information": AV_INVALID_INPUTS}
        parts = symbols_of(query.get("tickers"))
        if not parts or len(parts) > MAX_NEWS_TICKERS:
            return invalid, None
        # Normalised before anything else: upper-casing first would fold "ſpy" into SPY.
        checked = [symbol_param(part) for part in parts]
        if any(ticker is None for ticker in checked):
            return invalid, None
        written = [ticker for ticker in checked if ticker is not None]
        symbols = [from_av(ticker) for ticker in written]
        now = self.clock()
        try:
            start = _av_time(query.get("time_from")) or now - DEFAULT_NEWS_DAYS * 86400
            end = _av_time(query.get("time_to")) or now
            limit = ascii_int(query.get("limit") or "50")
        except ValueError:
            return invalid, None
        days = news_window(datetime.fromtimestamp(min(start, now), UTC).date(), self.today())
        feeds = []
        for symbol in symbols:
            try:
                feeds.append(self.service.get_news(symbol, days=days))
            except SymbolNotFound:
                return invalid, None  # an unknown ticker makes the inputs invalid
        body = av_news(feeds, written, start, end, sort=query.get("sort") or "LATEST",
                       limit=min(max(limit, 1), 1000))
        return body, feeds[0] if len(feeds) == 1 else None

    def _av_search(self, query: Mapping[str, str]) -> Answer:
        keywords = query.get("keywords")
        if not keywords or not keywords.strip():
            return av_invalid_call("SYMBOL_SEARCH"), None
        answer = self.service.search(keywords)
        return av_search(answer), answer

    @staticmethod
    def _av_symbol(query: Mapping[str, str], function: str) -> tuple[str | None, str]:
        """(our symbol, the symbol as written): ``SAP.DEX`` is ``SAP.DE``. None for one that cannot exist
        (answered as unknown); InvalidRequest when missing."""
        raw = query.get("symbol")
        if not raw or not strip_ascii(raw):
            raise InvalidRequest(f"{function} needs a symbol.")
        written = symbol_param(raw)
        return (None, "") if written is None else (from_av(written), written)


def av_invalid_call(function: str) -> Json:
    """Alpha Vantage's answer to a call it cannot serve (missing or unknown symbol, bad parameter)."""
    return {"Error Message": "Invalid API call. Please retry or visit the documentation "
                             f"(https://www.alphavantage.co/documentation/) for {function}."}


def av_unknown_function(function: str) -> Json:
    shown = "".join(ch for ch in function[:40] if ch.isalnum() or ch == "_")
    return {"Error Message": f"This API function ({shown}) does not exist. stockcache serves "
                             + ", ".join(FUNCTIONS) + "."}


def av_global_quote(quote: Mapping[str, Any], shown: str | None = None) -> Json:
    """``GLOBAL_QUOTE`` (the symbol as the caller wrote it). Our cached quote has no volume, so
    ``06. volume`` is "0"; prices are in the quote's major unit, as everywhere in stockcache."""
    change_percent = quote.get("change_percent")
    return {"Global Quote": {
        "01. symbol": shown or quote["symbol"],
        "02. open": _av_number(quote.get("open")),
        "03. high": _av_number(quote.get("high")),
        "04. low": _av_number(quote.get("low")),
        "05. price": _av_number(quote["price"]),
        "06. volume": "0",
        "07. latest trading day": trading_day(quote),
        "08. previous close": _av_number(quote.get("previous_close")),
        "09. change": _av_number(quote.get("change")),
        "10. change percent": "None" if change_percent is None else f"{float(change_percent):.4f}%",
    }}


def av_overview(profile: Mapping[str, Any], metric: Mapping[str, Any] | None, shown: str | None = None) -> Json:
    """``OVERVIEW``: a flat object of strings from the cached profile and key figures.

    Fields we do not cache are left out; values we do not have are "None", as Alpha Vantage writes them.
    """
    metrics = (metric or {}).get("metrics") or {}
    industry = as_text(profile.get("industry")).upper() or "None"
    dividend = metrics.get("dividend_yield")
    return {
        "Symbol": shown or profile["symbol"],
        "AssetType": "Common Stock",
        "Name": as_text(profile.get("name")),
        "Description": as_text(profile.get("description")) or "None",
        "Exchange": _AV_EXCHANGES.get(as_text(profile.get("exchange")), as_text(profile.get("exchange"))) or "None",
        "Currency": as_text(profile.get("currency")) or "None",
        "Country": _AV_COUNTRIES.get(as_text(profile.get("country")), as_text(profile.get("country"))) or "None",
        "Sector": industry,
        "Industry": industry,
        "OfficialSite": as_text(profile.get("weburl")) or "None",
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


def av_daily(history: Mapping[str, Any], shown: str | None = None) -> Json:
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
            "2. Symbol": shown or history["symbol"],
            "3. Last Refreshed": candles[-1]["date"] if candles else "",
            "4. Output Size": "Compact",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": series,
    }


def av_news(feeds: Sequence[Mapping[str, Any]], tickers: Sequence[str], start: float, end: float, *,
            sort: str = "LATEST", limit: int = 50) -> Json:
    """``NEWS_SENTIMENT``: the articles within [start, end] found in every ticker's news (AND), or
    Alpha Vantage's "No articles found" when none is. Sentiment is not cached, so neutral."""
    present = [{article["url"] for article in feed.get("articles", ())} for feed in feeds]
    shared = set.intersection(*present) if present else set()
    feed = []
    for article in feeds[0].get("articles", ()) if feeds else ():
        ts = unix_time(article["published_at"])
        if article["url"] not in shared or not start <= ts <= end:
            continue
        feed.append({
            "title": article["headline"], "url": article["url"],
            "time_published": datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S"),
            "authors": [], "summary": as_text(article.get("summary")),
            "banner_image": article.get("image"), "source": as_text(article.get("source")),
            "category_within_source": "n/a", "source_domain": urlsplit(article["url"]).hostname or "",
            "topics": [], "overall_sentiment_score": 0.0, "overall_sentiment_label": "Neutral",
            "ticker_sentiment": [{"ticker": ticker, "relevance_score": "1.000000",
                                  "ticker_sentiment_score": "0.000000", "ticker_sentiment_label": "Neutral"}
                                 for ticker in tickers],
        })
    if not feed:
        return {"Information": AV_NO_ARTICLES}
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
        symbol, name = to_av(hit["symbol"]), as_text(hit.get("name"))
        matches.append({
            "1. symbol": symbol, "2. name": name,
            "3. type": _TO_AV_TYPE.get(hit.get("type") or "", as_text(hit.get("type"))),
            "4. region": "", "5. marketOpen": "", "6. marketClose": "", "7. timezone": "", "8. currency": "",
            "9. matchScore": f"{_match_score(needle, symbol, name):.4f}",
        })
    return {"bestMatches": matches}


def av_error(error: StockcacheError, function: str) -> tuple[Json, dict[str, str]]:
    """(body, extra headers) for an error, always sent with HTTP 200 as Alpha Vantage does."""
    if isinstance(error, Unauthorized):
        return {"Error Message": AV_BAD_KEY}, {}
    if isinstance(error, RateLimited):
        # Alpha Vantage's own texts, which scripts match: a short wait is its burst limit, a long one its day.
        wait = error.retry_after
        headers = {"Retry-After": str(int(wait))} if wait is not None else {}
        return {"Information": AV_BURST if wait is not None and wait <= 60 else AV_DAILY_CAP}, headers
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


def _av_time(text: str | None) -> float | None:
    """Alpha Vantage's ``YYYYMMDDTHHMM`` (seconds optional) as unix time; ValueError when malformed."""
    if not text:
        return None
    if not text.isascii():  # strptime reads any Unicode digit
        raise ValueError("time_from/time_to is YYYYMMDDTHHMM")
    for fmt in ("%Y%m%dT%H%M", "%Y%m%dT%H%M%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError("time_from/time_to is YYYYMMDDTHHMM")


