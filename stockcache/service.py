"""StockService: the composition of cache, providers and fetcher behind the contract's Python API.

Every read goes memory -> SQLite (one round trip for a whole batch) -> one
concurrent upstream batch for what is still missing. Upstream failures become
per-item errors or stale data flagged as stale; nothing here raises for one
bad item of a batch.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .budget import Budget, Limits
from .cache import Entry, TieredCache, open_cache
from .clock import iso_utc
from .errors import (
    ERRORS_BY_CODE,
    InvalidRequest,
    StockcacheError,
    SymbolNotFound,
    SymbolRefused,
    UpstreamError,
    UpstreamTimeout,
)
from .fetcher import (
    REFUSAL_SKIPPED,
    REFUSED,
    Fetcher,
    FetchResult,
    Flight,
    UpstreamBudget,
    refused_everywhere,
    wait_all,
)
from .metrics import Metrics
from .models import KIND_TTL_LEVEL, MAX_TIMESTAMP, cache_key, check, normalize_symbol, normalize_symbols
from .providers import build_providers, no_route_error
from .providers import route as provider_route
from .providers.base import MAX_HISTORY_DAYS, Provider, days_param
from .settings import Settings
from .usage import UsageLedger

log = logging.getLogger(__name__)

# Extra time a caller waits past the upstream timeout before answering upstream_timeout.
DEADLINE_MARGIN = 0.5


class StockService:
    """Quotes, profiles, history and news through the two-level cache. Thread-safe.

    Build it with :meth:`from_env` or from a Settings; tests inject the
    clock, the cache, the providers and the HTTP session.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cache: TieredCache | None = None,
        providers: Mapping[str, Provider] | None = None,
        session: Any = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        ledger: UsageLedger | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else open_cache(settings=settings, clock=clock)
        self._owns_ledger = ledger is None
        self.ledger = ledger if ledger is not None else UsageLedger(
            settings.data_dir / "usage.sqlite", clock=clock)
        self.providers = dict(providers) if providers is not None else build_providers(settings, clock=clock)
        budgets: Mapping[str, UpstreamBudget] = {
            name: Budget(name, provider_limits(settings, name), ledger=self.ledger, clock=clock)
            for name, provider in self.providers.items() if not provider.local
        }
        # Several instances on one Redis share budgets and single-flight; redis-py
        # is imported only when REDIS_URL is set.
        self.shared: Any = None
        if settings.redis_url:
            from .redisshared import SharedUpstream
            self.shared = SharedUpstream.open(settings, self.cache, clock=clock)
            budgets = self.shared.budgets(budgets)
        # Kinds whose cache held a value this service cannot use; each is logged once.
        self._foreign_kinds: set[str] = set()
        self._foreign_lock = threading.Lock()
        # Cache key -> the value object last found valid there (see _admit). Bounded like
        # the memory tier; when full it is emptied, and each value is checked once more.
        self._checked: dict[str, Any] = {}
        self._checked_max = max(1, settings.memory_max_items)
        self.fetcher = Fetcher(
            self.providers, budgets, workers=settings.workers, timeout=settings.upstream_timeout,
            session=session, clock=clock, metrics=self.metrics,
            peers=self.shared.locks if self.shared is not None else None,
            on_refusal=self._remember_refusal,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> StockService:
        """A service configured from the same environment as ``run.py``."""
        return cls(Settings.from_env(environ), **kwargs)

    @property
    def source_names(self) -> list[str]:
        return list(self.providers)

    # -- the contract's API ------------------------------------------------------

    def get_quote(self, symbol: str) -> dict[str, Any]:
        """One quote, as served at /api/quote/<symbol>; raises the item's error."""
        return self._one("quote", normalize_symbol(symbol))

    def fetch_multiple_quotes(self, symbols: Iterable[str] | str) -> dict[str, Any]:
        """``{"quotes": {...}, "errors": {...}}``: every symbol once, in one or the other."""
        found, errors = self._many("quote", self._symbols(symbols))
        return {"quotes": found, "errors": _error_dicts(errors)}

    def quotes_for(self, symbols: Iterable[str]) -> dict[str, Any]:
        """Quotes for a user's saved symbols (watchlist), as ``{"quotes": {...}, "errors": {...}}``.

        Unlike :meth:`fetch_multiple_quotes` there is no ``max_batch`` cap: that
        bounds one request, while a saved list may be longer, so it is read in
        chunks of ``max_batch``. A symbol that is not valid any more is an error
        of its own, not a failure of the whole list.
        """
        found, errors = self._quotes_chunked(symbols)
        return {"quotes": found, "errors": _error_dicts(errors)}

    def get_profile(self, symbol: str) -> dict[str, Any]:
        return self._one("profile", normalize_symbol(symbol))

    def fetch_multiple_profiles(self, symbols: Iterable[str] | str) -> dict[str, Any]:
        found, errors = self._many("profile", self._symbols(symbols))
        return {"profiles": found, "errors": _error_dicts(errors)}

    def get_history(self, symbol: str, days: int = 30) -> dict[str, Any]:
        """Daily bars, oldest first; one cached fetch of the most days serves every ``days``."""
        days = days_param("history", {"days": days})
        answer = self._one("history", normalize_symbol(symbol))
        answer["candles"] = list(answer.get("candles", ()))[-days:]
        return answer

    def get_news(self, symbol: str, days: int = 7) -> dict[str, Any]:
        days = days_param("news", {"days": days})
        return self._one("news", normalize_symbol(symbol), (days,), {"days": days})

    def get_metric(self, symbol: str) -> dict[str, Any]:
        """Key figures ``{"symbol", "metrics": {name: float}}`` (names in providers.base.METRIC_NAMES)."""
        return self._one("metric", normalize_symbol(symbol))

    def search(self, query: str) -> dict[str, Any]:
        """Symbols matching ``query``: ``{"query", "results": [{"symbol", "name", "type"}]}``.

        The query is folded (trimmed, spaces collapsed, upper-cased) so ``apple`` and
        ``APPLE `` share one cache entry, ``search:APPLE``, and one upstream call.
        """
        folded = " ".join(str(query).split()).upper() if isinstance(query, str) else ""
        if not 1 <= len(folded) <= 100:
            raise InvalidRequest("A search query is 1 to 100 characters.", field="q")
        answer = self._one("search", folded, (), {"q": folded})
        answer["query"] = folded
        return answer

    def fetch_portfolio_quotes(self, positions: Sequence[Any]) -> dict[str, Any]:
        """Performance of positions (dicts or objects with id, symbol, shares, cost_basis).

        Quotes are read like :meth:`quotes_for`: one concurrent batch per
        ``max_batch`` symbols. A position whose quote failed is listed with
        ``price: null`` and its symbol's error, and left out of totals.

        Every number in the answer is finite or null, whatever is stored: rows
        written before the input bounds (``store.validate``), such as a cost basis
        of 1e-320, get ``null`` where their maths is not finite (a gain percent
        over a vanishing cost), and a position whose value, cost or day change is
        not finite is left out of the totals like one without a quote.
        """
        rows = [_position_fields(p) for p in positions]
        quotes, errors = self._quotes_chunked(row["symbol"] for row in rows)
        out_rows: list[dict[str, Any]] = []
        total_value = total_cost = total_day = 0.0
        priced_cost = 0.0
        for row in rows:
            shares, cost_basis = row["shares"], row["cost_basis"]
            cost = _finite(shares * cost_basis)
            if cost is not None:
                total_cost += cost
            shown = {**row, "shares": _finite(shares), "cost_basis": _finite(cost_basis)}
            quote = quotes.get(row["symbol"])
            price = None if quote is None else _finite(quote.get("price"))
            if quote is None or price is None or price <= 0:
                out_rows.append({**shown, "price": None, "value": None, "gain": None,
                                 "gain_percent": None, "day_change": None, "stale": None})
                continue
            value = _finite(shares * price)
            gain = None if value is None or cost is None else _finite(value - cost)
            day_change = _finite(shares * (_finite(quote.get("change")) or 0.0))
            if value is not None and cost is not None and day_change is not None:
                total_value += value
                total_day += day_change
                priced_cost += cost
            out_rows.append({
                **shown, "price": price, "value": _r(value), "gain": _r(gain),
                "gain_percent": _percent(gain, cost), "day_change": _r(day_change),
                "stale": bool(quote.get("stale")),
            })
        total_gain = total_value - priced_cost
        totals = {
            "value": _r(total_value), "cost": _r(total_cost), "gain": _r(total_gain),
            "gain_percent": _percent(total_gain, priced_cost), "day_change": _r(total_day),
        }
        return {"positions": out_rows, "totals": totals, "errors": _error_dicts(errors)}

    def warm(self, symbols: Iterable[str], kinds: Iterable[str] = ("quote",), *,
             share: float = 1.0) -> dict[str, StockcacheError]:
        """Fetch whatever is not fresh for ``symbols``; return the errors by ``kind:symbol``.

        An item answered only by a stale copy (the upstream failed) is an error too:
        it was not warmed.
        """
        failed: dict[str, StockcacheError] = {}
        names = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        step = self.settings.max_batch
        for kind in kinds:
            for start in range(0, len(names), step):
                found, errors = self._many(kind, names[start:start + step], share=share)
                failed.update({f"{kind}:{s}": e for s, e in errors.items()})
                failed.update({f"{kind}:{s}": UpstreamError("The upstream failed; only a stale copy is cached.",
                                                            symbol=s)
                               for s, item in found.items() if item.get("stale")})
        return failed

    def refresh(self, kind: str, symbols: Sequence[str], *, share: float = 1.0,
                cancel: threading.Event | None = None) -> tuple[dict[str, Any], dict[str, StockcacheError]]:
        """Fetch ``symbols`` now even if their cached entries are still fresh (background refresh).

        Goes through the same single-flight, budgets (``share`` of each) and
        write-through as a read; returns ``(found, errors)`` by symbol and never
        serves stale data. ``symbols`` must already be normalised.
        """
        return self._many(kind, list(symbols), share=share, force=True, cancel=cancel)

    def route(self, kind: str) -> list[str]:
        """The providers tried for ``kind``, in order (the first one's budget is the one that matters)."""
        return [provider.name for provider in provider_route(kind, self.providers)]

    def stats(self) -> dict[str, Any]:
        """Cache and upstream statistics, as served at /api/cache/stats."""
        out = dict(self.cache.get_stats())
        upstream: dict[str, Any] = {}
        for name, provider in self.providers.items():
            budget = self.fetcher.budgets.get(name)
            breaker = self.fetcher.breakers.get(name)
            upstream[name] = {
                "calls": self.metrics.get(Metrics.UPSTREAM_CALLS, name),
                "errors": self.metrics.get(Metrics.UPSTREAM_ERRORS, name),
                "rate_limited": self.metrics.get(Metrics.RATE_LIMITED, name),
                "refused": self.metrics.get(REFUSED, name),
                "refusals_skipped": self.metrics.get(REFUSAL_SKIPPED, name),
                "calls_today": budget.calls_today() if budget else None,
                "budget_left": budget.remaining() if budget else None,
                "circuit": breaker.state if breaker and not provider.local else None,
            }
        out["upstream"] = upstream
        out["coalesced"] = self.metrics.total(Metrics.COALESCED)
        out["stale_served"] = self.metrics.total(Metrics.STALE_SERVED)
        out["demo"] = self.settings.demo
        out.update(activity_stats(self.metrics, self.settings))
        return out

    def close(self) -> None:
        """Stop the fetcher, flush and close what this service opened. Idempotent."""
        self.fetcher.close()
        if self.shared is not None:
            self.shared.close()
        if self._owns_cache:
            self.cache.close()
        if self._owns_ledger:
            self.ledger.close()

    # -- the read path -------------------------------------------------------------

    def _symbols(self, symbols: Iterable[str] | str) -> list[str]:
        raw = symbols if isinstance(symbols, str) else list(symbols)
        return normalize_symbols(raw, max_batch=self.settings.max_batch)

    def _quotes_chunked(
        self, symbols: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, StockcacheError]]:
        found: dict[str, dict[str, Any]] = {}
        errors: dict[str, StockcacheError] = {}
        names: dict[str, None] = {}
        for raw in symbols:
            try:
                names[normalize_symbol(raw)] = None
            except InvalidRequest as exc:
                errors[str(raw)] = exc
        ordered = list(names)
        step = self.settings.max_batch
        for start in range(0, len(ordered), step):
            chunk_found, chunk_errors = self._many("quote", ordered[start:start + step])
            found.update(chunk_found)
            errors.update(chunk_errors)
        return found, errors

    def _one(self, kind: str, symbol: str, key_params: tuple[Any, ...] = (),
             fetch_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # The hot path: a fresh entry in memory is answered without the batch machinery.
        key = cache_key(kind, symbol, *key_params)
        entry = self.cache.memory_hit(key)
        if entry is not None and self._admit(kind, symbol, key, entry):
            self.metrics.inc(Metrics.READS, kind, entry.tier)
            if "error" in entry.value:
                raise StockcacheError.from_dict(dict(entry.value["error"]))
            return _render(entry.value, entry.tier, self.clock(), stale=False)
        found, errors = self._many(kind, [symbol], key_params, fetch_params)
        if symbol in errors:
            raise errors[symbol]
        return found[symbol]

    def _many(
        self,
        kind: str,
        symbols: Sequence[str],
        key_params: tuple[Any, ...] = (),
        fetch_params: Mapping[str, Any] | None = None,
        *,
        share: float = 1.0,
        force: bool = False,
        cancel: threading.Event | None = None,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, StockcacheError]]:
        """The heart of every read: cache batch, one concurrent upstream batch, stale-if-error.

        ``force`` (the background refresher) skips the cache lookup and fetches
        every symbol, still single-flight and written through, is not counted as
        a read and serves nothing stale; ``cancel`` stops the waiting early.
        """
        # History is always fetched at its longest (Alpha Vantage compact, what a free key gets)
        # and sliced per request, so every ``days`` shares one cache entry.
        params = dict(fetch_params or ({"days": MAX_HISTORY_DAYS} if kind == "history" else {}))
        keys = {symbol: cache_key(kind, symbol, *key_params) for symbol in symbols}
        now = self.clock()
        found: dict[str, dict[str, Any]] = {}
        errors: dict[str, StockcacheError] = {}
        fresh = {} if force else self._admitted(kind, keys, self.cache.get_many(list(keys.values())))
        if not force:
            self._count_reads(kind, fresh.values(), len(keys) - len(fresh))
        misses: list[str] = []
        for symbol, key in keys.items():
            entry = fresh.get(key)
            if entry is None:
                misses.append(symbol)
            elif "error" in entry.value:
                errors[symbol] = StockcacheError.from_dict(dict(entry.value["error"]))
            else:
                found[symbol] = _render(entry.value, entry.tier, now, stale=False)
        if not misses:
            return found, errors

        route = self.route(kind)
        failed: dict[str, StockcacheError] = {}
        if not route:
            # Nothing configured serves this kind (history with only a Finnhub key):
            # say which key would, instead of a provider's "not in plan"; stale copies still serve.
            failed = {symbol: no_route_error(kind, self.providers) for symbol in misses}
            misses = []
        flights: dict[str, Flight] = {}
        refused = self._refusals(misses, route)
        for symbol in misses:
            key = keys[symbol]
            skip = refused.get(symbol, ())
            symbol_route = [name for name in route if name not in skip]
            for name in skip:
                self.metrics.inc(REFUSAL_SKIPPED, name)
            if not symbol_route:
                failed[symbol] = refused_everywhere(symbol, skip)
                continue
            flights[symbol] = self.fetcher.fetch(
                key, kind, symbol, params, symbol_route, share=share,
                on_done=functools.partial(self._store, level=KIND_TTL_LEVEL[kind]),
                lookup=None if force else functools.partial(self._cached_result, kind, symbol, key),
            )
        deadline = time.monotonic() + self.settings.upstream_timeout + DEADLINE_MARGIN
        if cancel is None:
            wait_all(flights.values(), deadline)
        else:
            _wait_unless(flights.values(), deadline, cancel)

        now = self.clock()
        for symbol, flight in flights.items():
            if flight.result is not None and flight.done:
                found[symbol] = _render(_envelope(flight.result), "upstream", now, stale=False)
            elif flight.error is not None and flight.done:
                failed[symbol] = flight.error
            else:
                failed[symbol] = UpstreamTimeout(
                    f"No answer within {self.settings.upstream_timeout:g} s.", symbol=symbol)
        if failed:
            stale = {} if force else self._admitted(
                kind, {s: keys[s] for s in failed}, self.cache.get_stale_many([keys[s] for s in failed]))
            for symbol, error in failed.items():
                entry = stale.get(keys[symbol])
                if entry is not None and "error" not in entry.value and not isinstance(error, SymbolNotFound):
                    self.metrics.inc(Metrics.STALE_SERVED, kind)
                    found[symbol] = _render(entry.value, entry.tier, now, stale=True)
                else:
                    error.fields.setdefault("symbol", symbol)
                    errors[symbol] = error
        return found, errors

    def _refusals(self, symbols: Sequence[str], route: Sequence[str]) -> dict[str, list[str]]:
        """The providers of ``route`` that refused each symbol lately (remembered for ``refusal_ttl``).

        One batched lookup, only for misses about to go upstream. ``get_stale_many``
        because it does not count as a read of market data (it counts a stale read);
        only entries still fresh count.
        """
        network = [name for name in route if not self.providers[name].local]
        if not symbols or not network or self.settings.refusal_ttl <= 0:
            return {}
        keys = {(symbol, name): refusal_key(name, symbol) for symbol in symbols for name in network}
        entries = self.cache.get_stale_many(keys.values())
        now = self.clock()
        out: dict[str, list[str]] = {}
        for (symbol, name), key in keys.items():
            entry = entries.get(key)
            if entry is not None and now < entry.expires_at and _is_refusal(entry.value, name):
                out.setdefault(symbol, []).append(name)
        return out

    def _remember_refusal(self, provider: str, symbol: str, error: SymbolRefused) -> None:
        """Runs in the fetcher when ``provider`` refused ``symbol``: ask the next provider until it expires.

        A cache entry of its own kind (``refusal:SYMBOL:PROVIDER``), so it survives
        a restart and is shared through Redis, and is never read as market data.
        """
        if self.settings.refusal_ttl <= 0:
            return
        self.cache.set(refusal_key(provider, symbol),
                       {"refused_by": provider, "message": error.message, "fetched_at": self.clock()},
                       ttl=self.settings.refusal_ttl)

    def _count_reads(self, kind: str, hits: Iterable[Entry], misses: int) -> None:
        for tier, n in Counter(entry.tier for entry in hits).items():
            self.metrics.inc(Metrics.READS, kind, tier, amount=n)
        if misses:
            self.metrics.inc(Metrics.READS, kind, Metrics.READ_MISS, amount=misses)

    def _admitted(self, kind: str, keys: Mapping[str, str], entries: dict[str, Entry]) -> dict[str, Entry]:
        """``entries`` (by key, for ``keys``: symbol -> key) without those :meth:`_admit` refuses."""
        for symbol, key in keys.items():
            entry = entries.get(key)
            if entry is not None and not self._admit(kind, symbol, key, entry):
                del entries[key]
        return entries

    def _admit(self, kind: str, symbol: str, key: str, entry: Entry) -> bool:
        """Whether a cache entry is one this service may serve; an invalid one is dropped from every tier.

        Anyone with the data dir or the Redis server can write under our keys (the
        contract's own ``cache.set("quote:AAPL", {...})``, a script, another version),
        so an entry is checked as strictly as an upstream answer (:func:`_check_envelope`)
        when it first comes in from outside: each SQLite or Redis read makes a new
        value object, and so does every write. The value found valid is remembered
        by identity, so the hot path, a memory hit on an entry already checked, costs
        one dict lookup and an ``is``; a value promoted from a lower tier is the very
        object that was checked on its way up, so its later memory hits are not
        checked again either.
        """
        value = entry.value
        if self._checked.get(key) is value:
            return True
        try:
            _check_envelope(kind, symbol, value)
        except ValueError as exc:
            self._drop(key, str(exc))
            return False
        if len(self._checked) >= self._checked_max:
            self._checked.clear()  # every value is checked once more, then remembered again
        self._checked[key] = value
        return True

    def _drop(self, key: str, reason: str) -> None:
        # The value is never logged: it is someone else's data (the reason names fields, not values).
        self.cache.delete(key)
        kind = key.partition(":")[0]
        with self._foreign_lock:
            if kind in self._foreign_kinds:
                return
            self._foreign_kinds.add(kind)
        log.warning("the cache holds a %s value this service cannot serve (key %s: %s); "
                    "dropped it, the next read fetches it again", kind, key, reason)

    def _cached_result(self, kind: str, symbol: str, key: str) -> FetchResult | StockcacheError | None:
        # Uncounted: the caller's get_many already counted this read as a miss.
        entry = self.cache.peek(key)
        if entry is None or not self._admit(kind, symbol, key, entry):
            return None
        value = entry.value
        if "error" in value:  # a remembered "not found" (perhaps stored by a peer instance)
            return StockcacheError.from_dict(dict(value["error"]))
        return FetchResult(value["data"], value["source"], value["fetched_at"])

    def _store(self, flight: Flight, level: str) -> None:
        """Runs in the fetcher before waiters wake: cache data, or a short-lived negative."""
        if flight.result is not None:
            self.cache.set(flight.key, _envelope(flight.result), ttl_level=level)
        elif isinstance(flight.error, SymbolNotFound) and self.settings.negative_ttl > 0:
            error = {k: v for k, v in flight.error.to_dict().items() if k != "provider"}
            self.cache.set(flight.key, {"error": error, "source": flight.error.fields.get("provider"),
                                        "fetched_at": self.clock()}, ttl=self.settings.negative_ttl)


