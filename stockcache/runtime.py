"""Runtime: every long-lived part of one stockcache process, built from one Settings object.

The server, the command line and the tests build the same graph here, so the
wiring exists once: settings -> cache, store, providers, budgets, transport,
router, read-through path, service, authenticator, metrics, KPIs, refresher.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .alerts import AlertEngine
from .auth import SECRET_FILENAME, Authenticator, open_auth
from .cache import CACHE_FILE, TieredCache, open_cache
from .errors import CacheError, ConfigError, StoreError
from .kpis import KPI_FILE, KpiRecorder, KpiStore
from .metrics import Metrics
from .readthrough import ReadThrough
from .refresher import Refresher
from .refresher import from_settings as refresher_from_settings
from .service import StockService
from .settings import Settings
from .store import STORE_FILENAME, Store, open_configured_store
from .upstream.guard import Budget
from .upstream.providers import build_providers
from .upstream.providers.base import Provider
from .upstream.router import Router, UpstreamBudget
from .upstream.transport import Transport
from .usage import UsageLedger

log = logging.getLogger(__name__)

DATA_DIR_SETTING = "STOCKCACHE_DATA_DIR / --data-dir"
USAGE_FILE = "usage.sqlite"
# "demo" or "live": what the cache in this folder was filled from (see Runtime._forget_other_source).
CACHE_SOURCE_FILE = "cache.source"
# Every file a start may create in the data folder (each SQLite file with its -wal, -shm and
# -journal): a start that fails removes those it created, so it leaves the folder as it was.
_STARTUP_FILES = frozenset(
    [SECRET_FILENAME, CACHE_SOURCE_FILE]
    + [f"{name}{suffix}" for name in (CACHE_FILE, STORE_FILENAME, USAGE_FILE, KPI_FILE)
       for suffix in ("", "-wal", "-shm", "-journal")])


def _is_startup_file(name: str) -> bool:
    # the JWT secret is written to a temporary name first (auth._create_secret)
    return name in _STARTUP_FILES or (name.startswith(f".{SECRET_FILENAME}.") and name.endswith(".tmp"))


class StartupFiles:
    """What a start adds to the data folder, so a failed start can take it back.

    Created before anything touches the folder: it makes the folder (and any
    missing parents, mode 0700) and checks that it is a writable folder, with
    a ConfigError naming the setting otherwise. :meth:`remove_new` deletes the
    files of ``_STARTUP_FILES`` that were not there before and the folders it
    made, if empty. It never touches anything else (a corrupt file set aside
    stays, under its new name).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        folder = self.data_dir
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{DATA_DIR_SETTING}: {folder} is not a folder")
        self.made: list[Path] = []  # folders this start created, outermost first
        missing = []
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):
            try:
                parent.mkdir(mode=0o700)
            except FileExistsError:
                continue  # made by someone else meanwhile
            except OSError as exc:
                self.remove_new()
                raise ConfigError(f"{DATA_DIR_SETTING}: cannot create the data folder {folder}: "
                                  f"{exc.strerror or exc}") from None
            self.made.append(parent)
        probe = folder / f".stockcache-write-check-{os.getpid()}"
        try:
            self.before = set(os.listdir(folder))
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            self.remove_new()
            raise ConfigError(f"{DATA_DIR_SETTING}: cannot read and write the data folder {folder}: "
                              f"{exc.strerror or exc}") from None

    def remove_new(self) -> None:
        """Delete what this start created (best effort: a failure is logged, never raised)."""
        try:
            names = set(os.listdir(self.data_dir)) - getattr(self, "before", set())
        except OSError:
            names = set()
        for name in sorted(n for n in names if _is_startup_file(n)):
            try:
                os.unlink(self.data_dir / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s after a failed start: %s", self.data_dir / name, exc)
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: someone else put something there
        self.made = []


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
    """Owns the cache, store, service and authenticator; ``close()`` releases them in order.

    A start that fails raises ConfigError (one line naming the setting: a file
    of the data folder that cannot be created or opened is a data folder
    problem), closes what it built and removes the files it created.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        providers: Mapping[str, Provider] | None = None,
        session: Any = None,
        janitor_interval: float | None = 60.0,
        kpi_interval: float | None = 60.0,
        hasher: Any = None,
    ) -> None:
        self.settings = settings
        self._last_held: dict[str, int] = {}
        self.clock = clock
        self.files = StartupFiles(settings.data_dir)
        self.metrics = Metrics()
        # A start that fails half-way (say, an unreadable JWT secret) closes what it built, newest
        # first: its threads (cache janitor, SQLite writer, KPI flusher) would outlive it otherwise.
        built: list[Callable[[], None]] = []
        try:
            self.cache: TieredCache = open_cache(settings=settings, clock=clock, janitor_interval=janitor_interval)
            built.append(self.cache.close)
            self._forget_other_source()
            # SQLite in the data folder, or PostgreSQL shared by every instance (STOCKCACHE_DATABASE_URL).
            self.store: Store = open_configured_store(settings, clock=clock)
            built.append(self.store.close)
            self.store.watch()  # other writers' revocations reach the verified-token cache in 0.25 s
            self.ledger = UsageLedger(settings.data_dir / "usage.sqlite", clock=clock)
            built.append(self.ledger.close)
            self.service = build_service(settings, cache=self.cache, providers=providers, session=session,
                                         clock=clock, metrics=self.metrics, ledger=self.ledger)
            built.append(self.service.close)
            self.auth: Authenticator = open_auth(settings, self.store, clock=clock, hasher=hasher,
                                                 login_counter=self._login_counter())
            # Alerts are checked where fresh quotes arrive (the read-through's store of one).
            self.alerts = AlertEngine(self.store, settings, clock=clock)
            built.append(self.alerts.stop)
            self.service.readthrough.on_fresh(self.alerts.quote_arrived)
            self.store.add_holdings_listener(self.alerts.symbols_changed)
            self.alerts.start()
            self.kpis = KpiRecorder(
                KpiStore(settings.data_dir / KPI_FILE), self.metrics, ledger=self.ledger,
                costs={name: p.cost_per_call() for name, p in self.service.providers.items()},
                snapshot=self._snapshot, clock=clock,
                providers=[name for name, p in self.service.providers.items() if not p.local],
                shared=self.store if self.store.shared else None,
                token_providers=[name for name, p in self.service.providers.items() if p.unit == "token"])
            built.append(self.kpis.close)
            if kpi_interval is not None:
                self.kpis.start(kpi_interval)
            # STOCKCACHE_REFRESH=off means no refresher thread at all.
            self.refresher: Refresher | None = None
            if settings.refresh:
                self.refresher = refresher_from_settings(self.service, self._held, clock=clock)
                built.append(self.refresher.stop)
                self.store.add_holdings_listener(self.refresher.wake)  # a new symbol is refreshed at once
                self.refresher.start()
        except BaseException as exc:
            for close in reversed(built):
                try:
                    close()
                except Exception:
                    log.exception("closing a part of a runtime that failed to start failed")
            self.files.remove_new()
            if isinstance(exc, (CacheError, StoreError, sqlite3.Error, OSError)):
                raise ConfigError(f"{DATA_DIR_SETTING}: cannot start on the data folder {settings.data_dir}: "
                                  f"{_one_line(exc)}") from exc
            raise
        self.started_at = clock()
        self._closed = False

    def _forget_other_source(self) -> None:
        """Empty the cache when it was filled in the other mode: demo data once keys are set, or the reverse.

        Demo entries are labelled, but a profile cached for a day (an analysis for a
        week) would go on being served, as fresh, after the user set real keys.
        """
        marker = self.settings.data_dir / CACHE_SOURCE_FILE
        source = "demo" if self.settings.demo else "live"
        try:
            before = marker.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            before = None
        if before is not None and before != source:
            removed = self.cache.clear_pattern("*")
            log.warning("the cache held %s data; removed its %d entries now that the service runs on %s data",
                        before, removed, source)
        if before != source:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like every file here
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(source + "\n")

    def _login_counter(self) -> Any:
        """Where login attempts are counted for every instance: Redis when configured, else a shared store.

        None on one box (the limiter counts in memory). The Redis link is the
        cache tier's, which the shared budgets use too.
        """
        if self.settings.redis_url:
            from .store.redis_logins import RedisLoginCounter

            links = (getattr(tier, "link", None) for tier in self.cache.tiers)
            link = next((found for found in links if found is not None), None)
            if link is not None:
                return RedisLoginCounter(link, namespace=self.settings.redis_namespace)
        return self.store if self.store.shared else None

    def _snapshot(self) -> dict[str, Any]:
        """What the ``stats`` command shows of the running server: the service's stats and the store's state."""
        return {**self.service.stats(), "store": self.store_stats(), "alerts": self.alerts.stats()}

    def store_stats(self) -> dict[str, Any]:
        """The store's engine, where it is (a URL with its password masked) and its state. No I/O."""
        return {**self.store.health(), "location": self.store.describe()}

    def _held(self) -> dict[str, int]:
        """The held and alerted symbols for the refresher; while the store is unreachable, the last ones it gave."""
        try:
            held = self.store.held_symbol_counts()
            for symbol, users in self.store.alert_symbol_counts().items():
                held[symbol] = held.get(symbol, 0) + users
            self._last_held = held
        except StoreError as exc:
            log.warning("refresher: the store is unavailable (%s); refreshing the symbols held before", exc.message)
        return self._last_held

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
        store = self.store.health()  # what the store's watcher last saw: no I/O
        if store["status"] != "ok":
            reasons.append("the user store is unreachable: market data is served to clients already signed in; "
                           "logins, tokens, portfolios and watchlists answer 503 store_unavailable until it "
                           "answers again")
        body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "version": __version__,
                                "source": "demo" if self.settings.demo else ",".join(self.service.source_names),
                                "uptime": int(self.clock() - self.started_at),
                                "store": {"engine": store["engine"], "status": store["status"]}}
        if pool:
            body["upstream_pool"] = pool
        if reasons:
            body["reasons"] = reasons
        return body

    def abort(self) -> None:
        """Close after a start that failed later (the server could not listen): leave no new file behind."""
        self.close()
        self.files.remove_new()

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
        self.alerts.stop()  # after the last fresh quotes, before the store closes
        self.kpis.close()  # its last flush saves a stats snapshot: before the cache closes
        self.service.close()
        self.ledger.close()
        self.cache.close()
        self.store.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc or type(exc).__name__).split())
