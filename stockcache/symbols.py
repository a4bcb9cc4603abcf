"""What a symbol names: a listing on a venue, a crypto pair, an index.

``SAP.DE`` is SAP on Xetra, ``VOD.L`` Vodafone in London, ``BTC-USD`` bitcoin
priced in US dollars, ``^GSPC`` an index, ``BRK.B`` a US share class (``.B`` is
not a venue suffix). Symbols are validated and upper-cased first
(``models.normalize_symbol``); this module only reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .venues import BY_SUFFIX, US, Venue

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
