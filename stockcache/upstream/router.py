"""The concurrent upstream fetcher: one pooled requests-futures session, single-flight, budgets.

A batch of N misses costs about one upstream round trip: every item is a
:class:`Flight` started at once on the session's thread pool, and the caller
waits for all of them up to one deadline. Each flight walks its provider route
(primary, then fallback) with non-blocking callbacks, so no pool thread ever
waits on another and a hung request holds only its own item.

Concurrent misses for one key share one flight (single-flight): the first
caller starts it, later callers wait on the same result or error. With
``peers`` (Redis, several instances), the leader also takes the key's
cross-instance lock; a leader that finds it taken waits, on one poller thread,
for the peer's cache entry instead of calling upstream.

One deadline bounds every attempt at a provider, from the moment the route
picks it (waiting for a free connection, smoothing, connect, send, headers,
body): requests' timeout is per socket read, so an upstream trickling its
headers or body a byte at a time would otherwise hold a pool thread for
minutes. The session's adapter registers each request's socket with one
watchdog thread, which shuts the socket down when the deadline passes (a
blocked ``recv`` returns at once); requests' per-read timeout stays the inner
bound.

Each provider has its own lane of ``workers`` concurrent requests; the pool
has ``workers`` threads per provider, so a provider that holds all of its
connections for the full timeout delays only its own requests (they wait in
its lane, never longer than their deadline) and never takes a thread another
provider needs. A cap below the pool size would have isolated providers too,
but would also slow a large batch to one provider (Finnhub serves every
quote) for everyone; threads are started only when used.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests_futures.sessions import FuturesSession

from .budget import CircuitBreaker, Limits
from .errors import (
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from .metrics import Metrics
from .providers.base import Provider, UpstreamRequest, redact_secrets

log = logging.getLogger(__name__)

# When a provider says 429 without Retry-After, leave it alone this long.
DEFAULT_429_PAUSE = 10.0
PEER_POLL = 0.02  # seconds between looks at the locks of keys a peer instance is fetching
# The largest upstream answer read. Real ones are a few KB (100 days of history is
# about 20 KB); anything near this is a captive portal or a mistyped URL, and on a
# Raspberry Pi every one of ``workers`` concurrent requests may hold this much RAM.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024
# close() waits this long past the upstream timeout for running requests (their
# callbacks write to the cache, which closes right after).
CLOSE_MARGIN = 1.0
# Metric names (labels: provider): refusals of one symbol received, and calls not made
# because a refusal was remembered (counted by the service, which skips the provider).
REFUSED = "upstream_refused"
REFUSAL_SKIPPED = "upstream_refusal_skipped"

# Called when a provider refuses one symbol: (provider, symbol, the error), to remember it.
OnRefusal = Callable[[str, str, SymbolRefused], None]


class UpstreamBudget(Protocol):
    """What the fetcher needs of a budget: ``budget.Budget``, or ``redisshared.SharedBudget``."""

    provider: str
    limits: Limits

    def acquire(self, *, share: float = 1.0) -> float: ...

    def pause(self, seconds: float) -> None: ...

    def remaining(self) -> dict[str, int | None]: ...

    def calls_today(self) -> int: ...


class PeerLocks(Protocol):
    """Cross-instance per-key locks (``redisshared.PeerLocks``); methods raise StockcacheError if unusable."""

    def acquire(self, key: str) -> str | None: ...

    def acquire_many(self, keys: Iterable[str]) -> list[str | None]: ...

    def release(self, key: str, token: str) -> None: ...


Lookup = Callable[[], "FetchResult | StockcacheError | None"]


@dataclass(frozen=True)
class FetchResult:
    """A model fetched from ``provider`` at ``fetched_at`` (unix time)."""

    model: Any
    provider: str
    fetched_at: float


class Flight:
    """One upstream fetch any number of callers wait on. Thread-safe."""

    __slots__ = ("key", "result", "error", "_done")

    def __init__(self, key: str) -> None:
        self.key = key
        self.result: FetchResult | None = None
        self.error: StockcacheError | None = None
        self._done = threading.Event()

    def wait(self, timeout: float | None) -> bool:
        """True once the flight has a result or an error; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


@dataclass
class _Route:
    """The state of one flight as it walks its providers."""

    flight: Flight
    kind: str
    symbol: str
    params: Mapping[str, Any]
    providers: list[str]
    share: float
    on_done: Callable[[Flight], None] | None
    errors: list[StockcacheError] = field(default_factory=list)
    index: int = 0
    peer_token: str | None = None  # held cross-instance lock, released in _finish
    finished: bool = False  # set once, under Fetcher._lock: a flight is finished exactly once


