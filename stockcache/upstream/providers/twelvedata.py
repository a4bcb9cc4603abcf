"""Twelve Data (https://api.twelvedata.com): quotes, daily history and search for US and European listings.

What the notes (``upstream-apis-2.md`` section 1) say, and what follows here:

- **The key** travels in the ``Authorization: apikey KEY`` header (documented
  beside the ``apikey`` query parameter), so no URL we log can carry it.
- **Listings** are addressed by ISO MIC, never by Twelve Data's exchange names,
  which drift (``XETR``/``XETRA``, ``Euronext``/``EURONEXT``): ``SAP.DE`` is
  ``symbol=SAP&mic_code=XETR``; a US listing is its bare ticker. An answer for
  another venue than the one asked (a bare ticker Twelve Data took for a
  foreign line) is refused, since its price would be in the wrong currency.
- **Coverage**: US listings and the European venues of ``docs/symbols.md`` on
  every plan, stocks and ETFs alike. What one plan does not include comes
  back per symbol (below) and is remembered, so no list of plan markets is
  kept here. ``/profile`` needs the Grow plan (``STOCKCACHE_TWELVEDATA_PLAN``).
- **Currencies**: quotes and series name theirs (``currency``; on London ``GBp``
  or ``GBP``, both are seen, so both are read), converted with
  ``currency.in_major``.
- **Errors** are ``{"code", "message", "status": "error"}``, sent with HTTP 200
  by older answers and with the real status by newer ones, so the body's
  ``code`` decides. 401 is the key. 429 says "for the current minute" (retry
  at the next clock minute) or "for the day" (retry when the UTC day ends; the
  notes name no other reset). 404 is Twelve Data's word both for an unknown
  symbol and for one the plan does not include: the only recorded text, "not
  found: HSI", was for an index that exists. No known text says a symbol does
  not exist, so every 404 for a symbol (and a 403 naming a symbol rather than
  an endpoint) is a :class:`SymbolRefused`: remembered for a day, never
  counted against the provider, and the next provider says whether it exists.
- **Credits**: each symbol costs the endpoint's weight (1; ``/profile`` 10), so
  budgets count credits (:meth:`TwelveDataProvider.units`), 8 a minute and 800
  a day on the free plan.
- **Many symbols per call**: ``symbol=A,B,C`` (up to 120) on ``/quote`` and
  ``/time_series``; every symbol shares the request's parameters, so one
  venue's symbols share ``mic_code`` and a batch across venues writes each
  listing ``SAP:XETR`` (the notes' form for Xetra; the MIC after the colon is
  unverified for other venues). One symbol answers a flat object, several an
  object keyed by each symbol as sent (matched here in any case), where a
  failed symbol's value is its own error object.
- **History** is newest first, in strings, and includes today's unfinished bar
  while the venue trades; that bar is dropped (stockcache serves daily bars).

Default route: quotes after Finnhub (60 calls a minute against Twelve Data's
8 credits, so US quotes go there first) and before Alpha Vantage (25 calls a
day), which makes Twelve Data the first for European quotes, where Finnhub's
free plan does not reach. History first: Alpha Vantage has 25 calls a day and
names no currency (a London series would cost it a second call), Finnhub's
candles are a paid plan's. Search and profiles between the two.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...currency import in_major
from ...errors import (
    NoData,
    RateLimited,
    StockcacheError,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
)
from ...models import Candle, History, ListingInfo, Profile, Quote
from ...settings import Section, choice, non_negative_float, non_negative_int, setting, url
from ...symbols import EQUITY, Listing, listing
from ...venues import Venue, by_mic
from .base import (
    Clock,
    Provider,
    UpstreamRequest,
    days_param,
    maybe_number,
    number,
    query_param,
    require_dict,
    retry_after_seconds,
    seconds_to_utc_midnight,
    text_or_none,
)

logger = logging.getLogger(__name__)

_PATHS = {
    "quote": "/quote",
    "history": "/time_series",
    "search": "/symbol_search",
    "profile": "/profile",
    "listing": "/symbol_search",  # the exact line's "currency": the unit of its prices
}
# Credits per symbol of each kind's endpoint (the notes: 1 each, /profile 10).
_CREDITS = {"quote": 1, "history": 1, "search": 1, "listing": 1, "profile": 10}
# Symbols per request on the endpoints that take symbol=A,B,C (the SDK's README: 120).
MAX_BATCH = 120
# Kinds asked for one listing: a 404 there refuses that symbol.
_PER_SYMBOL_KINDS = frozenset({"quote", "history", "profile", "listing"})
# The European venues of docs/symbols.md; US listings are covered too.
_EUROPE = frozenset({"XETR", "XFRA", "XLON", "XPAR", "XAMS", "XMIL", "XSWX", "XSTO"})
PLANS = ("basic", "grow", "pro", "ultra", "enterprise")
# Instrument types of a symbol search that are not listings stockcache writes as TICKER[.SUFFIX].
_NOT_LISTINGS = frozenset({"index", "digital currency", "physical currency"})
# A 429 whose text names neither the minute nor the day: the minute's credits come back first.
_UNKNOWN_429_PAUSE = 60


@dataclass(frozen=True)
class TwelveDataConfig(Section):
    """Twelve Data's settings: ``TWELVEDATA_API_KEY`` and ``STOCKCACHE_TWELVEDATA_*``."""

    prefix = "twelvedata"
    api_key: str = setting("", env="TWELVEDATA_API_KEY", secret=True,
                           help="Twelve Data API key (US and European quotes, daily history, search).")
    url: str = setting("https://api.twelvedata.com", env="STOCKCACHE_TWELVEDATA_URL", parse=url,
                       help="Twelve Data base URL.")
    per_minute: int = setting(8, env="STOCKCACHE_TWELVEDATA_PER_MINUTE", parse=non_negative_int,
                              help="Twelve Data credits allowed per minute (one per symbol; Basic plan: 8); "
                                   "0 means no limit.")
    per_day: int = setting(800, env="STOCKCACHE_TWELVEDATA_PER_DAY", parse=non_negative_int,
                           help="Twelve Data credits allowed per UTC day (Basic plan: 800); 0 means no limit.")
    cost_per_call: float = setting(0.0, env="STOCKCACHE_TWELVEDATA_COST_PER_CALL", parse=non_negative_float,
                                   help="Price of one Twelve Data call, for the estimated cost in KPIs.")
    plan: str = setting("basic", env="STOCKCACHE_TWELVEDATA_PLAN", parse=choice(*PLANS),
                        help="Twelve Data plan: 'basic' (the free one) or 'grow', 'pro', 'ultra', 'enterprise' "
                             "(these add company profiles).")


