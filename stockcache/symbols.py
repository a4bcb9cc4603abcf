"""Symbols as users write them, and what they name: a listing on a venue, a crypto pair, an index.

``SAP.DE`` is SAP on Xetra, ``VOD.L`` Vodafone in London, ``BTC-USD`` bitcoin
priced in US dollars, ``^GSPC`` an index, ``BRK.B`` a US share class (``.B`` is
not a venue suffix). Only ASCII passes: look-alikes such as the long s in
``ſpy`` or the dotless i in ``ıbm`` would otherwise fold into real tickers when
upper-cased, so the check comes before any case change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidSymbol, TooManySymbols
from .venues import BY_SUFFIX, US, Venue

_SYMBOL_RE = re.compile(r"[A-Z0-9.\-^=:_]{1,20}")
_ASCII_PRINTABLE = re.compile(r"[\x21-\x7e]+")
# Crypto pairs: BASE-QUOTE with a quote currency we know (fiat or a major coin/stablecoin).
CRYPTO_QUOTES = frozenset({"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "HKD", "BTC", "ETH", "USDT",
                           "USDC"})
_CRYPTO_RE = re.compile(r"([A-Z0-9]{2,10})-([A-Z]{3,4})")

EQUITY, CRYPTO, INDEX = "equity", "crypto", "index"


@dataclass(frozen=True)
class Listing:
    """What a normalised symbol names. Immutable, so thread-safe.

    ``base`` is the symbol without its venue suffix (``SAP`` for ``SAP.DE``) or
    the coin (``BTC``); ``quote`` is a crypto pair's quote currency.
    """

    symbol: str
    base: str
    asset: str
    venue: Venue | None
    quote: str | None = None

    @property
    def mic(self) -> str | None:
        return self.venue.mic if self.venue is not None else None

    @property
    def is_us(self) -> bool:
        return self.venue is US


def normalize_symbol(raw: object) -> str:
    """Upper-case and validate a symbol (``brk.b`` -> ``BRK.B``); InvalidSymbol otherwise.

    Leading and trailing ASCII spaces are forgiven; any other character outside
    printable ASCII is refused before upper-casing.
    """
    if not isinstance(raw, str):
        raise InvalidSymbol("A symbol must be a string.")
    trimmed = raw.strip(" \t")
    if not trimmed or not _ASCII_PRINTABLE.fullmatch(trimmed):
        raise InvalidSymbol("Symbols are 1 to 20 ASCII characters of A-Z 0-9 . - ^ = : _",
                            symbol=_shown(trimmed) or None)
    symbol = trimmed.upper()
    if not _SYMBOL_RE.fullmatch(symbol):
        raise InvalidSymbol("Symbols are 1 to 20 characters of A-Z 0-9 . - ^ = : _", symbol=_shown(symbol))
    return symbol


def _shown(text: str) -> str:
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text[:24] + ("..." if len(text) > 24 else "")


def normalize_symbols(raw: object, *, max_batch: int) -> list[str]:
    """Validate a list of symbols, folding duplicates and keeping first-seen order."""
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not raw:
        raise InvalidSymbol("Give a non-empty list of symbols.")
    seen: dict[str, None] = {}
    for item in raw:
        seen[normalize_symbol(item)] = None
        if len(seen) > max_batch:
            raise TooManySymbols(f"At most {max_batch} symbols per request.")
    return list(seen)


def listing(symbol: str) -> Listing:
    """What an already-normalised symbol names."""
    if symbol.startswith("^"):
        return Listing(symbol, symbol, INDEX, US)
    crypto = _CRYPTO_RE.fullmatch(symbol)
    if crypto is not None and crypto.group(2) in CRYPTO_QUOTES:
        return Listing(symbol, crypto.group(1), CRYPTO, None, crypto.group(2))
    head, dot, tail = symbol.rpartition(".")
    if dot and head:
        venue = BY_SUFFIX.get("." + tail)
        if venue is not None:
            return Listing(symbol, head, EQUITY, venue)
    return Listing(symbol, symbol, EQUITY, US)
