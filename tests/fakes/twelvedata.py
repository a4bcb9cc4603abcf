"""A fake Twelve Data REST API, as ``upstream-apis-2.md`` section 1 describes it.

Mounted under ``/twelvedata`` (the real base is ``https://api.twelvedata.com``).
Data comes from :class:`DemoMarket`, so answers can be compared with ground truth.

Kept as unkind as the real API:

- The key comes as ``apikey=`` or ``Authorization: apikey KEY``; a bad one is
  code 401. Parameter case is ignored; unknown parameters are ignored.
- A listing is ``symbol=SAP&mic_code=XETR``, ``symbol=SAP&exchange=XETR`` (or a
  Twelve Data exchange name: ``LSE``, ``Euronext`` + ``country``...) or
  ``symbol=SAP:XETR``; a bare ``SAP`` is the US listing. Crypto and currency
  pairs are written ``BTC/USD``, ``EUR/USD``.
- One symbol answers a flat object; several (``symbol=A,B,C``) an object keyed
  by each symbol exactly as sent, where a failed symbol's value is its error
  object and the others are data.
- Errors are ``{"code", "message", "status": "error"}`` with the real texts.
  :attr:`TwelveData.error_status` picks the HTTP status: ``"real"`` (the code
  as the status, the default) or ``"200"`` (HTTP 200 with the error in the
  body, as older answers did). Unknown symbols and symbols off the plan
  (:meth:`TwelveData.set_off_plan`) are both code 404.
- Credits per symbol (``/profile`` costs 10), checked before the call
  against the minute (a fixed clock minute, "for the current minute") and the
  day ("for the day") limits; an over-limit request costs nothing and is
  refused as a whole. :meth:`TwelveData.credits` counts what was charged.
- ``/profile`` needs the Grow plan (:attr:`TwelveData.plan`); on Basic it is a
  403 (:attr:`TwelveData.plan_error_code`) with the plan text.
- London listings report ``GBp`` (pence) by default; :attr:`lse_currency`
  ``"GBP"`` reports them in pounds instead (prices divided by 100), since
  which of the two the real API sends is unverified.
- ``/time_series?interval=1day`` is newest first, strings, ``outputsize``
  1..5000 (default 30), and includes today's unfinished bar once the venue has
  opened (:attr:`partial_bar`).

The fake upstream counts and faults a request by its ``symbol`` parameter as
sent: a batch is one call, whose symbol is the whole list (``SAP:XETR,VOD:XLON``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from stockcache.upstream.providers.demo import CRYPTO, ETF, FX, INDEX, Instrument
from stockcache.venues import US, Venue, by_mic

from .base import Answer, MountedApi, Request, Route, Window, json_answer

BAD_KEY = ("apikey parameter is incorrect or not specified. You can get your free API key instantly following "
           "this link: https://twelvedata.com/pricing")
MINUTE_LIMIT = ("You have run out of API credits for the current minute. {used} API credits were used, with the "
                "current limit being {limit}. Wait for the next minute or consider switching to a higher tier plan "
                "at https://twelvedata.com/pricing")
DAY_LIMIT = ("You have run out of API credits for the day. {used} API credits were used, with the current limit "
             "being {limit}. Wait for the next day or consider switching to a higher tier plan at "
             "https://twelvedata.com/pricing")
NOT_FOUND = "**symbol** not found: {symbol}. Please specify it correctly according to API Documentation."
OFF_PLAN = ("**symbol** {symbol} is not available with your plan. You may select the appropriate plan at "
            "https://twelvedata.com/pricing")
MISSING = "**{name}** parameter is missing or invalid"
PLAN_ENDPOINT = ("/{endpoint} is available exclusively with grow or pro or ultra or enterprise plans. Consider "
                 "upgrading your API Key now at https://twelvedata.com/pricing")
BAD_INTERVAL = ("**interval** is not supported. Please specify one of the supported intervals: 1min, 5min, 15min, "
                "30min, 45min, 1h, 2h, 4h, 8h, 1day, 1week, 1month")

CREDITS = {"quote": 1, "time_series": 1, "price": 1, "eod": 1, "exchange_rate": 1, "symbol_search": 1,
           "profile": 10}
BATCH = ("quote", "time_series", "price", "eod", "exchange_rate")
MAX_BATCH = 120

# Twelve Data's exchange names per MIC (they drift: XETR/XETRA, Euronext/EURONEXT); by_mic() takes the MIC.
EXCHANGE_NAMES = {"XNYS": "NYSE", "XNGS": "NASDAQ", "ARCX": "NYSE", "XETR": "XETR", "XFRA": "FSX", "XLON": "LSE",
                  "XPAR": "Euronext", "XAMS": "Euronext", "XMIL": "Euronext Milan", "XSWX": "SIX", "XSTO": "OMX",
                  "XTSE": "TSX", "XHKG": "HKEX", "XTKS": "TSE"}
_NAME_TO_MIC = {"NYSE": "XNYS", "NASDAQ": "XNGS", "XETR": "XETR", "XETRA": "XETR", "FSX": "XFRA", "LSE": "XLON",
                "SIX": "XSWX", "OMX": "XSTO", "TSX": "XTSE", "HKEX": "XHKG", "TSE": "XTKS", "JPX": "XTKS",
                "EURONEXT MILAN": "XMIL", "MTA": "XMIL"}
_EURONEXT = {"FRANCE": "XPAR", "NETHERLANDS": "XAMS", "ITALY": "XMIL"}
_COUNTRY_NAMES = {"US": "United States", "DE": "Germany", "GB": "United Kingdom", "FR": "France",
                  "NL": "Netherlands", "IT": "Italy", "CH": "Switzerland", "SE": "Sweden", "CA": "Canada",
                  "HK": "Hong Kong", "JP": "Japan"}
_TYPES = {ETF: "ETF", INDEX: "Index", CRYPTO: "Digital Currency", FX: "Physical Currency"}


class _Refusal(Exception):
    """One symbol's error: ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TwelveData(MountedApi):
    """The fake Twelve Data. Configure its attributes and setters from any thread. Thread-safe."""

    name = "twelvedata"
    prefix = "/twelvedata"
    env_var = "STOCKCACHE_TWELVEDATA_URL"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected_key: str | None = None  # None: any non-empty key
        self.error_status = "real"  # or "200"
        self.plan = "basic"  # or "grow": /profile answers
        self.plan_error_code = 403
        self.lse_currency = "GBp"  # or "GBP"
        self.partial_bar = True
        self._off_plan: tuple[str, ...] = ()
        self._minute = Window(8, 60.0, fixed=True)
        self._day_limit: int | None = 800
        self._day_used = 0
        self._day = ""
        self._charged = 0

    # -- configuration -------------------------------------------------------------------------------

    def set_limits(self, *, per_minute: int | None = 8, per_day: int | None = 800) -> None:
        """Credit limits (None: unlimited)."""
        with self._lock:
            self._minute.limit = per_minute
            self._day_limit = per_day

    def set_off_plan(self, patterns: list[str] | tuple[str, ...]) -> None:
        """Symbols (our spelling, globs: ``*.SW``) the plan does not cover: 404 like an unknown symbol."""
        with self._lock:
            self._off_plan = tuple(p.upper() for p in patterns)

    def credits(self) -> int:
        """Credits charged since start or reset."""
        with self._lock:
            return self._charged

    def credits_this_minute(self) -> int:
        with self._lock:
            return self._minute.used(self.clock())

    def reset(self) -> None:
        with self._lock:
            self._minute.clear()
            self._day_used = 0
            self._charged = 0

    # -- routing -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Route:
        query = _lower_keys(request.query)
        endpoint = request.path.strip("/")
        key_in = "query" if "apikey" in query else "header" if (request.header("Authorization") or "").lower(
        ).startswith("apikey ") else None
        symbol = query.get("symbol") if endpoint != "symbol_search" else None
        safe = {k: v for k, v in query.items() if k != "apikey"}
        return Route(endpoint, symbol, key_in, safe)

    def too_many(self, request: Request, route: Route, retry_after: int | None) -> Answer:
        limit = self._minute.limit or 8
        return self._error(429, MINUTE_LIMIT.format(used=limit + 1, limit=limit))

    def answer(self, request: Request, route: Route) -> Answer:
        query = _lower_keys(request.query)
        key = query.get("apikey")
        auth = request.header("Authorization") or ""
        if key is None and auth.lower().startswith("apikey "):
            key = auth[7:].strip()
        with self._lock:
            expected = self.expected_key
        if not key or (expected is not None and key != expected):
            return self._error(401, BAD_KEY)
        endpoint = route.endpoint
        if endpoint not in CREDITS:
            return self._error(404, f"**/{endpoint}** endpoint not found. Please check the documentation.")
        if endpoint == "profile":
            with self._lock:
                grow = self.plan != "basic"
                code = self.plan_error_code
            if not grow:
                return self._error(code, PLAN_ENDPOINT.format(endpoint=endpoint))
        if endpoint == "symbol_search":
            if not query.get("symbol"):
                return self._error(400, MISSING.format(name="symbol"))
            refused = self._charge(1)
            return refused or json_answer(200, self._search(query["symbol"], query))
        if endpoint == "time_series" and query.get("interval") != "1day":
            if not query.get("interval"):
                return self._error(400, MISSING.format(name="interval"))
            return self._error(400, BAD_INTERVAL)
        raw = query.get("symbol", "")
        sent = [part.strip() for part in raw.split(",") if part.strip()] if endpoint in BATCH else [raw.strip()]
        if not sent or not sent[0]:
            return self._error(400, MISSING.format(name="symbol"))
        if len(sent) > MAX_BATCH:
            return self._error(400, f"**symbol** parameter accepts at most {MAX_BATCH} symbols")
        refused = self._charge(CREDITS[endpoint] * len(sent))
        if refused is not None:
            return refused
        results: dict[str, Any] = {}
        for text in sent:
            try:
                results[text] = self._one(endpoint, text, query)
            except _Refusal as refusal:
                results[text] = {"code": refusal.code, "message": refusal.message, "status": "error"}
        if len(sent) == 1:
            body = results[sent[0]]
            if body.get("status") == "error":
                return self._error(body["code"], body["message"])
            return json_answer(200, body)
        return json_answer(200, results)

    # -- credits -------------------------------------------------------------------------------------

    def _charge(self, amount: int) -> Answer | None:
        """Charge ``amount`` credits, or the 429 that refuses the whole request."""
        now = self.clock()
        today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        with self._lock:
            if self._day != today:
                self._day, self._day_used = today, 0
            if self._day_limit is not None and self._day_used + amount > self._day_limit:
                message = DAY_LIMIT.format(used=self._day_used + amount, limit=self._day_limit)
            elif not self._minute.fits(now, amount):
                message = MINUTE_LIMIT.format(used=self._minute.used(now) + amount, limit=self._minute.limit)
            else:
                self._minute.add(now, amount)
                self._day_used += amount
                self._charged += amount
                return None
        return self._error(429, message)

    def _error(self, code: int, message: str) -> Answer:
        with self._lock:
            status = code if self.error_status == "real" else 200
        return json_answer(status, {"code": code, "message": message, "status": "error"})

    # -- symbols -------------------------------------------------------------------------------------

    def resolve(self, text: str, query: Mapping[str, str]) -> str:
        """Our symbol for a Twelve Data symbol and its ``mic_code``/``exchange``/``country``; _Refusal if none."""
        upper = text.upper()
        if "/" in upper:
            base, _, quote = upper.partition("/")
            for symbol, asset in ((f"{base}{quote}=X", FX), (f"{base}-{quote}", CRYPTO)):  # EUR/USD is forex
                if self.market.instrument(symbol).asset == asset:
                    return self._known(symbol, text)
            raise _Refusal(404, NOT_FOUND.format(symbol=text))
        ticker, colon, place = upper.partition(":")
        mic = _mic(place) if colon else _mic_of(query)
        venue = by_mic(mic) if mic else US
        if venue is None or (colon and not mic):
            raise _Refusal(404, NOT_FOUND.format(symbol=text))
        return self._known(ticker + venue.suffix, text)

    def _known(self, symbol: str, text: str) -> str:
        if self.is_unknown(symbol):
            raise _Refusal(404, NOT_FOUND.format(symbol=text))
        if self._is_off_plan(symbol):
            raise _Refusal(404, OFF_PLAN.format(symbol=text))
        return symbol

    def _is_off_plan(self, symbol: str) -> bool:
        with self._lock:
            patterns = self._off_plan
        return any(fnmatchcase(symbol, p) for p in patterns)

    def _currency(self, inst: Instrument) -> tuple[str, int]:
        """(currency as reported, divisor for prices) for a listing."""
        if inst.currency == "GBp":
            with self._lock:
                pounds = self.lse_currency == "GBP"
            return ("GBP", 100) if pounds else ("GBp", 1)
        return inst.currency, 1

    # -- endpoints -----------------------------------------------------------------------------------

    def _one(self, endpoint: str, text: str, query: Mapping[str, str]) -> dict[str, Any]:
        symbol = self.resolve(text, query)
        if endpoint == "quote":
            return self._quote(symbol, text)
        if endpoint in ("price", "eod"):
            quote = self._quote(symbol, text)
            if endpoint == "price":
                return {"price": quote["close"]}
            return {"symbol": quote["symbol"], "exchange": quote["exchange"], "mic_code": quote["mic_code"],
                    "currency": quote["currency"], "datetime": quote["datetime"], "timestamp": quote["timestamp"],
                    "close": quote["close"]}
        if endpoint == "exchange_rate":
            inst = self.market.instrument(symbol)
            if inst.asset != FX:
                raise _Refusal(404, NOT_FOUND.format(symbol=text))
            now = self.clock()
            return {"symbol": f"{inst.base}/{inst.quote}", "rate": self.market.quote(symbol, now).price,
                    "timestamp": int(now)}
        if endpoint == "time_series":
            return self._series(symbol, text, query)
        return self._profile(symbol)

    def _meta(self, symbol: str) -> dict[str, Any]:
        inst = self.market.instrument(symbol)
        venue = inst.venue
        mic = _td_mic(inst)
        currency, _ = self._currency(inst)
        meta: dict[str, Any] = {"symbol": _td_symbol(inst), "name": inst.name,
                                "exchange": EXCHANGE_NAMES.get(mic, "") if venue else "Coinbase Pro",
                                "mic_code": mic, "currency": currency}
        if inst.asset in (CRYPTO, FX):
            meta.pop("currency")
            meta.update(currency_base=inst.base, currency_quote=inst.quote)
            if inst.asset == FX:
                meta["exchange"] = "Forex"
                meta.pop("mic_code")
        meta["exchange_timezone"] = venue.timezone if venue else "UTC"
        meta["type"] = _TYPES.get(inst.asset, "Common Stock")
        return meta

    def _quote(self, symbol: str, text: str) -> dict[str, Any]:
        now = self.clock()
        market = self.market
        inst = market.instrument(symbol)
        currency, divisor = self._currency(inst)
        q = market.quote(symbol, now)
        day = market.session_day(now, symbol)
        start, end = market.session(symbol, day)
        # The 52-week range of the demo's metrics (the figures Finnhub and Alpha Vantage serve too).
        metrics = market.metrics(symbol, now)["metrics"]
        low = min(metrics["52_week_low"], q.low or q.price)
        high = max(metrics["52_week_high"], q.high or q.price)
        recent = market.history(symbol, now, 9).candles
        meta = self._meta(symbol)
        body: dict[str, Any] = {
            "symbol": meta["symbol"], "name": inst.name, "exchange": meta["exchange"],
            "mic_code": meta.get("mic_code", ""), "currency": currency,
            "datetime": day.isoformat(), "timestamp": int(start), "last_quote_at": int(q.timestamp or now),
            "open": _s(q.open, divisor), "high": _s(q.high, divisor), "low": _s(q.low, divisor),
            "close": _s(q.price, divisor), "volume": str(market.candle(symbol, day).volume),
            "previous_close": _s(q.previous_close, divisor), "change": _s(q.change, divisor),
            "percent_change": f"{q.change_percent:.5f}",
            "average_volume": str(int(sum(c.volume for c in recent) / len(recent))),
            "is_market_open": start <= now < end,
            "fifty_two_week": {
                "low": _s(low, divisor), "high": _s(high, divisor), "low_change": _s(q.price - low, divisor),
                "high_change": _s(q.price - high, divisor),
                "low_change_percent": f"{(q.price - low) / low * 100:.5f}",
                "high_change_percent": f"{(q.price - high) / high * 100:.5f}",
                "range": f"{low / divisor:.6f} - {high / divisor:.6f}",
            },
        }
        if inst.asset in (CRYPTO, FX):
            body.pop("currency")
            body.update(currency_base=inst.base, currency_quote=inst.quote)
        return body

    def _series(self, symbol: str, text: str, query: Mapping[str, str]) -> dict[str, Any]:
        try:
            size = int(query.get("outputsize", "30"))
        except ValueError:
            size = 0
        if not 1 <= size <= 5000:
            raise _Refusal(400, MISSING.format(name="outputsize"))
        now = self.clock()
        market = self.market
        inst = market.instrument(symbol)
        _, divisor = self._currency(inst)
        day = market.session_day(now, symbol)
        start, end = market.session(symbol, day)
        bars: list[dict[str, str]] = []
        with self._lock:
            partial = self.partial_bar
        if partial and start <= now < end:
            q = market.quote(symbol, now)
            bars.append({"datetime": day.isoformat(), "open": _s(q.open, divisor), "high": _s(q.high, divisor),
                         "low": _s(q.low, divisor), "close": _s(q.price, divisor),
                         "volume": str(int(market.candle(symbol, day).volume * (now - start) / (end - start)))})
        if now >= end:
            bars.append(_bar(market.candle(symbol, day), divisor))
        if len(bars) < size:
            history = market.history(symbol, now, size - len(bars)).candles
            bars.extend(_bar(c, divisor) for c in reversed(history))
        if inst.asset == FX:
            for bar in bars:
                bar.pop("volume", None)
        meta = self._meta(symbol)
        meta.pop("name", None)
        meta["interval"] = "1day"
        return {"meta": meta, "values": bars[:size], "status": "ok"}

    def _profile(self, symbol: str) -> dict[str, Any]:
        inst = self.market.instrument(symbol)
        meta = self._meta(symbol)
        return {"symbol": meta["symbol"], "name": inst.name, "exchange": meta["exchange"],
                "mic_code": meta.get("mic_code", ""), "sector": inst.industry, "industry": inst.industry,
                "employees": int(inst.shares / 20000) or None, "website": f"https://example.com/{symbol.lower()}",
                "description": f"{inst.name} is listed on {meta['exchange']}.", "type": meta["type"], "CEO": "",
                "address": "", "address2": "", "city": "", "zip": "", "state": "",
                "country": _COUNTRY_NAMES.get(inst.country, inst.country), "phone": ""}

    def _search(self, text: str, query: Mapping[str, str]) -> dict[str, Any]:
        needle = text.strip().upper()
        rows = []
        for symbol in (*self.market.listings(), *self.market.indices()):
            inst = self.market.instrument(symbol)
            ticker = _td_symbol(inst)
            if self.is_unknown(symbol) or not (ticker.startswith(needle) or needle in inst.name.upper()):
                continue
            meta = self._meta(symbol)
            row = {"symbol": ticker, "instrument_name": inst.name, "exchange": meta["exchange"],
                   "mic_code": meta["mic_code"], "exchange_timezone": meta["exchange_timezone"],
                   "instrument_type": meta["type"],
                   "country": _COUNTRY_NAMES.get(inst.country, inst.country), "currency": meta["currency"]}
            if query.get("show_plan", "").lower() == "true":
                plan = "Grow" if self._is_off_plan(symbol) else "Basic"
                row["access"] = {"global": "Level B" if plan == "Grow" else "Level A", "plan": plan}
            rows.append(row)
        rows.sort(key=lambda row: (row["symbol"] != needle, row["symbol"], row["mic_code"]))
        try:
            size = max(1, min(120, int(query.get("outputsize", "30"))))
        except ValueError:
            size = 30
        return {"data": rows[:size], "status": "ok"}


