"""Prices in the shapes other apps read: ``/api/quotes.csv``, ``/api/price/<symbol>``, ``/metrics/quotes``.

Spreadsheets (``IMPORTDATA``, ``WEBSERVICE``), Ghostfolio's scraper, Home
Assistant, Prometheus and shell bots each want the smallest answer they can
parse. Every route reads through the service, like the JSON routes: cache,
single-flight, budgets and stale-if-error, counted in the KPIs. They are
market-data routes, so a market-scoped token may call them, as ``?token=``
too (docs/integrations.md has a recipe for each).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from typing import Any

import bottle

from ..auth import MARKET_SCOPE, Principal
from ..errors import InvalidRequest, InvalidSymbol
from ..runtime import Runtime
from ..store import Store
from ..symbols import normalize_symbol, strip_ascii
from . import prometheus
from .plugins import note_cache_source, principal

CSV_FIELDS = ("symbol", "price", "currency", "change", "change_percent", "previous_close", "timestamp",
              "fetched_at", "stale", "source", "error")
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
PRICE_FIELDS = ("symbol", "price", "currency", "timestamp", "stale")
# A text cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add the CSV, price and quote-metrics routes to ``app``."""
    service = runtime.service

    @app.get("/api/quotes.csv", market=True)
    def quotes_csv() -> bytes:
        raw = bottle.request.query.getunicode("symbols") or ""
        fields = _fields(bottle.request.query.getunicode("fields"))
        header = _header(bottle.request.query.getunicode("header"))
        batch = service.fetch_multiple_quotes(raw)  # refuses an empty or too long list before any row
        bottle.response.content_type = CSV_CONTENT_TYPE
        bottle.response.set_header("Cache-Control", "no-store")
        return render_csv(_asked(raw), batch, fields, header=header).encode("utf-8")

    @app.get("/api/price/<symbol>", market=True)
    def price(symbol: str) -> Any:
        answer = service.get_quote(normalize_symbol(symbol))
        note_cache_source(answer)
        bottle.response.set_header("Vary", "Accept")
        if wants_text(bottle.request.environ.get("HTTP_ACCEPT", "")):
            bottle.response.content_type = "text/plain; charset=utf-8"
            bottle.response.set_header("Cache-Control", "no-store")
            return _number(answer.get("price")).encode("ascii")
        return {name: answer.get(name) for name in PRICE_FIELDS}

    @app.get("/metrics/quotes", market=True)
    def quote_metrics() -> bytes:
        who = principal()
        if who.scope != MARKET_SCOPE:
            who.require_admin()
        batch = service.quotes_for(gauge_symbols(runtime.store, who))
        bottle.response.content_type = prometheus.CONTENT_TYPE
        return prometheus.render_quotes(batch["quotes"], batch["errors"])


def _held(store: Store, user_id: int | None) -> Iterable[str]:
    if user_id is None:
        return store.held_symbols()
    return [*(p.symbol for p in store.list_positions(user_id)), *(w.symbol for w in store.list_watchlist(user_id))]


def _alerted(store: Store, user_id: int | None) -> Iterable[str]:
    if user_id is None:
        return store.alert_symbol_counts()
    return [alert.symbol for alert in store.list_alerts(user_id)]


# Where /metrics/quotes finds its symbols: each source takes the store and a user id (None: every
# user's) and gives symbols.
GAUGE_SOURCES: tuple[Callable[[Store, int | None], Iterable[str]], ...] = (_held, _alerted)


def gauge_symbols(store: Store, who: Principal) -> list[str]:
    """The symbols ``/metrics/quotes`` reports, sorted: an admin's are every user's, anyone else's their own."""
    user_id = None if who.is_admin else who.user_id
    return sorted({symbol for source in GAUGE_SOURCES for symbol in source(store, user_id)})


def _asked(raw: str) -> list[str]:
    """The symbols as asked, in order, duplicates folded: each keyed as ``fetch_multiple_quotes`` keys it."""
    keys: dict[str, None] = {}
    for part in raw.split(","):
        if not strip_ascii(part):
            continue
        try:
            keys[normalize_symbol(part)] = None
        except InvalidSymbol:
            keys[part[:24]] = None  # an invalid one is keyed by the text given, as in the batch's errors
    return list(keys)


def _fields(raw: str | None) -> list[str]:
    if raw is None or not raw.strip():
        return list(CSV_FIELDS)
    fields = list(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    unknown = [name for name in fields if name not in CSV_FIELDS]
    if unknown:
        raise InvalidRequest(f"fields: unknown column {unknown[0][:40]!r}; the columns are {', '.join(CSV_FIELDS)}.",
                             field="fields")
    return fields


def _header(raw: str | None) -> bool:
    if raw is None or raw == "" or raw == "1":
        return True
    if raw == "0":
        return False
    raise InvalidRequest("header is 1 (a header row, the default) or 0 (none).", field="header")


def render_csv(asked: list[str], batch: dict[str, Any], fields: list[str], *, header: bool) -> str:
    """One row per asked symbol, in order; a failed one has an empty price and its error code."""
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: quotes what needs quoting, lines end in CRLF
    if header:
        writer.writerow(fields)
    quotes, errors = batch["quotes"], batch["errors"]
    for key in asked:
        quote = quotes.get(key)
        row: dict[str, Any] = {"symbol": key}
        if quote is not None:
            row.update({name: quote.get(name) for name in CSV_FIELDS if name not in ("symbol", "error")})
        else:
            row["error"] = errors.get(key, {}).get("code", "upstream_error")
        writer.writerow([csv_cell(row.get(name)) for name in fields])
    return out.getvalue()


def csv_cell(value: Any) -> str:
    """A value as a CSV cell; text that a spreadsheet would run as a formula is neutralised with ``'``.

    Numbers are written as numbers (``-2.29`` stays a number, which no
    spreadsheet runs); only text is prefixed, so a symbol given as
    ``=HYPERLINK(...)`` arrives as the text it is.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if isinstance(value, int):
        return str(value)
    return repr(value) if math.isfinite(value) else ""


def wants_text(accept: str) -> bool:
    """Whether an ``Accept`` header prefers ``text/plain`` to JSON (``*/*`` and no header: JSON)."""
    text_q = json_q = 0.0
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
                quality = quality if math.isfinite(quality) else 0.0
        media = media.strip().lower()
        if media in ("text/plain", "text/*"):
            text_q = max(text_q, quality)
        elif media in ("application/json", "*/*", "application/*"):
            json_q = max(json_q, quality)
    return text_q > 0 and text_q > json_q
