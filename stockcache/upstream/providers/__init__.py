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
from .coingecko import CoinGeckoProvider
from .demo import DemoMarket, DemoProvider
from .finnhub import FinnhubProvider
from .frankfurter import FrankfurterProvider
from .llm import LlmProvider
from .openfigi import OpenFigiProvider
from .twelvedata import TwelveDataProvider

__all__ = ["METRIC_NAMES", "PROVIDERS", "AlphaVantageProvider", "DemoMarket", "DemoProvider", "FinnhubProvider",
           "FrankfurterProvider", "LlmProvider", "Provider", "UpstreamRequest", "build_providers",
           "demo_mode", "market_key_names", "provider_classes", "register", "sections", "venues_markdown"]

PROVIDERS: list[type[Provider]] = [
    FinnhubProvider,
    AlphaVantageProvider,
    FrankfurterProvider,
    TwelveDataProvider,
    CoinGeckoProvider,
    LlmProvider,
    OpenFigiProvider,
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


def market_key_names() -> list[str]:
    """The environment variables whose key ends demo mode (one per market-data provider), in registry order."""
    return [name for p in PROVIDERS if p.keyed and (name := p.key_env()) is not None]


def venues_markdown() -> str:
    """The table of docs/symbols.md: each venue, its facts, and who serves its quotes and history on which plan.

    Built from ``venues`` and each provider's own coverage, so the document
    cannot drift from the code (a test compares them).
    """
    from ...symbols import listing
    from ...venues import VENUES

    rows = ["| suffix | venue | MIC | country | currency | session (local time) | holidays | quotes from | "
            "history from | example, as each provider is sent it |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for venue in VENUES:
        currency = venue.currency + (" or per listing (checked for each one)" if venue.mixed_currency else "")
        session = f"{venue.opens:%H:%M}-{venue.closes:%H:%M} {venue.timezone}"
        if venue.lunch:
            session += f", closed {venue.lunch[0]:%H:%M}-{venue.lunch[1]:%H:%M}"
        calendar = (f"public holidays of {venue.calendar.removeprefix('country:')}"
                    if venue.calendar.startswith("country:") else f"{venue.calendar} exchange calendar")
        sample = listing(_EXAMPLES.get(venue.mic, "X" + venue.suffix))
        forms = "; ".join(f"{cls.label} `{cls.symbol_for(sample)}`" for cls in PROVIDERS
                          if not cls.local and cls.plan_for("quote", sample) is not None)
        rows.append(f"| `{venue.suffix or '(none)'}` | {venue.name} | {venue.mic} | {venue.country} | {currency} | "
                    f"{session} | {calendar} | {_served('quote', sample)} | {_served('history', sample)} | "
                    f"`{sample.symbol}`: {forms or '-'} |")
    return "\n".join(rows)


# A well-known listing per venue, for the examples column.
_EXAMPLES = {"XNYS": "AAPL", "XETR": "SAP.DE", "XFRA": "SAP.F", "XLON": "VOD.L", "XPAR": "MC.PA",
             "XAMS": "ASML.AS", "XMIL": "ENEL.MI", "XSWX": "NESN.SW", "XSTO": "ERIC-B.ST", "XTSE": "RY.TO",
             "XHKG": "0700.HK", "XTKS": "7203.T"}


def _served(kind: str, target: object) -> str:
    names = []
    for cls in PROVIDERS:
        if cls.local:
            continue
        plan = cls.plan_for(kind, target)  # type: ignore[arg-type]
        if plan is not None:
            names.append(cls.label + (f" ({plan} plan)" if plan else ""))
    return ", ".join(names) or "none yet"


def _place_fallbacks(settings: Settings, out: dict[str, Provider], *, clock: Clock) -> None:
    """Give each local source's ``fallback_kinds`` to it only where no other configured provider serves them.

    Beside real market data the demo source is built for those kinds alone (the
    demo analysis without a model API); in demo mode it keeps the rest of its kinds
    and leaves a configured model API the analyses.
    """
    served = {kind for p in out.values() if not p.local for kind in p.kinds}
    for cls in PROVIDERS:
        if not cls.fallback_kinds:
            continue
        missing = cls.fallback_kinds - served
        instance = out.get(cls.name)
        if instance is not None:
            instance.kinds = frozenset(instance.kinds - (cls.fallback_kinds & served))
        elif missing:
            instance = cls.from_settings(settings, clock=clock)
            instance.kinds = frozenset(missing)
            out[cls.name] = instance


def build_providers(settings: Settings, *, clock: Clock = time.time) -> dict[str, Provider]:
    """The providers the settings turn on, by name, in registry order.

    ``clock`` dates news windows, daily-cap retry times and demo prices.
    """
    real = not demo_mode(settings)
    out = {p.name: p.from_settings(settings, clock=clock) for p in PROVIDERS if p.enabled(settings, real=real)}
    _place_fallbacks(settings, out, clock=clock)
    known = {p.name for p in PROVIDERS}
    for kind, names in settings.routes.items():
        for name in names:
            if name not in known:
                raise ConfigError(f"STOCKCACHE_ROUTE_{kind.upper()}: no provider is called {name!r} "
                                  f"(known: {', '.join(sorted(known))})")
    return out
