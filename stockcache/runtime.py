"""Runtime: every long-lived part of one stockcache process, built from one Settings object.

The server, the command line and the tests build the same graph here, so the
wiring exists once: settings -> cache, store, providers, budgets, transport,
router, read-through path, service, authenticator, metrics, KPIs, refresher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .auth import Authenticator, open_auth
from .cache import TieredCache, open_cache
from .kpis import KPI_FILE, KpiRecorder, KpiStore
from .metrics import Metrics
from .readthrough import ReadThrough
from .refresher import Refresher
from .refresher import from_settings as refresher_from_settings
from .service import StockService
from .settings import Settings
from .store import Store, open_store
from .upstream.guard import Budget
from .upstream.providers import build_providers
from .upstream.providers.base import Provider
from .upstream.router import Router, UpstreamBudget
from .upstream.transport import Transport
from .usage import UsageLedger

log = logging.getLogger(__name__)


def build_service(
    settings: Settings,
    *,
    cache: TieredCache | None = None,
    providers: Mapping[str, Provider] | None = None,
    session: Any = None,
    transport: Transport | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    ledger: UsageLedger | None = None,
) -> StockService:
    """A StockService and its parts: what ``StockService.from_env`` and the Runtime use.

    Parts given are used as they are and left open by ``service.close()``;
    parts built here are closed by it. ``session`` stands in for the
    transport's HTTP session (tests, the replay benchmark).
    """
    metrics = metrics or Metrics()
    closers: list[Any] = []
    if ledger is None:
        ledger = UsageLedger(settings.data_dir / "usage.sqlite", clock=clock)
        closers.append(ledger)
    owned_cache = cache is None
    if cache is None:
        cache = open_cache(settings=settings, clock=clock)
    try:
        providers = dict(providers) if providers is not None else build_providers(settings, clock=clock)
        budgets: dict[str, UpstreamBudget] = {
            name: Budget(name, provider.limits(), ledger=ledger, clock=clock)
            for name, provider in providers.items() if not provider.local
        }
        # Several instances on one Redis share budgets and single-flight; redis-py is
        # imported only when REDIS_URL is set.
        shared: Any = None
        if settings.redis_url:
            from .upstream.shared import SharedUpstream

            shared = SharedUpstream.open(settings, cache, clock=clock)
            budgets = dict(shared.budgets(budgets))
            closers.insert(0, shared)
        if transport is None:
            transport = Transport([name for name, p in providers.items() if not p.local],
                                  workers=settings.workers, timeout=settings.upstream_timeout, session=session)
        router = Router(providers, budgets, transport, clock=clock, metrics=metrics)
        readthrough = ReadThrough(cache, router, settings=settings, clock=clock, metrics=metrics,
                                  peers=shared.locks if shared is not None else None)
        router.on_refusal = readthrough.remember_refusal
    except BaseException:
        for part in closers:
            part.close()
        if owned_cache:
            cache.close()
        raise
    if owned_cache:
        closers.append(cache)
    return StockService(settings, readthrough, metrics=metrics, closers=closers)


class Runtime:
    """Owns the cache, store, service and authenticator; ``close()`` releases them in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        providers: Mapping[str, Provider] | None = None,
        session: Any = None,
        janitor_interval: float | None = 60.0,
        kpi_interval: float | None = 60.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.cache: TieredCache = open_cache(settings=settings, clock=clock, janitor_interval=janitor_interval)
        # A start that fails half-way (say, an unreadable JWT secret) closes what it built, newest
        # first: its threads (cache janitor, SQLite writer, KPI flusher) would outlive it otherwise.
        built: list[Callable[[], None]] = [self.cache.close]
        try:
            self.store: Store = open_store(settings.data_dir / "store.sqlite", clock=clock)
            built.append(self.store.close)
            self.store.watch()  # other processes' revocations reach the verified-token cache in 0.25 s
            self.ledger = UsageLedger(settings.data_dir / "usage.sqlite", clock=clock)
            built.append(self.ledger.close)
            self.service = build_service(settings, cache=self.cache, providers=providers, session=session,
                                         clock=clock, metrics=self.metrics, ledger=self.ledger)
            built.append(self.service.close)
            self.auth: Authenticator = open_auth(settings, self.store, clock=clock)
            self.kpis = KpiRecorder(
                KpiStore(settings.data_dir / KPI_FILE), self.metrics, ledger=self.ledger,
                costs={name: p.cost_per_call() for name, p in self.service.providers.items()},
                snapshot=self.service.stats, clock=clock,
                providers=[name for name, p in self.service.providers.items() if not p.local])
            built.append(self.kpis.close)
            if kpi_interval is not None:
                self.kpis.start(kpi_interval)
            # STOCKCACHE_REFRESH=off means no refresher thread at all.
            self.refresher: Refresher | None = None
            if settings.refresh:
                self.refresher = refresher_from_settings(self.service, self.store.held_symbol_counts, clock=clock)
                built.append(self.refresher.stop)
                self.store.add_holdings_listener(self.refresher.wake)  # a new symbol is refreshed at once
                self.refresher.start()
        except BaseException:
            for close in reversed(built):
                try:
                    close()
                except Exception:
                    log.exception("closing a part of a runtime that failed to start failed")
            raise
        self.started_at = clock()
        self._closed = False

    def health(self) -> dict[str, Any]:
        """``/healthz``: ok, or degraded with reasons when a tier or provider is unavailable."""
        from . import __version__

        reasons: list[str] = []
        stats = self.cache.health()  # cheap: /healthz is open and polled by monitors
        redis = stats.get("redis")
        for tier in stats.get("failing_tiers", ()):
            if tier == "redis" and redis:
                continue  # its live link state (below) says more than "failed in the last minute"
            reasons.append(f"cache tier {tier} is failing")
        if redis and redis.get("status") != "ok":
            reasons.append("redis is unreachable: serving from memory and SQLite with this "
                           "instance's own budgets until it answers again")
        for name, breaker in self.service.router.breakers.items():
            if breaker.state != "closed":
                reasons.append(f"upstream {name} is failing (circuit {breaker.state})")
        pool = self.service.router.transport.pool()  # counters only: no I/O
        for name, lane in pool.items():
            if lane["in_flight"] >= lane["size"]:
                reasons.append(f"upstream {name} is saturated: all {lane['size']} connections busy, "
                               f"{lane['waiting']} requests waiting")
        body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "version": __version__,
                                "source": "demo" if self.settings.demo else ",".join(self.service.source_names),
                                "uptime": int(self.clock() - self.started_at)}
        if pool:
            body["upstream_pool"] = pool
        if reasons:
            body["reasons"] = reasons
        return body

    def close(self) -> None:
        """Stop upstream work, then flush and close the cache and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.refresher is not None:
            self.refresher.stop()
        # Requests on the wire finish (bounded by the upstream timeout) and store their results
        # while the cache and the ledger are open, and before the KPI recorder's last flush.
        self.service.readthrough.close()
        self.kpis.close()  # its last flush saves a stats snapshot: before the cache closes
        self.service.close()
        self.ledger.close()
        self.cache.close()
        self.store.close()
