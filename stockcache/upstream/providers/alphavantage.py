"""Alpha Vantage (https://www.alphavantage.co/query): history first, fallback for the rest.

Alpha Vantage reports errors and throttling as HTTP 200 bodies with one of the
keys ``Error Message``, ``Information`` or ``Note``, told apart only by their
text; :func:`classify_message` holds that knowledge in one place. The key can
only travel as the ``apikey`` query parameter, and the daily-cap text quotes
it back, so every message we raise goes through :meth:`redact`. Numbers arrive
as strings. TIME_SERIES_DAILY is always ``outputsize=compact``: ``full`` is
premium for free keys and 100 bars is all the contract offers.
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
from ...errors import (
    NoData,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    UpstreamAuthError,
    UpstreamError,
)
from ...models import Candle, History, ListingInfo, News, NewsItem, Profile, Quote
from ...settings import Section, non_negative_float, non_negative_int, setting, url
from ...symbols import Listing, listing
from ...venues import US, Venue
from .alphavantage_dropin import AlphaVantageDropIn
from .alphavantage_symbols import from_av, serves, to_av
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
    search_results,
    seconds_to_utc_midnight,
    text_or_none,
)

logger = logging.getLogger(__name__)

_FUNCTIONS = {
    "quote": "GLOBAL_QUOTE",
    "profile": "OVERVIEW",
    "metric": "OVERVIEW",
    "history": "TIME_SERIES_DAILY",
    "news": "NEWS_SENTIMENT",
    "search": "SYMBOL_SEARCH",
    "listing": "SYMBOL_SEARCH",  # the exact match's "8. currency": the unit of its prices
}
# One OVERVIEW body holds the profile and the key figures: a call for one fills both.
_COMPANIONS = {"profile": ("metric",), "metric": ("profile",)}

# The news feed's words for "a known ticker, no articles in this window".
_NO_ARTICLES = "no articles found"

# The key whose presence means "this is data", per kind; without it we look for a message.
_DATA_KEYS = {
    "quote": "Global Quote",
    "profile": "Name",
    "metric": "Name",
    "history": "Time Series (Daily)",
    "news": "feed",
    "search": "bestMatches",
    "listing": "bestMatches",
}

_MESSAGE_KEYS = ("Error Message", "Information", "Note")

# Normalised metric name -> OVERVIEW field, and a unit factor (DividendYield is a fraction).
_METRICS: dict[str, tuple[str, float]] = {
    "52_week_high": ("52WeekHigh", 1.0),
    "52_week_low": ("52WeekLow", 1.0),
    "beta": ("Beta", 1.0),
    "market_cap": ("MarketCapitalization", 1.0),
    "pe_ratio": ("PERatio", 1.0),
    "eps": ("EPS", 1.0),
    "dividend_yield": ("DividendYield", 100.0),
}
_PRICE_METRICS = frozenset({"52_week_high", "52_week_low", "eps"})

def _close_timestamp(day: str, now: float, venue: Venue | None) -> int:
    """Unix time of the close on ``day`` (YYYY-MM-DD) at the listing's venue, or now if that is later."""
    date = datetime.strptime(day, "%Y-%m-%d")
    venue = venue or US
    close = datetime.combine(date.date(), venue.closes, tzinfo=venue.zone).timestamp()
    return int(min(close, now))


def _published(text: str) -> str:
    """``time_published``: ``YYYYMMDDTHHMMSS``, seen without seconds and with a trailing ``Z`` (UTC either way).

    Told apart by length, not by trying formats: ``strptime`` reads ``20240103T1658``
    with seconds as 16:05:08.
    """
    stamp = text.removesuffix("Z")
    formats = {13: "%Y%m%dT%H%M", 15: "%Y%m%dT%H%M%S"}
    if len(stamp) not in formats or not stamp.isascii():
        raise ValueError(f"time_published {text[:20]!r} is not YYYYMMDDTHHMMSS")
    when = datetime.strptime(stamp, formats[len(stamp)])
    return iso_utc(when.replace(tzinfo=UTC).timestamp())