def _lower_keys(query: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in query.items()}


def _mic(place: str) -> str | None:
    """A MIC from what follows ``SYMBOL:``: a MIC or a Twelve Data exchange name."""
    place = place.upper()
    if by_mic(place) is not None:
        return place
    return _NAME_TO_MIC.get(place)


def _mic_of(query: Mapping[str, str]) -> str | None:
    if query.get("mic_code"):
        return query["mic_code"].upper()
    exchange = (query.get("exchange") or "").upper()
    if not exchange:
        return None
    if exchange == "EURONEXT":
        return _EURONEXT.get((query.get("country") or "").upper(), "XPAR")
    return _mic(exchange) or exchange  # an unknown name: by_mic() fails, so the symbol is not found


def _td_mic(inst: Instrument) -> str:
    """The MIC Twelve Data reports: Nasdaq listings are XNGS, NYSE Arca ARCX."""
    venue: Venue | None = inst.venue
    if venue is None:
        return ""
    if venue is US:
        if inst.exchange.startswith("NASDAQ"):
            return "XNGS"
        return "ARCX" if inst.exchange == "NYSE ARCA" else "XNYS"
    return venue.mic


def _td_symbol(inst: Instrument) -> str:
    if inst.asset in (CRYPTO, FX):
        return f"{inst.base}/{inst.quote}"
    if inst.asset == INDEX:
        return inst.symbol.lstrip("^")
    if inst.venue is not None and inst.venue.suffix:
        return inst.symbol[: -len(inst.venue.suffix)]
    return inst.symbol


def _s(value: float | None, divisor: int = 1) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value / divisor:.5f}"


def _bar(candle: Any, divisor: int) -> dict[str, str]:
    return {"datetime": candle.date, "open": _s(candle.open, divisor), "high": _s(candle.high, divisor),
            "low": _s(candle.low, divisor), "close": _s(candle.close, divisor), "volume": str(candle.volume)}

