"""Finnhub's own API (``/finnhub/api/v1/<endpoint>``) answered from stockcache's cache.

``quote``, ``stock/profile2``, ``company-news``, ``stock/metric``, ``search`` and
``stock/candle``. One catch-all route, because the official client builds
``/api/v1//quote``; slashes are folded. The caller's ``token`` (query) or
``X-Finnhub-Token`` (header) is a stockcache API token or JWT. Errors are
Finnhub's ``{"error": "..."}`` with its statuses (401, 403, 422, 429 with
Retry-After, 502/504). Other endpoints are refused with Finnhub's 403 "no
access" body rather than passed through: a pass-through would spend the
server's budget on data we cannot validate, normalise or count per kind.
Finnhub's short keys and market cap in millions are rebuilt from our models.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, ClassVar

from ...errors import (
    InvalidRequest,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    Unauthorized,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
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
    bearer,
    credential,
    date_start,
    day_start,
    news_window,
    openapi_get,
    openapi_query,
    or_zero,
    read_as,
    symbol_param,
    unix_time,
)

log = logging.getLogger(__name__)

ENDPOINTS = ("quote", "stock/profile2", "company-news", "stock/metric", "search", "stock/candle")

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

_TO_FINNHUB_TYPE = {v: k for k, v in SECURITY_TYPES.items()}


def _openapi() -> dict[str, Any]:
    q = openapi_query
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    errors = {str(status): (error, text) for status, text in (
        (401, "Missing or invalid stockcache token."), (403, "Not served by stockcache (other endpoints, "
         "intraday candles), or not in the upstream plan."), (422, "Missing or malformed parameters."),
        (429, "Upstream budget spent and nothing cached; see Retry-After."), (502, "The upstream failed."),
        (504, "The upstream did not answer in time."))}
    token = [q("token"), {"name": "X-Finnhub-Token", "in": "header", "required": False,
                          "schema": {"type": "string"}}]
    symbol = q("symbol", True)
    endpoints = {
        "quote": ("Finnhub quote {c,d,dp,h,l,o,pc,t}; unknown symbol: all zeros.", [symbol]),
        "stock/profile2": ("Finnhub company profile (market cap and shares in millions); unknown: {}.",
                           [symbol]),
        "company-news": ("Finnhub company news: a bare array, datetime in unix seconds.",
                         [symbol, q("from", True, format="date"), q("to", True, format="date")]),
        "stock/metric": ("Finnhub basic financials {metric, metricType, series, symbol}.",
                         [symbol, q("metric")]),
        "search": ("Finnhub symbol search {count, result}.", [q("q", True)]),
        "stock/candle": ("Finnhub daily candles from the cached 100 days (resolution D only); "
                         'unknown or empty: {"s": "no_data"}.',
                         [symbol, q("resolution", True, enum=["D"]), q("from", True), q("to", True)]),
    }
    return {f"/finnhub/api/v1/{endpoint}": openapi_get(
        f"Drop-in for Finnhub clients: {summary}", {"200": ({}, "Finnhub's body."), **errors}, [*params, *token])
        for endpoint, (summary, params) in endpoints.items()}


class _NoAccess(Exception):
    """Finnhub's 403 for something stockcache does not serve (another endpoint, an intraday resolution)."""


class FinnhubDropIn(DropIn):
    """``/finnhub/api/v1/...`` over the service. Thread-safe."""

    route = "/finnhub/api/v1/<path:path>"
    methods = "ANY"
    openapi: ClassVar[Mapping[str, Any]] = _openapi()

    def __init__(self, service: Any, authenticate: Callable[[str], Any], clock: Callable[[], float]) -> None:
        super().__init__(service, authenticate, clock)
        self._endpoints: dict[str, Callable[[Mapping[str, str]], Answer]] = {
            "quote": self._fh_quote, "stock/profile2": self._fh_profile, "company-news": self._fh_news,
            "stock/metric": self._fh_metric, "search": self._fh_search, "stock/candle": self._fh_candle,
        }

    def handle(self, request: DropInRequest) -> DropInAnswer:
        """``/finnhub/api/v1/<endpoint>``: Finnhub's bodies and statuses."""
        source: Mapping[str, Any] | None = None
        headers: dict[str, str] = {}
        try:
            if request.method != "GET":
                return DropInAnswer(405, {"error": "Method not allowed. Finnhub endpoints are GET only."},
                                    {"Allow": "GET"})
            token = (credential(request, "HTTP_X_FINNHUB_TOKEN") or request.query.get("token")
                     or bearer(credential(request, "HTTP_AUTHORIZATION")))
            if not token:
                return DropInAnswer(401, {"error": FINNHUB_NO_TOKEN})
            self.authenticate(token)
            endpoint = "/".join(part for part in request.path.split("/") if part)
            handler = self._endpoints.get(endpoint)
            if handler is None:
                raise _NoAccess(f"stockcache serves {', '.join(ENDPOINTS)}.")
            body, source = handler(request.query)
            status = 200
        except _NoAccess as exc:
            status, body = 403, {"error": f"{FINNHUB_NO_ACCESS} {exc}"}
        except StockcacheError as exc:
            status, body, headers = finnhub_error(exc)
        except Exception:  # the last line of defence: log it, tell nothing
            log.exception("unexpected error in a Finnhub drop-in request")
            status, body = 500, {"error": "Internal error."}
        return DropInAnswer(status, body, headers, source)

    def _fh_quote(self, query: Mapping[str, str]) -> Answer:
        symbol = symbol_param(query.get("symbol"))
        return read_as(symbol, dict(FINNHUB_QUOTE_NOT_FOUND), self.service.get_quote, finnhub_quote)

    def _fh_profile(self, query: Mapping[str, str]) -> Answer:
        if not query.get("symbol") and (query.get("isin") or query.get("cusip")):
            raise InvalidRequest("stockcache looks profiles up by symbol only.")
        symbol = symbol_param(query.get("symbol"))
        return read_as(symbol, {}, self.service.get_profile, finnhub_profile)

    def _fh_news(self, query: Mapping[str, str]) -> Answer:
        symbol = symbol_param(query.get("symbol"))
        try:
            first = date.fromisoformat(query["from"])
            last = date.fromisoformat(query["to"])
        except (KeyError, ValueError):
            raise InvalidRequest("Wrong from/to date format. Use YYYY-MM-DD.") from None
        today = self.today()
        if last < first or first > today:
            return [], None
        return read_as(symbol, [], lambda known: self.service.get_news(known, days=news_window(first, today)),
                     lambda answer: finnhub_news(answer, day_start(first),
                                                        day_start(last) + 86399))

    def _fh_metric(self, query: Mapping[str, str]) -> Answer:
        # Every metric group (all, price, valuation, margin) is answered with the figures we cache.
        symbol = symbol_param(query.get("symbol"))
        return read_as(symbol, dict(FINNHUB_METRIC_NOT_FOUND), self.service.get_metric, finnhub_metric)

    def _fh_search(self, query: Mapping[str, str]) -> Answer:
        text = query.get("q")
        if not text or not text.strip():
            raise InvalidRequest("Missing q.")
        answer = self.service.search(text)
        return finnhub_search(answer), answer

    def _fh_candle(self, query: Mapping[str, str]) -> Answer:
        if (query.get("resolution") or "").upper() != "D":
            raise _NoAccess("stockcache serves daily candles only (resolution=D).")
        try:
            start, end = ascii_int(query["from"]), ascii_int(query["to"])
        except (KeyError, ValueError):
            raise InvalidRequest("from and to must be unix timestamps in seconds.") from None
        symbol = symbol_param(query.get("symbol"))
        return read_as(symbol, dict(FINNHUB_NO_DATA),
                     lambda known: self.service.get_history(known, days=HISTORY_POINTS),
                     lambda answer: finnhub_candles(answer, start, end))