def activity_stats(metrics: Metrics, settings: Settings) -> dict[str, Any]:
    """Reads by kind and tier, latency percentiles by route and refresher counters, for stats()."""
    by_kind: dict[str, dict[str, Any]] = {}
    for (kind, tier), n in sorted(metrics.by_label(Metrics.READS).items()):
        by_kind.setdefault(kind, {})[tier] = n
    hits = misses = 0
    for figures in by_kind.values():
        kind_misses = figures.get(Metrics.READ_MISS, 0)
        kind_hits = sum(figures.values()) - kind_misses
        figures.update(hits=kind_hits, misses=kind_misses, hit_rate=_rate(kind_hits, kind_misses))
        hits, misses = hits + kind_hits, misses + kind_misses
    latency = {route: hist.summary_ms()
               for route, hist in sorted(metrics.histograms(Metrics.REQUEST_LATENCY).items())}

    def per_kind(name: str) -> dict[str, int]:
        return {labels[0]: n for labels, n in sorted(metrics.by_label(name).items()) if labels}

    refresher = {
        "enabled": settings.refresh, "hours": settings.refresh_hours,
        "runs": metrics.get(Metrics.REFRESH_RUNS), "refreshed": per_kind(Metrics.REFRESHED),
        "failed": per_kind(Metrics.REFRESH_FAILED), "skipped_budget": per_kind(Metrics.REFRESH_SKIPPED),
    }
    return {"reads": {"hits": hits, "misses": misses, "hit_rate": _rate(hits, misses), "by_kind": by_kind},
            "latency": latency, "refresher": refresher}


