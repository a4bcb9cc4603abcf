"""Drop-in routes: Finnhub's and Alpha Vantage's own APIs, answered through stockcache's cache.

Scripts written against ``finnhub-python`` or ``alpha-vantage`` get caching,
single-flight, budgets and stale-if-error by changing one URL:

- ``/finnhub/api/v1/<endpoint>`` (``quote``, ``stock/profile2``, ``company-news``,
  ``stock/metric``, ``search``, ``stock/candle``). One catch-all route, because the
  official client builds ``/api/v1//quote``; slashes are folded. The caller's
  ``token`` (query) or ``X-Finnhub-Token`` (header) is a stockcache API token or JWT.
  Errors are Finnhub's ``{"error": "..."}`` with its statuses (401, 403, 422, 429
  with Retry-After, 502/504). Other endpoints are refused with Finnhub's 403
  "no access" body rather than passed through: a pass-through would spend the
  server's budget on data we cannot validate, normalise or count per kind.
- ``/alphavantage/query?function=...`` (``GLOBAL_QUOTE``, ``OVERVIEW``,
  ``TIME_SERIES_DAILY``, ``NEWS_SENTIMENT``, ``SYMBOL_SEARCH``); the caller's
  ``apikey`` is a stockcache token. Every answer, error or not, is HTTP 200 with
  Alpha Vantage's ``Error Message`` / ``Information`` bodies, because the official
  client never looks at the status code.

Both read through :class:`StockService` exactly like the native API (same cache
keys, TTLs, single-flight, budgets, fallback, stale-if-error and stats), and
render with :mod:`stockcache.dropin_render`. ApiPlugin is skipped for these
routes: it would demand a bearer header and answer in our own error shape.
Tokens never reach a log line (the access log writes the route rule only) or a body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import bottle

from .. import dropin_render as render
from ..errors import InvalidRequest, InvalidSymbol, StockcacheError, SymbolNotFound, Unauthorized
from ..runtime import Runtime
from ..symbols import normalize_symbol, strip_ascii
from .plugins import ApiPlugin, note_cache_source

log = logging.getLogger(__name__)

FINNHUB_PREFIX = "/finnhub/api/v1"
ALPHAVANTAGE_PATH = "/alphavantage/query"
FINNHUB_ENDPOINTS = ("quote", "stock/profile2", "company-news", "stock/metric", "search", "stock/candle")
AV_DEFAULT_NEWS_DAYS = 30  # NEWS_SENTIMENT without time_from: the latest articles of this window

Answer = tuple[Any, Mapping[str, Any] | None]  # (provider-shaped body, the service answer it came from)


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add the Finnhub and Alpha Vantage drop-in routes to ``app`` (outside ApiPlugin)."""
    dropin = DropIn(runtime)
    app.route(FINNHUB_PREFIX + "/<path:path>", "ANY", dropin.finnhub, skip=[ApiPlugin])
    app.route(ALPHAVANTAGE_PATH, "GET", dropin.alphavantage, skip=[ApiPlugin])


class _NoAccess(Exception):
    """Finnhub's 403 for something stockcache does not serve (another endpoint, an intraday resolution)."""