def finnhub_quote(quote: Mapping[str, Any]) -> Json:
    """``/quote``: ``{"c","d","dp","h","l","o","pc","t"}``."""
    return {
        "c": quote["price"], "d": quote.get("change"), "dp": quote.get("change_percent"),
        "h": or_zero(quote.get("high")), "l": or_zero(quote.get("low")), "o": or_zero(quote.get("open")),
        "pc": or_zero(quote.get("previous_close")), "t": int(quote.get("timestamp") or 0),
    }


def finnhub_profile(profile: Mapping[str, Any]) -> Json:
    """``/stock/profile2``: market cap and shares back in millions; missing text as "" like Finnhub."""
    currency = as_text(profile.get("currency"))
    return {
        "country": as_text(profile.get("country")),
        "currency": currency,
        "estimateCurrency": currency,
        "exchange": as_text(profile.get("exchange")),
        "finnhubIndustry": as_text(profile.get("industry")),
        "ipo": as_text(profile.get("ipo")),
        "logo": as_text(profile.get("logo")),
        "marketCapitalization": _millions(profile.get("market_cap")),
        "name": as_text(profile.get("name")),
        "phone": as_text(profile.get("phone")),
        "shareOutstanding": _millions(profile.get("shares_outstanding")),
        "ticker": profile["symbol"],
        "weburl": as_text(profile.get("weburl")),
    }


def finnhub_news(news: Mapping[str, Any], start: float, end: float) -> list[Json]:
    """``/company-news``: a bare array, newest first, of articles published within [start, end]."""
    symbol = news["symbol"]
    out = []
    for article in news.get("articles", ()):
        ts = unix_time(article["published_at"])
        if start <= ts <= end:
            out.append({
                "category": "company", "datetime": ts, "headline": article["headline"],
                "id": _article_id(article["url"]), "image": as_text(article.get("image")),
                "related": symbol, "source": as_text(article.get("source")),
                "summary": as_text(article.get("summary")), "url": article["url"],
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
    # Finnhub's series is {"annual": {...}, "quarterly": {...}}; we keep no series, so both are empty.
    return {"metric": out, "metricType": "all", "series": {"annual": {}, "quarterly": {}},
            "symbol": metric["symbol"]}


def finnhub_search(search: Mapping[str, Any]) -> Json:
    """``/search``: ``{"count", "result": [{"description","displaySymbol","symbol","type"}]}``."""
    result = [
        {"description": as_text(hit.get("name")), "displaySymbol": hit["symbol"], "symbol": hit["symbol"],
         "type": _TO_FINNHUB_TYPE.get(hit.get("type") or "", as_text(hit.get("type")))}
        for hit in search.get("results", ())
    ]
    return {"count": len(result), "result": result}


def finnhub_candles(history: Mapping[str, Any], start: float, end: float) -> Json:
    """``/stock/candle`` at resolution D: columns of the daily bars whose day starts within [start, end].

    Finnhub stamps a daily bar with 00:00 UTC of its day. No bar in range is ``{"s": "no_data"}``.
    """
    bars = [(int(date_start(c["date"])), c) for c in history.get("candles", ())]
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


def _millions(value: Any) -> float:
    # Finnhub writes 0 where it has no figure; we stored units, Finnhub speaks millions.
    return 0 if value is None else round(float(value) / 1e6, 6)


def _article_id(url: str) -> int:
    """A stable numeric id (Finnhub's ids are integers; we do not keep theirs), below 2**48."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=6).digest(), "big")


