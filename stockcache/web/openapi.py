"""``GET /openapi.json``: an OpenAPI 3.1 description of every route and error.

Written as data next to the routes; a test checks that every route the app
serves is described here, so the two cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from .routes import MAX_POSITIONS, MAX_WATCHLIST_ITEMS

SYMBOL_PATTERN = r"^[A-Za-z0-9.\-^=:_]{1,20}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request, symbol or batch size (invalid_request, invalid_symbol, too_many_symbols).",
        401: "Missing or invalid token (unauthorized).",
        403: "Needs an admin (forbidden).",
        404: "Not found (not_found, symbol_not_found).",
        405: "Method not allowed on this route (method_not_allowed).",
        409: "Already exists (conflict).",
        413: "Body larger than 1 MB (payload_too_large).",
        429: "Too many failed logins, or too many logins at once (too_many_requests); see Retry-After.",
        502: "The upstream provider failed (upstream_error).",
        503: "Upstream budget spent (rate_limited); see Retry-After.",
        504: "The upstream provider did not answer in time (upstream_timeout).",
    }
    return {str(s): _json(_ref("Error"), texts[s]) for s in statuses}


def _writes(*statuses: int) -> dict[str, Any]:
    """``_errors`` for a route that writes to the store: a full disk or an unreachable store is a 503 of its own."""
    return {**_errors(*statuses), "503": _json(_ref("Error"), "The server's disk is full (storage_full), or the "
                                                             "user store cannot be reached (store_unavailable); "
                                                             "nothing was changed; see Retry-After.")}


_SYMBOL = {"name": "symbol", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": SYMBOL_PATTERN}}
_DAYS = {"name": "days", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_MARKET = (400, 401, 404, 502, 503, 504)


def _op(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not public:
        op["security"] = _BEARER
    return op


def _dropin_paths() -> dict[str, Any]:
    """The Finnhub and Alpha Vantage drop-in routes (web/dropin.py): the providers' own shapes."""
    def q(name: str, required: bool = False, **schema: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": {"type": "string", **schema}}

    finnhub_error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    errors = {str(status): _json(finnhub_error, text) for status, text in (
        (401, "Missing or invalid stockcache token."), (403, "Not served by stockcache (other endpoints, "
         "intraday candles), or not in the upstream plan."), (422, "Missing or malformed parameters."),
        (429, "Upstream budget spent and nothing cached; see Retry-After."), (502, "The upstream failed."),
        (504, "The upstream did not answer in time."))}
    token = [q("token"), {"name": "X-Finnhub-Token", "in": "header", "required": False,
                          "schema": {"type": "string"}}]
    symbol = q("symbol", True)
    finnhub = {
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
    paths: dict[str, Any] = {
        f"/finnhub/api/v1/{endpoint}": {"get": _op(
            f"Drop-in for Finnhub clients: {summary}", {"200": _json({}, "Finnhub's body."), **errors},
            params=[*params, *token], public=True)}
        for endpoint, (summary, params) in finnhub.items()
    }
    paths["/alphavantage/query"] = {"get": _op(
        "Drop-in for Alpha Vantage clients: GLOBAL_QUOTE, OVERVIEW, TIME_SERIES_DAILY (compact), "
        "NEWS_SENTIMENT (one ticker), SYMBOL_SEARCH. Always HTTP 200; errors are Alpha Vantage's "
        "\"Error Message\" / \"Information\" bodies.",
        {"200": _json({"type": "object"}, "Alpha Vantage's body, or its error body.")},
        params=[q("function", True, enum=["GLOBAL_QUOTE", "OVERVIEW", "TIME_SERIES_DAILY", "NEWS_SENTIMENT",
                                          "SYMBOL_SEARCH"]),
                q("apikey", True), q("symbol"), q("tickers"), q("keywords"), q("outputsize", enum=["compact"]),
                q("time_from"), q("time_to"), q("sort"), q("limit"), q("datatype", enum=["json"])],
        public=True)}
    return paths


@cache
def spec() -> dict[str, Any]:
    market_item = {"type": "object", "required": ["source", "cache", "fetched_at", "age", "stale"],
                   "properties": {"source": {"enum": ["finnhub", "alphavantage", "demo"]},
                                  "cache": {"enum": ["memory", "sqlite", "redis", "upstream"]},
                                  "fetched_at": {"type": "string"}, "age": {"type": "integer"},
                                  "stale": {"type": "boolean"}}}
    tickers = {"type": "object", "required": ["tickers"], "additionalProperties": False,
               "properties": {"tickers": {"type": "array", "minItems": 1, "maxItems": 100,
                                          "items": {"type": "string", "pattern": SYMBOL_PATTERN}}}}
    batch = {"type": "object", "properties": {"errors": {"type": "object",
                                                         "additionalProperties": _ref("ErrorBody")}},
             "additionalProperties": True}
    position_in = {"type": "object", "required": ["symbol", "shares", "cost_basis"],
                   "additionalProperties": False,
                   "properties": {"symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
                                  "shares": {"type": "number", "exclusiveMinimum": 0},
                                  "cost_basis": {"type": "number", "minimum": 0}}}
    position_patch = {**position_in, "required": [], "minProperties": 1}
    position = {"type": "object", "required": ["id", "symbol", "shares", "cost_basis"],
                "properties": {"id": {"type": "integer"}, "symbol": {"type": "string"},
                               "shares": {"type": "number"}, "cost_basis": {"type": "number"}}}
    any_object = {"type": "object"}
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Health: ok or degraded with reasons.", {"200": _json(any_object, "Health."),
                                                                          **_errors(405)}, public=True)},
        "/openapi.json": {"get": _op("This document.", {"200": _json(any_object, "OpenAPI.")}, public=True)},
        "/": {"get": _op("The dashboard page (HTML; it logs in and calls this API).", {
            "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}}, public=True)},
        "/static/{name}": {"get": _op("The dashboard's CSS, JavaScript and icons.", {
            "200": {"description": "A file shipped in the package."}, **_errors(404)},
            params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}], public=True)},
        "/metrics": {"get": _op("Prometheus metrics (admin).", {
            "200": {"description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(401, 403)})},
        "/api/auth/login": {"post": _op("Log in; returns a JWT.", {
            "200": _json(_ref("Login"), "A token."), **_errors(400, 401, 413, 429),
            "503": _json(_ref("Error"), "The user store cannot be reached (store_unavailable); see Retry-After.")},
            body={"type": "object", "required": ["username", "password"], "additionalProperties": False,
                  "properties": {"username": {"type": "string", "minLength": 1, "maxLength": 64},
                                 "password": {"type": "string", "minLength": 1, "maxLength": 1024}}},
            public=True)},
        "/api/me": {"get": _op("Who am I.", {"200": _json(any_object, "The caller."), **_errors(401)})},
        "/api/me/password": {"put": _op(
            "Change your own password; every JWT issued before is refused from then on.",
            {"200": _json(_ref("Login"), "A fresh access token under the new password."),
             **_writes(400, 401, 403, 429)},
            body={"type": "object", "required": ["current", "new"], "additionalProperties": False,
                  "properties": {"current": {"type": "string"},
                                 "new": {"type": "string", "minLength": 8, "maxLength": 1024}}})},
        "/api/quote/{symbol}": {"get": _op("One quote.", {"200": _json(_ref("Quote"), "A quote."),
                                                          **_errors(*_MARKET)}, params=[_SYMBOL])},
        "/api/batch-quotes": {"post": _op("Many quotes in one concurrent batch.", {
            "200": _json(batch, "quotes and errors by symbol."), **_errors(400, 401, 413)}, body=tickers)},
        "/api/quotes": {"get": _op("Many quotes: ?symbols=AAPL,MSFT.", {
            "200": _json(batch, "quotes and errors by symbol."), **_errors(400, 401)},
            params=[{"name": "symbols", "in": "query", "required": True, "schema": {"type": "string"}}])},
        "/api/profile/{symbol}": {"get": _op("Company profile.", {"200": _json(market_item, "A profile."),
                                                                  **_errors(*_MARKET)}, params=[_SYMBOL])},
        "/api/batch-profiles": {"post": _op("Many profiles.", {
            "200": _json(batch, "profiles and errors by symbol."), **_errors(400, 401, 413)}, body=tickers)},
        "/api/history/{symbol}": {"get": _op("Daily bars, oldest first (days 1..100, default 30).", {
            "200": _json(market_item, "History."), **_errors(*_MARKET)}, params=[_SYMBOL, _DAYS])},
        "/api/news/{symbol}": {"get": _op("News, newest first (days 1..365, default 7).", {
            "200": _json(market_item, "News."), **_errors(*_MARKET)}, params=[_SYMBOL, _DAYS])},
        "/api/portfolio": {
            "get": _op("Your positions.", {"200": _json(any_object, "Positions."), **_errors(401)}),
            "post": _op(f"Add a position (at most {MAX_POSITIONS} per user).",
                        {"201": _json(position, "The position."), **_writes(400, 401, 413)}, body=position_in),
        },
        "/api/portfolio/performance": {"get": _op("Value, gain and day change of your positions.", {
            "200": _json(any_object, "Performance."), **_errors(401)})},
        "/api/portfolio/{id}": {
            "put": _op("Change a position.", {"200": _json(position, "The position."),
                                              **_writes(400, 401, 404, 413)},
                       params=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                       body=position_patch),
            "delete": _op("Remove a position.", {"204": {"description": "Removed."}, **_writes(401, 404)},
                          params=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]),
        },
        "/api/watchlist": {
            "get": _op("Your watchlist with quotes.", {"200": _json(any_object, "Items."), **_errors(401)}),
            "post": _op(f"Add a symbol (at most {MAX_WATCHLIST_ITEMS} per user).",
                        {"201": _json(any_object, "Added."), **_writes(400, 401, 409, 413)},
                        body={"type": "object", "required": ["symbol"], "additionalProperties": False,
                              "properties": {"symbol": {"type": "string", "pattern": SYMBOL_PATTERN}}}),
        },
        "/api/watchlist/{symbol}": {"delete": _op("Remove a symbol.", {
            "204": {"description": "Removed."}, **_writes(400, 401, 404)}, params=[_SYMBOL])},
        "/api/cache/stats": {"get": _op("Cache and upstream statistics (admin).", {
            "200": _json(any_object, "Stats."), **_errors(401, 403)})},
        "/api/cache": {"delete": _op("Delete cache keys matching a glob (admin).", {
            "200": _json({"type": "object", "properties": {"deleted": {"type": "integer"}}}, "Count."),
            **_errors(400, 401, 403)},
            params=[{"name": "pattern", "in": "query", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 200}}])},
        "/api/kpis": {"get": _op("KPI history, one row per UTC day, newest first (admin; days 1..366, default 7).", {
            "200": _json({"type": "object", "required": ["days"], "properties": {"days": {
                "type": "array", "items": {"type": "object", "required": [
                    "date", "requests", "hit_rate", "upstream_calls", "calls_saved", "p50_ms", "p95_ms",
                    "p99_ms", "estimated_cost"]}}}}, "KPIs by day."),
            **_errors(400, 401, 403)},
            params=[{"name": "days", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 7}}])},
    }
    paths.update(_dropin_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "stockcache", "version": __version__,
                 "description": "Self-hosted cache in front of stock-market data APIs."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ErrorBody": {"type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string", "pattern": "^[a-z_]+$"},
                                             "message": {"type": "string"},
                                             "symbol": {"type": "string"},
                                             "retry_after": {"type": "integer"}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorBody")}},
                "Login": {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                          "properties": {"access_token": {"type": "string"}, "token_type": {"const": "bearer"},
                                         "expires_in": {"type": "integer"}}},
                "Quote": {"allOf": [market_item, {"type": "object",
                                                  "required": ["symbol", "price"],
                                                  "properties": {"symbol": {"type": "string"},
                                                                 "price": {"type": "number"}}}]},
            },
        },
    }
