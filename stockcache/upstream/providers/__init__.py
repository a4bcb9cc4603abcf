"""Data providers: Finnhub, Alpha Vantage and the offline demo source.

Each provider builds requests and parses responses (see :mod:`.base`); the
fetcher does the I/O. :data:`ROUTES` is the order providers are tried in per
kind; :func:`build_providers` picks the configured ones from Settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..errors import UpstreamAuthError
from ..settings import Settings
from .alphavantage import AlphaVantageProvider
from .base import KINDS, METRIC_NAMES, Clock, Provider, UpstreamRequest
from .demo import DemoMarket, DemoProvider
from .finnhub import FinnhubProvider

__all__ = [
    "KINDS",
    "METRIC_NAMES",
    "ROUTES",
    "AlphaVantageProvider",
    "DemoMarket",
    "DemoProvider",
    "FinnhubProvider",
    "Provider",
    "UpstreamRequest",
    "build_providers",
    "no_route_error",
    "route",
]

# History comes from Alpha Vantage first: Finnhub candles are premium now (build_providers
# never turns them on; a FinnhubProvider built with candles=True serves history second).
ROUTES: dict[str, tuple[str, ...]] = {
    "quote": ("finnhub", "alphavantage"),
    "profile": ("finnhub", "alphavantage"),
    "history": ("alphavantage", "finnhub"),
    "news": ("finnhub", "alphavantage"),
    "metric": ("finnhub", "alphavantage"),
    "search": ("finnhub", "alphavantage"),
}

# The setting that configures each keyed provider, for errors that tell the operator what to set.
KEY_SETTINGS = {"finnhub": "FINNHUB_API_KEY", "alphavantage": "ALPHAVANTAGE_API_KEY"}


def build_providers(settings: Settings, *, clock: Clock = time.time) -> dict[str, Provider]:
    """The providers the settings configure: one per key, or only demo when there is no key.

    ``clock`` dates news windows, AV's daily-cap retry_after and demo prices.
    """
    providers: dict[str, Provider] = {}
    if settings.finnhub_api_key:
        providers["finnhub"] = FinnhubProvider(
            api_key=settings.finnhub_api_key,
            base_url=settings.finnhub_url,
            clock=clock,
        )
    if settings.alphavantage_api_key:
        providers["alphavantage"] = AlphaVantageProvider(
            api_key=settings.alphavantage_api_key, base_url=settings.alphavantage_url, clock=clock
        )
    if settings.demo:
        providers["demo"] = DemoProvider(clock=clock)
    return providers


def route(kind: str, providers: Mapping[str, Provider]) -> tuple[Provider, ...]:
    """The providers to try for ``kind``, in order; only those that serve it (``Provider.kinds``).

    A local source (demo) is used alone when configured: it never mixes with real data.
    Empty when no configured provider serves ``kind``; see :func:`no_route_error`.
    """
    local = tuple(p for p in providers.values() if p.local and kind in p.kinds)
    if local:
        return local
    return tuple(
        providers[name]
        for name in ROUTES.get(kind, ())
        if name in providers and kind in providers[name].kinds
    )


def no_route_error(kind: str, providers: Mapping[str, Provider]) -> UpstreamAuthError:
    """The error for a ``kind`` no configured provider serves, naming the key that would serve it."""
    missing = [KEY_SETTINGS[name] for name in ROUTES.get(kind, ()) if name not in providers and name in KEY_SETTINGS]
    if missing:
        return UpstreamAuthError(f"No configured provider serves {kind}: {kind} needs {' or '.join(missing)}.")
    return UpstreamAuthError(f"No configured provider serves {kind} on this plan.")
