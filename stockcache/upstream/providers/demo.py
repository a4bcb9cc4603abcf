"""The offline demo source: deterministic, plausible market data with no network.

It serves when no key is configured, so a new user sees the service work at
once. Every number is a pure function of (symbol, UTC date, clock), hashed with
BLAKE2b rather than a seeded global RNG, so two processes (the service and
``bench.fake_upstream``, which reuses :class:`DemoMarket`) agree to the cent.

The price of a day is a slow sum of sine waves (trend) plus daily noise, so
history needs no random walk from an epoch. The current session is today
(UTC) once 13:30 UTC has passed on a weekday, else the last weekday; the
price moves from that session's open to its close by 20:00 UTC. History ends
the weekday before the session, so its last close is the quote's previous close.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from ...clock import iso_utc
from ...errors import SymbolNotFound
from ...models import Candle, History, News, NewsItem, Profile, Quote
from ...settings import Section, Settings
from .base import Clock, Provider, days_param, query_param

UNKNOWN_PATTERNS = ("ZZZZ*",)

_SESSION_OPEN = 13 * 3600 + 30 * 60  # 09:30 New York in winter, as UTC seconds of day
_SESSION_LENGTH = 6 * 3600 + 30 * 60


@dataclass(frozen=True)
class _Company:
    name: str
    exchange: str
    industry: str
    ipo: str
    price: float  # level the price oscillates around
    shares: float  # units


_NASDAQ = "NASDAQ NMS - GLOBAL MARKET"
_NYSE = "NEW YORK STOCK EXCHANGE, INC."

_KNOWN: dict[str, _Company] = {
    "AAPL": _Company("Apple Inc", _NASDAQ, "Technology", "1980-12-12", 230.0, 15.04e9),
    "MSFT": _Company("Microsoft Corp", _NASDAQ, "Technology", "1986-03-13", 420.0, 7.43e9),
    "GOOGL": _Company("Alphabet Inc", _NASDAQ, "Media", "2004-08-19", 170.0, 12.2e9),
    "AMZN": _Company("Amazon.com Inc", _NASDAQ, "Retail", "1997-05-15", 190.0, 10.5e9),
    "NVDA": _Company("NVIDIA Corp", _NASDAQ, "Semiconductors", "1999-01-22", 130.0, 24.5e9),
    "TSLA": _Company("Tesla Inc", _NASDAQ, "Automobiles", "2010-06-09", 250.0, 3.2e9),
    "META": _Company("Meta Platforms Inc", _NASDAQ, "Media", "2012-05-18", 560.0, 2.53e9),
    "BRK.B": _Company("Berkshire Hathaway Inc", _NYSE, "Financial Services", "1996-05-09", 450.0, 1.3e9),
    "JPM": _Company("JPMorgan Chase & Co", _NYSE, "Banking", "1980-03-17", 210.0, 2.85e9),
    "V": _Company("Visa Inc", _NYSE, "Financial Services", "2008-03-19", 280.0, 1.95e9),
    "MA": _Company("Mastercard Inc", _NYSE, "Financial Services", "2006-05-25", 470.0, 0.92e9),
    "WMT": _Company("Walmart Inc", _NYSE, "Retail", "1972-08-25", 70.0, 8.04e9),
    "JNJ": _Company("Johnson & Johnson", _NYSE, "Pharmaceuticals", "1944-09-25", 155.0, 2.41e9),
    "XOM": _Company("Exxon Mobil Corp", _NYSE, "Energy", "1970-01-02", 115.0, 4.4e9),
    "KO": _Company("Coca-Cola Co", _NYSE, "Beverages", "1919-09-05", 63.0, 4.31e9),
    "DIS": _Company("Walt Disney Co", _NYSE, "Media", "1957-11-12", 95.0, 1.81e9),
    "NFLX": _Company("Netflix Inc", _NASDAQ, "Media", "2002-05-23", 650.0, 0.43e9),
    "AMD": _Company("Advanced Micro Devices Inc", _NASDAQ, "Semiconductors", "1972-09-27", 150.0, 1.62e9),
    "INTC": _Company("Intel Corp", _NASDAQ, "Semiconductors", "1971-10-13", 30.0, 4.28e9),
    "IBM": _Company("International Business Machines Corp", _NYSE, "Technology", "1915-11-11", 190.0, 0.92e9),
}

_SYLLABLES = ("Ar", "Bel", "Cor", "Dyn", "Ev", "Fal", "Gal", "Hel", "Ion", "Jun", "Kel", "Lum", "Mer",
              "Nov", "Or", "Pax", "Quan", "Ros", "Syn", "Tor", "Ul", "Ver", "Wyn", "Xen", "Yor", "Zen")
_ENDINGS = ("a", "ex", "ia", "on", "ix", "is", "o", "um", "ara", "eon")
_SUFFIXES = ("Holdings", "Corp", "Inc", "Group", "Technologies", "Industries", "Systems",
             "Therapeutics", "Energy", "Financial")
_INDUSTRIES = ("Technology", "Industrials", "Biotechnology", "Energy", "Financial Services",
               "Retail", "Utilities", "Semiconductors", "Media", "Real Estate")
_HEADLINES = (
    "{name} shares move as traders weigh the sector outlook",
    "Analysts revisit their price targets for {name}",
    "{name} sets a date for its quarterly results",
    "What {name}'s latest filing tells investors",
    "{name} in focus after a volume spike",
    "{name} expands its partnership programme",
    "Options traders position for {name} earnings",
)


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _gauss(*parts: object) -> float:
    """A standard normal number fixed by ``parts`` (Box-Muller)."""
    u1 = max(_unit(*parts, "g1"), 1e-12)
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * _unit(*parts, "g2"))


def _pick(options: tuple[str, ...], *parts: object) -> str:
    return options[int(_unit(*parts) * len(options))]


def _prev_weekday(day: date) -> date:
    day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DemoMarket:
    """The deterministic generator behind :class:`DemoProvider` and the fake upstream.

    Pure functions of their arguments, so thread-safe. ``marked=True`` labels
    names and headlines as demo; the fake upstream passes False to look real.
    """

    def __init__(self, *, marked: bool = True, unknown: tuple[str, ...] = UNKNOWN_PATTERNS) -> None:
        self.marked = marked
        self.unknown_patterns = unknown

    def is_unknown(self, symbol: str) -> bool:
        """True for symbols the demo (and by default the fake upstream) treat as not found."""
        return any(fnmatchcase(symbol, pattern) for pattern in self.unknown_patterns)

    def check(self, symbol: str) -> None:
        if self.is_unknown(symbol):
            raise SymbolNotFound(f"demo knows no symbol {symbol}", symbol=symbol)

    def company(self, symbol: str) -> _Company:
        known = _KNOWN.get(symbol)
        if known is not None:
            return known
        name = (_pick(_SYLLABLES, symbol, "n1") + _pick(_SYLLABLES, symbol, "n2").lower()
                + _pick(_ENDINGS, symbol, "n3") + " " + _pick(_SUFFIXES, symbol, "n4"))
        year = 1975 + int(_unit(symbol, "ipo") * 47)
        ipo = f"{year}-{1 + int(_unit(symbol, 'ipom') * 12):02d}-{1 + int(_unit(symbol, 'ipod') * 28):02d}"
        return _Company(
            name=name,
            exchange=_NASDAQ if _unit(symbol, "exch") < 0.5 else _NYSE,
            industry=_pick(_INDUSTRIES, symbol, "ind"),
            ipo=ipo,
            price=round(5 * math.exp(_unit(symbol, "price") * math.log(100)), 2),  # 5 .. 500
            shares=float(int(20e6 * math.exp(_unit(symbol, "shares") * math.log(200)))),
        )

    def display_name(self, symbol: str) -> str:
        name = self.company(symbol).name
        return f"{name} (demo)" if self.marked else name

    # Prices

    def _close(self, symbol: str, day: date) -> float:
        x = day.toordinal()
        trend = sum(
            amp * math.sin(2 * math.pi * x / period + 2 * math.pi * _unit(symbol, "phase", period))
            for period, amp in ((251, 0.12), (67, 0.05), (23, 0.025))
        )
        return self.company(symbol).price * math.exp(trend + 0.012 * _gauss(symbol, "close", x))

    def _open(self, symbol: str, day: date) -> float:
        gap = 0.004 * _gauss(symbol, "gap", day.toordinal())
        return self._close(symbol, _prev_weekday(day)) * math.exp(gap)

    def candle(self, symbol: str, day: date) -> Candle:
        """The daily bar of ``day`` (a weekday)."""
        x = day.toordinal()
        o, c = round(self._open(symbol, day), 2), round(self._close(symbol, day), 2)
        high = round(max(o, c) * (1 + 0.012 * _unit(symbol, "hi", x)), 2)
        low = round(min(o, c) * (1 - 0.012 * _unit(symbol, "lo", x)), 2)
        base_volume = self.company(symbol).shares * 0.006
        volume = int(base_volume * (0.6 + _unit(symbol, "vol", x)))
        return Candle(date=day.isoformat(), open=o, high=max(high, o, c), low=min(low, o, c), close=c,
                      volume=volume)

    def session_day(self, now: float) -> date:
        """The trading day the quote at ``now`` belongs to."""
        moment = _utc(now)
        today = moment.date()
        seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
        if today.weekday() < 5 and seconds >= _SESSION_OPEN:
            return today
        return _prev_weekday(today)

    def quote(self, symbol: str, now: float) -> Quote:
        """The quote at ``now``: moves from the session open to its close over the session."""
        self.check(symbol)
        now = math.floor(now / 60) * 60  # a new price once a minute
        day = self.session_day(now)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + _SESSION_OPEN
        f = min(1.0, max(0.0, (now - start) / _SESSION_LENGTH))
        bar = self.candle(symbol, day)
        previous = self.candle(symbol, _prev_weekday(day)).close
        wiggle = 0.004 * bar.open * math.sin(now / 60 / 47 + 6.3 * _unit(symbol, "w")) * 2 * math.sqrt(f * (1 - f))
        price = round(max(0.01, bar.open + (bar.close - bar.open) * f + wiggle), 2)
        high = round(max(bar.open, price) + (bar.high - max(bar.open, bar.close)) * f, 2)
        low = round(min(bar.open, price) - (min(bar.open, bar.close) - bar.low) * f, 2)
        change = round(price - previous, 2)
        return Quote(
            symbol=symbol,
            price=price,
            change=change,
            change_percent=round(change / previous * 100, 4),
            high=max(high, price, bar.open),
            low=max(0.01, min(low, price, bar.open)),
            open=bar.open,
            previous_close=previous,
            timestamp=int(start + f * _SESSION_LENGTH),
        )

    def history(self, symbol: str, now: float, days: int = 100) -> History:
        """``days`` weekday bars, oldest first, ending the weekday before the current session."""
        self.check(symbol)
        day = self.session_day(now)
        candles = []
        for _ in range(days):
            day = _prev_weekday(day)
            candles.append(self.candle(symbol, day))
        return History(symbol=symbol, candles=tuple(reversed(candles)))

    def candles_between(self, symbol: str, start: float, end: float) -> list[Candle]:
        """Completed weekday bars dated within [start, end] (Finnhub's candle window)."""
        self.check(symbol)
        last = _prev_weekday(self.session_day(end))
        day, first = last, _utc(start).date()
        out = []
        while day >= first:
            out.append(self.candle(symbol, day))
            day = _prev_weekday(day)
        return out[::-1]

    # Company data

    def profile(self, symbol: str, now: float) -> Profile:
        self.check(symbol)
        company = self.company(symbol)
        price = self.quote(symbol, now).previous_close or company.price
        return Profile(
            symbol=symbol,
            name=self.display_name(symbol),
            exchange=company.exchange,
            currency="USD",
            country="US",
            industry=company.industry,
            ipo=company.ipo,
            market_cap=float(round(price * company.shares, -6)),
            shares_outstanding=company.shares,
            logo=None,
            weburl=f"https://example.com/demo/{symbol.lower()}",
            phone=None,
            description=(f"Demo data for {symbol}, generated by stockcache; not a real company record."
                         if self.marked else None),
        )

    def metrics(self, symbol: str, now: float) -> dict[str, Any]:
        """``{"symbol", "metrics"}`` in the normalised names of ``providers.base.METRIC_NAMES``."""
        self.check(symbol)
        closes = [c.close for c in self.history(symbol, now, 100).candles]
        price = closes[-1]
        pe = round(10 + 35 * _unit(symbol, "pe"), 2)
        return {
            "symbol": symbol,
            "metrics": {
                "52_week_high": round(max(closes) * (1 + 0.08 * _unit(symbol, "52h")), 2),
                "52_week_low": round(min(closes) * (1 - 0.12 * _unit(symbol, "52l")), 2),
                "beta": round(0.6 + 1.2 * _unit(symbol, "beta"), 4),
                "market_cap": float(round(price * self.company(symbol).shares, -6)),
                "pe_ratio": pe,
                "eps": round(price / pe, 2),
                "dividend_yield": round(3 * _unit(symbol, "div") ** 2, 4),
            },
        }

    def news(self, symbol: str, start: float, end: float, *, limit: int = 6) -> News:
        """At most ``limit`` articles published within [start, end], newest first."""
        self.check(symbol)
        name = self.company(symbol).name
        articles: list[NewsItem] = []
        day = _utc(end).date()
        while len(articles) < limit:
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
            if midnight + 86400 <= start:
                break
            x = day.toordinal()
            if _unit(symbol, "news?", x) < 0.8:
                ts = midnight + 3600 * (7 + int(_unit(symbol, "newsh", x) * 15)) + 60 * int(
                    _unit(symbol, "newsm", x) * 60)
                if start <= ts <= end:
                    headline = _pick(_HEADLINES, symbol, "headline", x).format(name=name)
                    articles.append(
                        NewsItem(
                            headline=f"[demo] {headline}" if self.marked else headline,
                            summary=(
                                "Demo article generated by stockcache; not real news."
                                if self.marked else f"{headline}. More inside."
                            ),
                            url=f"https://example.com/demo/news/{symbol.lower()}/{day:%Y%m%d}",
                            source="Demo Wire" if self.marked else "Example Wire",
                            published_at=iso_utc(ts),
                            image=None,
                        )
                    )
            day -= timedelta(days=1)
        return News(symbol=symbol, articles=tuple(articles))

    def search(self, q: str) -> list[dict[str, str]]:
        """Known companies whose symbol or name contains ``q``; else ``q`` itself if it is a symbol."""
        needle = q.strip().upper()
        hits = [
            {"symbol": symbol, "name": self.display_name(symbol), "type": "Common Stock"}
            for symbol, company in _KNOWN.items()
            if needle in symbol or needle in company.name.upper()
        ]
        hits.sort(key=lambda hit: (hit["symbol"] != needle, hit["symbol"]))
        if not hits and _looks_like_symbol(needle) and not self.is_unknown(needle):
            hits = [{"symbol": needle, "name": self.display_name(needle), "type": "Common Stock"}]
        return hits[:10]


def _looks_like_symbol(text: str) -> bool:
    return 1 <= len(text) <= 20 and all(ch.isalnum() or ch in ".-^=:_" for ch in text)


@dataclass(frozen=True)
class DemoConfig(Section):
    """The demo source has no settings: it serves when no provider has a key."""

    prefix = "demo"


class DemoProvider(Provider):
    """Serves every kind from :class:`DemoMarket`, without any I/O. Thread-safe."""

    name = "demo"
    label = "the demo source"
    config = DemoConfig
    kinds = frozenset({"quote", "profile", "history", "news", "metric", "search"})
    keyed = False
    local = True

    def __init__(self, config: DemoConfig | None = None, *, clock: Clock = time.time) -> None:
        super().__init__(config or DemoConfig(), clock=clock)
        self._market = DemoMarket()

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        return not real  # demo data never mixes with real data

    def produce(self, kind: str, symbol: str, params: Mapping[str, Any]) -> Any:
        """The demo model for ``kind``; SymbolNotFound for the demo's unknown symbols."""
        self._check_kind(kind)
        return self._make(kind, symbol, params)

    def _make(self, kind: str, symbol: str, params: Mapping[str, Any]) -> Any:
        now = self._clock()
        market = self._market
        if kind == "quote":
            return market.quote(symbol, now)
        if kind == "profile":
            return market.profile(symbol, now)
        if kind == "history":
            return market.history(symbol, now, days_param(kind, params))
        if kind == "news":
            return market.news(symbol, now - days_param(kind, params) * 86400, now)
        if kind == "metric":
            return market.metrics(symbol, now)
        return market.search(query_param(params, symbol))