def _rate(hits: int, misses: int) -> float | None:
    total = hits + misses
    return round(hits / total, 4) if total else None


def _wait_unless(flights: Iterable[Flight], deadline: float, cancel: threading.Event) -> None:
    """Like ``wait_all``, but gives up within 50 ms of ``cancel`` being set (shutdown)."""
    for flight in flights:
        while not flight.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if cancel.is_set() or time.monotonic() >= deadline:
                return


def provider_limits(settings: Settings, name: str) -> Limits:
    if name == "finnhub":
        return Limits(settings.finnhub_per_second, settings.finnhub_per_minute, settings.finnhub_per_day)
    if name == "alphavantage":
        return Limits(settings.alphavantage_per_second, settings.alphavantage_per_minute,
                      settings.alphavantage_per_day)
    return Limits()


def refusal_key(provider: str, symbol: str) -> str:
    """The cache key remembering that ``provider`` refused ``symbol`` (kind ``refusal``)."""
    return cache_key("refusal", symbol, provider)


def _is_refusal(value: Any, provider: str) -> bool:
    return isinstance(value, Mapping) and value.get("refused_by") == provider


def _envelope(result: FetchResult) -> dict[str, Any]:
    data = result.model.to_dict() if hasattr(result.model, "to_dict") else result.model
    return {"data": data, "source": result.provider, "fetched_at": result.fetched_at}


