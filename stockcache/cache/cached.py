"""The ``cached`` decorator: a function's result per arguments, under ``prefix:arg1:arg2:kw=v``.

Concurrent callers with the same arguments wait for one computation
(:class:`Flights`); no lock is held while the function runs.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .base import Entry

F = TypeVar("F", bound=Callable[..., Any])

class Flight:
    """One computation any number of callers wait on. Thread-safe."""

    __slots__ = ("key", "result", "error", "_done")

    def __init__(self, key: str) -> None:
        self.key = key
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the flight has a result or an error; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Flights:
    """Computations under way, by key: the first caller leads, later ones join. Thread-safe.

    One lock, held for dict work only. The same shape as the read-through
    path's registry (``join_or_lead`` / ``finish``), so the two can be one.
    """

    def __init__(self, on_join: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._on_join = on_join

    def join_or_lead(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (it must then :meth:`finish` it)."""
        with self._lock:
            flight = self._flights.get(key)
            leads = flight is None
            if flight is None:
                flight = self._flights[key] = Flight(key)
        if not leads and self._on_join is not None:
            self._on_join()
        return flight, leads

    def finish(self, flight: Flight, result: Any, error: BaseException | None) -> None:
        """Set the outcome, free the key and wake every waiter (the leader calls it once)."""
        flight.result, flight.error = result, error
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        flight._done.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)


class Store(Protocol):
    """What the decorator needs of the cache (a :class:`~stockcache.cache.TieredCache`)."""

    def get_entry(self, key: str) -> Entry | None: ...

    def peek(self, key: str) -> Entry | None: ...

    def store(self, key: str, value: Any, ttl_level: str | None = None, *, ttl: float | None = None) -> Entry: ...


def call_key(prefix: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``prefix:arg1:arg2:kw=v`` (keyword arguments sorted)."""
    parts = [str(arg) for arg in args]
    parts += [f"{name}={kwargs[name]}" for name in sorted(kwargs)]
    return f"{prefix}:{':'.join(parts)}"


def cached(store: Store, flights: Flights, ttl_level: str, key_prefix: str | None = None) -> Callable[[F], F]:
    """The decorator behind :meth:`TieredCache.cached <stockcache.cache.TieredCache.cached>`.

    ``ttl_level`` must already be checked. The prefix defaults to the
    function's qualified name.
    """

    def decorate(fn: F) -> F:
        prefix = key_prefix or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = call_key(prefix, args, kwargs)
            entry = store.get_entry(key)
            if entry is not None:
                return entry.value
            while True:
                flight, leads = flights.join_or_lead(key)
                if leads:
                    break
                flight.wait()
                if flight.error is None:
                    return flight.result
                # The leader failed: look again (another caller may have stored it since),
                # then compute ourselves.
                entry = store.peek(key)
                if entry is not None:
                    return entry.value
            try:
                # A leader that finished between our miss and our taking over
                # has stored its value by now; look once more, uncounted.
                entry = store.peek(key)
                if entry is None:
                    entry = store.store(key, fn(*args, **kwargs), ttl_level)
            except BaseException as exc:
                flights.finish(flight, None, exc)
                raise
            flights.finish(flight, entry.value, None)
            return entry.value

        wrapper.cache_key = lambda *args, **kwargs: call_key(prefix, args, kwargs)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
