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
from .metrics import Metrics
from .providers.base import Provider
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
    ) -> None:
        self.settings = settings
        self.clock = clock
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.cache: TieredCache = open_cache(settings=settings, clock=clock, janitor_interval=janitor_interval)
        self.store: Store = open_store(settings.data_dir / "store.sqlite", clock=clock)
        self.service = StockService(settings, cache=self.cache, providers=providers, session=session,
                                    clock=clock, metrics=self.metrics)
        self.auth: Authenticator = open_auth(settings, self.store, clock=clock)
        self.started_at = clock()
        self._closed = False

    def health(self) -> dict[str, Any]:
        """``/healthz``: ok, or degraded with reasons when a tier or provider is unavailable."""
        from . import __version__

        reasons: list[str] = []
        stats = self.cache.get_stats()
        if stats.get("errors"):
            reasons.append("a cache tier reported errors")
        for name, breaker in self.service.fetcher.breakers.items():
            if breaker.state != "closed":
                reasons.append(f"upstream {name} is failing (circuit {breaker.state})")
        body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "version": __version__,
                                "source": "demo" if self.settings.demo else ",".join(self.service.source_names),
                                "uptime": int(self.clock() - self.started_at)}
        if reasons:
            body["reasons"] = reasons
        return body

    def close(self) -> None:
        """Stop upstream work, then flush and close the cache and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.service.close()
        self.cache.close()
        self.store.close()
