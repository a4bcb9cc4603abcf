"""Normalised market data: what every provider's payload is turned into.

Plain frozen dataclasses, the contract's field names, numbers as numbers (never
the strings Alpha Vantage sends), market cap and shares in units. The cache
stores ``to_dict()`` of these as JSON; nothing here knows about HTTP or cache.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSymbol, TooManySymbols

# Kinds of data: each is a cache key prefix and maps to one TTL level.
KIND_TTL_LEVEL = {
    "quote": "quote",
    "profile": "fundamentals",
    "metric": "fundamentals",
    "history": "history",
    "news": "news",
    "search": "fundamentals",
    "analysis": "ai_analysis",
}

_SYMBOL_RE = re.compile(r"[A-Z0-9.\-^=:_]{1,20}")


def strip_ascii(text: str) -> str:
    """``text`` without leading and trailing ASCII whitespace.

    ``str.strip()`` also removes Unicode spaces (no-break, ideographic), which
    would let ``"AAPL\u00a0"`` pass as AAPL.
    """
    return text.strip(string.whitespace)


def normalize_symbol(raw: object) -> str:
    """Upper-case and validate a symbol (``brk.b`` -> ``BRK.B``); InvalidSymbol otherwise.

    Only ASCII is a symbol, checked before upper-casing: ``str.upper()`` folds
    look-alikes into real tickers (``ſpy`` -> SPY, ``ıbm`` -> IBM, ``ﬀ`` -> FF).
    """
    if not isinstance(raw, str):
        raise InvalidSymbol("A symbol must be a string.")
    symbol = strip_ascii(raw)
    if symbol.isascii():
        symbol = symbol.upper()
    if not _SYMBOL_RE.fullmatch(symbol):
        shown = symbol[:24] + ("..." if len(symbol) > 24 else "")
        raise InvalidSymbol(
            "Symbols are 1 to 20 characters of A-Z 0-9 . - ^ = : _", symbol=shown or None
        )
    return symbol


def normalize_symbols(raw: object, *, max_batch: int) -> list[str]:
    """Validate a list of symbols, folding duplicates and keeping first-seen order."""
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if strip_ascii(part)]
    if not isinstance(raw, list) or not raw:
        raise InvalidSymbol("Give a non-empty list of symbols.")
    seen: dict[str, None] = {}
    for item in raw:
        seen[normalize_symbol(item)] = None
        if len(seen) > max_batch:
            raise TooManySymbols(f"At most {max_batch} symbols per request.")
    return list(seen)


def cache_key(kind: str, symbol: str, *params: object) -> str:
    """``KIND:SYMBOL[:PARAMS]``: never a URL, never a key or token."""
    return ":".join([kind, symbol, *(str(p) for p in params)])


class _Model:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Quote(_Model):
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
class Profile(_Model):
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
class Candle(_Model):
    date: str  # YYYY-MM-DD
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True)
class History(_Model):
    symbol: str
    candles: tuple[Candle, ...]  # oldest first
    interval: str = "1d"


@dataclass(frozen=True)
class NewsItem(_Model):
    headline: str
    summary: str
    url: str
    source: str
    published_at: str  # ISO 8601 UTC
    image: str | None = None


@dataclass(frozen=True)
class News(_Model):
    symbol: str
    articles: tuple[NewsItem, ...]  # newest first