def classify_message(
    key: str, text: str, *, kind: str, symbol: str, now: float
) -> tuple[type[StockcacheError], str, dict[str, Any]]:
    """Map an HTTP-200 ``Error Message``/``Information``/``Note`` to (error class, message, fields).

    The order of the tests matters: the burst text also mentions "25 requests
    per day" and "premium endpoints", and the legacy text mentions "per day".
    """
    lowered = text.lower()
    if key == "Error Message":
        if "apikey" in lowered or "api key" in lowered:
            return UpstreamAuthError, "alphavantage refused the API key", {}
        if "invalid api call" in lowered:
            return SymbolNotFound, f"alphavantage knows no symbol {symbol}", {"symbol": symbol}
        return UpstreamError, f"alphavantage said: {text[:160]}", {}
    if "call frequency" in lowered or "per minute" in lowered:
        return RateLimited, "alphavantage per-minute limit reached", {"retry_after": 60}
    if "per second" in lowered or "sparingly" in lowered:
        return RateLimited, "alphavantage per-second limit reached", {"retry_after": 1}
    if "premium endpoint" in lowered or "premium feature" in lowered:
        return UpstreamAuthError, "alphavantage plan does not include this data (premium)", {}
    if "per day" in lowered or "daily" in lowered:
        return (
            RateLimited,
            "alphavantage daily request limit reached",
            {"retry_after": seconds_to_utc_midnight(now)},
        )
    if "premium" in lowered:
        return UpstreamAuthError, "alphavantage plan does not include this data (premium)", {}
    if kind == "news":
        # NEWS_SENTIMENT answers "Invalid inputs" for tickers it does not know.
        return SymbolNotFound, f"alphavantage has no news for symbol {symbol}", {"symbol": symbol}
    return UpstreamError, f"alphavantage said: {text[:160]}", {}


@dataclass(frozen=True)
class AlphaVantageConfig(Section):
    """Alpha Vantage's settings: ``ALPHAVANTAGE_API_KEY`` and ``STOCKCACHE_ALPHAVANTAGE_*``."""

    prefix = "alphavantage"
    api_key: str = setting("", env="ALPHAVANTAGE_API_KEY", secret=True,
                           help="Alpha Vantage API key (history, and fallback for quotes and profiles).")
    url: str = setting("https://www.alphavantage.co/query", env="STOCKCACHE_ALPHAVANTAGE_URL", parse=url,
                       help="Alpha Vantage query URL.")
    per_day: int = setting(25, env="STOCKCACHE_ALPHAVANTAGE_PER_DAY", parse=non_negative_int,
                           help="Alpha Vantage calls allowed per UTC day (free plan: 25); 0 means no limit.")
    per_second: int = setting(1, env="STOCKCACHE_ALPHAVANTAGE_PER_SECOND", parse=non_negative_int,
                              help="Alpha Vantage calls allowed per second (free plan: about 1); 0 means no "
                                   "limit.")
    per_minute: int = setting(0, env="STOCKCACHE_ALPHAVANTAGE_PER_MINUTE", parse=non_negative_int,
                              help="Alpha Vantage calls allowed per minute; 0 means no limit.")
    cost_per_call: float = setting(0.0, env="STOCKCACHE_ALPHAVANTAGE_COST_PER_CALL", parse=non_negative_float,
                                   help="Price of one Alpha Vantage call, for the estimated cost in KPIs.")


