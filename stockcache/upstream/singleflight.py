"""Single-flight: concurrent misses for one key wait on one fetch, in this process and across instances.

:class:`Flights` is the one registry of fetches under way, used by the
read-through path and by the cache's ``cached`` decorator: the first caller
for a key leads (it fetches), later callers join and wait for the same result
or error. The leader finishes a flight exactly once, after its result is
stored, so nobody who comes later pays again.

With several instances on one Redis, the leader also takes the key's
cross-instance lock (:class:`PeerLocks`, implemented in ``upstream.shared``);
a leader that finds the lock taken hands its flight to the
:class:`PeerWaiter`, which polls for the lock (one pipelined round trip for
all waiting keys) and resumes the flight when the peer is done, Redis is
gone, or the deadline passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import StockcacheError

log = logging.getLogger(__name__)

PEER_POLL = 0.02  # seconds between looks at the locks of keys a peer instance is fetching


@dataclass(frozen=True)
class FetchResult:
    """A model fetched from ``provider`` at ``fetched_at`` (unix time).

    ``extra`` holds models of other kinds the same answer carried (Alpha
    Vantage's OVERVIEW is a profile and key figures), by kind, to be cached too.
    """

    model: Any
    provider: str
    fetched_at: float
    extra: Mapping[str, Any] = field(default_factory=dict)


class Flight:
    """One fetch any number of callers wait on. Thread-safe."""

    __slots__ = ("key", "result", "error", "_done", "_callbacks", "_lock")

    def __init__(self, key: str) -> None:
        self.key = key
        self.result: FetchResult | None = None
        self.error: StockcacheError | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[Flight], None]] = []
        self._lock = threading.Lock()

    def add_done_callback(self, callback: Callable[[Flight], None]) -> None:
        """Run ``callback(flight)`` once the flight is done: at once if it is, else on the finishing thread.

        For a fetch that needs another one first (a provider's listing for the
        unit of its prices) without holding a pool thread while it waits.
        """
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def wait(self, timeout: float | None) -> bool:
        """True once the flight has a result or an error; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Flights:
    """The fetches under way, by key. Thread-safe: one lock, held for dict work only."""

    def __init__(self, on_join: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._on_join = on_join

    def join_or_lead(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (it must then :meth:`finish` it)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                joined = True
            else:
                flight = self._flights[key] = Flight(key)
                joined = False
        if joined and self._on_join is not None:
            self._on_join()
        return flight, not joined

    def finish(self, flight: Flight, result: FetchResult | None, error: StockcacheError | None) -> None:
        """Set the outcome, free the key and wake every waiter (the leader calls it once)."""
        flight.result, flight.error = result, error
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        with flight._lock:
            flight._done.set()
            callbacks, flight._callbacks = flight._callbacks, []
        for callback in callbacks:
            try:
                callback(flight)
            except Exception:
                log.exception("a callback of the flight for %s failed", flight.key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)


def wait_all(flights: Iterable[Flight], deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Wait for every flight until the monotonic ``deadline``; stragglers keep running."""
    for flight in flights:
        remaining = deadline - clock()
        if remaining <= 0:
            return
        flight.wait(remaining)


def wait_unless(flights: Iterable[Flight], deadline: float, cancel: threading.Event) -> None:
    """Like :func:`wait_all`, but gives up within 50 ms of ``cancel`` being set (shutdown)."""
    for flight in flights:
        while not flight.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if cancel.is_set() or time.monotonic() >= deadline:
                return


class PeerLocks(Protocol):
    """Cross-instance per-key locks (``upstream.shared.PeerLocks``); methods raise StockcacheError if unusable."""

    def acquire(self, key: str) -> str | None: ...

    def acquire_many(self, keys: Iterable[str]) -> list[str | None]: ...

    def release(self, key: str, token: str) -> None: ...


# What the waiter calls when a peer's flight is over for this key: resume(token or None).
Resume = Callable[[str | None], None]


class PeerWaiter:
    """One thread that, every ``poll`` seconds, tries to take the locks of keys peers are fetching.

    Thread-safe. Taking a lock means the peer is done (or gave up): the flight
    then finds the peer's entry in the cache, or fetches itself. A flight also
    resumes once its deadline (the upstream timeout) passes, and at once if
    Redis stops answering (then without a token). ``fail`` is called for the
    flights still waiting when it closes.
    """

    def __init__(self, peers: PeerLocks, *, poll: float = PEER_POLL) -> None:
        self._peers = peers
        self._poll = poll
        self._cond = threading.Condition()
        self._waiting: list[tuple[str, Resume, Callable[[], None], float]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, key: str, deadline: float, resume: Resume, fail: Callable[[], None]) -> None:
        with self._cond:
            closed = self._closed
            if not closed:
                self._waiting.append((key, resume, fail, deadline))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="stockcache-peer-wait", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if closed:
            fail()

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
                tokens = self._peers.acquire_many([key for key, _, _, _ in waiting])
                redis_gone = False
            except StockcacheError:
                tokens, redis_gone = [None] * len(waiting), True
            except Exception:
                log.exception("polling peer locks failed")
                tokens, redis_gone = [None] * len(waiting), True
            now = time.monotonic()
            ready = [(item, token) for item, token in zip(waiting, tokens)
                     if token is not None or redis_gone or now >= item[3]]
            if ready:
                with self._cond:
                    done = {id(item) for item, _ in ready}
                    self._waiting = [item for item in self._waiting if id(item) not in done]
                for (_, resume, fail, _), token in ready:
                    try:
                        resume(token)
                    except Exception:
                        log.exception("resuming a flight after a peer's fetch failed")
                        fail()
            with self._cond:
                if self._closed:
                    continue
                self._cond.wait(self._poll)
        for _, _, fail, _ in waiting:
            fail()