# What _store writes: {"data", "source", "fetched_at"}, or a remembered "not found".
_DATA_KEYS = frozenset({"data", "source", "fetched_at"})
_ERROR_KEYS = frozenset({"error", "source", "fetched_at"})
_ERROR_FIELDS = frozenset({"code", "message", "symbol"})
_SOURCE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a provider's name
_CACHED_ERRORS = frozenset({SymbolNotFound})  # the only errors _store remembers


def _check_envelope(kind: str, symbol: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is an entry :meth:`StockService._store` could have written
    for ``symbol``: its data passes ``models.check`` (the checks upstream answers pass), or it is a
    remembered error of a kind the service caches, for this symbol. Never raises anything else.
    """
    if not isinstance(value, Mapping):
        raise ValueError("not an object")
    fetched_at = value.get("fetched_at")
    if isinstance(fetched_at, bool) or not (isinstance(fetched_at, int | float) and 0 <= fetched_at < MAX_TIMESTAMP):
        raise ValueError("fetched_at is not a time from 1970 to 2100")
    source = value.get("source")
    if "error" in value:
        if not value.keys() <= _ERROR_KEYS:
            raise ValueError("a remembered error with fields it should not have")
        error = value["error"]
        if not isinstance(error, Mapping) or not error.keys() <= _ERROR_FIELDS:
            raise ValueError("error is not an error object")
        code = error.get("code")
        if not isinstance(code, str) or ERRORS_BY_CODE.get(code) not in _CACHED_ERRORS:
            raise ValueError("error code is not one the service remembers")
        message = error.get("message")
        if not isinstance(message, str) or not 0 < len(message) <= 500:
            raise ValueError("error message is not 1 to 500 characters")
        if error.get("symbol", symbol) != symbol:
            raise ValueError("error is for another symbol")
        if source is not None and not (isinstance(source, str) and _SOURCE_RE.fullmatch(source)):
            raise ValueError("source is not a provider name")
        return
    if not value.keys() <= _DATA_KEYS:
        raise ValueError("fields it should not have")
    if not (isinstance(source, str) and _SOURCE_RE.fullmatch(source)):
        raise ValueError("source is not a provider name")
    check(kind, symbol, value.get("data"))


def _render(envelope: Mapping[str, Any], tier: str, now: float, *, stale: bool) -> dict[str, Any]:
    fetched_at = float(envelope["fetched_at"])
    data = envelope["data"]
    # Search results are a list; every other kind is an object.
    out = dict(data) if isinstance(data, Mapping) else {"results": list(data)}
    out["source"] = envelope["source"]
    out["cache"] = tier
    out["fetched_at"] = iso_utc(fetched_at)
    out["age"] = max(0, int(now - fetched_at))
    out["stale"] = stale
    return out


def _error_dicts(errors: Mapping[str, StockcacheError]) -> dict[str, dict[str, Any]]:
    return {symbol: error.to_dict() for symbol, error in errors.items()}


def _position_fields(position: Any) -> dict[str, Any]:
    def get(name: str) -> Any:
        return position[name] if isinstance(position, Mapping) else getattr(position, name)

    return {"id": get("id"), "symbol": normalize_symbol(get("symbol")),
            "shares": _amount(get("shares")), "cost_basis": _amount(get("cost_basis"))}


def _amount(value: Any) -> float:
    """A stored amount as a float; what is not one (None, text) is NaN, shown as null."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None (NaN, infinities, junk)."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past the float range
        return None
    return number if math.isfinite(number) else None


def _r(value: float | None) -> float | None:
    """Rounded for the answer; None for None or anything not finite (the encoder refuses those)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)


def _percent(gain: float | None, cost: float | None) -> float | None:
    """``gain`` as a percentage of ``cost``: None without a positive cost or when it is not finite."""
    if gain is None or cost is None or cost <= 0:
        return None
    return _r(gain / cost * 100)
