"""The read-through path: cache, then single-flight, then the router, then write, else stale-if-error.

This is the only module that reads and writes market-data cache entries
(``tests/unit/test_architecture.py`` keeps it so). It owns the entry envelope
(what a cache value holds) and every rule about it:

1. Fresh entries come from the cache, a whole batch in one round trip per
   tier (memory, then SQLite, then Redis). An entry that enters from outside
   the process (a SQLite or Redis read) is checked as strictly as an upstream
   answer (:func:`check_envelope`); an invalid one is a miss and is dropped.
2. Misses become flights (:class:`~stockcache.upstream.singleflight.Flights`):
   a key already being fetched is joined, never fetched twice. With Redis the
   leader also takes the key's cross-instance lock, or waits for the peer
   that holds it. The leader looks in the cache once more, closing the window
   between a caller's miss and its joining a flight that just finished.
3. The router walks the kind's route for the subject (the providers that
   cover it, minus those that refused it lately) and checks the answer.
4. The leader writes the result, or a short-lived "not found" (the kind's
   ``remember_not_found``, for ``STOCKCACHE_NEGATIVE_TTL``), to every tier
   before waiters wake, so nobody who comes later pays again.
5. The caller waits for all its flights until one deadline (upstream timeout
   + 0.5 s). An item that failed, timed out or was refused by a budget is
   answered from the stale copy kept for ``STOCKCACHE_STALE_GRACE``
   (``"stale": true``), or with its own error. A batch never fails as a whole.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import currency
from .cache import Entry, TieredCache
from .clock import iso_utc
from .errors import (
    ERRORS_BY_CODE,
    CurrencyNotFound,
    StockcacheError,
    SymbolNotCovered,
    SymbolNotFound,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from .kinds import KINDS, Kind
from .metrics import Metrics
from .settings import Settings
from .symbols import Listing, listing
from .upstream.providers import provider_classes
from .upstream.router import REFUSAL_SKIPPED, Router, WalkItem, plan, refused_everywhere
from .upstream.singleflight import FetchResult, Flight, Flights, PeerLocks, PeerWaiter, wait_all, wait_unless
from .validation import MAX_TIMESTAMP

log = logging.getLogger(__name__)

# Extra time a caller waits past the upstream timeout before answering upstream_timeout.
DEADLINE_MARGIN = 0.5
REFUSAL = "refusal"  # the cache key prefix of remembered refusals: refusal:SYMBOL:PROVIDER

Found = dict[str, dict[str, Any]]
Failed = dict[str, StockcacheError]
FreshListener = Callable[[str, str, Mapping[str, Any]], None]  # (kind, subject, the stored data)


@dataclass(frozen=True)
class Batch:
    """One kind of data for some subjects, as one part of :meth:`ReadThrough.gather`."""

    kind: str
    subjects: Sequence[str]
    key_params: tuple[Any, ...] = ()
    fetch_params: Mapping[str, Any] | None = None
    # Called for each subject the cache did not answer, in the caller's thread, before its flight:
    # more fetch params for it (an analysis's context, read through this same path). A
    # StockcacheError it raises is the subject's failure (a stale copy still serves).
    prepare: Callable[[str], Mapping[str, Any]] | None = None


@dataclass
class _Pending:
    """A batch between its start (cache answered, flights started) and its resolution."""

    spec: Kind
    keys: dict[str, str]
    found: Found = field(default_factory=dict)
    errors: Failed = field(default_factory=dict)
    failed: Failed = field(default_factory=dict)
    flights: dict[str, Flight] = field(default_factory=dict)


class ReadThrough:
    """Market data through the tiered cache and the router. Thread-safe."""

    def __init__(
        self,
        cache: TieredCache,
        router: Router,
        *,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        peers: PeerLocks | None = None,
    ) -> None:
        self.cache = cache
        self.router = router
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.flights = Flights(on_join=lambda: self.metrics.inc(Metrics.COALESCED))
        self._peers = peers
        self._waiter = PeerWaiter(peers) if peers is not None else None
        # Kinds whose cache held a value this service cannot use; each is logged once.
        self._foreign_kinds: set[str] = set()
        self._foreign_lock = threading.Lock()
        # Cache key -> the value object last found valid there (see _admit). Bounded like
        # the memory tier; when full it is emptied, and each value is checked once more.
        self._checked: dict[str, Any] = {}
        self._checked_max = max(1, settings.memory_max_items)
        self._fresh_listeners: list[FreshListener] = []
        self._closing = threading.Event()

    # -- reads -------------------------------------------------------------------------------

    def one(self, kind: str, subject: str, key_params: tuple[Any, ...] = (),
            fetch_params: Mapping[str, Any] | None = None, *,
            prepare: Callable[[str], Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """One item, rendered; raises its error. ``prepare``: see :class:`Batch`."""
        # The hot path: a fresh entry in memory is answered without the batch machinery.
        spec = KINDS[kind]
        key = spec.key(subject, *key_params)
        entry = self.cache.memory_hit(key)
        if entry is not None and self._admit(spec, subject, key, entry):
            self.metrics.inc(Metrics.READS, kind, entry.tier)
            if "error" in entry.value:
                raise StockcacheError.from_dict(dict(entry.value["error"]))
            return render(entry.value, entry.tier, self.clock(), stale=False)
        found, errors = self.many(kind, [subject], key_params, fetch_params, prepare=prepare)
        if subject in errors:
            raise errors[subject]
        return found[subject]

    def cached(self, kind: str, subject: str) -> tuple[str, Entry] | None:
        """The key and entry :meth:`one` would answer from when a fresh, valid entry in memory
        holds data (counted as the read); else None, uncounted.

        For the HTTP fast path (``web.fastpath``), which renders the answer itself
        (``render(entry.value, entry.tier, now)``), also on the server's I/O thread. A None
        hands the read to the full path, which then counts it once, so a miss or a
        remembered error is never two reads. It serves only values :meth:`_admit` has
        already found valid: checking a new one may drop it from every tier, Redis
        included, which is I/O; the full path does that, once per value.
        """
        hits = self.cached_many(kind, [subject])
        return hits[0] if hits else None

    def cached_many(self, kind: str, subjects: Sequence[str]) -> list[tuple[str, Entry]] | None:
        """:meth:`cached` for a batch, all or nothing: every subject's ``(key, entry)`` in order, or None
        (nothing counted) unless each has a fresh, valid data entry in memory."""
        if not subjects:
            return None
        spec = KINDS[kind]
        keys = [spec.key(subject) for subject in subjects]
        entries = self.cache.memory_peek_many(keys)
        if len(entries) != len(keys):
            return None
        checked = self._checked
        out = []
        for key in keys:
            entry = entries[key]
            value = entry.value
            if checked.get(key) is not value or not isinstance(value, dict) or "error" in value:
                return None
            out.append((key, entry))
        self.cache.count_memory_hits(spec.name, len(keys))
        self.metrics.inc(Metrics.READS, kind, out[0][1].tier, amount=len(out))
        return out

    def many(
        self,
        kind: str,
        subjects: Sequence[str],
        key_params: tuple[Any, ...] = (),
        fetch_params: Mapping[str, Any] | None = None,
        *,
        share: float = 1.0,
        force: bool = False,
        cancel: threading.Event | None = None,
        prepare: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> tuple[Found, Failed]:
        """The heart of every read: cache batch, one concurrent upstream batch, stale-if-error.

        ``force`` (the background refresher) skips the cache lookup and fetches
        every subject, still single-flight and written through, is not counted
        as a read and serves nothing stale; ``cancel`` stops the waiting early.
        """
        return self.gather([Batch(kind, subjects, key_params, fetch_params, prepare)], share=share, force=force,
                           cancel=cancel)[0]

    def gather(self, batches: Sequence[Batch], *, share: float = 1.0, force: bool = False,
               cancel: threading.Event | None = None) -> list[tuple[Found, Failed]]:
        """Several batches (of any kinds) as one: one cache round trip each, then every miss
        upstream at once, waited for until one deadline. A portfolio page's quotes and its
        FX rates cost one upstream round trip together, not two in a row.
        """
        pending = [self._start(batch, share=share, force=force) for batch in batches]
        flights = [flight for item in pending for flight in item.flights.values()]
        if flights:
            deadline = time.monotonic() + self.router.timeout + DEADLINE_MARGIN
            if cancel is None:
                wait_all(flights, deadline)
            else:
                wait_unless(flights, deadline, cancel)
        return [self._resolve(item, force=force) for item in pending]

    def _start(self, batch: Batch, *, share: float, force: bool) -> _Pending:
        """Answer what the cache has; start (or join) a flight for each miss."""
        spec = KINDS[batch.kind]
        params = dict(batch.fetch_params or {})
        keys = {subject: spec.key(subject, *batch.key_params) for subject in batch.subjects}
        item = _Pending(spec, keys)
        now = self.clock()
        fresh = {} if force else self._admitted(spec, keys, self.cache.get_many(list(keys.values())))
        if not force:
            self._count_reads(spec.name, fresh.values(), len(keys) - len(fresh))
        misses: list[str] = []
        for subject, key in keys.items():
            entry = fresh.get(key)
            if entry is None:
                misses.append(subject)
            elif "error" in entry.value:
                item.errors[subject] = StockcacheError.from_dict(dict(entry.value["error"]))
            else:
                item.found[subject] = render(entry.value, entry.tier, now, stale=False)
        if not misses:
            return item
        prepared: dict[str, Mapping[str, Any]] = {}
        if batch.prepare is not None:
            for subject in list(misses):
                try:
                    prepared[subject] = {**params, **batch.prepare(subject)}
                except StockcacheError as exc:
                    item.failed[subject] = exc
                    misses.remove(subject)
        routes = {subject: self.route(spec, subject) for subject in misses}
        refused = self._refusals([s for s in misses if routes[s]], routes)
        listings = self._listings_for(spec, {s: [p for p in routes[s] if p.name not in refused.get(s, ())]
                                             for s in misses}, share=share)
        collector = _Collector()
        for subject in misses:
            route = routes[subject]
            if not route:
                # Nothing configured covers it (history with only a Finnhub key, a Xetra listing
                # with only Finnhub's free plan): say which key would; stale copies still serve.
                item.failed[subject] = self.no_route_error(spec, subject)
                continue
            skip = refused.get(subject, ())
            for name in skip:
                self.metrics.inc(REFUSAL_SKIPPED, name)
            route = [p for p in route if p.name not in skip]
            if not route:
                item.failed[subject] = refused_everywhere(subject, skip)
                continue
            item.flights[subject] = self._fetch(spec, keys[subject], subject, prepared.get(subject, params), route,
                                                share=share,
                                                lookup=not force, listings=listings.get(subject), collector=collector)
        items = collector.close()
        if items:
            self.router.walk_all(spec.name, items, share=share)
        return item

    def _listings_for(self, spec: Kind, routes: Mapping[str, list[Any]], *,
                      share: float) -> dict[str, dict[str, Any]]:
        """The listing entries the providers of each route need before a request (``Provider.needs_listing``).

        By subject, then provider: the entry as a dict; the lookup's error when it failed
        (the router takes it as that provider's answer: a coin it knows no id for is not
        found there, a throttled lookup is a rate limit); None when it did not finish in
        time (the provider then answers without it, or says it cannot). Cached a day (kind
        ``listing``), fetched concurrently, waited for here in the caller's thread.
        """
        wanted = [(subject, provider) for subject, route in routes.items() for provider in route
                  if not provider.local and provider.needs_listing(spec.name, listing(subject))]
        if not wanted:
            return {}
        kind = KINDS["listing"]
        flights = {(subject, provider.name): self._fetch(kind, kind.key(subject, provider.name), subject, {},
                                                         [provider], share=share, lookup=True)
                   for subject, provider in wanted}
        wait_all(flights.values(), time.monotonic() + self.router.timeout + DEADLINE_MARGIN)
        out: dict[str, dict[str, Any]] = {}
        for (subject, name), flight in flights.items():
            if flight.done and flight.error is not None:
                out.setdefault(subject, {})[name] = flight.error
                continue
            found: Any = flight.result.model if flight.done and flight.result is not None else None
            data = found.to_dict() if hasattr(found, "to_dict") else found
            out.setdefault(subject, {})[name] = dict(data) if isinstance(data, Mapping) else None
        return out

    def _resolve(self, item: _Pending, *, force: bool) -> tuple[Found, Failed]:
        """The flights' outcomes; what failed is served from its stale copy if there is one."""
        spec, keys, found, errors, failed = item.spec, item.keys, item.found, item.errors, item.failed
        now = self.clock()
        for subject, flight in item.flights.items():
            if flight.result is not None and flight.done:
                found[subject] = render(envelope(flight.result), "upstream", now, stale=False)
            elif flight.error is not None and flight.done:
                failed[subject] = flight.error
            else:
                failed[subject] = UpstreamTimeout(f"No answer within {self.router.timeout:g} s.",
                                                  **{spec.subject_field: subject})
        if failed:
            stale = {} if force else self._admitted(
                spec, {s: keys[s] for s in failed}, self.cache.get_stale_many([keys[s] for s in failed]))
            for subject, error in failed.items():
                entry = stale.get(keys[subject])
                if entry is not None and "error" not in entry.value and not isinstance(error, SymbolNotFound):
                    self.metrics.inc(Metrics.STALE_SERVED, spec.name)
                    found[subject] = render(entry.value, entry.tier, now, stale=True)
                else:
                    error.fields.setdefault(spec.subject_field, subject)
                    errors[subject] = error
        return found, errors

    def expiries(self, kind: str, subjects: Iterable[str], key_params: tuple[Any, ...] = ()) -> dict[str, float]:
        """When each subject's cached entry expires (absent: nothing cached). Not counted as a read.

        For the background refresher, which decides what is due from it.
        """
        spec = KINDS[kind]
        keys = {subject: spec.key(subject, *key_params) for subject in subjects}
        entries = self.cache.get_stale_many(keys.values())
        return {subject: entries[key].expires_at for subject, key in keys.items() if key in entries}

    # -- routes --------------------------------------------------------------------------------

    def route(self, kind: Kind | str, subject: str | None = None) -> list[Any]:
        """The providers asked for ``kind`` of ``subject``, in order (for no subject: of a US listing)."""
        spec = KINDS[kind] if isinstance(kind, str) else kind
        return plan(spec.name, _target(spec, subject), self.router.providers, self.settings.routes.get(spec.name, ()))

    def no_route_error(self, kind: Kind | str, subject: str | None = None) -> StockcacheError:
        """The error for a subject no configured provider covers, naming the key that would.

        ``symbol_not_covered`` when some provider serves the kind but none the
        symbol's market ("SAP.DE (Xetra) is not covered by Finnhub's free plan;
        set ALPHAVANTAGE_API_KEY"); else the kind itself needs another key.
        """
        spec = KINDS[kind] if isinstance(kind, str) else kind
        target = _target(spec, subject)
        configured = self.router.providers
        serving = [p for p in configured.values() if spec.name in p.kinds]
        unconfigured = [cls for cls in provider_classes() if cls.name not in configured and cls.key_env()]
        if target is not None and subject is not None and serving:
            keys = [str(cls.key_env()) for cls in unconfigured if cls.could_cover(spec.name, target)]
            hints = ([f"set {' or '.join(keys)}"] if keys else []) + [
                f"set {hint}" for p in serving if (hint := p.upgrade_hint(spec.name, target))]
            where = f"{subject} ({target.venue.name})" if target.venue is not None and not target.is_us else subject
            notes = " or ".join(dict.fromkeys(p.coverage_note(spec.name, target) for p in serving))
            advice = "; " + ", or ".join(hints) if hints else "; no data source stockcache knows serves it"
            return SymbolNotCovered(f"{where} is not covered by {notes}{advice}.", symbol=subject)
        missing = [cls.key_env() for cls in unconfigured if spec.name in cls.priority]
        if missing:
            return UpstreamAuthError(
                f"No configured provider serves {spec.name}: {spec.name} needs {' or '.join(missing)}.")  # type: ignore[arg-type]
        return UpstreamAuthError(f"No configured provider serves {spec.name} on this plan.")

    # -- flights -------------------------------------------------------------------------------

    def _fetch(self, kind: Kind, key: str, subject: str, params: Mapping[str, Any], route: list[Any], *,
               share: float, lookup: bool, listings: Mapping[str, Any] | None = None,
               collector: _Collector | None = None) -> Flight:
        """Start (or join) the flight for ``key`` and return it at once.

        With ``collector``, the walk is handed to it to be started with the rest of the batch
        (``Router.walk_all``: several symbols per request where the provider takes them);
        a walk resumed later (after a peer instance's lock) starts on its own.
        """
        flight, lead = self.flights.join_or_lead(key)
        if not lead:
            return flight

        def resume(token: str | None) -> None:
            if lookup:
                cached = self._cached_result(kind, subject, key)
                if cached is not None:
                    self._finish(flight, token, cached if isinstance(cached, FetchResult) else None,
                                 cached if isinstance(cached, StockcacheError) else None, store=False)
                    return

            def done(result: FetchResult | None, error: StockcacheError | None) -> None:
                self._settle(flight, token, kind, subject, result, error, share=share)

            item = WalkItem(subject, params, route, done, dict(listings or {}))
            if collector is None or not collector.add(item):
                self.router.walk(kind.name, subject, params, route, share=share, done=done, listings=listings)

        def fail() -> None:
            self._finish(flight, None, None, UpstreamError("stockcache is shutting down."), store=False)

        try:
            if self._peers is not None:
                try:
                    token = self._peers.acquire(key)
                    held_by_peer = token is None
                except StockcacheError:
                    token, held_by_peer = None, False  # Redis unusable: fetch as a single instance would
                if held_by_peer and lookup and self._waiter is not None:
                    # A forced refresh cannot read a peer's answer, so it fetches even then.
                    self._waiter.add(key, time.monotonic() + self.router.timeout, resume, fail)
                    return flight
                resume(token)
            else:
                resume(None)
        except Exception:
            log.exception("fetching %s failed unexpectedly", key)
            self._finish(flight, None, None, UpstreamError("stockcache could not complete this fetch."),
                         store=False)
        return flight

    def _settle(self, flight: Flight, token: str | None, kind: Kind, subject: str, result: FetchResult | None,
                error: StockcacheError | None, *, share: float) -> None:
        """Complete a fetched price with its currency (``currency.settle``), then finish the flight.

        When only the answering provider's own word for the listing can say what
        unit its prices are in (London: pence, pounds or dollars), that provider's
        ``listing`` entry is looked up first (cached for a day, one flight per
        listing), without holding this thread: the flight finishes when it is in.
        Without it the price keeps ``currency: null``, never a guessed unit.
        """
        if result is None or not kind.priced:
            self._finish(flight, token, result, error, kind=kind, subject=subject)
            return
        target = listing(subject)
        model, wanted = currency.settle(result.model, target)
        result = FetchResult(model, result.provider, result.fetched_at)
        provider = self.router.providers.get(result.provider)
        if not wanted or provider is None or "listing" not in provider.kinds or not provider.covers("listing", target):
            self._finish(flight, token, result, None, kind=kind, subject=subject)
            return
        spec = KINDS["listing"]
        lookup = self._fetch(spec, spec.key(subject, provider.name), subject, {}, [provider], share=share,
                             lookup=True)
        lookup.add_done_callback(
            lambda done: self._finish(flight, token, _priced(result, done.result), None, kind=kind, subject=subject))

    def _finish(self, flight: Flight, token: str | None, result: FetchResult | None,
                error: StockcacheError | None, *, kind: Kind | None = None, subject: str | None = None,
                store: bool = True) -> None:
        """Store the outcome, release the peer lock, wake the waiters: in that order, whatever fails."""
        try:
            if store and kind is not None:
                try:
                    stored = self._store(kind, flight.key, result, error)
                    if result is not None and result.extra and subject is not None:
                        self._store_extra(subject, result)
                    if stored is not None and subject is not None and self._fresh_listeners:
                        self._tell_fresh(kind, subject, stored["data"])
                except Exception:
                    log.exception("storing the result for %s failed", flight.key)
            if token is not None and self._peers is not None:
                # After the store: a peer that takes the lock next finds it cached.
                try:
                    self._peers.release(flight.key, token)
                except StockcacheError:
                    pass  # it expires by itself
                except Exception:
                    log.exception("releasing the peer lock of %s failed", flight.key)
        finally:
            self.flights.finish(flight, result, error)

    def on_fresh(self, listener: FreshListener) -> None:
        """Call ``listener(kind, subject, data)`` after each fresh upstream answer is stored.

        In the thread that finished the fetch (a pool thread, for the refresher and
        requests alike), so it must not block: price alerts note the quote and return.
        """
        self._fresh_listeners.append(listener)

    def _tell_fresh(self, kind: Kind, subject: str, data: Mapping[str, Any]) -> None:
        for listener in self._fresh_listeners:
            try:
                listener(kind.name, subject, data)
            except Exception:
                log.exception("a fresh-data listener failed for %s %s", kind.name, subject)

    def _store(self, kind: Kind, key: str, result: FetchResult | None,
               error: StockcacheError | None) -> dict[str, Any] | None:
        """Cache data (returning the entry), or a short-lived negative (before waiters wake)."""
        if result is not None:
            value = envelope(result)
            # The router checked the model; what the cache keeps is a frozen copy, a new object,
            # remembered as checked so the next read of it can take the fast path at once.
            self._remember_checked(key, self.cache.store(key, value, ttl_level=kind.ttl_level).value)
            return value
        elif (isinstance(error, SymbolNotFound) and kind.remember_not_found
              and self.settings.negative_ttl > 0):
            body = {k: v for k, v in error.to_dict().items() if k != "provider"}
            self.cache.set(key, {"error": body, "source": error.fields.get("provider"),
                                 "fetched_at": self.clock()}, ttl=self.settings.negative_ttl)
        return None

    def _store_extra(self, subject: str, result: FetchResult) -> None:
        """Cache the other kinds one answer held (a profile's key figures), so they cost no call of their own."""
        for name, model in result.extra.items():
            spec = KINDS[name]
            self.cache.set(spec.key(subject), envelope(FetchResult(model, result.provider, result.fetched_at)),
                           ttl_level=spec.ttl_level)

    def _cached_result(self, kind: Kind, subject: str, key: str) -> FetchResult | StockcacheError | None:
        # Uncounted: the caller's get_many already counted this read as a miss.
        entry = self.cache.peek(key)
        if entry is None or not self._admit(kind, subject, key, entry):
            return None
        value = entry.value
        if "error" in value:  # a remembered "not found" (perhaps stored by a peer instance)
            return StockcacheError.from_dict(dict(value["error"]))
        return FetchResult(value["data"], value["source"], value["fetched_at"])

    # -- refusals ------------------------------------------------------------------------------

    def _refusals(self, subjects: Sequence[str], routes: Mapping[str, list[Any]]) -> dict[str, list[str]]:
        """The providers of each route that refused the subject lately (remembered for ``refusal_ttl``).

        One batched lookup, only for misses about to go upstream. ``get_stale_many``
        because it does not count as a read of market data; only fresh entries count.
        """
        if not subjects or self.settings.refusal_ttl <= 0:
            return {}
        keys = {(subject, p.name): refusal_key(p.name, subject)
                for subject in subjects for p in routes[subject] if not p.local}
        if not keys:
            return {}
        entries = self.cache.get_stale_many(keys.values())
        now = self.clock()
        out: dict[str, list[str]] = {}
        for (subject, name), key in keys.items():
            entry = entries.get(key)
            if entry is not None and now < entry.expires_at and _is_refusal(entry.value, name):
                out.setdefault(subject, []).append(name)
        return out

    def remember_refusal(self, provider: str, subject: str, error: SymbolRefused) -> None:
        """Runs in the router when ``provider`` refused ``subject``: ask the next provider until it expires.

        A cache entry of its own (``refusal:SYMBOL:PROVIDER``), so it survives a
        restart and is shared through Redis, and is never read as market data.
        """
        if self.settings.refusal_ttl <= 0:
            return
        self.cache.set(refusal_key(provider, subject),
                       {"refused_by": provider, "message": error.message, "fetched_at": self.clock()},
                       ttl=self.settings.refusal_ttl)

    # -- entries from outside ------------------------------------------------------------------

    def _count_reads(self, kind: str, hits: Iterable[Entry], misses: int) -> None:
        for tier, n in Counter(entry.tier for entry in hits).items():
            self.metrics.inc(Metrics.READS, kind, tier, amount=n)
        if misses:
            self.metrics.inc(Metrics.READS, kind, Metrics.READ_MISS, amount=misses)

    def _admitted(self, kind: Kind, keys: Mapping[str, str], entries: dict[str, Entry]) -> dict[str, Entry]:
        """``entries`` (by key, for ``keys``: subject -> key) without those :meth:`_admit` refuses."""
        for subject, key in keys.items():
            entry = entries.get(key)
            if entry is not None and not self._admit(kind, subject, key, entry):
                del entries[key]
        return entries

    def _admit(self, kind: Kind, subject: str, key: str, entry: Entry) -> bool:
        """Whether a cache entry is one this service may serve; an invalid one is dropped from every tier.

        Anyone with the data dir or the Redis server can write under our keys (the
        contract's own ``cache.set("quote:AAPL", {...})``, a script, another version),
        so an entry is checked as strictly as an upstream answer (:func:`check_envelope`)
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
            check_envelope(kind, subject, value)
        except ValueError as exc:
            self._drop(key, str(exc))
            return False
        self._remember_checked(key, value)
        return True

    def _remember_checked(self, key: str, value: Any) -> None:
        if len(self._checked) >= self._checked_max:
            self._checked.clear()  # every value is checked once more, then remembered again
        self._checked[key] = value

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

    def close(self) -> None:
        """Stop waiting for peers and stop the router (requests on the wire finish first). Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._waiter is not None:
            self._waiter.close()
        self.router.close()


