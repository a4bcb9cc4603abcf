"""One exception tree for all of stockcache.

Third-party errors (requests, sqlite3, jwt, redis) are translated into these
once, at the boundary where they happen, with ``raise ... from exc``. Errors a
client may see carry their HTTP ``status`` and stable ``code`` on the class;
exactly one place (``stockcache.web.errors``) renders them as HTTP.

::

    StockcacheError                 500 internal
    ├── ConfigError                     bad setting (start-up stops, exit 2)
    ├── CacheError                      a cache tier failed (callers degrade)
    ├── StoreError                      the user store, usage ledger or KPI history failed
    │   └── StoreUnavailable        503 store_unavailable (the database cannot be reached or is busy)
    ├── InvalidRequest              400 invalid_request
    │   ├── InvalidSymbol           400 invalid_symbol
    │   └── TooManySymbols          400 too_many_symbols
    ├── Unauthorized                401 unauthorized
    ├── Forbidden                   403 forbidden
    ├── NotFound                    404 not_found
    │   ├── SymbolNotFound          404 symbol_not_found
    │   │   ├── NoData                      (this provider has none; the next one is asked)
    │   │   └── CurrencyNotFound    404 currency_not_found
    │   └── SymbolNotCovered        404 symbol_not_covered (no configured provider serves its market)
    ├── MethodNotAllowed            405 method_not_allowed
    ├── Conflict                    409 conflict
    ├── PayloadTooLarge             413 payload_too_large
    ├── TooManyRequests             429 too_many_requests (login attempts)
    ├── StorageFull                 503 storage_full    (the disk is full; retry_after seconds)
    └── UpstreamError               502 upstream_error
        ├── UpstreamAuthError       502 upstream_error  (our key refused, or not in plan)
        │   └── SymbolRefused       502 upstream_error  (this one symbol not in plan; the key is fine)
        ├── RateLimited             503 rate_limited    (retry_after seconds)
        └── UpstreamTimeout         504 upstream_timeout
"""

from __future__ import annotations

from typing import Any


class StockcacheError(Exception):
    """Base of every stockcache error. ``status``/``code`` say how HTTP shows it."""

    status: int = 500
    code: str = "internal"
    default_message: str = "Internal error."

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.message = message or self.default_message
        # Extra JSON fields a client may use, such as ``symbol`` or ``retry_after``.
        self.fields = {k: v for k, v in fields.items() if v is not None}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The body of ``{"error": ...}``."""
        return {"code": self.code, "message": self.message, **self.fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StockcacheError:
        """Rebuild an error from :meth:`to_dict` output (cached negatives use it)."""
        code = data.get("code", "internal")
        klass = ERRORS_BY_CODE.get(code, StockcacheError)
        fields = {k: v for k, v in data.items() if k not in ("code", "message")}
        return klass(data.get("message"), **fields)


class ConfigError(StockcacheError):
    """A setting is invalid; start-up stops with one line naming it."""

    code = "config_error"


class CacheError(StockcacheError):
    """A cache tier failed; the tiered cache logs it and goes on without that tier."""

    code = "cache_error"


class StoreError(StockcacheError):
    """The user store, the usage ledger or the KPI history failed (a 500 unless a subclass says otherwise)."""

    code, default_message = "store_error", "The store failed."


class StoreUnavailable(StoreError):
    """The store's database cannot be reached (or stayed busy); nothing was changed. ``retry_after`` seconds."""

    status, code = 503, "store_unavailable"
    default_message = "The user store is unavailable right now; try again shortly."


class InvalidRequest(StockcacheError):
    status, code, default_message = 400, "invalid_request", "The request is not valid."


class InvalidSymbol(InvalidRequest):
    code, default_message = "invalid_symbol", "That is not a valid symbol."


class TooManySymbols(InvalidRequest):
    code, default_message = "too_many_symbols", "Too many symbols in one request."


class Unauthorized(StockcacheError):
    status, code, default_message = 401, "unauthorized", "A valid access token is required."


