"""Symbols as users write them, and what they name: a listing on a venue, a crypto pair, an index.

``SAP.DE`` is SAP on Xetra, ``VOD.L`` Vodafone in London, ``BTC-USD`` bitcoin
priced in US dollars, ``^GSPC`` an index, ``BRK.B`` a US share class (``.B`` is
not a venue suffix). Only ASCII passes: look-alikes such as the long s in
``ſpy`` or the dotless i in ``ıbm`` would otherwise fold into real tickers when
upper-cased, so the check comes before any case change.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest, InvalidSymbol, TooManySymbols
from .venues import BY_SUFFIX, US, Venue

_SYMBOL_RE = re.compile(r"[A-Z0-9.\-^=:_]{1,20}")
# Crypto pairs: BASE-QUOTE with a quote currency we know (fiat or a major coin/stablecoin).
CRYPTO_QUOTES = frozenset({"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "HKD", "BTC", "ETH", "USDT",
                           "USDC"})
_CRYPTO_RE = re.compile(r"([A-Z0-9]{2,10})-([A-Z]{3,4})")

EQUITY, CRYPTO, INDEX = "equity", "crypto", "index"
# A provider's own form (Finnhub's ``BINANCE:BTCUSDT``, ``OANDA:EUR_USD``) or Yahoo's currency
# pairs and futures (``EURUSD=X``, ``GC=F``): passed through as written, on no venue.
OTHER = "other"


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
    return _remembered(raw) if len(raw) <= _REMEMBERED_LENGTH else _normalize_text(raw)


def _normalize_text(raw: str) -> str:
    symbol = strip_ascii(raw)
    if symbol.isascii():
        symbol = symbol.upper()
    if not _SYMBOL_RE.fullmatch(symbol):
        shown = symbol[:24] + ("..." if len(symbol) > 24 else "")
        raise InvalidSymbol(
            "Symbols are 1 to 20 characters of A-Z 0-9 . - ^ = : _", symbol=shown or None
        )
    return symbol


# Every item of every batch is normalised, mostly the same few hundred symbols over and over:
# remembering the answers halves a warm batch's per-item cost. Refusals are not remembered, and
# neither is a long text (a symbol padded with spaces), so the memory stays a few hundred KB.
_REMEMBERED_LENGTH = 32
_remembered = functools.lru_cache(maxsize=4096)(_normalize_text)


def normalize_symbols(raw: object, *, max_batch: int) -> tuple[list[str], dict[str, InvalidSymbol]]:
    """A batch's symbols validated one by one: (valid ones, duplicates folded, in first-seen order;
    the invalid ones by the text given, each with its own ``invalid_symbol`` error).

    The batch itself is refused only when it is not a non-empty list (InvalidRequest) or holds more
    than ``max_batch`` symbols (TooManySymbols): one typo never costs the rest their answers.
    """
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if strip_ascii(part)]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("Give a non-empty list of symbols.")
    remember = len(raw) <= max_batch and all(type(item) is str and len(item) <= _REMEMBERED_LENGTH for item in raw)
    if remember:
        key = (max_batch, *raw)
        known = _remembered_batches.get(key)
        if known is not None:
            return list(known), {}
    seen: dict[str, None] = {}
    invalid: dict[str, InvalidSymbol] = {}
    for item in raw:
        try:
            seen[normalize_symbol(item)] = None
        except InvalidSymbol as exc:
            shown = item[:24] if isinstance(item, str) else repr(item)[:24]
            invalid[shown] = exc
        if len(seen) + len(invalid) > max_batch:
            raise TooManySymbols(f"At most {max_batch} symbols per request.")
    if remember and not invalid:
        if len(_remembered_batches) >= _REMEMBERED_BATCHES:
            _remembered_batches.clear()
        _remembered_batches[key] = tuple(seen)
    return list(seen), invalid


# The same lists come back again and again (a portfolio page, a spreadsheet, a dashboard every
# minute): their answers are remembered whole, for lists of short texts that are all valid.
# At most 256 lists of max_batch texts of 32 characters: a few MB at worst.
_REMEMBERED_BATCHES = 256
_remembered_batches: dict[tuple[Any, ...], tuple[str, ...]] = {}


def listing(symbol: str) -> Listing:
    """What an already-normalised symbol names."""
    if symbol.startswith("^"):
        return Listing(symbol, symbol, INDEX, US)
    if ":" in symbol or "=" in symbol:
        return Listing(symbol, symbol, OTHER, None)
    crypto = _CRYPTO_RE.fullmatch(symbol)
    if crypto is not None and crypto.group(2) in CRYPTO_QUOTES:
        return Listing(symbol, crypto.group(1), CRYPTO, None, crypto.group(2))
    head, dot, tail = symbol.rpartition(".")
    if dot and head:
        venue = BY_SUFFIX.get("." + tail)
        if venue is not None:
            return Listing(symbol, head, EQUITY, venue)
    return Listing(symbol, symbol, EQUITY, US)


_ISIN_RE = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")


def isin_check_digit(body: str) -> int:
    """The ISO 6166 check digit of an ISIN's first 11 characters (letters as 10..35, then Luhn)."""
    digits = "".join(str(int(ch, 36)) for ch in body)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 == 0 else 1)  # the digit next to the check digit is doubled
        total += n // 10 + n % 10
    return (10 - total % 10) % 10


def normalize_isin(raw: object) -> str:
    """An ISIN upper-cased and checked (shape and check digit); InvalidRequest naming ``isin`` otherwise.

    Checked before any upstream call: a mistyped ISIN costs nothing and says what is wrong.
    """
    if not isinstance(raw, str):
        raise InvalidRequest("An ISIN must be a string.", field="isin")
    text = strip_ascii(raw)
    if text.isascii():
        text = text.upper()
    if not _ISIN_RE.fullmatch(text):
        raise InvalidRequest("An ISIN is 12 characters: a country code, 9 letters or digits and a check digit "
                             "(DE0007164600).", field="isin")
    if isin_check_digit(text[:11]) != int(text[11]):
        raise InvalidRequest(f"{text} is not an ISIN: its check digit is wrong.", field="isin")
    return text