class TwelveDataProvider(Provider):
    """Twelve Data adapter. Stateless after construction, so thread-safe."""

    name = "twelvedata"
    label = "Twelve Data"
    config = TwelveDataConfig
    supports = frozenset(_PATHS)
    priority = {"history": 5, "quote": 15, "search": 15, "profile": 15}
    batch = {"quote": MAX_BATCH, "history": MAX_BATCH}

    def __init__(self, config: TwelveDataConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        self._base_url = config.url.rstrip("/")
        self._profiles = config.plan != "basic"
        self.kinds = frozenset(k for k in _PATHS if self._profiles or k != "profile")

    # -- coverage ---------------------------------------------------------------------------

    def covers(self, kind: str, listing: Listing | None) -> bool:
        """US and European listings (stocks and ETFs); a listing's currency only off the US."""
        return kind in self.kinds and self.could_cover(kind, listing)

    @classmethod
    def could_cover(cls, kind: str, listing: Listing | None) -> bool:
        if kind not in cls.supports:
            return False
        if listing is None:
            return kind == "search"
        if listing.asset != EQUITY or listing.venue is None:
            return False
        if kind == "listing":  # only asked where the venue leaves the currency open, never in the US
            return listing.mic in _EUROPE
        return listing.is_us or listing.mic in _EUROPE

    @classmethod
    def plan_for(cls, kind: str, listing: Listing | None) -> str | None:
        if not cls.could_cover(kind, listing):
            return None
        return "grow" if kind == "profile" else ""

    def coverage_note(self, kind: str, listing: Listing | None) -> str:
        return "Twelve Data's Basic plan" if kind == "profile" and not self._profiles else self.label

    def upgrade_hint(self, kind: str, listing: Listing | None) -> str | None:
        if kind == "profile" and not self._profiles and self.could_cover(kind, listing):
            return "STOCKCACHE_TWELVEDATA_PLAN=grow with a Grow plan key"
        return None

    @classmethod
    def symbol_for(cls, listing: Listing) -> str:
        """``AAPL`` as it is; ``SAP.DE`` as ``symbol=SAP&mic_code=XETR`` (its ticker and its venue's MIC)."""
        if listing.is_us or listing.venue is None:
            return listing.symbol
        return f"symbol={listing.base}&mic_code={listing.mic}"

    def units(self, kind: str, count: int) -> int:
        """Credits: the endpoint's weight per symbol (``/profile`` 10, the others 1)."""
        return _CREDITS.get(kind, 1) * count

    # -- requests -----------------------------------------------------------------------------

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The Twelve Data request for ``kind`` of ``symbol`` (a search text for ``search``)."""
        self._check_kind(kind)
        query: dict[str, str]
        if kind == "search":
            query = {"symbol": query_param(params, symbol)}
        elif kind == "listing":
            # Every line of the ticker, the exact one (by MIC) picked from them.
            query = {"symbol": listing(symbol).base, "outputsize": "120"}
        else:
            query = _where(listing(symbol))
            if kind == "history":
                query.update(_series_params(params))
        return self._request(kind, query)

    def build_batch_request(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any]) -> UpstreamRequest:
        """One ``symbol=A,B,C`` request: one venue's symbols share its ``mic_code``, mixed venues write ``SAP:XETR``."""
        self._check_kind(kind)
        if kind not in self.batch:
            raise ValueError(f"{self.name} takes one symbol per {kind} request")
        if not 2 <= len(symbols) <= self.batch[kind]:
            raise ValueError(f"a {self.name} batch holds 2 to {self.batch[kind]} symbols, not {len(symbols)}")
        sent, shared = _batch_form(symbols)
        query = {"symbol": ",".join(sent.values()), **shared}
        if kind == "history":
            query.update(_series_params(params))
        return self._request(kind, query)

    def _request(self, kind: str, query: dict[str, str]) -> UpstreamRequest:
        return UpstreamRequest(url=self._base_url + _PATHS[kind], params=query,
                               headers={"Authorization": f"apikey {self._api_key}", "Accept": "application/json"})

    # -- answers ------------------------------------------------------------------------------

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        """A Twelve Data answer as our model, or our error; errors are read from the body whatever the status."""
        self._check_kind(kind)
        data = self._answer(kind, symbol, status, headers, body)
        return self._run_parser(kind, symbol, params, data)

    def parse_batch(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any], status: int,
                    headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        """Each symbol's model or its own error; a whole-request error (key, credits, body) is raised."""
        self._check_kind(kind)
        if len(symbols) == 1:  # one symbol is answered flat, whatever was asked
            return {symbols[0]: self.parse(kind, symbols[0], params, status, headers, body)}
        data = self._answer(kind, ",".join(symbols), status, headers, body, batch=True)
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            self._fail(UpstreamError, f"{self.name} sent an unexpected batch {kind} body")
        # Keys are the symbols as sent; their case is not promised.
        by_sent = {k.upper(): v for k, v in data.items()}
        out: dict[str, Any] = {}
        for symbol, sent in _batch_form(symbols)[0].items():
            value = by_sent.get(sent.upper())
            if value is None:
                out[symbol] = UpstreamError(f"{self.name} left {sent} out of its answer", symbol=symbol)
                continue
            error = _error_object(value, 200)
            if error is not None:
                out[symbol] = self._classify(kind, symbol, *error, headers)
                continue
            try:
                out[symbol] = self._run_parser(kind, symbol, params, value)
            except StockcacheError as exc:
                out[symbol] = exc
        return out

    def _answer(self, kind: str, subject: str, status: int, headers: Mapping[str, str], body: bytes, *,
                batch: bool = False) -> Any:
        """The JSON of a successful answer; raises our error for an error body (any status) or a failed call.

        For a batch, an error of the whole answer is every symbol's: a 404 that
        names no one symbol refuses none of them (it is a failed call).
        """
        ok = 200 <= status < 300
        try:
            data = self._json(body)
        except UpstreamError:
            if ok:
                raise
            data = None  # not Twelve Data's JSON (a proxy's page): the status is all there is
        error = _error_object(data, status)
        if error is not None:
            raise self._classify("" if batch else kind, subject, *error, headers)
        if not ok:
            raise self._http_error(status, headers)
        return data

    def _http_error(self, status: int, headers: Mapping[str, str]) -> StockcacheError:
        """A failed call without Twelve Data's error body: only a throttle or the key can be read from a status."""
        if status == 429:
            wait = retry_after_seconds(headers, self._clock()) or _UNKNOWN_429_PAUSE
            return RateLimited(f"{self.name} rate limit reached (HTTP 429)", retry_after=wait)
        if status in (401, 403):
            return UpstreamAuthError(f"{self.name} refused the request (HTTP {status})")
        return UpstreamError(f"{self.name} answered HTTP {status}")

    def _classify(self, kind: str, symbol: str, code: int, message: str, headers: Mapping[str, str]) -> StockcacheError:
        """Our error for Twelve Data's ``code`` and ``message`` (``kind`` "" for a whole batch), redacted."""
        lowered = message.lower()
        shown = f": {self.redact(message)[:160]}" if message else ""
        if code == 429:
            now = self._clock()
            header_wait = retry_after_seconds(headers, now)
            if "for the day" in lowered:
                wait, what = seconds_to_utc_midnight(now), "daily"
            elif "minute" in lowered:
                wait, what = header_wait or max(1, math.ceil(60 - now % 60)), "per-minute"
            else:
                wait, what = header_wait or _UNKNOWN_429_PAUSE, "credit"
            return RateLimited(f"{self.name} {what} credit limit reached{shown}", retry_after=wait)
        if code == 401:
            return UpstreamAuthError(f"{self.name} refused the API key{shown}")
        if code in (403, 404) and kind in _PER_SYMBOL_KINDS and not _names_an_endpoint(lowered):
            return SymbolRefused(f"{self.name} does not serve {symbol} on this plan, or knows no such symbol{shown}",
                                 symbol=symbol, provider=self.name)
        if code == 403:
            return UpstreamAuthError(f"{self.name} plan does not include this data{shown}")
        if 400 <= code < 500:
            logger.warning("%s: unclassified error %s for %s %s%s", self.name, code, kind or "batch", symbol, shown)
        return UpstreamError(f"{self.name} answered with error {code}{shown}")

    # -- parsers, one per kind; TypeError/ValueError/KeyError mean a wrong shape ----------------

    def _parse_quote(self, symbol: str, params: Mapping[str, Any], data: Any) -> Quote:
        require_dict(data)
        target = listing(symbol)
        timestamp = maybe_number(data.get("last_quote_at")) or maybe_number(data.get("timestamp"))
        quote = Quote(
            symbol=symbol,
            price=number(data["close"]),
            change=maybe_number(data.get("change")),
            change_percent=maybe_number(data.get("percent_change")),
            high=maybe_number(data.get("high")),
            low=maybe_number(data.get("low")),
            open=maybe_number(data.get("open")),
            previous_close=maybe_number(data.get("previous_close")),
            timestamp=int(timestamp) if timestamp else None,
            exchange=_exchange(target, data.get("mic_code")),
        )
        reported = text_or_none(data.get("currency"))
        return in_major(quote, reported) if reported else quote

    def _parse_history(self, symbol: str, params: Mapping[str, Any], data: Any) -> History:
        require_dict(data)
        if data.get("status", "ok") != "ok":
            raise ValueError(f"status {data.get('status')!r}")
        meta = data["meta"]
        require_dict(meta)
        target = listing(symbol)
        _exchange(target, meta.get("mic_code"))
        values = data["values"]
        if not isinstance(values, list):
            raise TypeError("values is not a list")
        unfinished = _unfinished_day(target.venue, self._clock())
        bars: dict[str, Candle] = {}
        for value in values:
            require_dict(value)
            day = value["datetime"]
            if not isinstance(day, str):
                raise TypeError("datetime is not a string")
            datetime.strptime(day, "%Y-%m-%d")
            if day == unfinished:
                continue  # today's bar while the venue still trades: not a daily bar yet
            volume = maybe_number(value.get("volume"))
            bars.setdefault(day, Candle(date=day, open=number(value["open"]), high=number(value["high"]),
                                        low=number(value["low"]), close=number(value["close"]),
                                        volume=int(volume or 0)))
        if not bars:
            self._fail(NoData, f"{self.name} has no daily bars for {symbol}", symbol=symbol)
        candles = tuple(bars[day] for day in sorted(bars))[-days_param("history", params):]
        history = History(symbol=symbol, candles=candles)
        reported = text_or_none(meta.get("currency"))
        return in_major(history, reported) if reported else history

    def _parse_search(self, symbol: str, params: Mapping[str, Any], data: Any) -> list[dict[str, str]]:
        """Listings on venues stockcache knows, written its way (``SAP`` on ``XETR`` -> ``SAP.DE``)."""
        out: dict[str, dict[str, str]] = {}
        for row in _search_rows(data):
            venue = by_mic(row["mic_code"]) if isinstance(row.get("mic_code"), str) else None
            kind = text_or_none(row.get("instrument_type")) or ""
            if venue is None or kind.lower() in _NOT_LISTINGS or "/" in row["symbol"]:
                continue  # a venue without a suffix here, or not a listing: it could not be asked for
            ours = row["symbol"].upper() + venue.suffix
            out.setdefault(ours, {"symbol": ours, "name": text_or_none(row.get("instrument_name")) or "",
                                  "type": kind})
        return list(out.values())

    def _parse_listing(self, symbol: str, params: Mapping[str, Any], data: Any) -> ListingInfo:
        """The search row of this ticker on this listing's venue: its ``currency`` is the unit of its prices."""
        target = listing(symbol)
        for row in _search_rows(data):
            mic = row.get("mic_code")
            if row["symbol"].upper() == target.base and isinstance(mic, str) and by_mic(mic) is target.venue:
                return ListingInfo(symbol=symbol, name=text_or_none(row.get("instrument_name")),
                                   currency=text_or_none(row.get("currency")), exchange=target.mic,
                                   type=text_or_none(row.get("instrument_type")))
        self._fail(NoData, f"{self.name}'s symbol search does not list {target.base} on {target.mic}", symbol=symbol)

    def _parse_profile(self, symbol: str, params: Mapping[str, Any], data: Any) -> Profile:
        require_dict(data)
        if not data:
            self._fail(NoData, f"{self.name} has no profile of {symbol}", symbol=symbol)
        name = data["name"]
        if not isinstance(name, str):
            raise TypeError("name is not a string")
        target = listing(symbol)
        venue = target.venue
        return Profile(
            symbol=symbol,
            name=name,
            exchange=_exchange(target, data.get("mic_code")),
            # The profile names no currency; a venue that trades in one tells it, London does not.
            currency=venue.currency if venue is not None and not venue.mixed_currency else None,
            country=text_or_none(data.get("country")),
            industry=text_or_none(data.get("industry")) or text_or_none(data.get("sector")),
            weburl=text_or_none(data.get("website")),
            phone=text_or_none(data.get("phone")),
            description=text_or_none(data.get("description")),
        )



def _where(target: Listing) -> dict[str, str]:
    """The query naming one listing: a US ticker bare, any other by ticker and MIC."""
    if target.is_us:
        return {"symbol": target.symbol}
    return {"symbol": target.base, "mic_code": str(target.mic)}


def _series_params(params: Mapping[str, Any]) -> dict[str, str]:
    # One bar more than asked: today's unfinished bar, when there is one, is dropped.
    return {"interval": "1day", "outputsize": str(days_param("history", params) + 1)}


def _batch_form(symbols: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(each symbol as sent, parameters every symbol shares) for one ``symbol=A,B,C`` request."""
    targets = {symbol: listing(symbol) for symbol in symbols}
    venues = {target.mic for target in targets.values()}
    if len(venues) == 1:
        target = next(iter(targets.values()))
        shared = {} if target.is_us else {"mic_code": str(target.mic)}
        return {s: _where(t)["symbol"] for s, t in targets.items()}, shared
    return {s: t.symbol if t.is_us else f"{t.base}:{t.mic}" for s, t in targets.items()}, {}


def _error_object(data: Any, status: int) -> tuple[int, str] | None:
    """(code, message) of Twelve Data's ``{"code", "message", "status": "error"}``, else None."""
    if not isinstance(data, dict) or data.get("status") != "error":
        return None
    code = data.get("code")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        code = status if status >= 400 else 500
    message = data.get("message")
    return code, message if isinstance(message, str) else ""


def _names_an_endpoint(lowered: str) -> bool:
    """A plan refusal of the endpoint ("/profile is available exclusively with grow ..."), not of a symbol."""
    return lowered.startswith("/") or "endpoint" in lowered or "exclusively" in lowered


def _exchange(target: Listing, mic: Any) -> str | None:
    """The MIC the answer names (Nasdaq's ``XNGS`` for a US listing); ValueError when it is another venue's."""
    venue = by_mic(mic) if isinstance(mic, str) and mic else None
    if venue is None:
        return None if target.is_us else target.mic
    if venue is not target.venue:
        raise ValueError(f"an answer for {mic}, not {target.mic}")
    return mic


def _unfinished_day(venue: Venue | None, now: float) -> str | None:
    """The date of the venue's bar still being made at ``now`` (today's, before its close), if any."""
    if venue is None:
        return None
    local = datetime.fromtimestamp(now, venue.zone)
    close = datetime.combine(local.date(), venue.closes, tzinfo=venue.zone)
    return local.date().isoformat() if local < close else None


def _search_rows(data: Any) -> list[dict[str, Any]]:
    require_dict(data)
    if data.get("status", "ok") != "ok":
        raise ValueError(f"status {data.get('status')!r}")
    rows = data["data"]
    if not isinstance(rows, list):
        raise TypeError("data is not a list")
    for row in rows:
        require_dict(row)
        if not isinstance(row["symbol"], str):
            raise TypeError("symbol is not a string")
    return rows