class Forbidden(StockcacheError):
    status, code, default_message = 403, "forbidden", "This needs an admin."


class NotFound(StockcacheError):
    status, code, default_message = 404, "not_found", "Not found."


class SymbolNotFound(NotFound):
    code, default_message = "symbol_not_found", "The upstream knows no such symbol."


class NoData(SymbolNotFound):
    """This provider has no such data for the symbol (Finnhub's ``{}`` profile of a known listing).

    Unlike a plain :class:`SymbolNotFound` it does not end the route: the next
    provider is asked, and only when none has the data is it "not found".
    """


class CurrencyNotFound(SymbolNotFound):
    code, default_message = "currency_not_found", "No reference rate is published for that currency."


class SymbolNotCovered(NotFound):
    """No configured provider serves the symbol's market on its plan; the message names the key that would."""

    code, default_message = "symbol_not_covered", "No configured data provider covers this symbol's market."


class MethodNotAllowed(StockcacheError):
    status, code, default_message = 405, "method_not_allowed", "Method not allowed here."


class Conflict(StockcacheError):
    status, code, default_message = 409, "conflict", "That already exists."


class PayloadTooLarge(StockcacheError):
    status, code, default_message = 413, "payload_too_large", "The request body is too large."


class TooManyRequests(StockcacheError):
    status, code, default_message = 429, "too_many_requests", "Too many attempts; try again later."


class StorageFull(StockcacheError):
    """A write found the disk (or the database's size limit) full; nothing was changed."""

    status, code = 503, "storage_full"
    default_message = "The server's disk is full; the change was not saved. Try again later."


class UpstreamError(StockcacheError):
    """The upstream failed: 5xx, bad JSON, a wrong shape, a refused connection."""

    status, code, default_message = 502, "upstream_error", "The upstream data provider failed."


class UpstreamAuthError(UpstreamError):
    """The provider refused our key, or the data is not in our plan."""

    default_message = "The upstream data provider refused the request (key or plan)."


class SymbolRefused(UpstreamAuthError):
    """The provider refused this one symbol (a listing outside the plan); the key and the provider are fine.

    Finnhub's free plan answers so for non-US listings. It never counts against
    the provider's health, and it is remembered per (provider, symbol) so a
    retry goes to the next provider instead of spending quota on the same "no".
    """

    default_message = "The upstream data provider does not serve this symbol on the configured plan."


class RateLimited(UpstreamError):
    """A provider budget is spent, or the provider said 429; ``retry_after`` in seconds."""

    status, code, default_message = 503, "rate_limited", "The upstream budget is spent; try again later."

    @property
    def retry_after(self) -> int | None:
        return self.fields.get("retry_after")


class UpstreamTimeout(UpstreamError):
    status, code, default_message = 504, "upstream_timeout", "The upstream data provider did not answer in time."


def _codes() -> dict[str, type[StockcacheError]]:
    out: dict[str, type[StockcacheError]] = {}
    stack: list[type[StockcacheError]] = [StockcacheError]
    while stack:
        klass = stack.pop()
        out.setdefault(klass.code, klass)
        stack.extend(klass.__subclasses__())
    return out


ERRORS_BY_CODE = _codes()


def _by_status() -> dict[int, type[StockcacheError]]:
    """The most general error class of each HTTP status (the tree's first one met, breadth first)."""
    out: dict[int, type[StockcacheError]] = {}
    queue: list[type[StockcacheError]] = [StockcacheError]
    while queue:
        klass = queue.pop(0)
        out.setdefault(klass.status, klass)
        queue.extend(klass.__subclasses__())
    return out


_BY_STATUS = _by_status()


def for_status(status: int, message: str | None = None) -> StockcacheError:
    """Our error for a bare HTTP status someone else chose (Bottle's router, waitress's parser).

    Client errors without a class of their own (a 431 headers too large) are
    invalid requests; server errors without one are internal errors.
    """
    klass = _BY_STATUS.get(status) or (InvalidRequest if 400 <= status < 500 else StockcacheError)
    return klass(message)
