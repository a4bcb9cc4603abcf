"""What a fake API mounted on ``bench.fake_upstream.FakeUpstream`` is.

The fake upstream owns the HTTP server and the shared machinery: call counts,
latency, faults (500, hang, reset, trickle, ...), outages. A mounted API owns
everything that is its own: how a request names its endpoint and symbol, its
keys, limits and credits, its answer shapes and error bodies. The server
routes every request whose path starts with the API's ``prefix`` to it:

1. :meth:`MountedApi.route` says what the request is (recorded and matched
   against faults and latency per symbol) before any latency or fault;
2. then the shared latency and fault machinery runs; faults that need the
   API's own body ask :meth:`MountedApi.too_many` (fault "429") or
   :meth:`MountedApi.answer` (trickle, huge, badjson, outofrange);
3. else :meth:`MountedApi.answer` answers.

An API is configured from any thread while the server runs, so each keeps its
own lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from stockcache.upstream.providers.demo import DemoMarket

Answer = tuple[int, dict[str, str], bytes]
Clock = Callable[[], float]
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One request as a mounted API sees it."""

    method: str
    path: str  # below the API's prefix, "/"-rooted, repeated slashes folded
    query: Mapping[str, str]  # the last value of each name
    headers: Mapping[str, str]  # case-insensitive (http.server's message object)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """A header by name, in any case (also when ``headers`` is a plain dict, as in bench/replay.py)."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return json.loads(self.body.decode("utf-8"))


@dataclass(frozen=True)
class Route:
    """What a request is, for counts, faults and latency: never a secret in ``params``."""

    endpoint: str
    symbol: str | None = None
    key_in: str | None = None  # where the key came: "query", "header" or None
    params: Mapping[str, str] = field(default_factory=dict)


def json_answer(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Answer:
    return status, {"Content-Type": JSON_TYPE, **(headers or {})}, json.dumps(obj).encode()


def text_answer(status: int, text: str, headers: Mapping[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, text.encode()


class MountedApi:
    """Base of every fake API mounted on the fake upstream. Thread-safe.

    ``name`` is the provider name in ``FakeUpstream.calls``, ``set_fault`` and
    ``set_latency``; ``prefix`` the path it is mounted under; ``base_path``
    what follows the prefix in the base URL a client is configured with
    (Frankfurter's ``/v1``), so ``FakeUpstream.url(name)`` is that URL.
    """

    name = ""
    prefix = ""
    base_path = ""
    env_var = ""  # the stockcache setting that points at it

    def __init__(self, *, market: DemoMarket | None = None, clock: Clock = time.time) -> None:
        self.market = market or DemoMarket(marked=False, unknown=())
        self.clock = clock
        self._lock = threading.Lock()
        self._unknown: tuple[str, ...] = ("ZZZZ*",)

    def route(self, request: Request) -> Route:
        raise NotImplementedError

    def answer(self, request: Request, route: Route) -> Answer:
        raise NotImplementedError

    def too_many(self, request: Request, route: Route, retry_after: int | None) -> Answer:
        """The API's own rate-limit answer (used by the fake upstream's "429" fault)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return json_answer(429, {"error": "Too Many Requests"}, headers)

    def out_of_range(self, data: Any, route: Route, variant: str) -> Any:
        """``data`` with one value out of range (the "outofrange" fault); unchanged by default."""
        return data

    def reset(self) -> None:
        """Forget counters and limit windows (``FakeUpstream.reset``); configuration stays."""

    def set_unknown(self, patterns: tuple[str, ...] | list[str]) -> None:
        """Glob patterns of symbols this API does not know (default ``ZZZZ*``)."""
        with self._lock:
            self._unknown = tuple(p.upper() for p in patterns)

    def is_unknown(self, symbol: str) -> bool:
        with self._lock:
            patterns = self._unknown
        return any(fnmatchcase(symbol.upper(), p) for p in patterns)


class Window:
    """Calls (or credits) in a sliding or fixed window of the injected clock. Not thread-safe: callers lock."""

    def __init__(self, limit: int | None, seconds: float, *, fixed: bool = False) -> None:
        self.limit = limit
        self.seconds = seconds
        self.fixed = fixed
        self._events: deque[tuple[float, int]] = deque()

    def used(self, now: float) -> int:
        self._expire(now)
        return sum(n for _, n in self._events)

    def fits(self, now: float, amount: int = 1) -> bool:
        return self.limit is None or self.used(now) + amount <= self.limit

    def add(self, now: float, amount: int = 1) -> None:
        self._expire(now)
        self._events.append((now, amount))

    def retry_after(self, now: float) -> int:
        """Whole seconds until the oldest event leaves the window (at least 1)."""
        if not self._events:
            return 1
        if self.fixed:
            return max(1, int(self._start(now) + self.seconds - now + 0.999))
        return max(1, int(self._events[0][0] + self.seconds - now + 0.999))

    def clear(self) -> None:
        self._events.clear()

    def _start(self, now: float) -> float:
        return now - (now % self.seconds)

    def _expire(self, now: float) -> None:
        edge = self._start(now) if self.fixed else now - self.seconds
        while self._events and (self._events[0][0] < edge if self.fixed else self._events[0][0] <= edge):
            self._events.popleft()
