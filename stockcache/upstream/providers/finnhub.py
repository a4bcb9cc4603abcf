"""Finnhub (https://finnhub.io/api/v1): quotes, profiles, news, metrics, search.

The key travels in the ``X-Finnhub-Token`` header, never in the query, so a
logged URL cannot leak it. Unknown symbols come back as HTTP 200 with
all-zero quotes (:class:`SymbolNotFound`). A ``{}`` profile or a metric body
without figures is said of known symbols too (no fundamentals), so it is
:class:`NoData`: the next provider is asked. An empty news list is an empty
News: a quiet week is not an unknown symbol.

The free plan covers US listings only (``STOCKCACHE_FINNHUB_PLAN``): for
others Finnhub answers 403 (or 401) "You don't have access to this
resource.", so the router never asks it for them. Candles are premium (403
for free keys): ``history`` is only built on the paid plan or with
``candles=True``. Quotes carry no currency; a London listing's comes from
its profile (the ``listing`` kind).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from ...clock import iso_utc
from ...currency import major
from ...errors import NoData, RateLimited, SymbolNotFound, SymbolRefused, UpstreamAuthError, UpstreamError
from ...models import Candle, History, ListingInfo, News, NewsItem, Profile, Quote
from ...settings import Section, choice, non_negative_float, non_negative_int, setting, url
from ...symbols import EQUITY, INDEX, OTHER, Listing, listing
from .base import (
    Clock,
    Provider,
    UpstreamRequest,
    days_param,
    json_object,
    query_param,
    require_dict,
    retry_after_seconds,
    search_results,
    text_or_none,
)
from .base import (
    maybe_number as _maybe_number,
)
from .base import (
    number as _number,
)
from .finnhub_dropin import FinnhubDropIn

logger = logging.getLogger(__name__)


def number(value: Any) -> float:
    """Finnhub sends real JSON numbers; a string where a number belongs is a wrong shape."""
    return _number(value, strings=False)


def maybe_number(value: Any) -> float | None:
    return _maybe_number(value, strings=False)


def maybe_price(value: Any) -> float | None:
    """An optional price: Finnhub sends 0 where it has none (its all-zero "unknown symbol" quote)."""
    return maybe_number(value) or None


_SECRET_HEADERS = frozenset({"x-finnhub-token"})

_PATHS = {
    "quote": "/quote",
    "profile": "/stock/profile2",
    "history": "/stock/candle",
    "news": "/company-news",
    "metric": "/stock/metric",
    "search": "/search",
    "listing": "/stock/profile2",  # its "currency" is the unit of the listing's quotes
}

# Kinds asked for one listing: a "no access" answer to them refuses that symbol, not the key.
# Candles are a premium endpoint (its 403 refuses the endpoint) and search has no symbol.
_PER_SYMBOL_KINDS = frozenset({"quote", "profile", "news", "metric", "listing"})

# Normalised metric name -> Finnhub names to try in order, and a unit factor.
_METRICS: dict[str, tuple[tuple[str, ...], float]] = {
    "52_week_high": (("52WeekHigh",), 1.0),
    "52_week_low": (("52WeekLow",), 1.0),
    "beta": (("beta",), 1.0),
    "market_cap": (("marketCapitalization",), 1e6),
    "pe_ratio": (("peTTM", "peBasicExclExtraTTM", "peNormalizedAnnual"), 1.0),
    "eps": (("epsTTM", "epsBasicExclExtraItemsTTM", "epsInclExtraItemsTTM"), 1.0),
    "dividend_yield": (("dividendYieldIndicatedAnnual", "currentDividendYieldTTM"), 1.0),
}


def _utc_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class FinnhubConfig(Section):
    """Finnhub's settings: ``FINNHUB_API_KEY`` and ``STOCKCACHE_FINNHUB_*``."""

    prefix = "finnhub"
    api_key: str = setting("", env="FINNHUB_API_KEY", secret=True,
                           help="Finnhub API key; without any key the offline demo source serves.")
    url: str = setting("https://finnhub.io/api/v1", env="STOCKCACHE_FINNHUB_URL", parse=url,
                       help="Finnhub base URL (point it at a fake upstream for tests).")
    per_minute: int = setting(60, env="STOCKCACHE_FINNHUB_PER_MINUTE", parse=non_negative_int,
                              help="Finnhub calls allowed per minute (free plan: 60); 0 means no limit.")
    per_second: int = setting(30, env="STOCKCACHE_FINNHUB_PER_SECOND", parse=non_negative_int,
                              help="Finnhub calls allowed per second (every plan: 30); 0 means no limit.")
    per_day: int = setting(0, env="STOCKCACHE_FINNHUB_PER_DAY", parse=non_negative_int,
                           help="Finnhub calls allowed per UTC day; 0 means no limit.")
    cost_per_call: float = setting(0.0, env="STOCKCACHE_FINNHUB_COST_PER_CALL", parse=non_negative_float,
                                   help="Price of one Finnhub call, for the estimated cost in KPIs.")
    plan: str = setting("free", env="STOCKCACHE_FINNHUB_PLAN", parse=choice("free", "paid"),
                        help="Finnhub plan: 'free' (US listings; no candles) or 'paid' (every market, "
                             "daily candles).")


