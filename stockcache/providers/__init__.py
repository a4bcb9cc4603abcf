"""Data providers: Finnhub, Alpha Vantage and the offline demo source.

Each provider builds requests and parses responses (see :mod:`.base`); the
fetcher does the I/O. :data:`ROUTES` is the order providers are tried in per
kind; :func:`build_providers` picks the configured ones from Settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

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
    "route",
]

# History comes from Alpha Vantage first: Finnhub candles are premium now.
ROUTES: dict[str, tuple[str, ...]] = {
    "quote": ("finnhub", "alphavantage"),
    "profile": ("finnhub", "alphavantage"),
    "history": ("alphavantage", "finnhub"),
    "news": ("finnhub", "alphavantage"),
    "metric": ("finnhub", "alphavantage"),
    "search": ("finnhub", "alphavantage"),
}


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
            # Settings has no candles switch yet; Finnhub candles are premium.
            candles=bool(getattr(settings, "finnhub_candles", False)),
        )
    if settings.alphavantage_api_key:
        providers["alphavantage"] = AlphaVantageProvider(
            api_key=settings.alphavantage_api_key, base_url=settings.alphavantage_url, clock=clock
        )
    if settings.demo:
        providers["demo"] = DemoProvider(clock=clock)
    return providers


def route(kind: str, providers: Mapping[str, Provider]) -> tuple[Provider, ...]:
    """The providers to try for ``kind``, in order: demo alone if it is configured."""
    if "demo" in providers:
        return (providers["demo"],)
    return tuple(
        providers[name]
        for name in ROUTES[kind]
        if name in providers and kind in providers[name].kinds
    )
