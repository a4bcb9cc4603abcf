"""The concurrent upstream fetcher: one pooled requests-futures session, single-flight, budgets.

A batch of N misses costs about one upstream round trip: every item is a
:class:`Flight` started at once on the session's thread pool, and the caller
waits for all of them up to one deadline. Each flight walks its provider route
(primary, then fallback) with non-blocking callbacks, so no pool thread ever
waits on another and a hung request holds only its own item.

Concurrent misses for one key share one flight (single-flight): the first
caller starts it, later callers wait on the same result or error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests_futures.sessions import FuturesSession

from .budget import Budget, CircuitBreaker
from .errors import (
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    UpstreamError,
    UpstreamTimeout,
)
from .metrics import Metrics
from .providers.base import Provider, UpstreamRequest, redact_secrets

log = logging.getLogger(__name__)

# When a provider says 429 without Retry-After, leave it alone this long.
DEFAULT_429_PAUSE = 10.0


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


class Fetcher:
    """Runs upstream requests concurrently with per-provider budgets and breakers. Thread-safe.

    ``session`` may be injected (tests); by default a ``FuturesSession`` with
    ``workers`` threads and an HTTP connection pool of the same size, so no
    connection is discarded with "connection pool is full".
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        budgets: Mapping[str, Budget],
        *,
        workers: int = 32,
        timeout: float = 10.0,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        session: FuturesSession | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._budgets = dict(budgets)
        self._breakers = dict(breakers) if breakers is not None else {
            name: CircuitBreaker(clock=clock) for name in self._providers
        }
        self._timeout = timeout
        self._clock = clock
        self.metrics = metrics or Metrics()
        self._session = session or _pooled_session(workers)
        _redact_urllib3_logs()
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._closing = threading.Event()

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    @property
    def budgets(self) -> Mapping[str, Budget]:
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
        lookup: Callable[[], FetchResult | None] | None = None,
        share: float = 1.0,
    ) -> Flight:
        """Start (or join) the flight for ``key`` and return it at once.

        ``on_done`` runs once, in the leader, after the outcome is known and
        before waiters wake or the key is released, so a cache write there is
        visible to everyone who comes later. ``lookup`` is a last cache check
        made by the leader, closing the gap between a caller's cache miss and
        its joining a flight that another caller just finished. ``share`` < 1
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
        if lookup is not None:
            try:
                found = lookup()
            except StockcacheError:
                found = None
            if found is not None:
                self._finish(state, result=found, run_hook=False)
                return flight
        self._next(state)
        return flight

    def in_flight(self) -> int:
        with self._lock:
            return len(self._flights)

    def close(self) -> None:
        """Stop delayed requests and shut the pool down; in-flight requests end by their timeout."""
        self._closing.set()
        self._session.close()
        self._session.executor.shutdown(wait=False, cancel_futures=True)

    # -- the route walk ---------------------------------------------------------

    def _next(self, state: _Route) -> None:
        """Try the next provider of the route; finish the flight when none is left."""
        while state.index < len(state.providers):
            name = state.providers[state.index]
            state.index += 1
            provider = self._providers[name]
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
            if not self._start_request(state, name, provider):
                continue
            return
        self._finish(state, error=_pick_error(state))

    def _start_request(self, state: _Route, name: str, provider: Provider) -> bool:
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
        self.metrics.inc(Metrics.UPSTREAM_CALLS, name)
        future = self._send(request, delay)
        future.add_done_callback(lambda f: self._on_response(state, name, provider, f))
        return True

    def _send(self, request: UpstreamRequest, delay: float) -> Future[requests.Response]:
        kwargs = {"params": request.params, "headers": request.headers, "timeout": self._timeout,
                  "allow_redirects": False}
        if delay <= 0:
            return self._session.request(request.method, request.url, **kwargs)
        return self._session.executor.submit(self._delayed, delay, request.method, request.url, kwargs)

    def _delayed(self, delay: float, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        # Smoothing a per-second limit: this pool thread waits, the caller does not.
        if self._closing.wait(delay):
            raise UpstreamError("stockcache is shutting down.")
        return requests.Session.request(self._session, method, url, **kwargs)

    def _on_response(self, state: _Route, name: str, provider: Provider, future: Future[Any]) -> None:
        try:
            error = self._outcome(state, name, provider, future)
        except Exception:  # a bug here must not leave waiters hanging
            log.exception("unexpected error handling a %s answer", name)
            error = UpstreamError(f"{name} gave an answer stockcache could not read.", provider=name)
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
        try:
            response = future.result()
        except requests.Timeout:
            error: StockcacheError = UpstreamTimeout(
                f"{name} did not answer within {self._timeout:g} s.", provider=name)
        except requests.RequestException as exc:
            # str(exc) can carry the URL with its query string (Alpha Vantage's apikey): name the type only.
            error = UpstreamError(f"could not reach {name} ({type(exc).__name__}).", provider=name)
        except StockcacheError as exc:
            error = exc
        else:
            try:
                model = provider.parse(state.kind, state.symbol, state.params, response.status_code,
                                       response.headers, response.content)
            except StockcacheError as exc:
                error = exc
            else:
                if breaker is not None:
                    breaker.success()
                self._finish(state, result=FetchResult(model, name, self._clock()))
                return None
            finally:
                response.close()
        if isinstance(error, SymbolNotFound | RateLimited):
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
        else:
            if breaker is not None:
                breaker.failure()
            self.metrics.inc(Metrics.UPSTREAM_ERRORS, name)
            log.warning("%s %s %s failed: %s", name, state.kind, state.symbol, error.message)
        error.fields.setdefault("provider", name)
        return error

    def _finish(
        self,
        state: _Route,
        *,
        result: FetchResult | None = None,
        error: StockcacheError | None = None,
        run_hook: bool = True,
    ) -> None:
        flight = state.flight
        flight.result, flight.error = result, error
        if run_hook and state.on_done is not None:
            try:
                state.on_done(flight)
            except Exception:
                log.exception("storing the result for %s failed", flight.key)
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        flight._done.set()


def _pick_error(state: _Route) -> StockcacheError:
    """The error to report when every provider failed: the primary's, unless all were rate limits."""
    if not state.errors:
        return UpstreamError(f"No configured provider serves {state.kind} data.")
    for error in state.errors:
        if isinstance(error, SymbolNotFound):
            return error
    limits = [e for e in state.errors if isinstance(e, RateLimited)]
    if len(limits) == len(state.errors):
        return min(limits, key=lambda e: e.retry_after or 0)
    return next(e for e in state.errors if not isinstance(e, RateLimited))


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


def _pooled_session(workers: int) -> FuturesSession:
    session = FuturesSession(max_workers=workers)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=workers, max_retries=0)
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