class Fetcher:
    """Runs upstream requests concurrently with per-provider budgets and breakers. Thread-safe.

    ``session`` may be injected (tests); by default a ``FuturesSession`` with
    ``workers`` threads per network provider and an HTTP connection pool of the
    same size, so no connection is discarded with "connection pool is full".
    ``workers`` is also each provider's lane: how many of its requests run at
    once (see the module docstring). ``on_refusal`` is told about every
    per-symbol refusal, so the owner can remember it.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        budgets: Mapping[str, UpstreamBudget],
        *,
        workers: int = 32,
        timeout: float = 10.0,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        session: FuturesSession | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        peers: PeerLocks | None = None,
        peer_poll: float = PEER_POLL,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._budgets = dict(budgets)
        self._breakers = dict(breakers) if breakers is not None else {
            name: CircuitBreaker(clock=clock) for name in self._providers
        }
        self._timeout = timeout
        self._clock = clock
        self.metrics = metrics or Metrics()
        self._on_refusal = on_refusal
        # Lanes: one per network provider; _lane_lock guards their counters and queues only.
        self._lanes = {name: _Lane(workers) for name, p in self._providers.items() if not p.local}
        self._lane_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._session = session or _pooled_session(workers * max(1, len(self._lanes)), self._watchdog)
        _redact_urllib3_logs()
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._closing = threading.Event()
        # Requests sent whose response callback has not finished yet; close() waits for them.
        self._running: set[Future[Any]] = set()
        self._idle = threading.Condition()
        self._peers = peers
        self._waiter = _PeerWaiter(self, peers, peer_poll) if peers is not None else None

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    @property
    def budgets(self) -> Mapping[str, UpstreamBudget]:
        return self._budgets

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        return self._breakers

    @property
    def timeout(self) -> float:
        return self._timeout

    def fetch(
        self,
        key: str,
        kind: str,
        symbol: str,
        params: Mapping[str, Any],
        route: Iterable[str],
        *,
        on_done: Callable[[Flight], None] | None = None,
        lookup: Lookup | None = None,
        share: float = 1.0,
    ) -> Flight:
        """Start (or join) the flight for ``key`` and return it at once.

        ``on_done`` runs once, in the leader, after the outcome is known and
        before waiters wake or the key is released, so a cache write there is
        visible to everyone who comes later. ``lookup`` is a last cache check
        made by the leader, closing the gap between a caller's cache miss and
        its joining a flight that another caller just finished (it may return
        a cached error, such as a remembered "not found"). ``share`` < 1
        makes the flight use only part of each budget (background refresh).
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                self.metrics.inc(Metrics.COALESCED)
                return flight
            flight = self._flights[key] = Flight(key)
        state = _Route(flight, kind, symbol, params, [p for p in route if p in self._providers],
                       share, on_done)
        if self._peers is not None:
            self._run(state, self._lead_or_wait, state, lookup)
        else:
            self._run(state, self._resume, state, lookup)
        return flight

    def _run(self, state: _Route, step: Callable[..., None], *args: Any) -> None:
        """Run one step of a flight; an unexpected exception fails the flight instead of stranding it.

        Every entry point (``fetch``, the peer waiter, response callbacks, the
        lanes) goes through here. Without it a bug in a provider or a lookup
        would leave the key in ``_flights`` and every later caller would join a
        flight that never ends. Breaker slots are given back where they are
        taken (``_start_request``, ``_outcome``), lane slots in ``_attempt``
        and ``_on_response``, so only the flight is left to finish.
        """
        try:
            step(*args)
        except Exception:
            log.exception("fetching %s failed unexpectedly", state.flight.key)
            self._finish(state, error=UpstreamError("stockcache could not complete this fetch."))

    def _settle(self, state: _Route, lookup: Lookup) -> bool:
        """Finish the flight from the cache if ``lookup`` finds the key; True if it did."""
        try:
            found = lookup()
        except StockcacheError:
            found = None
        if found is None:
            return False
        if isinstance(found, StockcacheError):
            self._finish(state, error=found, run_hook=False)
        else:
            self._finish(state, result=found, run_hook=False)
        return True

    def _lead_or_wait(self, state: _Route, lookup: Lookup | None) -> None:
        """Take the key's cross-instance lock and fetch, or wait for the peer that holds it.

        Redis unusable: fetch as a single instance would. A flight without
        ``lookup`` (a forced refresh) cannot read a peer's answer, so it fetches
        even when a peer holds the lock.
        """
        assert self._peers is not None and self._waiter is not None
        try:
            token = self._peers.acquire(state.flight.key)
            held_by_peer = token is None
        except StockcacheError:
            token, held_by_peer = None, False
        if held_by_peer and lookup is not None:
            self._waiter.add(state, lookup, time.monotonic() + self._timeout)
            return
        state.peer_token = token
        self._resume(state, lookup)

    def _resume(self, state: _Route, lookup: Lookup | None) -> None:
        """Look in the cache once more (a peer may just have stored the key), else walk the route."""
        if lookup is None or not self._settle(state, lookup):
            self._next(state)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._flights)

    def pool(self) -> dict[str, dict[str, int]]:
        """Each network provider's lane: requests ``in_flight`` of ``size``, and how many are ``waiting``.

        No I/O: ``/healthz`` reads it to say when a provider holds every connection it may use.
        """
        with self._lane_lock:
            return {name: {"in_flight": lane.running, "size": lane.size, "waiting": len(lane.waiting)}
                    for name, lane in self._lanes.items()}

    def close(self) -> None:
        """Stop upstream work and release the pool. Idempotent.

        Flights not yet sent (waiting in a lane, or queued on the pool) fail with
        "shutting down"; requests already on the wire get up to the upstream
        timeout (plus CLOSE_MARGIN) to finish, so their results are stored
        before the owner closes the cache and the ledger. No fallback request
        starts once closing. The watchdog keeps cutting overdue requests off
        until they are all done.
        """
        if self._closing.is_set():
            return
        self._closing.set()
        if self._waiter is not None:
            self._waiter.close()
        with self._lane_lock:
            waiting = [(name, item) for name, lane in self._lanes.items() for item in lane.waiting]
            for lane in self._lanes.values():
                lane.waiting.clear()
        for name, item in waiting:
            item.cancel_timer()
            item.state.errors.append(_shutting_down(name))
            self._run(item.state, self._next, item.state)
        with self._idle:
            queued = list(self._running)
        for future in queued:
            future.cancel()  # only those not started yet; their callbacks fail their flights
        with self._idle:
            drained = self._idle.wait_for(lambda: not self._running, timeout=self._timeout + CLOSE_MARGIN)
            left = len(self._running)
        if drained:
            self._session.close()
        else:
            # FuturesSession.close() would wait for them without a bound: leave them to their timeout.
            log.warning("%d upstream requests still running at shutdown; not waiting for them", left)
        self._session.executor.shutdown(wait=drained, cancel_futures=True)
        self._watchdog.close()

    # -- the route walk ---------------------------------------------------------

    def _next(self, state: _Route) -> None:
        """Try the next provider of the route; finish the flight when none is left."""
        while state.index < len(state.providers):
            name = state.providers[state.index]
            state.index += 1
            provider = self._providers[name]
            if self._closing.is_set() and not provider.local:
                state.errors.append(_shutting_down(name))
                break
            if provider.local:
                try:
                    model = provider.produce(state.kind, state.symbol, state.params)
                except StockcacheError as exc:
                    state.errors.append(exc)
                    if isinstance(exc, SymbolNotFound):
                        break
                    continue
                self._finish(state, result=FetchResult(model, name, self._clock()))
                return
            waiting = _Waiting(state, name, provider, time.monotonic() + self._timeout)
            if not self._enter_lane(waiting):
                return  # the lane starts it when a connection frees, or moves on at its deadline
            if self._attempt(waiting):
                return
        self._finish(state, error=_pick_error(state))

    def _enter_lane(self, waiting: _Waiting) -> bool:
        """Take a slot in the provider's lane (True), or queue for one until the attempt's deadline."""
        with self._lane_lock:
            lane = self._lanes.get(waiting.name)
            if lane is None or lane.running < lane.size:
                if lane is not None:
                    lane.running += 1
                return True
            lane.waiting.append(waiting)
        waiting.timer = self._watchdog.call_at(waiting.deadline, lambda: self._lane_expired(waiting))
        return False

    def _attempt(self, waiting: _Waiting) -> bool:
        """Send the request of a slot holder; False (slot given back) when it could not be sent."""
        try:
            started = self._start_request(waiting.state, waiting.name, waiting.provider, waiting.deadline)
        except BaseException:
            self._leave_lane(waiting.name)
            raise
        if not started:
            self._leave_lane(waiting.name)
        return started

    def _leave_lane(self, name: str) -> None:
        """A slot of ``name``'s lane is free: hand it to the next waiting attempt that can still use it."""
        while True:
            with self._lane_lock:
                lane = self._lanes.get(name)
                if lane is None:
                    return
                if not lane.waiting:
                    lane.running -= 1
                    return
                waiting = lane.waiting.popleft()  # the slot passes on; running stays the same
            waiting.cancel_timer()
            state = waiting.state
            if self._closing.is_set():
                state.errors.append(_shutting_down(name))
            elif time.monotonic() >= waiting.deadline:
                state.errors.append(_no_connection(name, self._timeout))
            else:
                try:
                    if self._start_request(state, name, waiting.provider, waiting.deadline):
                        return
                except Exception:
                    log.exception("fetching %s failed unexpectedly", state.flight.key)
                    self._finish(state, error=UpstreamError("stockcache could not complete this fetch."))
                    continue
            self._run(state, self._next, state)  # that flight walks on; the slot is free again

    def _lane_expired(self, waiting: _Waiting) -> None:
        """The watchdog: an attempt waited for a connection until its deadline; its flight moves on."""
        with self._lane_lock:
            lane = self._lanes.get(waiting.name)
            if lane is None or waiting not in lane.waiting:
                return  # it got its slot (or close() took it) just now
            lane.waiting.remove(waiting)
        waiting.state.errors.append(_no_connection(waiting.name, self._timeout))
        self._run(waiting.state, self._next, waiting.state)

    def _start_request(self, state: _Route, name: str, provider: Provider, deadline: float) -> bool:
        breaker = self._breakers.get(name)
        if breaker is not None:
            wait = breaker.allow()
            if wait is not None:
                state.errors.append(UpstreamError(
                    f"{name} is failing; next try in {max(1, math.ceil(wait))} s.", provider=name))
                return False
        try:
            request = provider.build_request(state.kind, state.symbol, state.params)
            budget = self._budgets.get(name)
            delay = budget.acquire(share=state.share) if budget is not None else 0.0
        except StockcacheError as exc:
            if breaker is not None:
                breaker.release()
            if isinstance(exc, RateLimited):
                self.metrics.inc(Metrics.RATE_LIMITED, name)
            state.errors.append(exc)
            return False
        except BaseException:
            # No call was made: give back a half-open probe slot, or the provider stays off for good.
            if breaker is not None:
                breaker.release()
            raise
        try:
            future = self._send(request, delay, deadline)
        except RuntimeError:
            if breaker is not None:
                breaker.release()
            if not self._closing.is_set():
                raise
            state.errors.append(_shutting_down(name))  # close() shut the pool between our check and here
            return False
        except BaseException:
            if breaker is not None:
                breaker.release()
            raise
        self.metrics.inc(Metrics.UPSTREAM_CALLS, name)
        with self._idle:
            self._running.add(future)
        future.add_done_callback(lambda f: self._on_response(state, name, provider, f))
        return True

    def _send(self, request: UpstreamRequest, delay: float, deadline: float) -> Future[requests.Response]:
        # stream=True: the future is done once the headers are in; _outcome reads the body
        # (on the same pool thread), bounded in time and size, which requests would not do.
        # The timeout carries the attempt's deadline to the adapter (see _DeadlineAdapter).
        kwargs = {"params": request.params, "headers": request.headers, "timeout": _ExchangeTimeout(deadline),
                  "allow_redirects": False, "stream": True}
        if delay <= 0:
            return self._session.request(request.method, request.url, **kwargs)
        return self._session.executor.submit(self._delayed, delay, request.method, request.url, kwargs)

    def _delayed(self, delay: float, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        # Smoothing a per-second limit: this pool thread waits, the caller does not.
        if self._closing.wait(delay):
            raise UpstreamError("stockcache is shutting down.")
        deadline = kwargs["timeout"].deadline
        if time.monotonic() >= deadline:
            raise UpstreamTimeout(f"waited past the {self._timeout:g} s deadline to keep a per-second budget.")
        kwargs["timeout"] = _ExchangeTimeout(deadline)  # the per-read bound shrinks with the time left
        return requests.Session.request(self._session, method, url, **kwargs)

    def _on_response(self, state: _Route, name: str, provider: Provider, future: Future[Any]) -> None:
        # concurrent.futures swallows a callback's exception: _run is what finishes the flight then.
        try:
            self._run(state, self._after_response, state, name, provider, future)
        finally:
            self._leave_lane(name)
            with self._idle:
                self._running.discard(future)
                if not self._running:
                    self._idle.notify_all()

    def _after_response(self, state: _Route, name: str, provider: Provider, future: Future[Any]) -> None:
        error = self._outcome(state, name, provider, future)
        if error is None:
            return
        state.errors.append(error)
        if isinstance(error, SymbolNotFound):
            self._finish(state, error=error)
        else:
            self._next(state)

    def _outcome(self, state: _Route, name: str, provider: Provider, future: Future[Any]) -> StockcacheError | None:
        """Parse one response; finish the flight on success and return None, else return the error."""
        breaker = self._breakers.get(name)
        if future.cancelled() or (self._closing.is_set() and isinstance(future.exception(), UpstreamError)):
            # Never sent (cancelled, or a delayed request let go by close()): not the provider's fault.
            if breaker is not None:
                breaker.release()
            return _shutting_down(name)
        # What failed, for the breaker: the symbol, or None when the whole provider is at fault.
        failed_key: str | None = state.symbol
        try:
            response = future.result()
        except requests.Timeout:
            error: StockcacheError = UpstreamTimeout(
                f"{name} did not answer within {self._timeout:g} s.", provider=name)
        except requests.RequestException as exc:
            # str(exc) can carry the URL with its query string (Alpha Vantage's apikey): name the type only.
            error = UpstreamError(f"could not reach {name} ({type(exc).__name__}).", provider=name)
            if _connect_failed(exc):
                failed_key = None
        except StockcacheError as exc:
            error = exc
        except Exception:
            log.exception("the %s request for %s failed unexpectedly", name, state.flight.key)
            error = UpstreamError(f"stockcache could not complete the {name} request.", provider=name)
        else:
            try:
                body = _read_body(response, name, self._timeout)
                model = provider.parse(state.kind, state.symbol, state.params, response.status_code,
                                       response.headers, body)
            except StockcacheError as exc:
                error = exc
            except Exception:
                # A parser bug: count it against the provider like any unreadable answer (this
                # also ends a half-open probe) and let the fallback try.
                log.exception("unexpected error parsing a %s answer for %s", name, state.flight.key)
                error = UpstreamError(f"{name} gave an answer stockcache could not read.", provider=name)
            else:
                if breaker is not None:
                    breaker.success()
                self._finish(state, result=FetchResult(model, name, self._clock()))
                return None
            finally:
                _close(response)
        if isinstance(error, SymbolNotFound | RateLimited | SymbolRefused):
            # The provider is alive and answering; only its budget or the symbol is the problem.
            if breaker is not None:
                breaker.success()
            if isinstance(error, RateLimited):
                self.metrics.inc(Metrics.RATE_LIMITED, name)
                pause = error.retry_after or DEFAULT_429_PAUSE
                # A 429 without Retry-After still tells the client when to come back (the 503's header).
                error.fields["retry_after"] = max(1, math.ceil(pause))
                budget = self._budgets.get(name)
                if budget is not None:
                    budget.pause(pause)
            elif isinstance(error, SymbolRefused):
                self.metrics.inc(REFUSED, name)
                self._refused(name, state.symbol, error)
        else:
            if isinstance(error, UpstreamAuthError):
                failed_key = None  # our key refused: every symbol would fail the same way
            if breaker is not None:
                breaker.failure(failed_key)
            self.metrics.inc(Metrics.UPSTREAM_ERRORS, name)
            log.warning("%s %s %s failed: %s", name, state.kind, state.symbol, error.message)
        error.fields.setdefault("provider", name)
        return error

    def _refused(self, name: str, symbol: str, error: SymbolRefused) -> None:
        if self._on_refusal is None:
            return
        try:
            self._on_refusal(name, symbol, error)
        except Exception:
            log.exception("remembering that %s refused %s failed", name, symbol)

    def _finish(
        self,
        state: _Route,
        *,
        result: FetchResult | None = None,
        error: StockcacheError | None = None,
        run_hook: bool = True,
    ) -> None:
        flight = state.flight
        with self._lock:
            if state.finished:
                return
            state.finished = True
        try:
            flight.result, flight.error = result, error
            if run_hook and state.on_done is not None:
                try:
                    state.on_done(flight)
                except Exception:
                    log.exception("storing the result for %s failed", flight.key)
            if state.peer_token is not None and self._peers is not None:
                # After on_done stored the result: a peer that takes the lock next finds it cached.
                try:
                    self._peers.release(flight.key, state.peer_token)
                except StockcacheError:
                    pass  # it expires by itself
                except Exception:
                    log.exception("releasing the peer lock of %s failed", flight.key)
                state.peer_token = None
        finally:
            # Whatever happened above, the key is freed and the waiters wake.
            with self._lock:
                if self._flights.get(flight.key) is flight:
                    del self._flights[flight.key]
            flight._done.set()


class _PeerWaiter:
    """One thread that, every ``poll`` seconds, tries to take the locks of keys peers are fetching.

    Thread-safe. Taking a lock means the peer is done (or gave up): the flight
    then finds the peer's entry in the cache, or fetches itself. A flight also
    fetches itself once its deadline (the upstream timeout) passes, and at once
    if Redis stops answering. One pipelined round trip per poll for all keys.
    """

    def __init__(self, fetcher: Fetcher, peers: PeerLocks, poll: float) -> None:
        self._fetcher = fetcher
        self._peers = peers
        self._poll = poll
        self._cond = threading.Condition()
        self._waiting: list[tuple[_Route, Lookup, float]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, state: _Route, lookup: Lookup, deadline: float) -> None:
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                self._waiting.append((state, lookup, deadline))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="stockcache-peer-wait", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if closed:
            self._fetcher._finish(state, error=UpstreamError("stockcache is shutting down."))

    def close(self) -> None:
        """Fail the flights still waiting and join the thread (one poll, a Redis round trip at most)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    waiting, self._waiting = self._waiting, []
                    break
                waiting = list(self._waiting)
            try:
                tokens = self._peers.acquire_many([state.flight.key for state, _, _ in waiting])
                redis_gone = False
            except StockcacheError:
                tokens, redis_gone = [None] * len(waiting), True
            except Exception:
                log.exception("polling peer locks failed")
                tokens, redis_gone = [None] * len(waiting), True
            now = time.monotonic()
            ready = [(item, token) for item, token in zip(waiting, tokens)
                     if token is not None or redis_gone or now >= item[2]]
            if ready:
                with self._cond:
                    done = {id(item[0]) for item, _ in ready}
                    self._waiting = [item for item in self._waiting if id(item[0]) not in done]
                for (state, lookup, _), token in ready:
                    state.peer_token = token
                    self._fetcher._run(state, self._fetcher._resume, state, lookup)
            with self._cond:
                if self._closed:
                    continue
                self._cond.wait(self._poll)
        for state, _, _ in waiting:
            self._fetcher._finish(state, error=UpstreamError("stockcache is shutting down."))


def _shutting_down(name: str) -> UpstreamError:
    return UpstreamError("stockcache is shutting down.", provider=name)


def _no_connection(name: str, timeout: float) -> UpstreamTimeout:
    # Not the provider's answer, so it never counts against its breaker: its other requests do.
    return UpstreamTimeout(f"{name} had no free connection within {timeout:g} s (all busy).", provider=name)


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when no connection could be made at all (refused, unresolvable): the provider, not a symbol."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, urllib3.exceptions.NewConnectionError)


# -- lanes: each provider's share of the pool ---------------------------------------------


@dataclass
class _Lane:
    """One provider's concurrent requests: at most ``size`` at once, the rest wait in order."""

    size: int
    running: int = 0
    waiting: deque[_Waiting] = field(default_factory=deque)


@dataclass(eq=False)
class _Waiting:
    """One attempt at ``name`` for a flight: its deadline covers the wait for a slot and the whole exchange."""

    state: _Route
    name: str
    provider: Provider
    deadline: float  # time.monotonic()
    timer: _Timer | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


# -- the watchdog: one thread acting at deadlines ---------------------------------------------


class _Timer:
    """An action the watchdog runs at ``deadline`` unless cancelled first."""

    __slots__ = ("deadline", "action", "cancelled")

    def __init__(self, deadline: float, action: Callable[[], None]) -> None:
        self.deadline = deadline
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True  # the heap drops it when its time comes


class _Watchdog:
    """One thread that runs actions at their deadlines: cuts off overdue exchanges, expires lane waits.

    Thread-safe; started on first use, stopped by :meth:`close`. Actions run on
    its thread one after another, so they are short: a socket ``shutdown``, or
    moving one waiting flight on to its next provider. ``lock`` is what an
    exchange and its connection agree on, so a socket reused by the next
    request is never shut down for the previous one.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, deadline: float, action: Callable[[], None]) -> _Timer:
        """Run ``action`` at ``deadline`` (``time.monotonic()``; at once if already past)."""
        timer = _Timer(deadline, action)
        with self._cond:
            if self._closed:
                return timer  # closing: nothing is waited for any more
            heapq.heappush(self._heap, (deadline, next(self._order), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stockcache-upstream-watchdog",
                                                daemon=True)
                self._thread.start()
            if self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                due: list[_Timer] = []
                while self._heap and self._heap[0][0] <= now:
                    timer = heapq.heappop(self._heap)[2]
                    if not timer.cancelled:
                        due.append(timer)
            for timer in due:
                try:
                    timer.action()
                except Exception:
                    log.exception("an upstream deadline action failed")


class _Exchange:
    """One request's deadline, watched from its first socket use to :meth:`done`. Thread-safe.

    The connection registers its socket (:meth:`attach`) when it connects or
    is reused; at the deadline the watchdog shuts that socket down, so a read
    blocked on headers or body returns at once, and :attr:`expired` tells the
    reader why its answer ended.
    """

    __slots__ = ("deadline", "expired", "_watchdog", "_timer", "_conn")

    def __init__(self, watchdog: _Watchdog, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._watchdog = watchdog
        self._timer: _Timer | None = None
        self._conn: Any = None

    def attach(self, conn: Any) -> None:
        with self._watchdog.lock:
            self._conn = conn
            conn.stockcache_exchange = self
        if self._timer is None:
            self._timer = self._watchdog.call_at(self.deadline, self._expire)

    def done(self) -> None:
        """The exchange is over (answer read, or failed): stop watching its socket."""
        if self._timer is not None:
            self._timer.cancel()
        with self._watchdog.lock:
            conn, self._conn = self._conn, None
            if conn is not None and getattr(conn, "stockcache_exchange", None) is self:
                conn.stockcache_exchange = None

    def _expire(self) -> None:
        with self._watchdog.lock:
            conn = self._conn
            if conn is None or getattr(conn, "stockcache_exchange", None) is not self:
                return  # already done, or the connection serves another request now
            self.expired = True
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would unwrap
                    # the TLS object under the reading thread's feet.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # closed already


class _ExchangeTimeout(urllib3.util.Timeout):
    """requests' per-read (and connect) timeout, the time left, carrying the attempt's absolute deadline."""

    def __init__(self, deadline: float) -> None:
        left = max(0.001, deadline - time.monotonic())
        super().__init__(connect=left, read=left)
        self.deadline = deadline


# The exchange of the request this thread is sending (set by _DeadlineAdapter.send, read by the connection).
_sending = threading.local()


def _watch(conn: Any) -> None:
    exchange = getattr(_sending, "exchange", None)
    if exchange is not None and conn.sock is not None:
        exchange.attach(conn)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    """A connection whose socket is watched by the current request's exchange deadline."""

    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a reused connection; a new one registers in connect()
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    """:class:`_HTTPConnection` for TLS."""

    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter that holds each request to one deadline for the whole exchange.

    The deadline comes with the timeout (:class:`_ExchangeTimeout`); a plain
    timeout gets one of now plus its read timeout. A request cut off by the
    watchdog raises ``requests.ReadTimeout`` whatever the broken socket made
    urllib3 raise. A streamed response keeps its exchange as
    ``response.stockcache_exchange`` until :func:`_close`.
    """

    def __init__(self, watchdog: _Watchdog, **kwargs: Any) -> None:
        self._watchdog = watchdog
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS  # type: ignore[assignment]

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: bool | str = True, cert: Any = None, proxies: dict[str, str] | None = None,
             ) -> requests.Response:
        deadline = getattr(timeout, "deadline", None)
        if deadline is None:
            seconds = timeout.read_timeout if isinstance(timeout, urllib3.util.Timeout) else (
                timeout[-1] if isinstance(timeout, tuple) else timeout)
            if not isinstance(seconds, (int, float)):
                return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
            deadline = time.monotonic() + seconds
        exchange = _Exchange(self._watchdog, deadline)
        _sending.exchange = exchange
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
        except Exception as exc:
            exchange.done()
            if exchange.expired:
                raise requests.ReadTimeout("the exchange overran its deadline", request=request) from exc
            raise
        finally:
            _sending.exchange = None
        if exchange.expired:  # the headers were cut short but still parsed
            exchange.done()
            response.close()
            raise requests.ReadTimeout("the exchange overran its deadline", request=request)
        if stream:
            response.stockcache_exchange = exchange  # type: ignore[attr-defined]
        else:
            exchange.done()
        return response


def _close(response: Any) -> None:
    """Close a response and end its exchange's watch."""
    try:
        response.close()
    finally:
        exchange = getattr(response, "stockcache_exchange", None)
        if exchange is not None:
            exchange.done()


def _read_body(response: Any, name: str, timeout: float) -> bytes:
    """The body of a streamed ``response``: whole within its exchange's deadline, at most MAX_ANSWER_BYTES.

    requests' ``timeout`` bounds each socket read, not the answer: an upstream
    sending a byte every few seconds would hold the pool thread forever, and
    ``response.content`` would load any size into RAM. ``read1`` returns what
    has arrived instead of waiting for a full chunk; each read waits at most
    until the deadline, and the watchdog shuts the socket down at the
    deadline, so a stall or a trickle ends on time. On an error the caller's
    ``_close`` closes the connection, half-read.
    """
    raw = getattr(response, "raw", None)
    if raw is None or not hasattr(raw, "read1"):
        return bytes(response.content)  # an injected session's ready-made answer (tests, replay)
    exchange: _Exchange | None = getattr(response, "stockcache_exchange", None)
    # Without an exchange (a session of someone else's), the clock started when the request
    # went out (requests' elapsed: send to headers).
    deadline = (exchange.deadline if exchange is not None
                else time.monotonic() + timeout - response.elapsed.total_seconds())
    too_late = UpstreamTimeout(f"{name} did not send its whole answer within {timeout:g} s.", provider=name)
    too_large = UpstreamError(f"{name} sent an answer too large to read (over {MAX_ANSWER_BYTES // 2**20} MB).",
                              provider=name)
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise too_late
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)  # urllib3 sets its own again when it reuses the connection
            chunk = raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise too_large
            chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise too_late from exc
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        if exchange is not None and exchange.expired:
            raise too_late from exc  # the watchdog cut the socket off
        # Type only: a urllib3 error's text can carry the URL with its query string (a key).
        raise UpstreamError(f"could not read {name}'s answer ({type(exc).__name__}).", provider=name) from exc
    if exchange is not None and exchange.expired:
        raise too_late  # the end came from the watchdog's shutdown: the answer may be cut short
    return b"".join(chunks)