class AlphaVantageProvider(Provider):
    """Alpha Vantage adapter. Stateless after construction, so thread-safe."""

    name = "alphavantage"
    label = "Alpha Vantage"
    config = AlphaVantageConfig
    kinds = frozenset(_FUNCTIONS)
    dropin = AlphaVantageDropIn
    companions = _COMPANIONS
    # History first (Finnhub's candles are premium); the fallback for everything else.
    priority = {"history": 10, "quote": 20, "profile": 20, "news": 20, "metric": 20, "search": 20}

    def __init__(self, config: AlphaVantageConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        # The settings allow the alpha_vantage package's trailing "?"; requests adds its own.
        self._base_url = config.url.rstrip("?")

    def covers(self, kind: str, listing: Listing | None) -> bool:
        """US listings and the venues whose Alpha Vantage suffix is known; a listing's currency only off the US."""
        if kind not in self.kinds:
            return False
        if listing is None:
            return kind == "search"
        if kind == "listing":
            return serves(listing) and not listing.is_us
        return serves(listing)

    @classmethod
    def could_cover(cls, kind: str, listing: Listing | None) -> bool:
        return kind in cls.kinds and (listing is None or serves(listing))

    @classmethod
    def symbol_for(cls, listing: Listing) -> str:
        """``SAP.DE`` -> ``SAP.DEX``, ``VOD.L`` -> ``VOD.LON``; US symbols as they are."""
        return to_av(listing.symbol)

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The Alpha Vantage query for ``kind`` (never outputsize=full)."""
        self._check_kind(kind)
        query = {"function": _FUNCTIONS[kind]}
        theirs = symbol if kind == "search" else self.symbol_for(listing(symbol))
        if kind == "history":
            days_param(kind, params)
            query.update(symbol=theirs, outputsize="compact")
        elif kind == "news":
            days = days_param(kind, params)
            since = datetime.fromtimestamp(self._clock() - days * 86400, UTC)
            # limit: the default of 50 would cut a 30-day window short; 1000 costs the same one call.
            query.update(tickers=theirs, time_from=since.strftime("%Y%m%dT%H%M"), sort="LATEST", limit="1000")
        elif kind == "search":
            query.update(keywords=query_param(params, symbol))
        elif kind == "listing":
            # The bare ticker: the search lists every venue's line of it (VOD, VOD.LON, ...), and the
            # exact match is picked from those; a search for "VOD.LON" itself is not known to find it.
            query.update(keywords=listing(symbol).base)
        else:
            query.update(symbol=theirs)
        query["apikey"] = self._api_key
        return UpstreamRequest(url=self._base_url, params=query, headers={"Accept": "application/json"})

    def parse(
        self,
        kind: str,
        symbol: str,
        params: Mapping[str, Any],
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Any:
        """An Alpha Vantage response as our model, or our error."""
        self._check_kind(kind)
        if not 200 <= status < 300:
            self._http_error(status, headers)
        data = self._json(body)
        if isinstance(data, dict) and _DATA_KEYS[kind] not in data:
            if kind == "news" and _NO_ARTICLES in str(data.get("Information", "")).lower():
                return News(symbol=symbol, articles=())  # a known ticker with a quiet window
            for key in _MESSAGE_KEYS:
                if isinstance(data.get(key), str):
                    cls, message, fields = classify_message(
                        key, data[key], kind=kind, symbol=symbol, now=self._clock()
                    )
                    if cls is UpstreamError:
                        logger.warning("alphavantage: unclassified %s: %s", key, self.redact(data[key])[:300])
                    self._fail(cls, message, **fields)
        return self._run_parser(kind, symbol, params, data)

    def _http_error(self, status: int, headers: Mapping[str, str]) -> NoReturn:
        if status == 429:
            self._fail(
                RateLimited,
                "alphavantage rate limit reached (HTTP 429)",
                retry_after=retry_after_seconds(headers, self._clock()),
            )
        if status in (401, 403):
            self._fail(UpstreamAuthError, f"alphavantage refused the request (HTTP {status})")
        self._fail(UpstreamError, f"alphavantage answered HTTP {status}")

    def _not_found(self, symbol: str) -> NoReturn:
        self._fail(SymbolNotFound, f"alphavantage knows no symbol {symbol}", symbol=symbol)

    # Parsers, one per kind; TypeError/ValueError/KeyError mean a wrong shape.

    def _parse_quote(self, symbol: str, params: Mapping[str, Any], data: Any) -> Quote:
        require_dict(data)
        quote = data["Global Quote"]
        require_dict(quote)
        if not quote:
            self._not_found(symbol)
        price = number(quote["05. price"])
        if not price:
            self._not_found(symbol)
        day = text_or_none(quote.get("07. latest trading day"))
        return Quote(
            symbol=symbol,
            price=price,
            change=maybe_number(quote.get("09. change")),
            change_percent=maybe_number(quote.get("10. change percent")),
            high=maybe_number(quote.get("03. high")),
            low=maybe_number(quote.get("04. low")),
            open=maybe_number(quote.get("02. open")),
            previous_close=maybe_number(quote.get("08. previous close")),
            timestamp=_close_timestamp(day, self._clock(), listing(symbol).venue) if day else None,
        )

    def _overview(self, symbol: str, data: Any) -> dict[str, Any]:
        require_dict(data)
        if not data:
            # OVERVIEW has fundamentals for few listings outside the US: another provider may.
            self._fail(NoData, f"alphavantage has no overview of {symbol}", symbol=symbol)
        if not isinstance(data["Name"], str):
            raise TypeError("Name is not a string")
        return data

    def _parse_profile(self, symbol: str, params: Mapping[str, Any], data: Any) -> Profile:
        data = self._overview(symbol, data)
        reported = _field(data, "Currency")
        return Profile(
            symbol=symbol,
            name=data["Name"],
            exchange=_field(data, "Exchange"),
            currency=major(reported)[0] if reported else None,
            country=_field(data, "Country"),
            industry=_field(data, "Industry") or _field(data, "Sector"),
            market_cap=maybe_number(data.get("MarketCapitalization")),
            shares_outstanding=maybe_number(data.get("SharesOutstanding")),
            weburl=_field(data, "OfficialSite"),
            description=_field(data, "Description"),
        )

    def _parse_metric(self, symbol: str, params: Mapping[str, Any], data: Any) -> dict[str, Any]:
        data = self._overview(symbol, data)
        reported = _field(data, "Currency")
        factor = major(reported)[1] if reported else 1  # 52-week range and EPS are prices: pence -> pounds
        out: dict[str, float] = {}
        for ours, (theirs, scale) in _METRICS.items():
            try:
                value = maybe_number(data.get(theirs))
            except (TypeError, ValueError):
                continue  # one odd metric should not sink the others
            if value is not None:
                if ours in _PRICE_METRICS:
                    scale /= factor
                out[ours] = round(value * scale, 6)
        return {"symbol": symbol, "metrics": out}

    def _parse_history(self, symbol: str, params: Mapping[str, Any], data: Any) -> History:
        require_dict(data)
        series = data["Time Series (Daily)"]
        require_dict(series)
        if not series:
            self._not_found(symbol)
        candles = []
        for day in sorted(series):
            datetime.strptime(day, "%Y-%m-%d")
            bar = series[day]
            require_dict(bar)
            candles.append(
                Candle(
                    date=day,
                    open=number(bar["1. open"]),
                    high=number(bar["2. high"]),
                    low=number(bar["3. low"]),
                    close=number(bar["4. close"]),
                    volume=int(number(bar["5. volume"])),
                )
            )
        return History(symbol=symbol, candles=tuple(candles[-days_param("history", params):]))

    def _parse_news(self, symbol: str, params: Mapping[str, Any], data: Any) -> News:
        require_dict(data)
        feed = data["feed"]
        if not isinstance(feed, list):
            raise TypeError("feed is not a list")
        articles = []
        for item in feed:
            require_dict(item)
            for key in ("title", "url", "time_published"):
                if not isinstance(item[key], str):
                    raise TypeError(f"{key} is not a string")
            articles.append(
                NewsItem(
                    headline=item["title"],
                    summary=text_or_none(item.get("summary")) or "",
                    url=item["url"],
                    source=text_or_none(item.get("source")) or "",
                    published_at=_published(item["time_published"]),
                    image=text_or_none(item.get("banner_image")),
                )
            )
        articles.sort(key=lambda article: article.published_at, reverse=True)
        return News(symbol=symbol, articles=tuple(articles))

    def _parse_search(self, symbol: str, params: Mapping[str, Any], data: Any) -> list[dict[str, str]]:
        """Matches, with Alpha Vantage's suffixes written the way stockcache takes them (``SAP.DEX`` -> ``SAP.DE``)."""
        results = search_results(data, "bestMatches", "1. symbol", "2. name", "3. type")
        for result in results:
            result["symbol"] = from_av(result["symbol"])
        return results

    def _parse_listing(self, symbol: str, params: Mapping[str, Any], data: Any) -> ListingInfo:
        """The exact match of the symbol search: its ``8. currency`` is the unit of its prices (GBX on .LON)."""
        require_dict(data)
        matches = data["bestMatches"]
        if not isinstance(matches, list):
            raise TypeError("bestMatches is not a list")
        target = listing(symbol)
        theirs = self.symbol_for(target)
        for match in matches:
            require_dict(match)
            if match.get("1. symbol") == theirs:
                return ListingInfo(symbol=symbol, name=text_or_none(match.get("2. name")),
                                   currency=text_or_none(match.get("8. currency")), exchange=target.mic,
                                   type=text_or_none(match.get("3. type")))
        self._fail(NoData, f"alphavantage's symbol search does not list {theirs}", symbol=symbol)


def _field(data: Mapping[str, Any], key: str) -> str | None:
    """An OVERVIEW text field, with Alpha Vantage's "None" and "-" as None."""
    value = text_or_none(data.get(key))
    return None if value in ("None", "-") else value
