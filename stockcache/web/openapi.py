"""``GET /openapi.json``: an OpenAPI 3.1 description of every route and error.

Written as data next to the routes; a test checks that every route the app
serves is described here, so the two cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..store.rows import ALERT_CONDITIONS, DELIVERY_STATUSES
from ..store.validate import MAX_ALERT_VALUE, NOTE_MAX
from ..upstream.providers import provider_classes
from ..validation import MAX_ANALYSIS_TEXT, OUTLOOKS
from .exports import CSV_FIELDS, PRICE_FIELDS
from .routes import MAX_POSITIONS, MAX_WATCHLIST_ITEMS
from .routes_alerts import HISTORY_DEFAULT, HISTORY_MAX, MAX_ALERTS

SYMBOL_PATTERN = r"^[A-Za-z0-9.\-^=:_]{1,20}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request, symbol or batch size (invalid_request, invalid_symbol, too_many_symbols).",
        401: ("Missing or invalid token, or a JWT or full-scope token sent as ?token= (unauthorized; the "
              "message says why)."),
        403: "Needs an admin, or a token that is not market-scoped (forbidden).",
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
# GET market-data routes also take a market-scoped API token as ?token= (apps that cannot send headers).
_MARKET_GET: list[dict[str, list[str]]] = [{"bearer": []}, {"market_token": []}]
_MARKET = (400, 401, 404, 502, 503, 504)


def _op(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, public: bool = False, market: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not public:
        op["security"] = _MARKET_GET if market else _BEARER
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
    count = {"type": "integer", "minimum": 0}
    analysis = {"allOf": [market_item, {
        "type": "object", "required": ["symbol", "analysis", "outlook", "model", "based_on", "tokens"],
        "properties": {
            "symbol": {"type": "string"},
            "analysis": {"type": "string", "maxLength": MAX_ANALYSIS_TEXT,
                         "description": "Plain text: show it as text."},
            "outlook": {"enum": list(OUTLOOKS)},
            "model": {"type": "string"},
            "based_on": {"type": "object", "properties": {
                "quote_fetched_at": {"type": ["string", "null"]}, "profile": {"type": "boolean"},
                "metrics": {"type": "boolean"}, "history_days": count, "news": count}},
            "tokens": {"type": "object", "properties": {"prompt": count, "completion": count}}}}]}
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
                    {"name": "to", "in": "path", "required": True, "schema": _currency}], market=True)},
        "/api/me/password": {"put": _op(
            "Change your own password; every JWT issued before is refused from then on.",
            {"200": _json(_ref("Login"), "A fresh access token under the new password."),
             **_writes(400, 401, 403, 429)},
            body={"type": "object", "required": ["current", "new"], "additionalProperties": False,
                  "properties": {"current": {"type": "string"},
                                 "new": {"type": "string", "minLength": 8, "maxLength": 1024}}})},
        "/api/quote/{symbol}": {"get": _op("One quote.", {"200": _json(_ref("Quote"), "A quote."),
                                                          **_errors(*_MARKET)}, params=[_SYMBOL], market=True)},
        "/api/batch-quotes": {"post": _op("Many quotes in one concurrent batch.", {
            "200": _json(batch, "quotes and errors by symbol."), **_errors(400, 401, 413)}, body=tickers)},
        "/api/quotes": {"get": _op("Many quotes: ?symbols=AAPL,MSFT.", {
            "200": _json(batch, "quotes and errors by symbol."), **_errors(400, 401)},
            params=[{"name": "symbols", "in": "query", "required": True, "schema": {"type": "string"}}],
            market=True)},
        "/api/profile/{symbol}": {"get": _op("Company profile.", {"200": _json(market_item, "A profile."),
                                                                  **_errors(*_MARKET)}, params=[_SYMBOL], market=True)},
        "/api/batch-profiles": {"post": _op("Many profiles.", {
            "200": _json(batch, "profiles and errors by symbol."), **_errors(400, 401, 413)}, body=tickers)},
        "/api/history/{symbol}": {"get": _op("Daily bars, oldest first (days 1..100, default 30).", {
            "200": _json(market_item, "History."), **_errors(*_MARKET)}, params=[_SYMBOL, _DAYS], market=True)},
        "/api/news/{symbol}": {"get": _op("News, newest first (days 1..365, default 7).", {
            "200": _json(market_item, "News."), **_errors(*_MARKET)}, params=[_SYMBOL, _DAYS], market=True)},
        "/api/quotes.csv": {"get": _op(
            "Quotes as CSV for spreadsheets (IMPORTDATA, WEBSERVICE): one row per symbol, in the order asked; "
            "a failed symbol has an empty price and its error code. Text cells that a spreadsheet would run "
            "as a formula (= + - @) are prefixed with '.", {
                "200": {"description": "CSV (RFC 4180).", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403)},
            params=[{"name": "symbols", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "fields", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Columns to give, in order (comma list), from: " + ", ".join(CSV_FIELDS) + "."},
                    {"name": "header", "in": "query", "required": False, "schema": {"enum": ["0", "1"]},
                     "description": "0: no header row."}], market=True)},
        "/api/price/{symbol}": {"get": _op(
            "The smallest quote: symbol, price, currency, timestamp, stale (Accept: text/plain: the number).", {
                "200": {"description": "The price.", "content": {
                    "application/json": {"schema": {"type": "object", "required": list(PRICE_FIELDS)}},
                    "text/plain": {"schema": {"type": "string"}}}},
                **_errors(*_MARKET)}, params=[_SYMBOL], market=True)},
        "/metrics/quotes": {"get": _op(
            "Prometheus gauges of held symbols' quotes (an admin: every user's; a market token: its user's).", {
                "200": {"description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(401, 403)}, market=True)},
        "/api/analysis/{symbol}": {"get": _op(
            "A short plain-text analysis of one listing by the configured model (or the demo source), built "
            "from its cached quote, profile, key figures, 30 daily bars and 7 days of headlines; cached for "
            "STOCKCACHE_TTL_AI_ANALYSIS. 503 rate_limited when the day's token budget would be passed.",
            {"200": _json(analysis, "An analysis."), **_errors(*_MARKET)}, params=[_SYMBOL])},
        "/api/lookup": {"get": _op(
            "The listings of an ISIN (?isin=), or listings whose name matches (?q=); give one.",
            {"200": _json(lookup, "Listings."), **_errors(*_MARKET)},
            params=[{"name": "isin", "in": "query", "required": False, "schema": isin},
                    {"name": "q", "in": "query", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 100}}], market=True)},
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
    paths.update(_alert_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "stockcache", "version": __version__,
                 "description": "Self-hosted cache in front of stock-market data APIs."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "market_token": {"type": "apiKey", "in": "query", "name": "token",
                                                 "description": "A market-scoped API token, on GET market-data "
                                                                "routes only."}},
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


def _alert_paths() -> dict[str, Any]:
    """Price alerts (issue 18): each user's own; a market-data token gets 403."""
    alert = {"type": "object",
             "required": ["id", "symbol", "condition", "value", "channel", "note", "armed", "last_fired_at"],
             "properties": {"id": {"type": "integer"}, "symbol": {"type": "string"},
                            "condition": {"enum": list(ALERT_CONDITIONS)}, "value": {"type": "number"},
                            "channel": {"type": "string"}, "note": {"type": "string"}, "armed": {"type": "boolean"},
                            "last_fired_at": {"type": ["string", "null"], "format": "date-time"}}}
    alert_in = {"type": "object", "required": ["symbol", "condition", "value", "channel"],
                "additionalProperties": False,
                "properties": {"symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
                               "condition": {"enum": list(ALERT_CONDITIONS)},
                               "value": {"type": "number", "minimum": -MAX_ALERT_VALUE, "maximum": MAX_ALERT_VALUE},
                               "channel": {"type": "string", "description": "The name of a channel the operator "
                                           "configured (STOCKCACHE_NOTIFY_<NAME>); never a URL."},
                               "note": {"type": "string", "maxLength": NOTE_MAX}}}
    delivery = {"type": "object", "properties": {
        "id": {"type": "integer"}, "alert_id": {"type": ["integer", "null"]}, "symbol": {"type": "string"},
        "condition": {"enum": list(ALERT_CONDITIONS)}, "value": {"type": "number"}, "channel": {"type": "string"},
        "observed": {"type": ["number", "null"]}, "fired_at": {"type": "string", "format": "date-time"},
        "status": {"enum": list(DELIVERY_STATUSES)}, "attempts": {"type": "integer"},
        "error": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]}}}
    alert_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    return {
        "/api/alerts": {
            "get": _op("Your price alerts, and the channels you may pick.", {"200": _json(
                {"type": "object", "properties": {"alerts": {"type": "array", "items": alert},
                                                  "channels": {"type": "array", "items": {"type": "string"}}}},
                "Alerts."), **_errors(401, 403)}),
            "post": _op(f"Add an alert (at most {MAX_ALERTS} per user); it fires once per crossing.",
                        {"201": _json(alert, "The alert."), **_writes(400, 401, 403, 404, 413)}, body=alert_in),
        },
        "/api/alerts/{id}": {"delete": _op("Delete an alert (its history stays).", {
            "204": {"description": "Deleted."}, **_writes(401, 403, 404)}, params=[alert_id])},
        "/api/alerts/history": {"get": _op(f"Your last deliveries, newest first (limit 1..{HISTORY_MAX}).", {
            "200": _json({"type": "object", "properties": {"deliveries": {"type": "array", "items": delivery}}},
                         "Deliveries."), **_errors(400, 401, 403)},
            params=[{"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX,
                                "default": HISTORY_DEFAULT}}])},
    }
