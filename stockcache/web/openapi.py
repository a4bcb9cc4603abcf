"""``GET /openapi.json``: an OpenAPI 3.1 description of every route and error.

Written as data next to the routes; a test checks that every route the app
serves is described here, so the two cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..upstream.providers import provider_classes
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
        404: ("Not found (not_found, symbol_not_found, currency_not_found), or no configured provider "
              "covers the symbol's market (symbol_not_covered: the message names the key that would)."),
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
_currency = {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "ISO 4217 code, such as EUR."}
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
    """Every registered provider's drop-in routes (web/dropin.py), as each drop-in describes them."""
    paths: dict[str, Any] = {}
    for cls in provider_classes():
        if cls.dropin is not None:
            paths.update(cls.dropin.openapi)
    return paths


@cache
def spec() -> dict[str, Any]:
    market_item = {"type": "object", "required": ["source", "cache", "fetched_at", "age", "stale"],
                   "properties": {"source": {"enum": [p.name for p in provider_classes()]},
                                  "cache": {"enum": ["memory", "sqlite", "redis", "upstream"]},
                                  "fetched_at": {"type": "string"}, "age": {"type": "integer"},
                                  "stale": {"type": "boolean"}}}
    tickers = {"type": "object", "required": ["tickers"], "additionalProperties": False,
               "properties": {"tickers": {"type": "array", "minItems": 1, "maxItems": 100,
                                          "description": "Symbols; an invalid one is its own invalid_symbol "
                                                         "entry in errors, the others are answered.",
                                          "items": {"type": "string"}}}}
    batch = {"type": "object", "properties": {"errors": {"type": "object",
                                                         "additionalProperties": _ref("ErrorBody")}},
             "additionalProperties": True}
    isin = {"type": "string", "pattern": "^[A-Za-z]{2}[A-Za-z0-9]{9}[0-9]$",
            "description": "An ISIN with a valid check digit; resolved to its listing on the first of "
                           "STOCKCACHE_PREFERRED_EXCHANGES it has."}
    position_fields = {"symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
                       "shares": {"type": "number", "exclusiveMinimum": 0},
                       "cost_basis": {"type": "number", "minimum": 0}}
    position_in = {"type": "object", "required": ["shares", "cost_basis"], "additionalProperties": False,
                   "oneOf": [{"required": ["symbol"]}, {"required": ["isin"]}],
                   "properties": {**position_fields, "isin": isin}}
    position_patch = {"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": position_fields}
    position = {"type": "object", "required": ["id", "symbol", "shares", "cost_basis", "isin"],
                "properties": {"id": {"type": "integer"}, "symbol": {"type": "string"},
                               "shares": {"type": "number"}, "cost_basis": {"type": "number"},
                               "isin": {"type": ["string", "null"]}}}
    lookup = {"type": "object", "properties": {
        "isin": {"type": "string"}, "query": {"type": "string"},
        "listings": {"type": "array", "items": {"type": "object", "required": ["symbol"], "properties": {
            "symbol": {"type": "string"}, "name": {"type": ["string", "null"]},
            "exchange": {"type": ["string", "null"]}, "figi": {"type": ["string", "null"]},
            "currency": {"type": "string"}, "type": {"type": "string"}}}}}}
    any_object = {"type": "object"}
    me = {"type": "object", "required": ["username", "is_admin", "via", "base_currency"],
          "properties": {"username": {"type": "string"}, "is_admin": {"type": "boolean"},
                         "via": {"type": "string"}, "base_currency": {"type": "string"}}}
    fx = {"allOf": [market_item, {"type": "object", "required": ["from", "to", "rate", "date"],
                                  "properties": {"from": _currency, "to": _currency, "rate": {"type": "number"},
                                                 "date": {"type": "string", "format": "date"}}}]}
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
        "/api/me": {
            "get": _op("Who am I, and my base currency.", {"200": _json(me, "The caller."), **_errors(401)}),
            "put": _op("Change my settings: base_currency (null: the server's STOCKCACHE_BASE_CURRENCY).", {
                "200": _json(me, "The caller."), **_writes(400, 401, 404, 413)},
                body={"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": {"base_currency": {"type": ["string", "null"], "pattern": "^[A-Za-z]{3}$"}}}),
        },
        "/api/fx/{from}/{to}": {"get": _op(
            "The reference rate from one currency to another (on weekends and holidays: the last publication).",
            {"200": _json(fx, "A rate."), **_errors(400, 401, 404, 502, 503, 504)},
            params=[{"name": "from", "in": "path", "required": True, "schema": _currency},
                    {"name": "to", "in": "path", "required": True, "schema": _currency}])},
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
        "/api/lookup": {"get": _op(
            "The listings of an ISIN (?isin=), or listings whose name matches (?q=); give one.",
            {"200": _json(lookup, "Listings."), **_errors(*_MARKET)},
            params=[{"name": "isin", "in": "query", "required": False, "schema": isin},
                    {"name": "q", "in": "query", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 100}}])},
        "/api/portfolio": {
            "get": _op("Your positions.", {"200": _json(any_object, "Positions."), **_errors(401)}),
            "post": _op(f"Add a position (at most {MAX_POSITIONS} per user).",
                        {"201": _json(position, "The position."), **_writes(400, 401, 404, 413, 502, 503)},
                        body=position_in),
        },
        "/api/portfolio/performance": {"get": _op(
            "Value, gain and day change of your positions, each in its own currency and in the base currency.", {
                "200": _json(any_object, "Performance."), **_errors(400, 401, 404)},
            params=[{"name": "currency", "in": "query", "required": False, "schema": _currency,
                     "description": "Base currency of the totals; default: yours (PUT /api/me), then the "
                                    "server's STOCKCACHE_BASE_CURRENCY."}])},
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
                        body={"type": "object", "additionalProperties": False,
                              "oneOf": [{"required": ["symbol"]}, {"required": ["isin"]}],
                              "properties": {"symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
                                             "isin": isin}}),
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
                "Quote": {"allOf": [market_item, {
                    "type": "object", "required": ["symbol", "price", "currency", "exchange"],
                    "properties": {"symbol": {"type": "string"}, "price": {"type": "number"},
                                   "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$",
                                                "description": "ISO 4217, major unit (pence become GBP)."},
                                   "exchange": {"type": ["string", "null"],
                                                "description": "ISO 10383 MIC of the listing."}}}]},
            },
        },
    }
