"""The kinds of data stockcache serves, as one registry: everything the cache and the refresher know about each.

A kind is one :class:`Kind` entry in :data:`KINDS`. Its name is the cache key
prefix (``quote:AAPL``), the metric label and the route setting's suffix
(``STOCKCACHE_ROUTE_QUOTE``); its TTL level picks the freshness setting
(``STOCKCACHE_TTL_<LEVEL>``); it says whether "not found" is remembered (for
``STOCKCACHE_NEGATIVE_TTL``) and how the background refresher treats it, and
it validates a value, whether it comes from an upstream answer or from a
cache tier another process could have written. Nothing else in stockcache
switches on a kind's name to decide any of that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import validation
from .models import Model

# How the background refresher treats a kind's entries.
REFRESH_AHEAD = "ahead"  # fetched again shortly before they expire (quotes of held symbols)
REFRESH_EXPIRED = "expired"  # fetched again once expired (profiles, history of held symbols)
REFRESH_NEVER = "never"  # only when someone asks (news windows, searches, analyses: they cost per call)


@dataclass(frozen=True)
class Kind:
    """One kind of data. Immutable, so thread-safe."""

    name: str
    ttl_level: str
    validate: Callable[[str, Any], Any]
    remember_not_found: bool = True
    refresh: str = REFRESH_NEVER
    routed: bool = True  # served by upstream providers (has a route setting)
    symbolic: bool = True  # the subject is a symbol (a listing); False for search texts
    description: str = ""
    # The error field naming the subject ("symbol": "SAP.DE"; "currency": "XYZ" for rates).
    subject_field: str = "symbol"
    # Its values are prices in a currency, completed by ``currency.settle`` when a provider leaves it out.
    priced: bool = False

    def key(self, subject: str, *params: object) -> str:
        """``KIND:SUBJECT[:PARAMS]``: never a URL, never a key or token."""
        if not params:  # most reads (quote, profile): once per item of every batch
            return f"{self.name}:{subject}"
        return ":".join([self.name, subject, *(str(p) for p in params)])

    def check(self, subject: str, data: Any) -> None:
        """Raise ValueError unless ``data`` (a model or its ``to_dict()``) is sane data of this kind for ``subject``.

        For providers' answers and cache entries alike; it never raises anything but ValueError.
        """
        if isinstance(data, Model):
            data = data.to_dict()
        try:
            self.validate(subject, data)
        except (TypeError, KeyError, RecursionError) as exc:  # a shape no check foresaw
            raise ValueError(f"{self.name} data has the wrong shape ({type(exc).__name__})") from None


def _register(*kinds: Kind) -> dict[str, Kind]:
    return {kind.name: kind for kind in kinds}


KINDS: Mapping[str, Kind] = _register(
    Kind("quote", "quote", validation.quote, refresh=REFRESH_AHEAD, description="the latest price",
         priced=True),
    Kind("profile", "fundamentals", validation.profile, refresh=REFRESH_EXPIRED, description="company profile"),
    Kind("metric", "fundamentals", validation.metric, description="key figures"),
    Kind("history", "history", validation.history, refresh=REFRESH_EXPIRED, description="daily bars",
         priced=True),
    Kind("news", "news", validation.news, description="headlines"),
    Kind("search", "fundamentals", validation.search, remember_not_found=False, symbolic=False,
         description="symbol search"),
    Kind("analysis", "ai_analysis", validation.analysis, description="an AI analysis of one listing"),
    # Asked of the provider whose prices need it (key listing:SYMBOL:PROVIDER), never routed.
    Kind("listing", "fundamentals", validation.listing, routed=False,
         description="what one provider says a symbol is: the currency its prices are in"),
    # The listings of one ISIN (OpenFIGI's mapping): changes as rarely as a profile.
    Kind("lookup", "fundamentals", validation.lookup, symbolic=False, subject_field="isin",
         description="the listings of one ISIN"),
    Kind("fx", "fx", validation.fx, symbolic=False, subject_field="currency",
         description="reference rates from one currency"),
)


def kind(name: str) -> Kind:
    """The registered kind called ``name``; KeyError for an unknown one."""
    return KINDS[name]


def kind_of_key(key: str) -> Kind | None:
    """The kind a cache key belongs to (``quote:AAPL`` -> quote), or None."""
    head, sep, _ = key.partition(":")
    return KINDS.get(head) if sep else None


def check(kind: str, subject: str, data: Any) -> None:
    """Raise ValueError unless ``data`` is sane ``kind`` data for ``subject`` (see :meth:`Kind.check`)."""
    KINDS[kind].check(subject, data)
