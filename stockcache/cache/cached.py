"""The ``cached`` decorator: a function's result per arguments, in the cache's own ``fn:`` namespace.

Keys are ``fn:<prefix>:<arguments as JSON>``: nothing the service stores
starts with ``fn:`` (its keys are ``KIND:SYMBOL[:PARAMS]``), so
``@cache.cached(ttl_level="fundamentals", key_prefix="profile")`` can never
read or overwrite the service's ``profile:AAPL``. Arguments are encoded as a
JSON array, then the keyword arguments (if any) as a JSON object with sorted
keys: ``f("a:b")`` is ``fn:f:["a:b"]`` and ``f("a", "b")`` is
``fn:f:["a","b"]``, and no two different calls share a key.

Concurrent callers with the same arguments wait for one computation
(:class:`Flights`); no lock is held while the function runs.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .base import Entry

F = TypeVar("F", bound=Callable[..., Any])

NAMESPACE = "fn"

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, sort_keys=True).encode


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


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can name a function's keys: text without ``:`` (which would blur where arguments start)."""
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"key_prefix must be non-empty text without ':', not {prefix!r}")
    return prefix


def call_key(prefix: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``fn:<prefix>:<args as a JSON array>[<kwargs as a JSON object>]``; TypeError for arguments JSON cannot carry."""
    try:
        text = _encode(args)
        if kwargs:
            text += _encode(kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"arguments of a cached function must be JSON values (text, numbers, True/False/None, "
            f"lists, dicts with text keys): {exc}") from None
    return f"{NAMESPACE}:{prefix}:{text}"


def cached(store: Store, flights: Flights, ttl_level: str, key_prefix: str | None = None) -> Callable[[F], F]:
    """The decorator behind :meth:`TieredCache.cached <stockcache.cache.TieredCache.cached>`.

    ``ttl_level`` must already be checked. The prefix defaults to the
    function's module and qualified name.
    """
    if key_prefix is not None:
        check_prefix(key_prefix)

    def decorate(fn: F) -> F:
        prefix = key_prefix or check_prefix(f"{fn.__module__}.{fn.__qualname__}")

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
