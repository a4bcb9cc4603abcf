"""Fixtures of the unit tests: a read-through path over real parts, with `responses` as the upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockcache.cache import open_cache
from stockcache.metrics import Metrics
from stockcache.readthrough import ReadThrough
from stockcache.settings import Settings
from stockcache.upstream.guard import Budget, CircuitBreaker, Limits
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig, AlphaVantageProvider
from stockcache.upstream.providers.finnhub import FinnhubConfig, FinnhubProvider
from stockcache.upstream.router import Router
from stockcache.upstream.transport import Transport

FH = "https://fh.test/api/v1"
AV = "https://av.test/query"
FH_KEY = "TESTKEY_fh_5e5e5e"
AV_KEY = "TESTKEY_av_6f6f6f"


@pytest.fixture
def made(tmp_path) -> Iterator[list[ReadThrough]]:
    """Read-through paths made in a test, closed (with their caches) at its end."""
    out: list[ReadThrough] = []
    yield out
    for rt in out:
        rt.close()
        rt.cache.close()


@pytest.fixture
def build(tmp_path, clock, made):
    """build(providers, ...) -> a ReadThrough over those providers (dict or list)."""
    def factory(providers=None, *, fh_limits=Limits(), av_limits=Limits(), threshold=5, workers=8, peers=None,
                budgets=None, timeout=2.0, **settings_fields):
        if providers is None:
            providers = [FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock),
                         AlphaVantageProvider(AlphaVantageConfig(api_key=AV_KEY, url=AV), clock=clock)]
        providers = {p.name: p for p in providers}
        limits = {"finnhub": fh_limits, "alphavantage": av_limits}
        if budgets is None:
            budgets = {name: Budget(name, limits.get(name, Limits()), clock=clock)
                       for name, p in providers.items() if not p.local}
        breakers = {name: CircuitBreaker(threshold=threshold, reset_after=30, clock=clock) for name in providers}
        metrics = Metrics()
        transport = Transport([n for n, p in providers.items() if not p.local], workers=workers, timeout=timeout)
        router = Router(providers, budgets, transport, breakers=breakers, clock=clock, metrics=metrics)
        settings = Settings(data_dir=tmp_path / f"data{len(made)}", refresh=False, upstream_timeout=timeout,
                            **settings_fields)
        cache = open_cache(settings=settings, clock=clock, janitor_interval=None)
        rt = ReadThrough(cache, router, settings=settings, clock=clock, metrics=metrics, peers=peers)
        router.on_refusal = rt.remember_refusal
        made.append(rt)
        return rt

    return factory
