"""Runtime: every long-lived part of one stockcache process, built from one Settings object.

The server, the command line and the tests build the same graph here, so the
wiring exists once: settings -> cache, store, service (fetcher, providers,
budgets), authenticator, metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .auth import Authenticator, open_auth
from .cache import TieredCache, open_cache
from .kpis import KPI_FILE, KpiRecorder, KpiStore, costs_from
from .metrics import Metrics
from .providers.base import Provider
from .refresher import Refresher
from .refresher import from_settings as refresher_from_settings
from .service import StockService
from .settings import Settings
from .store import Store, open_store

log = logging.getLogger(__name__)


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
            self.service = StockService(settings, cache=self.cache, providers=providers, session=session,
                                        clock=clock, metrics=self.metrics)
            built.append(self.service.close)
            self.auth: Authenticator = open_auth(settings, self.store, clock=clock)
            self.kpis = KpiRecorder(
                KpiStore(settings.data_dir / KPI_FILE), self.metrics, ledger=self.service.ledger,
                costs=costs_from(settings), snapshot=self.service.stats, clock=clock,
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
        for name, breaker in self.service.fetcher.breakers.items():
            if breaker.state != "closed":
                reasons.append(f"upstream {name} is failing (circuit {breaker.state})")
        pool = self.service.fetcher.pool()  # counters only: no I/O
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
        self.service.fetcher.close()
        self.kpis.close()  # its last flush saves a stats snapshot: before the cache closes
        self.service.close()
        self.cache.close()
        self.store.close()
