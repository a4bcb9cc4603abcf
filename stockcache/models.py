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
