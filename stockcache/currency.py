"""Currencies: ISO 4217 codes in major units, the minor units providers quote in, and converting to major.

London shares are quoted in pence by most sources, written ``GBp``, ``GBX``
or ``GBx``; Johannesburg in cents (``ZAc``), Tel Aviv in agorot (``ILA``). A
price in pence shown as pounds is a 100x error in a portfolio, so every price
stockcache serves is in the major unit, and the answer says which
(``"currency": "GBP"``). The case matters: ``GBp`` is pence, ``GBP`` pounds.

What unit a provider's number is in comes from the provider's own words for
that listing (its quote, its profile or search result), never from the venue
alone: London lists USD- and GBP-priced ETFs beside pence-priced shares.
"""

from __future__ import annotations

import dataclasses
import re
from typing import overload

from .models import History, Quote
from .symbols import CRYPTO, EQUITY, Listing

# A minor unit as providers write it -> (ISO code of the major unit, minor units per major unit).
MINOR_UNITS: dict[str, tuple[str, int]] = {
    "GBp": ("GBP", 100),
    "GBX": ("GBP", 100),
    "GBx": ("GBP", 100),
    "ZAc": ("ZAR", 100),
    "ZAC": ("ZAR", 100),  # no ISO code; Refinitiv and some feeds write the cents so
    "ILA": ("ILS", 100),
    "ILa": ("ILS", 100),
}

_ISO_RE = re.compile(r"[A-Z]{3}")
# How many decimals a converted price keeps: pence with 4 decimals are pounds with 6.
_DECIMALS = 8

def is_code(text: object) -> bool:
    """True for a well-formed ISO 4217 code in major units (three upper-case ASCII letters)."""
    return isinstance(text, str) and _ISO_RE.fullmatch(text) is not None and text not in MINOR_UNITS


def parse_code(text: object) -> str:
    """``text`` as an ISO 4217 code (``usd`` -> ``USD``); ValueError unless it is three ASCII letters."""
    if not isinstance(text, str) or not text.isascii() or not _ISO_RE.fullmatch(text.strip().upper()):
        raise ValueError("a currency is a three-letter ISO 4217 code such as USD or EUR")
    return text.strip().upper()


def major(reported: str) -> tuple[str, int]:
    """(major ISO code, factor) for a currency as a provider reports it: ``GBp`` -> ("GBP", 100).

    Codes in major units come back with factor 1, upper-cased (CoinGecko writes
    ``usd``). ValueError for anything that is not a currency code.
    """
    if reported in MINOR_UNITS:
        return MINOR_UNITS[reported]
    if isinstance(reported, str) and reported.isascii() and _ISO_RE.fullmatch(reported.upper()):
        return reported.upper(), 1
    raise ValueError("not a currency code")


@overload
def in_major(model: Quote, reported: str) -> Quote: ...
@overload
def in_major(model: History, reported: str) -> History: ...
def in_major(model: Quote | History, reported: str) -> Quote | History:
    """``model`` (a quote or a history) priced in ``reported`` units, converted to the major unit.

    Sets its ``currency``; a price in pence becomes pounds (change percentages
    and volumes do not change). ValueError when ``reported`` is not a currency.
    """
    code, factor = major(reported)
    if isinstance(model, Quote):
        return dataclasses.replace(
            model, currency=code, price=_scaled(model.price, factor), change=_maybe_scaled(model.change, factor),
            high=_maybe_scaled(model.high, factor), low=_maybe_scaled(model.low, factor),
            open=_maybe_scaled(model.open, factor), previous_close=_maybe_scaled(model.previous_close, factor))
    candles = tuple(dataclasses.replace(c, open=_scaled(c.open, factor), high=_scaled(c.high, factor),
                                        low=_scaled(c.low, factor), close=_scaled(c.close, factor))
                    for c in model.candles)
    return dataclasses.replace(model, currency=code, candles=candles)


def _scaled(value: float, factor: int) -> float:
    return value if factor == 1 else round(value / factor, _DECIMALS)


def _maybe_scaled(value: float | None, factor: int) -> float | None:
    return None if value is None else _scaled(value, factor)


@overload
def settle(model: Quote, listing: Listing) -> tuple[Quote, bool]: ...
@overload
def settle(model: History, listing: Listing) -> tuple[History, bool]: ...
def settle(model: Quote | History, listing: Listing) -> tuple[Quote | History, bool]:
    """``model`` with what the symbol alone tells: its venue's MIC, and its currency where that is certain.

    A crypto pair is priced in its quote currency; a listing on a venue that
    trades in one currency, in that one. The flag is True when only the
    provider's own word for the listing can say (a London listing may be in
    pence, pounds or dollars): the read-through path then asks for it.
    """
    venue = listing.venue
    if isinstance(model, Quote) and model.exchange is None and venue is not None and listing.asset == EQUITY \
            and not listing.is_us:
        model = dataclasses.replace(model, exchange=venue.mic)
    if model.currency is not None:
        return model, False
    if listing.asset == CRYPTO:
        quote = listing.quote
        return (dataclasses.replace(model, currency=quote) if is_code(quote) else model), False
    if listing.asset != EQUITY or venue is None:
        return model, False  # an index is in points
    if venue.mixed_currency:
        return model, True
    return dataclasses.replace(model, currency=venue.currency), False
