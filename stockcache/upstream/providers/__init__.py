"""The provider registry: every data source stockcache knows, one line each.

Adding a provider is one module in this package plus one line in
:data:`PROVIDERS`; its module declares its settings section, its kinds and
coverage, its place in each kind's default route and, optionally, its drop-in
API (see :mod:`.base`). Nothing outside a provider's module and this registry
names a provider (``tests/unit/test_architecture.py`` checks it).
"""

from __future__ import annotations

import time

from ...errors import ConfigError
from ...settings import Section, Settings
from .alphavantage import AlphaVantageProvider
from .base import METRIC_NAMES, Clock, Provider, UpstreamRequest
from .demo import DemoMarket, DemoProvider
from .finnhub import FinnhubProvider
from .frankfurter import FrankfurterProvider

__all__ = ["METRIC_NAMES", "PROVIDERS", "AlphaVantageProvider", "DemoMarket", "DemoProvider", "FinnhubProvider",
           "FrankfurterProvider", "Provider", "UpstreamRequest", "build_providers",
           "demo_mode", "provider_classes", "register", "sections"]

PROVIDERS: list[type[Provider]] = [
    FinnhubProvider,
    AlphaVantageProvider,
    FrankfurterProvider,
    DemoProvider,
]


def register(provider: type[Provider]) -> type[Provider]:
    """Add a provider class to the registry (the one line a new provider needs; tests use it too)."""
    if any(p.name == provider.name for p in PROVIDERS):
        raise ValueError(f"a provider named {provider.name!r} is registered already")
    PROVIDERS.append(provider)
    return provider


def provider_classes() -> tuple[type[Provider], ...]:
    return tuple(PROVIDERS)


def sections() -> tuple[type[Section], ...]:
    """Every provider's settings section (``settings`` builds its table from these)."""
    return tuple(dict.fromkeys(p.config for p in PROVIDERS))


def demo_mode(settings: Settings) -> bool:
    """True when no market-data provider has a key: the offline demo source serves."""
    return not any(p.keyed and p.has_key(settings) for p in PROVIDERS)


def build_providers(settings: Settings, *, clock: Clock = time.time) -> dict[str, Provider]:
    """The providers the settings turn on, by name, in registry order.

    ``clock`` dates news windows, daily-cap retry times and demo prices.
    """
    real = not demo_mode(settings)
    out = {p.name: p.from_settings(settings, clock=clock) for p in PROVIDERS if p.enabled(settings, real=real)}
    known = {p.name for p in PROVIDERS}
    for kind, names in settings.routes.items():
        for name in names:
            if name not in known:
                raise ConfigError(f"STOCKCACHE_ROUTE_{kind.upper()}: no provider is called {name!r} "
                                  f"(known: {', '.join(sorted(known))})")
    return out
