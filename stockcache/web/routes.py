"""The JSON API routes (the contract's "Market data", "Portfolio and watchlist" and admin parts).

Handlers are thin: validate input, call the service or store, return a dict.
Authentication and error rendering are done by ApiPlugin; a route opts out of
authentication with ``auth="public"`` or asks for an admin with ``auth="admin"``,
and ``market=True`` marks a market-data route (open to market-scoped tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bottle

from ..errors import CurrencyNotFound, InvalidRequest, NotFound, TooManySymbols, UpstreamError
from ..runtime import Runtime
from ..store import validate
from ..symbols import normalize_symbol
from .plugins import json_body, note_cache_source, principal, query_int

# What one user may keep. Reads cope with any size (in chunks of max_batch); these keep
# one user's GET /api/watchlist and /api/portfolio/performance bounded. Two adds racing
# at the limit can pass it by one each: harmless, it is a size bound, not a quota.
MAX_WATCHLIST_ITEMS = 500
MAX_POSITIONS = 500


def ascii_int_filter(config: str) -> tuple[str, Callable[[str], int], Callable[[Any], str]]:
    """bottle's ``<name:int>`` route filter for ASCII digits only (install it on the router first).

    bottle's own matches ``-?\\d+``, and ``\\d`` is any Unicode digit, which ``int()``
    converts: ``/api/portfolio/%D9%A1`` (an Arabic-Indic one) would be id 1.
    """
    return r"-?[0-9]+", int, lambda value: str(int(value))


def _is_row_id(value: int) -> bool:
    """Whether ``value`` can be a SQLite row id: a bigger int would reach sqlite3 as an OverflowError (500)."""
    return 0 < value < 2**63


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add every /api route to ``app``."""
    service, store, auth, settings = runtime.service, runtime.store, runtime.auth, runtime.settings
    max_body = settings.max_request_body

    def tickers_body() -> Any:
        body = json_body(max_body)
        if not isinstance(body, dict) or set(body) != {"tickers"}:
            raise InvalidRequest('Send {"tickers": ["AAPL", ...]}.')
        if not isinstance(body["tickers"], list):
            raise InvalidRequest('"tickers" must be a list of symbols.')
        return body["tickers"]

    # -- auth --------------------------------------------------------------------
    @app.post("/api/auth/login", auth="public")
    def login() -> dict[str, Any]:
        username, password = validate.login_input(json_body(max_body))
        # REMOTE_ADDR, not bottle's remote_addr, which would believe a client's X-Forwarded-For;
        # waitress rewrites REMOTE_ADDR only for STOCKCACHE_TRUSTED_PROXY.
        return auth.login(username, password, bottle.request.environ.get("REMOTE_ADDR") or "-")

    def base_currency(user_id: int) -> str:
        return store.base_currency(user_id) or settings.base_currency

    def me_answer() -> dict[str, Any]:
        who = principal()
        return {"username": who.username, "is_admin": who.is_admin, "via": who.via,
                "base_currency": base_currency(who.user_id)}

    @app.get("/api/me")
    def me() -> dict[str, Any]:
        return me_answer()

    @app.put("/api/me")
    def update_me() -> dict[str, Any]:
        fields = validate.me_input(json_body(max_body))
        if "base_currency" in fields:
            code = fields["base_currency"]
            if code is not None:
                try:  # 404 currency_not_found for a code nobody publishes rates for
                    service.get_fx(code, code)
                except CurrencyNotFound:
                    raise
                except UpstreamError:
                    pass  # the rates are out of reach just now: a well-formed code is taken on trust
            store.set_base_currency(principal().user_id, code)
        return me_answer()

    @app.put("/api/me/password")
    def change_password() -> dict[str, Any]:
        current, new = validate.password_change_input(json_body(max_body))
        return auth.change_password(principal(), current, new, bottle.request.environ.get("REMOTE_ADDR") or "-")

    # -- market data -------------------------------------------------------------
    @app.get("/api/quote/<symbol>", market=True)
    def quote(symbol: str) -> dict[str, Any]:
        answer = service.get_quote(normalize_symbol(symbol))
        note_cache_source(answer)
        return answer

    @app.post("/api/batch-quotes", market=True)
    def batch_quotes() -> dict[str, Any]:
        return service.fetch_multiple_quotes(tickers_body())

    @app.get("/api/quotes", market=True)
    def quotes() -> dict[str, Any]:
        raw = bottle.request.query.getunicode("symbols") or ""
        return service.fetch_multiple_quotes(raw)

    @app.get("/api/profile/<symbol>", market=True)
    def profile(symbol: str) -> dict[str, Any]:
        answer = service.get_profile(normalize_symbol(symbol))
        note_cache_source(answer)
        return answer

    @app.post("/api/batch-profiles", market=True)
    def batch_profiles() -> dict[str, Any]:
        return service.fetch_multiple_profiles(tickers_body())

    @app.get("/api/history/<symbol>", market=True)
    def history(symbol: str) -> dict[str, Any]:
        answer = service.get_history(normalize_symbol(symbol), days=query_int("days", 30))
        note_cache_source(answer)
        return answer

    @app.get("/api/news/<symbol>", market=True)
    def news(symbol: str) -> dict[str, Any]:
        answer = service.get_news(normalize_symbol(symbol), days=query_int("days", 7))
        note_cache_source(answer)
        return answer

    @app.get("/api/analysis/<symbol>")
    def analysis(symbol: str) -> dict[str, Any]:
        answer = service.get_analysis(normalize_symbol(symbol))
        note_cache_source(answer)
        return answer

    @app.get("/api/fx/<base>/<quote>", market=True)
    def fx(base: str, quote: str) -> dict[str, Any]:
        answer = service.get_fx(base, quote)
        note_cache_source(answer)
        return answer

    @app.get("/api/lookup", market=True)
    def lookup() -> dict[str, Any]:
        isin, text = bottle.request.query.getunicode("isin"), bottle.request.query.getunicode("q")
        if (isin is None) == (text is None):
            raise InvalidRequest("Give one of ?isin=DE0007164600 or ?q=TEXT.")
        answer = service.lookup_isin(isin) if isin is not None else service.lookup_text(str(text))
        note_cache_source(answer)
        return answer

    # -- portfolio -----------------------------------------------------------------
    @app.get("/api/portfolio")
    def portfolio() -> dict[str, Any]:
        return {"positions": [p.to_dict() for p in store.list_positions(principal().user_id)]}

    @app.post("/api/portfolio")
    def add_position() -> Any:
        fields = validate.position_input(json_body(max_body))
        user_id = principal().user_id
        if len(store.list_positions(user_id)) >= MAX_POSITIONS:
            raise InvalidRequest(f"A portfolio holds at most {MAX_POSITIONS} positions; remove one first.")
        isin = fields.get("isin")
        symbol = service.symbol_for_isin(isin) if isin is not None else fields["symbol"]
        verified = service.verify_symbol(symbol)  # 404 for a symbol nobody knows, before it is kept
        position = store.add_position(user_id, symbol, fields["shares"], fields["cost_basis"], isin=isin)
        bottle.response.status = 201
        return {**position.to_dict(), "verified": verified}

    @app.get("/api/portfolio/performance")
    def performance() -> dict[str, Any]:
        user_id = principal().user_id
        asked = bottle.request.query.getunicode("currency")
        return service.fetch_portfolio_quotes(store.list_positions(user_id),
                                              asked if asked is not None else base_currency(user_id))

    @app.put("/api/portfolio/<position_id:int>")
    def update_position(position_id: int) -> dict[str, Any]:
        fields = validate.position_input(json_body(max_body), partial=True)
        if not _is_row_id(position_id):
            raise NotFound("No such position.")
        verified = service.verify_symbol(fields["symbol"]) if "symbol" in fields else None
        position = store.update_position(principal().user_id, position_id, **fields)
        if position is None:
            raise NotFound("No such position.")
        return position.to_dict() if verified is None else {**position.to_dict(), "verified": verified}

    @app.delete("/api/portfolio/<position_id:int>")
    def delete_position(position_id: int) -> Any:
        if not _is_row_id(position_id) or not store.delete_position(principal().user_id, position_id):
            raise NotFound("No such position.")
        return bottle.HTTPResponse(status=204)

    # -- watchlist -----------------------------------------------------------------
    @app.get("/api/watchlist")
    def watchlist() -> dict[str, Any]:
        items = store.list_watchlist(principal().user_id)
        batch = service.quotes_for(item.symbol for item in items)
        return {
            "items": [{"symbol": item.symbol, "added_at": item.added_at, "isin": item.isin,
                       "quote": batch["quotes"].get(item.symbol)} for item in items],
            "errors": batch["errors"],
        }

    @app.post("/api/watchlist")
    def add_watch() -> Any:
        asked = validate.watch_input(json_body(max_body))
        user_id = principal().user_id
        watched = {item.symbol for item in store.list_watchlist(user_id)}
        isin = asked.get("isin")
        symbol = service.symbol_for_isin(isin) if isin is not None else asked["symbol"]
        if len(watched) >= MAX_WATCHLIST_ITEMS and symbol not in watched:  # a repeat still gets its 409
            raise TooManySymbols(f"A watchlist holds at most {MAX_WATCHLIST_ITEMS} symbols; remove one first.")
        verified = service.verify_symbol(symbol) if symbol not in watched else True  # a repeat costs no call
        item = store.add_watch(user_id, symbol, isin=isin)
        bottle.response.status = 201
        return {**item.to_dict(), "verified": verified}

    @app.delete("/api/watchlist/<symbol>")
    def remove_watch(symbol: str) -> Any:
        if not store.remove_watch(principal().user_id, normalize_symbol(symbol)):
            raise NotFound("That symbol is not on your watchlist.")
        return bottle.HTTPResponse(status=204)

    # -- cache administration --------------------------------------------------------
    @app.get("/api/cache/stats", auth="admin")
    def cache_stats() -> dict[str, Any]:
        return service.stats()

    @app.delete("/api/cache", auth="admin")
    def clear_cache() -> dict[str, Any]:
        pattern = bottle.request.query.getunicode("pattern")
        if not pattern or len(pattern) > 200:
            raise InvalidRequest("Give ?pattern=KIND:SYMBOL* (a glob over cache keys).", field="pattern")
        return {"deleted": runtime.cache.clear_pattern(pattern)}