class _Collector:
    """The walks a batch starts together; closed once the batch has started them (thread-safe)."""

    def __init__(self) -> None:
        self._items: list[WalkItem] = []
        self._open = True
        self._lock = threading.Lock()

    def add(self, item: WalkItem) -> bool:
        """Keep ``item`` for the batch; False once the batch has gone (start it on its own then)."""
        with self._lock:
            if self._open:
                self._items.append(item)
            return self._open

    def close(self) -> list[WalkItem]:
        with self._lock:
            self._open = False
            items, self._items = self._items, []
        return items


def _target(spec: Kind, subject: str | None) -> Listing | None:
    """What a route is planned for: the subject's listing, a US listing for "any symbol", None for texts."""
    if not spec.symbolic:
        return None
    return listing(subject if subject is not None else "AAPL")


def _priced(result: FetchResult, info: FetchResult | None) -> FetchResult:
    """``result`` converted to the major unit of the currency its provider's listing ``info`` names."""
    if info is None:
        return result
    data = info.model.to_dict() if hasattr(info.model, "to_dict") else info.model
    reported = data.get("currency") if isinstance(data, Mapping) else None
    if not reported:
        return result
    try:
        return FetchResult(currency.in_major(result.model, reported), result.provider, result.fetched_at)
    except ValueError:
        return result


