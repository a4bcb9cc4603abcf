"""Drop-in APIs: a provider's own HTTP API answered from stockcache's cache, framework-agnostic.

Scripts written against a provider's API or official client get caching,
single-flight, budgets and stale-if-error by changing one URL. A provider that
offers one sets ``Provider.dropin`` to a :class:`DropIn` subclass (in its own
package): its route, how callers authenticate, how each endpoint reads through
the service, and how answers and errors look in that provider's shapes. The
web layer (``web/dropin.py``) mounts every registered drop-in and turns
:class:`DropInAnswer` into HTTP; nothing here knows Bottle.

Drop-ins read through the service exactly like the native API (same cache
keys, TTLs, single-flight, budgets, fallback, stale-if-error and stats). What
the cache does not keep is filled the way the provider fills a missing value.
No drop-in ever puts a token or key into a body.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar

from ...errors import InvalidRequest, InvalidSymbol, SymbolNotFound, Unauthorized
from ...symbols import normalize_symbol, strip_ascii

try:
    from zoneinfo import ZoneInfo

    _NEW_YORK: Any = ZoneInfo("America/New_York")
except Exception:  # no tz database on this box: US/Eastern standard time is near enough for a date
    _NEW_YORK = timezone(-timedelta(hours=5))

Json = dict[str, Any]
Answer = tuple[Any, Mapping[str, Any] | None]  # (provider-shaped body, the service answer it came from)

# News is cached per window of days; a request's window is rounded up to one of
# these, so windows that slide by a day (a script asking for "the last 10 days"
# every morning) share one cached fetch and are then filtered to the exact range.
NEWS_WINDOWS = (7, 30, 90, 365)
HISTORY_POINTS = 100  # the history kind's longest cached series, all a drop-in can serve
# Security types as different providers word them: the same kinds of listing.
SECURITY_TYPES = {"Common Stock": "Equity", "ETP": "ETF"}


@dataclass(frozen=True)
class DropInRequest:
    """One HTTP request to a drop-in: ``path`` is what follows its route's prefix."""

    method: str
    path: str
    query: Mapping[str, str]
    header: Callable[[str], str | None]  # a WSGI environ key (HTTP_X_...) -> its latin-1 text, or None


@dataclass
class DropInAnswer:
    """What to send back: the provider-shaped body, its status and headers, and the service answer behind it."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    source: Mapping[str, Any] | None = None


class DropIn(ABC):
    """One provider's API over the service. Thread-safe: it keeps no state of its own.

    ``route`` and ``methods`` are the web route (``<path:path>`` for a subtree);
    ``openapi`` describes it for /openapi.json.
    """

    route: ClassVar[str]
    methods: ClassVar[str] = "GET"
    openapi: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, service: Any, authenticate: Callable[[str], Any], clock: Callable[[], float]) -> None:
        self.service = service
        self.authenticate = authenticate
        self.clock = clock

    @abstractmethod
    def handle(self, request: DropInRequest) -> DropInAnswer:
        """Answer ``request`` in the provider's own shapes; never raises."""

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()


# -- describing (OpenAPI) ----------------------------------------------------------------------


def openapi_query(name: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    """An OpenAPI query parameter of type string."""
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string", **schema}}


def openapi_get(summary: str, responses: Mapping[str, tuple[Mapping[str, Any], str]],
                params: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An OpenAPI GET operation of a drop-in (public: it authenticates its own way)."""
    return {"get": {"summary": summary, "parameters": list(params),
                    "responses": {status: {"description": text, "content": {"application/json": {"schema": schema}}}
                                  for status, (schema, text) in responses.items()}}}


# -- reading -----------------------------------------------------------------------------------


def symbol_param(raw: str | None) -> str | None:
    """A normalised symbol; None for text that cannot be a symbol (the providers answer "unknown").

    A missing symbol is the caller's mistake (InvalidRequest), as upstream.
    """
    if raw is None or not strip_ascii(raw):
        raise InvalidRequest("Missing symbol.")
    try:
        return normalize_symbol(raw)
    except InvalidSymbol:
        return None


def read_as(symbol: str | None, not_found: Any, read: Callable[[str], Mapping[str, Any]],
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


def credential(request: DropInRequest, environ_key: str) -> str | None:
    """A credential header as WSGI passes it (latin-1 text); Unauthorized when it is not ASCII.

    Tokens are ASCII, so anything else is a wrong one (never a 500).
    """
    value = request.header(environ_key)
    if value is not None and not value.isascii():
        raise Unauthorized()
    return value


def ascii_int(text: str) -> int:
    """``int(text)`` for ASCII text only (ValueError otherwise): ``int()`` reads "١" as 1."""
    if not text.isascii():
        raise ValueError("not an ASCII number")
    return int(text)


def bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# -- shaping -----------------------------------------------------------------------------------


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


def date_start(text: str) -> float:
    """Unix time of 00:00 UTC on the ``YYYY-MM-DD`` day ``text``."""
    return day_start(date.fromisoformat(text))


def unix_time(iso: str) -> int:
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def or_zero(value: Any) -> Any:
    return 0 if value is None else value


def trading_day(quote: Mapping[str, Any]) -> str:
    """The New York date of a quote's time (or of its fetch)."""
    ts = quote.get("timestamp")
    if not ts:
        ts = unix_time(quote["fetched_at"]) if quote.get("fetched_at") else 0
    return datetime.fromtimestamp(float(ts), _NEW_YORK).strftime("%Y-%m-%d")