def _pick_error(state: _Route) -> StockcacheError:
    """The error to report when every provider failed: the primary's, unless all were rate limits.

    A refusal of the symbol says the least about what to do next, so any other
    error comes first; when every provider refused it, one error names them all.
    """
    if not state.errors:
        return UpstreamError(f"No configured provider serves {state.kind} data.")
    for error in state.errors:
        if isinstance(error, SymbolNotFound):
            return error
    errors = [e for e in state.errors if not isinstance(e, SymbolRefused)]
    if not errors:
        return refused_everywhere(state.symbol, [str(e.fields.get("provider", "?")) for e in state.errors])
    limits = [e for e in errors if isinstance(e, RateLimited)]
    if len(limits) == len(errors):
        return min(limits, key=lambda e: e.retry_after or 0)
    return next(e for e in errors if not isinstance(e, RateLimited))


def refused_everywhere(symbol: str, providers: Iterable[str]) -> SymbolRefused:
    """The error when every provider that could serve ``symbol`` refused it on the configured plan."""
    names = " and ".join(dict.fromkeys(providers))
    return SymbolRefused(f"{symbol} is not available from {names} on the configured plan "
                         "(it refused this symbol), and no other configured provider serves it.",
                         symbol=symbol)


class _RedactSecrets(logging.Filter):
    """urllib3 logs each request line with its query string at DEBUG, and Alpha Vantage's key is in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACT = _RedactSecrets()


def _redact_urllib3_logs() -> None:
    """Mask keys in urllib3's own log lines (idempotent; filters run only for records that are logged)."""
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def _pooled_session(threads: int, watchdog: _Watchdog) -> FuturesSession:
    # Our own executor so its threads are named (shutdown checks and py-spy dumps find them).
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stockcache-upstream")
    session = FuturesSession(executor=executor)
    adapter = _DeadlineAdapter(watchdog, pool_connections=4, pool_maxsize=threads, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def wait_all(flights: Iterable[Flight], deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Wait for every flight until the monotonic ``deadline``; stragglers keep running."""
    for flight in flights:
        remaining = deadline - clock()
        if remaining <= 0:
            return
        flight.wait(remaining)