def refusal_key(provider: str, symbol: str) -> str:
    """The cache key remembering that ``provider`` refused ``symbol``."""
    return f"{REFUSAL}:{symbol}:{provider}"


def _is_refusal(value: Any, provider: str) -> bool:
    return isinstance(value, Mapping) and value.get("refused_by") == provider


def envelope(result: FetchResult) -> dict[str, Any]:
    """The cache value of a fetched model: ``{"data", "source", "fetched_at"}``."""
    data = result.model.to_dict() if hasattr(result.model, "to_dict") else result.model
    return {"data": data, "source": result.provider, "fetched_at": result.fetched_at}


# What ReadThrough._store writes: {"data", "source", "fetched_at"}, or a remembered "not found".
_DATA_KEYS = frozenset({"data", "source", "fetched_at"})
_ERROR_KEYS = frozenset({"error", "source", "fetched_at"})
_ERROR_FIELDS = frozenset({"code", "message", *(spec.subject_field for spec in KINDS.values())})
_SOURCE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a provider's name
_CACHED_ERRORS = frozenset({SymbolNotFound, CurrencyNotFound})  # the only errors _store remembers


def check_envelope(kind: Kind, subject: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is an entry the read-through path could have written for
    ``subject``: its data passes the kind's check (the checks upstream answers pass), or it is a
    remembered error of a kind the service caches, for this subject. Never raises anything else.
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
        if error.get(kind.subject_field, subject) != subject:
            raise ValueError("error is for another subject")
        if source is not None and not (isinstance(source, str) and _SOURCE_RE.fullmatch(source)):
            raise ValueError("source is not a provider name")
        return
    if not value.keys() <= _DATA_KEYS:
        raise ValueError("fields it should not have")
    if not (isinstance(source, str) and _SOURCE_RE.fullmatch(source)):
        raise ValueError("source is not a provider name")
    kind.check(subject, value.get("data"))


def render(entry: Mapping[str, Any], tier: str, now: float, *, stale: bool) -> dict[str, Any]:
    """An answer: the data with ``source``, ``cache`` (the tier, or upstream), ``fetched_at``, ``age``, ``stale``."""
    # Once per item of every batch, so written for speed: a dict (cached values are FrozenDicts)
    # is tested before the slower Mapping ABC, and no builtin is called that is not needed.
    fetched_at = entry["fetched_at"]
    data = entry["data"]
    # Search results are a list; every other kind is an object.
    out = dict(data) if isinstance(data, dict) or isinstance(data, Mapping) else {"results": list(data)}
    out["source"] = entry["source"]
    out["cache"] = tier
    out["fetched_at"] = iso_utc(fetched_at)
    age = int(now - fetched_at)
    out["age"] = age if age > 0 else 0
    out["stale"] = stale
    return out
