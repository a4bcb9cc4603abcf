"""Normalised market data: what every provider's payload is turned into.

Plain frozen dataclasses, the contract's field names, numbers as numbers (never
the strings Alpha Vantage sends), market cap and shares in units. The cache
stores ``to_dict()`` of these as JSON; nothing here knows about HTTP or cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class Model:
    """A model's JSON form is its ``to_dict()``: what the cache stores and the API renders."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Quote(Model):
    symbol: str
    price: float
    change: float | None
    change_percent: float | None
    high: float | None
    low: float | None
    open: float | None
    previous_close: float | None
    timestamp: int | None
    currency: str | None = None  # ISO 4217, major unit (pence are converted); None when no source knows
    exchange: str | None = None  # ISO 10383 MIC of the listing, when known


@dataclass(frozen=True)
class ListingInfo(Model):
    """What one provider says a symbol is: the unit its prices are in, before any conversion.

    ``currency`` is as the provider reports it (``GBp`` for pence), so the
    read-through path can turn that provider's prices into the major unit.
    """

    symbol: str
    name: str | None
    currency: str | None
    exchange: str | None = None  # MIC, when the provider says which venue
    type: str | None = None
    id: str | None = None  # the provider's own id for it (CoinGecko's coin id "bitcoin"), when it has one


@dataclass(frozen=True)
class FxRates(Model):
    """One publication of reference rates: 1 ``base`` = ``rates[code]`` of each other currency."""

    base: str
    date: str  # YYYY-MM-DD of the publication (the last one on or before the day asked)
    rates: dict[str, float]


@dataclass(frozen=True)
class Profile(Model):
    symbol: str
    name: str | None
    exchange: str | None = None
    currency: str | None = None
    country: str | None = None
    industry: str | None = None
    ipo: str | None = None
    market_cap: float | None = None
    shares_outstanding: float | None = None
    logo: str | None = None
    weburl: str | None = None
    phone: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Candle(Model):
    date: str  # YYYY-MM-DD
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True)
class History(Model):
    symbol: str
    candles: tuple[Candle, ...]  # oldest first
    interval: str = "1d"
    currency: str | None = None  # of every price in the series, as for Quote


@dataclass(frozen=True)
class NewsItem(Model):
    headline: str
    summary: str
    url: str
    source: str
    published_at: str  # ISO 8601 UTC
    image: str | None = None


@dataclass(frozen=True)
class News(Model):
    symbol: str
    articles: tuple[NewsItem, ...]  # newest first