class DropIn:
    """The two drop-in APIs over one Runtime. Thread-safe: it keeps no state of its own."""

    def __init__(self, runtime: Runtime) -> None:
        self._service = runtime.service
        self._auth = runtime.auth
        self._clock = runtime.clock
        self._finnhub: dict[str, Callable[[Mapping[str, str]], Answer]] = {
            "quote": self._fh_quote, "stock/profile2": self._fh_profile, "company-news": self._fh_news,
            "stock/metric": self._fh_metric, "search": self._fh_search, "stock/candle": self._fh_candle,
        }
        self._av: dict[str, Callable[[Mapping[str, str]], Answer]] = {
            "GLOBAL_QUOTE": self._av_quote, "OVERVIEW": self._av_overview, "TIME_SERIES_DAILY": self._av_daily,
            "NEWS_SENTIMENT": self._av_news, "SYMBOL_SEARCH": self._av_search,
        }

    # -- Finnhub -----------------------------------------------------------------------------

    def finnhub(self, path: str) -> bottle.HTTPResponse:
        """``/finnhub/api/v1/<endpoint>``: Finnhub's bodies and statuses."""
        request = bottle.request
        source: Mapping[str, Any] | None = None
        headers: dict[str, str] = {}
        try:
            if request.method != "GET":
                return _respond(405, {"error": "Method not allowed. Finnhub endpoints are GET only."},
                                {"Allow": "GET"})
            token = (_credential("HTTP_X_FINNHUB_TOKEN") or request.query.getunicode("token")
                     or _bearer(_credential("HTTP_AUTHORIZATION")))
            if not token:
                return _respond(401, {"error": render.FINNHUB_NO_TOKEN})
            self._auth.authenticate_token(token)
            endpoint = "/".join(part for part in path.split("/") if part)
            handler = self._finnhub.get(endpoint)
            if handler is None:
                raise _NoAccess(f"stockcache serves {', '.join(FINNHUB_ENDPOINTS)}.")
            body, source = handler(_query())
            status = 200
        except _NoAccess as exc:
            status, body = 403, {"error": f"{render.FINNHUB_NO_ACCESS} {exc}"}
        except StockcacheError as exc:
            status, body, headers = render.finnhub_error(exc)
        except Exception:  # the last line of defence: log it, tell nothing
            log.exception("unexpected error in a Finnhub drop-in request")
            status, body = 500, {"error": "Internal error."}
        return _respond(status, body, {**headers, **_cache_headers(source)})

    def _fh_quote(self, query: Mapping[str, str]) -> Answer:
        symbol = _symbol(query.get("symbol"))
        return _read(symbol, dict(render.FINNHUB_QUOTE_NOT_FOUND), self._service.get_quote, render.finnhub_quote)

    def _fh_profile(self, query: Mapping[str, str]) -> Answer:
        if not query.get("symbol") and (query.get("isin") or query.get("cusip")):
            raise InvalidRequest("stockcache looks profiles up by symbol only.")
        symbol = _symbol(query.get("symbol"))
        return _read(symbol, {}, self._service.get_profile, render.finnhub_profile)

    def _fh_news(self, query: Mapping[str, str]) -> Answer:
        symbol = _symbol(query.get("symbol"))
        try:
            first = date.fromisoformat(query["from"])
            last = date.fromisoformat(query["to"])
        except (KeyError, ValueError):
            raise InvalidRequest("Wrong from/to date format. Use YYYY-MM-DD.") from None
        today = self._today()
        if last < first or first > today:
            return [], None
        return _read(symbol, [], lambda known: self._service.get_news(known, days=render.news_window(first, today)),
                     lambda answer: render.finnhub_news(answer, render.day_start(first),
                                                        render.day_start(last) + 86399))

    def _fh_metric(self, query: Mapping[str, str]) -> Answer:
        # Every metric group (all, price, valuation, margin) is answered with the figures we cache.
        symbol = _symbol(query.get("symbol"))
        return _read(symbol, dict(render.FINNHUB_METRIC_NOT_FOUND), self._service.get_metric, render.finnhub_metric)

    def _fh_search(self, query: Mapping[str, str]) -> Answer:
        text = query.get("q")
        if not text or not text.strip():
            raise InvalidRequest("Missing q.")
        answer = self._service.search(text)
        return render.finnhub_search(answer), answer

    def _fh_candle(self, query: Mapping[str, str]) -> Answer:
        if (query.get("resolution") or "").upper() != "D":
            raise _NoAccess("stockcache serves daily candles only (resolution=D).")
        try:
            start, end = _int(query["from"]), _int(query["to"])
        except (KeyError, ValueError):
            raise InvalidRequest("from and to must be unix timestamps in seconds.") from None
        symbol = _symbol(query.get("symbol"))
        return _read(symbol, dict(render.FINNHUB_NO_DATA),
                     lambda known: self._service.get_history(known, days=render.HISTORY_POINTS),
                     lambda answer: render.finnhub_candles(answer, start, end))

    # -- Alpha Vantage -----------------------------------------------------------------------

    def alphavantage(self) -> bottle.HTTPResponse:
        """``/alphavantage/query``: Alpha Vantage's bodies, always with HTTP 200."""
        query = _query()
        function = strip_ascii(query.get("function") or "")
        function = function.upper() if function.isascii() else function  # "newſ_sentiment" is no function
        source: Mapping[str, Any] | None = None
        headers: dict[str, str] = {}
        try:
            apikey = query.get("apikey")
            if not apikey:
                raise Unauthorized()
            self._auth.authenticate_token(apikey)
            handler = self._av.get(function)
            if handler is None:
                body: Any = render.av_unknown_function(function) if function else render.av_invalid_call("")
            elif (query.get("datatype") or "json").lower() != "json":
                body = {"Error Message": "stockcache serves datatype=json only."}
            else:
                body, source = handler(query)
        except StockcacheError as exc:
            body, headers = render.av_error(exc, function)
        except Exception:
            log.exception("unexpected error in an Alpha Vantage drop-in request")
            body = {"Error Message": "Internal error. Please try again later."}
        return _respond(200, body, {**headers, **_cache_headers(source)})

    def _av_quote(self, query: Mapping[str, str]) -> Answer:
        symbol = self._av_symbol(query, "GLOBAL_QUOTE")
        return _read(symbol, dict(render.AV_QUOTE_NOT_FOUND), self._service.get_quote, render.av_global_quote)

    def _av_overview(self, query: Mapping[str, str]) -> Answer:
        symbol = self._av_symbol(query, "OVERVIEW")

        def overview(profile: Mapping[str, Any]) -> Any:
            assert symbol is not None  # _read shapes an answer only after reading it by symbol
            try:
                metric: Mapping[str, Any] | None = self._service.get_metric(symbol)
            except StockcacheError as exc:  # the profile alone is still a useful OVERVIEW
                log.info("OVERVIEW %s without key figures: %s", symbol, exc.code)
                metric = None
            return render.av_overview(profile, metric)

        return _read(symbol, {}, self._service.get_profile, overview)

    def _av_daily(self, query: Mapping[str, str]) -> Answer:
        if (query.get("outputsize") or "compact").lower() == "full":
            return {"Information": render.AV_PREMIUM_FULL}, None
        symbol = self._av_symbol(query, "TIME_SERIES_DAILY")
        if symbol is None:
            return render.av_invalid_call("TIME_SERIES_DAILY"), None
        answer = self._service.get_history(symbol, days=render.HISTORY_POINTS)
        return render.av_daily(answer), answer

    def _av_news(self, query: Mapping[str, str]) -> Answer:
        invalid = {"Information": render.AV_INVALID_INPUTS}
        tickers = render.symbols_of(query.get("tickers"))
        if len(tickers) != 1:  # several tickers mean "articles about all of them": not what we cache
            return invalid, None
        symbol = _symbol(tickers[0])
        now = self._clock()
        try:
            start = _av_time(query.get("time_from")) or now - AV_DEFAULT_NEWS_DAYS * 86400
            end = _av_time(query.get("time_to")) or now
            limit = _int(query.get("limit") or "50")
        except ValueError:
            return invalid, None

        def read(known: str) -> Mapping[str, Any]:
            first = datetime.fromtimestamp(min(start, now), UTC).date()
            return self._service.get_news(known, days=render.news_window(first, self._today()))

        return _read(symbol, invalid, read,
                     lambda answer: render.av_news(answer, start, end, sort=query.get("sort") or "LATEST",
                                                   limit=min(max(limit, 1), 1000)))

    def _av_search(self, query: Mapping[str, str]) -> Answer:
        keywords = query.get("keywords")
        if not keywords or not keywords.strip():
            return render.av_invalid_call("SYMBOL_SEARCH"), None
        answer = self._service.search(keywords)
        return render.av_search(answer), answer

    @staticmethod
    def _av_symbol(query: Mapping[str, str], function: str) -> str | None:
        """The symbol, None for one that cannot exist (answered as unknown); InvalidRequest when missing."""
        raw = query.get("symbol")
        if not raw or not strip_ascii(raw):
            raise InvalidRequest(f"{function} needs a symbol.")
        return _symbol(raw)

    def _today(self) -> date:
        return datetime.fromtimestamp(self._clock(), UTC).date()


