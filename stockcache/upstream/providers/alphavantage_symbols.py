"""Alpha Vantage's own way of writing listings: ``SAP.DEX`` for Xetra, ``VOD.LON`` for London.

Shared by the adapter (what it sends) and the drop-in (what scripts written
against Alpha Vantage send and expect back). Only the suffixes seen in its
symbol search are here (upstream-apis.md); Milan, SIX, Stockholm and Tokyo
are unverified, so those venues are not served through Alpha Vantage.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...symbols import EQUITY, Listing, listing
from ...venues import BY_MIC

# MIC -> Alpha Vantage's suffix.
SUFFIXES: Mapping[str, str] = {"XETR": ".DEX", "XFRA": ".FRK", "XLON": ".LON", "XPAR": ".PAR", "XAMS": ".AMS",
                               "XTSE": ".TRT", "XHKG": ".HKG"}
_OURS = {suffix: BY_MIC[mic].suffix for mic, suffix in SUFFIXES.items()}


def serves(target: Listing) -> bool:
    """Whether Alpha Vantage is known to write this listing: a US share or a venue in :data:`SUFFIXES`."""
    return target.asset == EQUITY and target.venue is not None and (
        target.is_us or target.venue.mic in SUFFIXES)


def to_av(symbol: str) -> str:
    """``SAP.DE`` -> ``SAP.DEX``; US symbols and venues without a known suffix as they are."""
    target = listing(symbol)
    if target.venue is None or target.is_us or target.venue.mic not in SUFFIXES:
        return symbol
    return target.base + SUFFIXES[target.venue.mic]


def from_av(symbol: str) -> str:
    """``SAP.DEX`` -> ``SAP.DE``; anything else as it is (``IBM``, ``SAPG.BSE``)."""
    head, dot, tail = symbol.rpartition(".")
    if dot and head and dot + tail in _OURS:
        return head + _OURS[dot + tail]
    return symbol