class FinnhubProvider(Provider):
    """Finnhub adapter. Stateless after construction, so thread-safe."""

    name = "finnhub"
    label = "Finnhub"
    config = FinnhubConfig
    supports = frozenset(_PATHS)
    dropin = FinnhubDropIn
    # Quotes, profiles, news, metrics and search first; history second (candles are a paid plan's).
    priority = {"quote": 10, "profile": 10, "news": 10, "metric": 10, "search": 10, "history": 20}

    def __init__(self, config: FinnhubConfig, *, clock: Clock = time.time, candles: bool | None = None) -> None:
        super().__init__(config, clock=clock)
        self._base_url = config.url.rstrip("/")
        self._paid = config.plan == "paid"
        self._candles = self._paid if candles is None else candles
        self.kinds = frozenset(k for k in _PATHS if self._candles or k != "history")

    def covers(self, kind: str, listing: Listing | None) -> bool:
        """Free plan: US listings (and Finnhub's own ``EXCHANGE:PAIR`` forms); paid: every venue's listings."""
        if kind not in self.kinds:
            return False
        if listing is None:
            return kind == "search"
        if listing.asset == OTHER:
            return kind in ("quote", "history")
        if listing.asset not in (EQUITY, INDEX) or listing.venue is None:
            return False
        if kind == "listing":  # only asked where the venue leaves the currency open, never in the US
            return self._paid and not listing.is_us
        return self._paid or (listing.is_us and listing.asset == EQUITY)

    @classmethod
    def could_cover(cls, kind: str, listing: Listing | None) -> bool:
        return kind in cls.supports and (listing is None or listing.asset in (EQUITY, INDEX, OTHER))

    @classmethod
    def plan_for(cls, kind: str, listing: Listing | None) -> str | None:
        if not cls.could_cover(kind, listing):
            return None
        free = kind in _PATHS and kind != "history" and (
            listing is None or (listing.is_us and listing.asset == EQUITY) or listing.asset == OTHER)
        return "" if free else "paid"

    def coverage_note(self, kind: str, listing: Listing | None) -> str:
        return "Finnhub's paid plan" if self._paid else "Finnhub's free plan"

    def upgrade_hint(self, kind: str, listing: Listing | None) -> str | None:
        if self._paid or not self.could_cover(kind, listing) or (kind == "history" and not self._candles):
            return None
        return "STOCKCACHE_FINNHUB_PLAN=paid with a paid Finnhub key"

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The Finnhub request for ``kind``; history raises UpstreamAuthError unless candles are on."""
        self._check_kind(kind)
        query: dict[str, str]
        now = self._clock()
        if kind == "history":
            if not self._candles:
                self._fail(UpstreamAuthError, "finnhub candles are not in plan")
            days = days_param(kind, params)
            # Calendar span that surely holds `days` trading days (weekends, holidays).
            span = (days * 7 // 5 + 10) * 86400
            query = {"symbol": symbol, "resolution": "D", "from": str(int(now - span)), "to": str(int(now))}
        elif kind == "news":
            days = days_param(kind, params)
            query = {"symbol": symbol, "from": _utc_date(now - days * 86400), "to": _utc_date(now)}
        elif kind == "metric":
            query = {"symbol": symbol, "metric": "all"}
        elif kind == "search":
            query = {"q": query_param(params, symbol)}
        else:
            query = {"symbol": symbol}  # Finnhub writes listings with the same suffixes (SAP.DE, VOD.L)
        return UpstreamRequest(
            url=self._base_url + _PATHS[kind],
            params=query,
            headers={"X-Finnhub-Token": self._api_key, "Accept": "application/json"},
            secret=_SECRET_HEADERS,
        )

    def parse(
        self,
        kind: str,
        symbol: str,
        params: Mapping[str, Any],
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Any:
        """A Finnhub response as our model, or our error."""
        self._check_kind(kind)
        if not 200 <= status < 300:
            self._http_error(kind, symbol, status, headers, body)
        data = self._json(body)
        if isinstance(data, dict) and "error" in data and len(data) == 1:
            self._error_text(kind, symbol, str(data["error"]), status, headers)
        return self._run_parser(kind, symbol, params, data)

    # Errors

    def _http_error(self, kind: str, symbol: str, status: int, headers: Mapping[str, str], body: bytes) -> NoReturn:
        text = ""
        try:
            data = json_object(body)
            if isinstance(data.get("error"), str):
                text = data["error"]
        except ValueError:
            pass
        if status in (401, 403, 429) or text:
            self._error_text(kind, symbol, text, status, headers)
        self._fail(UpstreamError, f"finnhub answered HTTP {status}")

    def _error_text(self, kind: str, symbol: str, text: str, status: int, headers: Mapping[str, str]) -> NoReturn:
        """Classify Finnhub's ``{"error": ...}`` by its words first where they are unambiguous, then by status.

        "You don't have access to this resource." refuses one listing on the
        free plan (non-US symbols), with HTTP 403 or sometimes 401: a
        :class:`SymbolRefused`, not a key problem. On candles (premium) and
        search it refuses the endpoint, so there it stays a plan error. A bad
        key ("Invalid API key") is a provider-wide :class:`UpstreamAuthError`.
        """
        lowered = text.lower()
        shown = f": {text[:160]}" if text else ""
        if status >= 500:
            self._fail(UpstreamError, f"finnhub answered HTTP {status}{shown}")
        if status == 429 or "limit" in lowered:
            self._fail(
                RateLimited,
                f"finnhub rate limit reached{shown}",
                retry_after=retry_after_seconds(headers, self._clock()),
            )
        no_access = "have access" in lowered
        if no_access and kind in _PER_SYMBOL_KINDS:
            self._fail(SymbolRefused, f"finnhub does not serve {symbol} on this plan{shown}",
                       symbol=symbol, provider=self.name)
        if "api key" in lowered or (status == 401 and not no_access):
            self._fail(UpstreamAuthError, f"finnhub refused the API key{shown}")
        if status in (401, 403) or no_access:
            self._fail(UpstreamAuthError, f"finnhub plan does not include this data{shown}")
        self._fail(UpstreamError, f"finnhub answered HTTP {status}{shown}")

    def _not_found(self, symbol: str) -> NoReturn:
        self._fail(SymbolNotFound, f"finnhub knows no symbol {symbol}", symbol=symbol)

    # Parsers, one per kind; TypeError/ValueError/KeyError mean a wrong shape.

    def _parse_quote(self, symbol: str, params: Mapping[str, Any], data: Any) -> Quote:
        require_dict(data)
        price = maybe_number(data["c"])
        if not price:
            self._not_found(symbol)
        timestamp = maybe_number(data.get("t"))
        return Quote(
            symbol=symbol,
            price=price,
            change=maybe_number(data.get("d")),
            change_percent=maybe_number(data.get("dp")),
            high=maybe_price(data.get("h")),
            low=maybe_price(data.get("l")),
            open=maybe_price(data.get("o")),
            previous_close=maybe_price(data.get("pc")),
            timestamp=int(timestamp) if timestamp else None,
        )

    def _no_data(self, kind: str, symbol: str) -> NoReturn:
        """Finnhub's empty answer: for an unknown symbol and for a known one it has no such data alike,
        so another provider is asked before it is "not found"."""
        self._fail(NoData, f"finnhub has no {kind} data for {symbol}", symbol=symbol)

    def _profile_fields(self, symbol: str, data: Any, kind: str) -> dict[str, Any]:
        require_dict(data)
        if not data:
            self._no_data(kind, symbol)
        if not isinstance(data["name"], str):
            raise TypeError("name is not a string")
        return data

    def _parse_listing(self, symbol: str, params: Mapping[str, Any], data: Any) -> ListingInfo:
        data = self._profile_fields(symbol, data, "listing")
        return ListingInfo(symbol=symbol, name=data["name"], currency=text_or_none(data.get("currency")),
                           exchange=listing(symbol).mic)

    def _parse_profile(self, symbol: str, params: Mapping[str, Any], data: Any) -> Profile:
        data = self._profile_fields(symbol, data, "profile")
        name = data["name"]
        cap = maybe_number(data.get("marketCapitalization"))
        shares = maybe_number(data.get("shareOutstanding"))
        reported = text_or_none(data.get("currency"))
        return Profile(
            symbol=symbol,
            name=name,
            exchange=text_or_none(data.get("exchange")),
            currency=major(reported)[0] if reported else None,
            country=text_or_none(data.get("country")),
            industry=text_or_none(data.get("finnhubIndustry")),
            ipo=text_or_none(data.get("ipo")),
            market_cap=None if cap is None else float(round(cap * 1e6)),
            shares_outstanding=None if shares is None else float(round(shares * 1e6)),
            logo=text_or_none(data.get("logo")),
            weburl=text_or_none(data.get("weburl")),
            phone=text_or_none(data.get("phone")),
        )

    def _parse_history(self, symbol: str, params: Mapping[str, Any], data: Any) -> History:
        require_dict(data)
        if data.get("s") == "no_data":
            self._not_found(symbol)
        if data.get("s") != "ok":
            raise ValueError(f"status {data.get('s')!r}")
        columns = [data[k] for k in ("t", "o", "h", "l", "c", "v")]
        if not all(isinstance(col, list) and len(col) == len(columns[0]) for col in columns):
            raise ValueError("columns of different lengths")
        candles = sorted(
            (
                Candle(
                    date=_utc_date(number(t)),
                    open=number(o),
                    high=number(h),
                    low=number(lo),
                    close=number(c),
                    volume=int(number(v)),
                )
                for t, o, h, lo, c, v in zip(*columns)
            ),
            key=lambda candle: candle.date,
        )
        if not candles:
            self._not_found(symbol)
        return History(symbol=symbol, candles=tuple(candles[-days_param("history", params):]))

    def _parse_news(self, symbol: str, params: Mapping[str, Any], data: Any) -> News:
        if not isinstance(data, list):
            raise TypeError("expected a list of articles")
        dated = []
        for item in data:
            require_dict(item)
            for key in ("headline", "url"):
                if not isinstance(item[key], str):
                    raise TypeError(f"{key} is not a string")
            ts = number(item["datetime"])
            dated.append(
                (
                    ts,
                    NewsItem(
                        headline=item["headline"],
                        summary=text_or_none(item.get("summary")) or "",
                        url=item["url"],
                        source=text_or_none(item.get("source")) or "",
                        published_at=iso_utc(ts),
                        image=text_or_none(item.get("image")),
                    ),
                )
            )
        dated.sort(key=lambda pair: pair[0], reverse=True)
        return News(symbol=symbol, articles=tuple(article for _, article in dated))

    def _parse_metric(self, symbol: str, params: Mapping[str, Any], data: Any) -> dict[str, Any]:
        require_dict(data)
        metric = data.get("metric")
        if not metric:  # absent, null or {}: no key figures here, which says nothing of the provider's health
            self._no_data("metric", symbol)
        require_dict(metric)
        out: dict[str, float] = {}
        for ours, (names, factor) in _METRICS.items():
            for theirs in names:
                value = metric.get(theirs)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[ours] = round(float(value) * factor, 6)
                    break
        return {"symbol": symbol, "metrics": out}

    def _parse_search(self, symbol: str, params: Mapping[str, Any], data: Any) -> list[dict[str, str]]:
        return search_results(data, "result", "symbol", "description", "type")