# -- helpers -----------------------------------------------------------------------------------


def _query() -> dict[str, str]:
    """The query string as a dict of text (the last value of a repeated name wins)."""
    query = bottle.request.query
    return {name: query.getunicode(name) or "" for name in query.keys()}


def _symbol(raw: str | None) -> str | None:
    """A normalised symbol; None for text that cannot be a symbol (the providers answer "unknown").

    A missing symbol is the caller's mistake (InvalidRequest), as upstream.
    """
    if raw is None or not strip_ascii(raw):
        raise InvalidRequest("Missing symbol.")
    try:
        return normalize_symbol(raw)
    except InvalidSymbol:
        return None


def _read(symbol: str | None, not_found: Any, read: Callable[[str], Mapping[str, Any]],
          shape: Callable[[Mapping[str, Any]], Any]) -> Answer:
    """``read`` the symbol through the service and ``shape`` it as the provider would.

    A symbol that cannot exist (None) and SymbolNotFound both answer the provider's
    own not-found body (``not_found``), as upstream does; other errors propagate.
    """
    if symbol is None:
        return not_found, None
    try:
        answer = read(symbol)
    except SymbolNotFound:
        return not_found, None
    return shape(answer), answer


def _credential(environ_key: str) -> str | None:
    """A credential header as WSGI passes it (latin-1 text); Unauthorized when it is not ASCII.

    Read from the environ, not with ``get_header()``, which decodes as UTF-8 and
    raises (a 500) on other bytes. Tokens are ASCII, so anything else is a wrong one.
    """
    value = bottle.request.environ.get(environ_key)
    if value is not None and not value.isascii():
        raise Unauthorized()
    return value


def _int(text: str) -> int:
    """``int(text)`` for ASCII text only (ValueError otherwise): ``int()`` reads "١" as 1."""
    if not text.isascii():
        raise ValueError("not an ASCII number")
    return int(text)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


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


def _cache_headers(answer: Mapping[str, Any] | None) -> dict[str, str]:
    """Where the data came from, in headers: the provider's body shape has no room for it."""
    if not answer or "cache" not in answer:
        return {}
    note_cache_source(answer)
    return {"X-Stockcache-Cache": str(answer["cache"]), "X-Stockcache-Source": str(answer.get("source")),
            "X-Stockcache-Age": str(answer.get("age", 0)),
            "X-Stockcache-Stale": "true" if answer.get("stale") else "false"}


def _respond(status: int, body: Any, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        body=json.dumps(body, allow_nan=False), status=status,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
    )
