"""A local fake of Finnhub and Alpha Vantage: a real HTTP server on loopback.

Integration tests and benchmarks point stockcache at it instead of the real
APIs. It speaks both APIs' shapes (``docs/upstream-apis.md``): Finnhub under
``/finnhub/api/v1`` (double slashes tolerated, as the official client sends
them), Alpha Vantage at ``/alphavantage/query``, including their error and
throttling bodies. Data comes from :class:`stockcache.upstream.providers.demo.DemoMarket`
(unmarked), so the fake and the demo source agree.

Everything is configurable while running, from any thread: latency, expected
keys, faults per (provider, symbol), a seeded error rate, an outage switch and
per-provider rate limits. It counts every call it receives.

Fault kinds (:data:`FAULTS`):

==========  ==================================================================
500/502/503 that HTTP status with a short text body
429         the provider's "too many requests": Finnhub HTTP 429 (with
            ``Retry-After`` if given); Alpha Vantage HTTP 200 burst ``Information``
            (Alpha Vantage never sends 429)
hang        hold the request until :meth:`FakeUpstream.release_hangs`, ``stop()``
            (connection dropped, no answer) or ``max_hang`` seconds (then answer)
reset       drop the connection with a TCP reset, no answer
trickle     HTTP 200 headers (with the full Content-Length) at once, then the normal
            body one byte every :data:`TRICKLE_EVERY` seconds: every socket read
            succeeds, so only a deadline on the whole answer ends it. Stopped like
            "hang": :meth:`FakeUpstream.release_hangs` sends the rest at once,
            ``stop()`` drops the connection, ``max_hang`` sends the rest
trickle_headers
            the status line and headers one byte every :data:`TRICKLE_EVERY` seconds
            (padded with a long ``X-Fake-Padding`` header so they never finish on
            their own), then the normal body: no socket read ever times out, and a
            client whose deadline starts only after the headers waits for minutes.
            Stopped like "trickle"
huge        HTTP 200 with the normal answer padded to :data:`HUGE_BYTES` (an extra
            ``"padding"`` string: still valid JSON, still parseable), streamed with
            chunked transfer encoding (no Content-Length)
badjson     HTTP 200 ``application/json`` with a truncated body
wrongshape  HTTP 200 ``[{"unexpected": "shape"}]``
html        HTTP 502 with an HTML gateway error page
outofrange  HTTP 200, the normal answer in the right shape with one value out of
            range, chosen by ``variant`` (:data:`OUT_OF_RANGE`): ``negative`` (a price
            of -5, as in ``{"c": -5}``), ``huge`` (1e308), ``tiny`` (1e-320, subnormal),
            ``future`` (a date or time in the year 9999), ``long`` (a 100 kB string).
            Numbers stay strings at Alpha Vantage. An answer without such a field
            (a quote has no text) is sent unchanged
==========  ==================================================================

Finnhub plans: on the free plan (the default, ``finnhub_plan="free"``) it answers
non-US listings (a venue suffix from :data:`NON_US_SUFFIXES`: ``SAP.DE``, ``VOD.L``)
with ``{"error": "You don't have access to this resource."}`` and HTTP 403 on
quote, profile, news and metric, as the real one does (``no_access_status=401``
gives the same text with the 401 also seen in the wild). ``"paid"`` serves them.
US share classes such as ``BRK.B`` are served on both.
More APIs are mounted under their own path prefix (:meth:`FakeUpstream.mount`),
each a module of ``tests.fakes`` (Twelve Data, CoinGecko, Frankfurter, OpenFIGI,
an OpenAI-compatible chat API); by default all of them. They share the counts,
latency, faults and outage above (``provider=`` is the API's name) and keep their
own keys, limits and answer shapes; :meth:`FakeUpstream.url` is the base URL to
configure for each.

Run it alone: ``python -m bench.fake_upstream --port 9999 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stockcache.upstream.providers.demo import DemoMarket
from tests.fakes import alphavantage as av
from tests.fakes import standard_apis
from tests.fakes.base import MountedApi, Request, Route
from tests.fakes.notify import NotifyReceiver

logger = logging.getLogger(__name__)

PROVIDERS = ("finnhub", "alphavantage")
FAULTS = ("500", "502", "503", "429", "hang", "trickle", "trickle_headers", "huge", "reset", "badjson", "wrongshape",
          "html", "outofrange")
OUT_OF_RANGE = ("negative", "huge", "tiny", "future", "long")
TRICKLE_EVERY = 0.2  # seconds between the bytes of a "trickle" answer
HUGE_BYTES = 8 * 1024 * 1024  # size of a "huge" answer: more than any client should read into RAM

HEADER_PADDING = 4096  # bytes of X-Fake-Padding in a "trickle_headers" answer: longer than any max_hang
# Yahoo-style venue suffixes of listings outside the US (Finnhub's free plan refuses them).
NON_US_SUFFIXES = (".DE", ".F", ".L", ".PA", ".AS", ".MI", ".SW", ".ST", ".TO", ".HK", ".T", ".BR", ".MC",
                   ".OL", ".CO", ".HE", ".VI", ".AX")
FINNHUB_PLANS = ("free", "paid")
_FINNHUB_PER_SYMBOL = ("quote", "stock/profile2", "company-news", "stock/metric")

FINNHUB_PREFIX = "/finnhub/api/v1"
ALPHAVANTAGE_PATH = "/alphavantage/query"

FINNHUB_LIMIT = {"error": "API limit reached. Please try again later. Remaining Limit: 0"}
FINNHUB_NO_KEY = {"error": "Please use an API key."}
FINNHUB_BAD_KEY = {"error": "Invalid API key"}
FINNHUB_NO_ACCESS = {"error": "You don't have access to this resource."}

AV_DAILY_CAP = av.DAILY_CAP_TEXTS["detected"]  # quotes the key, as the real one does
AV_BURST = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more "
    "sparingly (1 request per second). You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), raise "
    "the per-second burst limit, and instantly unlock all premium endpoints"
)
AV_LEGACY = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 "
    "calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a "
    "higher API call frequency."
)
AV_PREMIUM_FULL = (
    "Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for "
    "the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to instantly unlock all premium features"
)
AV_BAD_KEY = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)
AV_INVALID_CALL = (
    "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for {function}."
)
AV_INVALID_INPUTS = (
    "Invalid inputs. Please refer to the API documentation "
    "https://www.alphavantage.co/documentation#newsapi and try again."
)

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
    "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Call:
    """One request the fake received (secrets left out of ``params``)."""

    provider: str
    endpoint: str
    symbol: str | None
    params: Mapping[str, str]
    key_in: str | None  # "query", "header" or None
    at: float


@dataclass
class _Fault:
    kind: str
    retry_after: int | None = None
    remaining: int | None = None  # None: until cleared
    variant: str = "negative"  # for "outofrange"


@dataclass
class _Limit:
    per_second: int | None = None
    per_minute: int | None = None
    per_day: int | None = None
    retry_after: int | None = None
    recent: deque[float] = field(default_factory=deque)  # accepted calls, monotonic time
    day: str = ""
    day_count: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many concurrent clients connect at once; the default 5 drops SYNs
    fake: FakeUpstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Resets and stop() make client sockets fail mid-request; that is the point, not a bug.
        logger.debug("fake upstream: connection from %s ended abruptly", client_address, exc_info=True)


class _Drop(Exception):
    """End this connection without an answer (reset, or stop() during a hang)."""


@dataclass
class _Stream:
    """A body written piece by piece as ``chunks`` yields; ``length`` None means chunked encoding.

    The iterator may raise :class:`_Drop` to end the connection mid-answer.
    """

    chunks: Iterable[bytes]
    length: int | None = None


@dataclass
class _SlowHeaders:
    """A whole answer whose status line and headers leave as ``trickle(head)`` yields, then ``body``."""

    body: bytes
    trickle: Callable[[bytes], Iterable[bytes]]


class FakeUpstream:
    """A fake Finnhub + Alpha Vantage on 127.0.0.1. Thread-safe; configure it while it runs.

    One thread per connection (keep-alive honoured); sleeps and hangs wait on a
    condition that ``stop()`` signals, so stopping is immediate.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        expected_keys: Mapping[str, str | None] | None = None,
        unknown: Iterable[str] = ("ZZZZ*",),
        error_rate: float = 0.0,
        error_faults: Iterable[str] = ("500",),
        seed: int = 0,
        max_hang: float = 30.0,
        candles: bool = False,
        finnhub_plan: str = "free",
        no_access_status: int = 403,
        clock: Callable[[], float] = time.time,
        apis: Iterable[MountedApi] | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._clock = clock
        self._market = DemoMarket(marked=False, unknown=())
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._release_gen = 0
        self._hanging = 0
        self._in_flight = 0
        self._max_in_flight = 0
        # Configuration; every read and write holds self._lock.
        self._latency: dict[tuple[str | None, str | None], float] = {(None, None): float(latency)}
        self._expected: dict[str, str | None] = {name: None for name in PROVIDERS}
        self._expected.update(expected_keys or {})
        self._unknown = tuple(unknown)
        self._faults: dict[tuple[str | None, str | None], _Fault] = {}
        self._error_rate = float(error_rate)
        self._error_faults = tuple(error_faults)
        self._rng = random.Random(seed)
        self._outage: str | None = None
        self._limits: dict[str, _Limit] = {}
        self._candles = candles
        self._finnhub_plan = _check_plan(finnhub_plan)
        self._no_access_status = no_access_status
        # Finnhub: known symbols it has no fundamentals for (profile2 ``{}``, metric without "metric").
        self._no_fundamentals: tuple[str, ...] = ("SPY", "QQQ", "VOO")
        # Alpha Vantage: time_published with "Z" / without seconds now and then; which daily-cap text it sends.
        self.av_news_quirks = True  # as the real feed does now and then; --no-av-news-quirks turns them off
        self.av_daily_cap = "detected"  # or "thankyou", or "thankyou-note" (the same text under "Note")
        self.max_hang = max_hang
        self._calls: list[Call] = []
        self._rate_limited: dict[str, int] = {name: 0 for name in PROVIDERS}
        for kind in self._error_faults:
            _check_fault(kind)
        self._mounts: dict[str, MountedApi] = {}
        for api in standard_apis(market=self._market, clock=clock) if apis is None else apis:
            self.mount(api)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("already started")
        server = _Server((self._host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._stopping = False
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-upstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: hanging and sleeping requests end without an answer, connections close."""
        server = self._server
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            connections = list(self._connections)
        server.shutdown()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = self._host if self._host not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def finnhub_url(self) -> str:
        return self.base_url + FINNHUB_PREFIX

    @property
    def alphavantage_url(self) -> str:
        return self.base_url + ALPHAVANTAGE_PATH

    def mount(self, api: MountedApi) -> MountedApi:
        """Serve ``api`` under its path prefix, with the shared counts, latency and faults."""
        with self._lock:
            if api.name in PROVIDERS or any(m.prefix == api.prefix for m in self._mounts.values()):
                raise ValueError(f"{api.name} or its prefix {api.prefix} is taken")
            self._mounts[api.name] = api
        return api

    def mounted(self) -> list[str]:
        """The names of the mounted APIs."""
        with self._lock:
            return list(self._mounts)

    def api(self, name: str) -> Any:
        """The mounted API called ``name`` (to configure its keys, limits and quirks)."""
        with self._lock:
            return self._mounts[name]

    def url(self, name: str) -> str:
        """The base URL to point a client at: ``finnhub``, ``alphavantage`` or a mounted API."""
        if name == "finnhub":
            return self.finnhub_url
        if name == "alphavantage":
            return self.alphavantage_url
        api = self.api(name)
        return self.base_url + api.prefix + api.base_path

    # -- configuration ------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds every answer waits (unless a per-symbol or per-provider latency is set)."""
        with self._lock:
            return self._latency[(None, None)]

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float | None, *, symbol: str | None = None, provider: str | None = None) -> None:
        """Latency for a symbol and/or provider; None removes that override."""
        key = (self._target(provider), _sym(symbol))
        with self._lock:
            if seconds is None and key != (None, None):
                self._latency.pop(key, None)
            else:
                self._latency[key] = float(seconds or 0.0)

    def set_expected_key(self, provider: str, key: str | None) -> None:
        """The key ``provider`` accepts; None accepts any non-empty key."""
        with self._lock:
            self._expected[_provider(provider)] = key

    @property
    def expected_keys(self) -> dict[str, str | None]:
        with self._lock:
            return dict(self._expected)

    def set_unknown(self, patterns: Iterable[str]) -> None:
        """Glob patterns of symbols both APIs answer as unknown (default ``ZZZZ*``)."""
        with self._lock:
            self._unknown = tuple(p.upper() for p in patterns)

    def set_fault(
        self,
        fault: str | None,
        *,
        symbol: str | None = None,
        provider: str | None = None,
        retry_after: int | None = None,
        times: int | None = None,
        variant: str = "negative",
    ) -> None:
        """Fail requests for ``symbol`` (all if None) at ``provider`` (both if None).

        ``times`` limits the fault to the next N matching requests. ``None`` as
        fault clears that entry. The most specific entry wins: (provider, symbol),
        then symbol, then provider, then global. ``variant`` picks the bad value
        of an "outofrange" fault (one of :data:`OUT_OF_RANGE`).
        """
        key = (self._target(provider), _sym(symbol))
        if variant not in OUT_OF_RANGE:
            raise ValueError(f"variant must be one of {OUT_OF_RANGE}")
        with self._lock:
            if fault is None:
                self._faults.pop(key, None)
            else:
                self._faults[key] = _Fault(_check_fault(fault), retry_after, times, variant)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_error_rate(self, rate: float, *, faults: Iterable[str] = ("500",), seed: int | None = None) -> None:
        """Fail this fraction of requests with faults drawn from ``faults`` (seeded, reproducible)."""
        faults = tuple(_check_fault(f) for f in faults)
        with self._lock:
            self._error_rate, self._error_faults = float(rate), faults
            if seed is not None:
                self._rng = random.Random(seed)

    @property
    def outage(self) -> bool:
        with self._lock:
            return self._outage is not None

    @outage.setter
    def outage(self, on: bool) -> None:
        self.set_outage(on)

    def set_outage(self, on: bool, *, mode: str = "503") -> None:
        """Every request fails: ``mode`` "503" answers 503, "reset" drops the connection."""
        if mode not in ("503", "reset"):
            raise ValueError("mode must be '503' or 'reset'")
        with self._lock:
            self._outage = mode if on else None

    def set_rate_limit(
        self,
        provider: str,
        *,
        per_second: int | None = None,
        per_minute: int | None = None,
        per_day: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer like the real provider once a window is full (None: no limit).

        Finnhub: 429 with its limit body (and ``Retry-After`` if given). Alpha
        Vantage: HTTP 200 with the daily-cap ``Information`` (quoting the key, as
        the real one does), the burst ``Information`` or the legacy ``Note``.
        Only accepted calls fill a window.
        """
        with self._lock:
            self._limits[_provider(provider)] = _Limit(per_second, per_minute, per_day, retry_after)

    def clear_rate_limits(self) -> None:
        with self._lock:
            self._limits.clear()

    def set_no_fundamentals(self, patterns: Iterable[str]) -> None:
        """Symbols Finnhub knows but has no fundamentals for: profile2 ``{}``, metric without ``metric``."""
        with self._lock:
            self._no_fundamentals = tuple(p.upper() for p in patterns)

    @property
    def candles(self) -> bool:
        """Whether Finnhub /stock/candle answers (a paid plan) or says 403 (free)."""
        with self._lock:
            return self._candles

    @candles.setter
    def candles(self, on: bool) -> None:
        with self._lock:
            self._candles = bool(on)

    @property
    def finnhub_plan(self) -> str:
        """``"free"``: non-US listings get Finnhub's 403 "no access"; ``"paid"``: they are served."""
        with self._lock:
            return self._finnhub_plan

    @finnhub_plan.setter
    def finnhub_plan(self, plan: str) -> None:
        with self._lock:
            self._finnhub_plan = _check_plan(plan)

    def set_no_access_status(self, status: int) -> None:
        """The HTTP status of Finnhub's "no access" answer: 403, or the 401 also seen from the real API."""
        with self._lock:
            self._no_access_status = int(status)

    def release_hangs(self) -> None:
        """Let every request held by a "hang" fault go on and answer normally."""
        with self._cond:
            self._release_gen += 1
            self._cond.notify_all()

    def wait_hanging(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests are held by "hang" or "trickle" (tests sync on this, not sleeps)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._hanging >= count, timeout=timeout)

    def reset(self) -> None:
        """Forget counts, faults, error rate, outage and rate-limit windows, the mounted APIs' too (keys and latency stay)."""
        with self._cond:
            self._calls.clear()
            self._rate_limited = {name: 0 for name in PROVIDERS}
            self._faults.clear()
            self._error_rate = 0.0
            self._outage = None
            for limit in self._limits.values():
                limit.recent.clear()
                limit.day_count = 0
            self._max_in_flight = self._in_flight
            self._release_gen += 1
            self._cond.notify_all()
            mounted = list(self._mounts.values())
        for api in mounted:
            api.reset()

    # -- counters -----------------------------------------------------------

    def calls(self, provider: str | None = None, endpoint: str | None = None, symbol: str | None = None) -> int:
        """How many requests arrived, filtered by provider, endpoint and symbol.

        Endpoints: Finnhub paths without the prefix (``quote``, ``stock/profile2``,
        ``company-news``, ``stock/metric``, ``search``, ``stock/candle``) and Alpha
        Vantage functions (``GLOBAL_QUOTE``, ...).
        """
        symbol = _sym(symbol)
        with self._lock:
            return sum(
                1
                for call in self._calls
                if (provider is None or call.provider == provider)
                and (endpoint is None or call.endpoint == endpoint)
                and (symbol is None or call.symbol == symbol)
            )

    def wait_calls(self, count: int, *, provider: str | None = None, symbol: str | None = None,
                   timeout: float = 5.0) -> bool:
        """Block until ``count`` requests (filtered as :meth:`calls`) have arrived: tests sync on this, not sleeps.

        A request counts on arrival, before its latency or fault, so this also
        tells that a request is now held in flight by a latency.
        """
        symbol = _sym(symbol)
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(1 for call in self._calls
                            if (provider is None or call.provider == provider)
                            and (symbol is None or call.symbol == symbol)) >= count,
                timeout=timeout)

    def call_log(self) -> list[Call]:
        """Every call so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def rate_limited(self, provider: str | None = None) -> int:
        """How many calls got a rate-limit answer from :meth:`set_rate_limit` windows."""
        with self._lock:
            if provider is None:
                return sum(self._rate_limited.values())
            return self._rate_limited[provider]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at the same time since start or reset (concurrency proof)."""
        with self._lock:
            return self._max_in_flight

    # -- request handling (called from _Handler threads) ---------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _target(self, provider: str | None) -> str | None:
        """``provider`` checked against the two built-in APIs and the mounted ones."""
        with self._lock:
            if provider is not None and provider in self._mounts:
                return provider
        return _provider(provider)

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes | _Stream | _SlowHeaders]:
        """Route one request; returns (status, headers, body) or raises _Drop.

        The body is a :class:`_Stream` only for the "trickle" and "huge" faults, a
        :class:`_SlowHeaders` only for "trickle_headers".
        """
        split = urlsplit(raw_path)
        path = re.sub(r"/{2,}", "/", split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        with self._lock:
            api = next((m for m in self._mounts.values() if path == m.prefix or path.startswith(m.prefix + "/")),
                       None)
        if api is not None:
            return self._handle_mounted(api, Request(method, path[len(api.prefix):] or "/", query, headers, body))
        if path.startswith(FINNHUB_PREFIX + "/"):
            provider, endpoint = "finnhub", path[len(FINNHUB_PREFIX) + 1:].rstrip("/")
            symbol = query.get("symbol")
            key, key_in = _finnhub_key(query, headers)
        elif path.rstrip("/") == ALPHAVANTAGE_PATH:
            provider, endpoint = "alphavantage", query.get("function", "")
            symbol = query.get("symbol") or (query.get("tickers") or "").split(",")[0] or None
            key, key_in = query.get("apikey"), ("query" if "apikey" in query else None)
        else:
            return _json(404, {"error": "Not found"})
        if endpoint in ("search", "SYMBOL_SEARCH"):
            symbol = None
        symbol = _sym(symbol)
        safe = {k: v for k, v in query.items() if k not in ("token", "apikey")}

        with self._cond:
            self._calls.append(Call(provider, endpoint, symbol, safe, key_in, time.time()))
            self._cond.notify_all()  # wait_calls
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            fault = self._pick_fault(provider, symbol)
            latency = self._lookup(self._latency, provider, symbol) or 0.0
        try:
            self._sleep(latency)
            if fault is not None:
                answer = self._fault_answer(fault, provider, endpoint, symbol, query, key)
                if answer is not None:
                    return answer
            if method != "GET":
                return _json(405, {"error": "Method not allowed"})
            denied = self._check_key(provider, key)
            if denied is not None:
                return denied
            limited = self._check_limit(provider, key)
            if limited is not None:
                return limited
            if provider == "finnhub":
                return self._finnhub(endpoint, symbol, query)
            return self._alphavantage(endpoint, symbol, query)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle_mounted(self, api: MountedApi, request: Request) -> tuple[int, dict[str, str], bytes | _Stream]:
        """A mounted API's request, through the shared counts, latency and faults."""
        route = api.route(request)
        symbol = _sym(route.symbol)
        with self._cond:
            self._calls.append(Call(api.name, route.endpoint, symbol, dict(route.params), route.key_in, time.time()))
            self._cond.notify_all()  # wait_calls
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            fault = self._pick_fault(api.name, symbol)
            latency = self._lookup(self._latency, api.name, symbol) or 0.0
        try:
            self._sleep(latency)
            if fault is not None:
                answer = self._mounted_fault(fault, api, request, route)
                if answer is not None:
                    return answer
            return api.answer(request, route)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _mounted_fault(
        self, fault: _Fault, api: MountedApi, request: Request, route: Route
    ) -> tuple[int, dict[str, str], bytes | _Stream] | None:
        """Faults whose body is the API's own answer, or its own 429; the rest as for the built-in APIs."""
        kind = fault.kind
        if kind == "429":
            return api.too_many(request, route, fault.retry_after)
        if kind not in ("trickle", "huge", "badjson", "outofrange"):
            return self._fault_answer(fault, api.name, route.endpoint, route.symbol, request.query, None)
        status, headers, body = api.answer(request, route)
        if kind == "trickle":
            return status, headers, _Stream(self._trickle(body), len(body))
        if kind == "huge":
            return status, headers, _Stream(self._huge(body if body.lstrip().startswith(b"{") else b"{}", HUGE_BYTES))
        if kind == "badjson":
            return 200, headers, body[: max(1, len(body) // 2)]
        if status != 200:
            return status, headers, body
        return status, headers, json.dumps(api.out_of_range(json.loads(body), route, fault.variant)).encode()

    @staticmethod
    def _lookup(table: Mapping[tuple[str | None, str | None], Any], provider: str, symbol: str | None) -> Any:
        """The most specific entry: (provider, symbol), symbol, provider, global."""
        for key in _precedence(provider, symbol):
            if key in table:
                return table[key]
        return None

    def _pick_fault(self, provider: str, symbol: str | None) -> _Fault | None:
        """Outage, then a configured fault, then the error rate. Caller holds the lock."""
        if self._outage is not None:
            return _Fault(self._outage)
        for key in _precedence(provider, symbol):
            fault = self._faults.get(key)
            if fault is not None:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[key]
                return fault
        if self._error_rate > 0 and self._rng.random() < self._error_rate:
            return _Fault(self._rng.choice(self._error_faults))
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._cond:
            if self._cond.wait_for(lambda: self._stopping, timeout=seconds):
                raise _Drop

    def _hang(self) -> None:
        with self._cond:
            generation = self._release_gen
            self._hanging += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(
                    lambda: self._stopping or self._release_gen != generation, timeout=self.max_hang
                )
            finally:
                self._hanging -= 1
            if self._stopping:
                raise _Drop

    def _trickle(self, body: bytes) -> Iterable[bytes]:
        """``body`` a byte at a time, held like a hang: released or past ``max_hang``, the rest at once."""
        with self._cond:
            generation = self._release_gen
            self._hanging += 1
            self._cond.notify_all()
        try:
            deadline = time.monotonic() + self.max_hang
            for i in range(len(body)):
                yield body[i:i + 1]
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or self._release_gen != generation,
                                        timeout=TRICKLE_EVERY)
                    if self._stopping:
                        raise _Drop
                    rest = self._release_gen != generation or time.monotonic() >= deadline
                if rest:
                    yield body[i + 1:]
                    return
        finally:
            with self._cond:
                self._hanging -= 1

    @staticmethod
    def _huge(body: bytes, total: int) -> Iterable[bytes]:
        """``body`` (a JSON object) with a padding string making it ``total`` bytes, made as it is sent."""
        inner = body.strip()[1:-1].strip()
        head, tail = b"{" + inner + (b", " if inner else b"") + b'"padding": "', b'"}'
        yield head
        left = total - len(head) - len(tail)
        block = b"x" * 65536
        while left > 0:
            yield block[:left]
            left -= len(block)
        yield tail

    def _fault_answer(
        self, fault: _Fault, provider: str, endpoint: str, symbol: str | None, query: Mapping[str, str],
        key: str | None,
    ) -> tuple[int, dict[str, str], bytes | _Stream | _SlowHeaders] | None:
        kind = fault.kind
        if kind == "hang":
            self._hang()
            return None  # released: answer normally
        if kind in ("trickle", "trickle_headers", "huge"):
            if provider == "finnhub":
                status, headers, body = self._finnhub(endpoint, symbol, query)
            else:
                status, headers, body = self._alphavantage(endpoint, symbol, query)
            if kind == "trickle":
                return status, headers, _Stream(self._trickle(body), len(body))
            if kind == "trickle_headers":
                return status, headers, _SlowHeaders(body, self._trickle)
            if not body.lstrip().startswith(b"{"):
                body = b"{}"  # a list answer (news) cannot be padded and stay the same shape
            return status, headers, _Stream(self._huge(body, HUGE_BYTES))
        if kind == "reset":
            raise _Drop
        if kind in ("500", "502", "503"):
            return int(kind), {"Content-Type": "text/plain"}, f"{kind} Server Error".encode()
        if kind == "html":
            return 502, {"Content-Type": "text/html"}, HTML_502.encode()
        if kind == "wrongshape":
            return _json(200, [{"unexpected": "shape"}])
        if kind == "outofrange":
            if provider == "finnhub":
                status, headers, body = self._finnhub(endpoint, symbol, query)
            else:
                status, headers, body = self._alphavantage(endpoint, symbol, query)
            if status != 200:
                return status, headers, body
            return status, headers, json.dumps(_out_of_range(provider, endpoint, json.loads(body), fault.variant)).encode()
        if kind == "badjson":
            if provider == "finnhub":
                status, headers, body = self._finnhub(endpoint, symbol, query)
            else:
                status, headers, body = self._alphavantage(endpoint, symbol, query)
            return 200, headers, body[: max(1, len(body) // 2)]
        if kind == "429":
            if provider == "finnhub":
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return _json(429, FINNHUB_LIMIT, extra)
            return _json(200, {"Information": AV_BURST})
        raise AssertionError(kind)

    def _check_key(self, provider: str, key: str | None) -> tuple[int, dict[str, str], bytes] | None:
        with self._lock:
            expected = self._expected.get(provider)
        good = bool(key) and (expected is None or key == expected)
        if good:
            return None
        if provider == "finnhub":
            return _json(401, FINNHUB_BAD_KEY if key else FINNHUB_NO_KEY)
        return _json(200, {"Error Message": AV_BAD_KEY})

    def _check_limit(self, provider: str, key: str | None) -> tuple[int, dict[str, str], bytes] | None:
        now = time.monotonic()
        today = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d")
        with self._lock:
            limit = self._limits.get(provider)
            if limit is None:
                return None
            if limit.day != today:
                limit.day, limit.day_count = today, 0
            while limit.recent and limit.recent[0] <= now - 60:
                limit.recent.popleft()
            last_second = sum(1 for t in limit.recent if t > now - 1)
            window = None
            if limit.per_day is not None and limit.day_count >= limit.per_day:
                window = "day"
            elif limit.per_second is not None and last_second >= limit.per_second:
                window = "second"
            elif limit.per_minute is not None and len(limit.recent) >= limit.per_minute:
                window = "minute"
            if window is None:
                limit.recent.append(now)
                limit.day_count += 1
                return None
            self._rate_limited[provider] += 1
            retry_after = limit.retry_after
        if provider == "finnhub":
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return _json(429, FINNHUB_LIMIT, extra)
        if window == "day":
            with self._lock:
                style = self.av_daily_cap
            text = av.DAILY_CAP_TEXTS[style.removesuffix("-note")].format(key=key)
            return _json(200, {"Note" if style.endswith("-note") else "Information": text})
        if window == "second":
            return _json(200, {"Information": AV_BURST})
        return _json(200, {"Note": AV_LEGACY})

    def _is_unknown(self, symbol: str) -> bool:
        with self._lock:
            patterns = self._unknown
        return any(fnmatchcase(symbol, p) for p in patterns)

    # -- Finnhub ------------------------------------------------------------

    def _finnhub(self, endpoint: str, symbol: str | None, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        now = self._clock()
        market = self._market
        with self._lock:
            free, no_access = self._finnhub_plan == "free", self._no_access_status
        if free and endpoint in _FINNHUB_PER_SYMBOL and is_non_us(symbol):
            return _json(no_access, FINNHUB_NO_ACCESS)
        if endpoint == "search":
            hits = [h for h in market.search(query.get("q", "")) if not self._is_unknown(h["symbol"])]
            return _json(200, {"count": len(hits), "result": [
                {"description": h["name"].upper(), "displaySymbol": h["symbol"], "symbol": h["symbol"],
                 "type": h["type"]} for h in hits]})
        if endpoint == "stock/candle":
            with self._lock:
                allowed = self._candles
            if not allowed:
                return _json(403, FINNHUB_NO_ACCESS)
        if endpoint not in ("quote", "stock/profile2", "company-news", "stock/metric", "stock/candle"):
            return _json(404, {"error": "Not found"})
        if not symbol:
            return _json(422, {"error": "Missing symbol"})
        unknown = self._is_unknown(symbol)
        if endpoint == "quote":
            if unknown:
                return _json(200, {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0})
            q = market.quote(symbol, now)
            return _json(200, {"c": q.price, "d": q.change, "dp": q.change_percent, "h": q.high, "l": q.low,
                               "o": q.open, "pc": q.previous_close, "t": q.timestamp})
        with self._lock:
            bare = any(fnmatchcase(symbol, p) for p in self._no_fundamentals)
        if endpoint == "stock/profile2":
            if unknown or bare:
                return _json(200, {})
            p = market.profile(symbol, now)
            return _json(200, {
                "country": p.country, "currency": p.currency, "estimateCurrency": p.currency,
                "exchange": p.exchange, "finnhubIndustry": p.industry, "ipo": p.ipo,
                "logo": f"https://static.example.com/logo/{symbol}.png",
                "marketCapitalization": round((p.market_cap or 0) / 1e6, 4), "name": p.name,
                "phone": "", "shareOutstanding": round((p.shares_outstanding or 0) / 1e6, 6),
                "ticker": symbol, "weburl": p.weburl,
            })
        if endpoint == "company-news":
            if unknown:
                return _json(200, [])
            try:
                start = _day_start(query["from"])
                end = min(now, _day_start(query["to"]) + 86399)
            except (KeyError, ValueError):
                return _json(422, {"error": "Wrong from/to date format. Use YYYY-MM-DD."})
            news = market.news(symbol, start, end, limit=20)
            return _json(200, [
                {"category": "company", "datetime": int(_parse_iso(a.published_at)), "headline": a.headline,
                 "id": 1000 + i, "image": a.image or "", "related": symbol, "source": a.source,
                 "summary": a.summary, "url": a.url}
                for i, a in enumerate(news.articles)
            ])
        if endpoint == "stock/metric":
            if unknown:
                return _json(200, {"metric": {}, "metricType": "all", "series": {}})
            if bare:
                return _json(200, {"metricType": "all", "series": {}, "symbol": symbol})
            m = market.metrics(symbol, now)["metrics"]
            return _json(200, {"metric": {
                "52WeekHigh": m["52_week_high"], "52WeekLow": m["52_week_low"], "beta": m["beta"],
                "marketCapitalization": round(m["market_cap"] / 1e6, 4), "peTTM": m["pe_ratio"],
                "epsTTM": m["eps"], "dividendYieldIndicatedAnnual": m["dividend_yield"],
            }, "metricType": "all", "series": {"annual": {}, "quarterly": {}}, "symbol": symbol})
        # stock/candle, allowed
        if unknown:
            return _json(200, {"s": "no_data"})
        try:
            start, end = float(query["from"]), min(float(query["to"]), now)
        except (KeyError, ValueError):
            return _json(422, {"error": "Wrong from/to"})
        candles = market.candles_between(symbol, start, end)
        if not candles:
            return _json(200, {"s": "no_data"})
        return _json(200, {
            "c": [c.close for c in candles], "h": [c.high for c in candles], "l": [c.low for c in candles],
            "o": [c.open for c in candles], "s": "ok", "t": [int(_day_start(c.date)) for c in candles],
            "v": [c.volume for c in candles],
        })

    # -- Alpha Vantage --------------------------------------------------------

    def _alphavantage(self, function: str, symbol: str | None, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        now = self._clock()
        market = self._market
        if function == "SYMBOL_SEARCH":
            return _json(200, {"bestMatches": av.search_rows(market, query.get("keywords", ""), now, self._is_unknown)})
        if function not in ("GLOBAL_QUOTE", "OVERVIEW", "TIME_SERIES_DAILY", "NEWS_SENTIMENT"):
            return _json(200, {"Error Message": f"This API function ({function}) does not exist."})
        if function == "TIME_SERIES_DAILY" and query.get("outputsize", "compact") == "full":
            return _json(200, {"Information": AV_PREMIUM_FULL})
        if not symbol:
            return _json(200, {"Error Message": AV_INVALID_CALL.format(function=function)})
        ours = av.from_av(symbol)  # SAP.DEX is our SAP.DE; a Yahoo-style SAP.DE is unknown to Alpha Vantage
        unknown = ours is None or self._is_unknown(ours)
        ours = ours or symbol
        if function == "GLOBAL_QUOTE":
            if unknown:
                return _json(200, {"Global Quote": {}})
            q = market.quote(ours, now)
            day = market.session_day(now, ours)
            return _json(200, {"Global Quote": {
                "01. symbol": symbol, "02. open": f"{q.open:.4f}", "03. high": f"{q.high:.4f}",
                "04. low": f"{q.low:.4f}", "05. price": f"{q.price:.4f}",
                "06. volume": str(market.candle(ours, day).volume), "07. latest trading day": day.isoformat(),
                "08. previous close": f"{q.previous_close:.4f}", "09. change": f"{q.change:.4f}",
                "10. change percent": f"{q.change_percent:.4f}%",
            }})
        if function == "OVERVIEW":
            if unknown:
                return _json(200, {})
            p = market.profile(ours, now)
            m = market.metrics(ours, now)["metrics"]
            return _json(200, {
                "Symbol": symbol, "AssetType": "Common Stock", "Name": p.name,
                "Description": f"{p.name} is a company in the {p.industry} industry.",
                **av.overview_place(market.instrument(ours)),
                "Sector": (p.industry or "").upper(), "Industry": (p.industry or "").upper(),
                "OfficialSite": p.weburl, "MarketCapitalization": str(int(p.market_cap or 0)),
                "PERatio": str(m["pe_ratio"]), "EPS": str(m["eps"]),
                "DividendYield": str(round(m["dividend_yield"] / 100, 6)), "52WeekHigh": str(m["52_week_high"]),
                "52WeekLow": str(m["52_week_low"]), "Beta": str(m["beta"]),
                "SharesOutstanding": str(int(p.shares_outstanding or 0)),
            })
        if function == "TIME_SERIES_DAILY":
            if unknown:
                return _json(200, {"Error Message": AV_INVALID_CALL.format(function=function)})
            candles = market.history(ours, now, 100).candles
            venue = market.instrument(ours).venue
            return _json(200, {
                "Meta Data": {
                    "1. Information": "Daily Prices (open, high, low, close) and Volumes", "2. Symbol": symbol,
                    "3. Last Refreshed": candles[-1].date, "4. Output Size": "Compact",
                    "5. Time Zone": venue.timezone if venue is not None and venue.suffix else "US/Eastern",
                },
                "Time Series (Daily)": {
                    c.date: {"1. open": f"{c.open:.4f}", "2. high": f"{c.high:.4f}", "3. low": f"{c.low:.4f}",
                             "4. close": f"{c.close:.4f}", "5. volume": str(c.volume)}
                    for c in reversed(candles)
                },
            })
        # NEWS_SENTIMENT: several tickers are AND-ed; an unknown one makes the inputs invalid
        tickers = [av.from_av(t.strip().upper()) for t in (query.get("tickers") or symbol).split(",") if t.strip()]
        if any(t is None or self._is_unknown(t) for t in tickers):
            return _json(200, {"Information": AV_INVALID_INPUTS})
        with self._lock:
            quirks = self.av_news_quirks
        return _json(200, av.news(market, [t for t in tickers if t], query, now, quirks=quirks,
                                  invalid=AV_INVALID_INPUTS))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs behind a pooled session
    server: _Server
    timeout = 120  # an idle keep-alive client does not hold a thread forever
    # Headers and body leave in one segment: written separately, Nagle plus the
    # client's delayed ACK add 40 ms to every keep-alive request.
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        request_body = self.rfile.read(min(max(length, 0), 16 * 1024 * 1024)) if length else b""
        try:
            status, headers, body = self.server.fake._handle(method, self.path, self.headers, request_body)
        except _Drop:
            self._reset()
            return
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        if isinstance(body, _SlowHeaders):
            self.log_request(status)
            self._slow_headers(status, headers, body)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if isinstance(body, _Stream):
            self._stream(body)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, body: _Stream) -> None:
        """Send headers now, then each piece as it comes (flushed: wfile is buffered)."""
        chunked = body.length is None
        self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(body.length))))
        self.end_headers()
        try:
            for piece in body.chunks:
                if not piece:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except _Drop:
            self._reset()
        except OSError:
            self.close_connection = True  # the client gave up (it is meant to)

    def _slow_headers(self, status: int, headers: Mapping[str, str], answer: _SlowHeaders) -> None:
        """The status line and headers a byte at a time (flushed each), then the body at once."""
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(answer.body)}", "X-Fake-Padding: " + "x" * HEADER_PADDING]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            for piece in answer.trickle(head):
                if piece:
                    self.wfile.write(piece)
                    self.wfile.flush()
            self.wfile.write(answer.body)
            self.wfile.flush()
        except _Drop:
            self._reset()
        except OSError:
            self.close_connection = True  # the client gave up (it is meant to)

    def _reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): the client sees a reset, not an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("fake upstream: " + format, *args)


# Where each answer gets its bad value: (variant family, path) per (provider, endpoint). "number" takes
# the negative, huge and tiny variants; "unix", "date" and "avtime" are times for "future"; "text" is for "long".
_OUT_OF_RANGE_FIELDS: dict[tuple[str, str], tuple[tuple[str, tuple[Any, ...]], ...]] = {
    ("finnhub", "quote"): (("number", ("c",)), ("unix", ("t",))),
    ("finnhub", "stock/profile2"): (("number", ("marketCapitalization",)), ("date", ("ipo",)), ("text", ("name",))),
    ("finnhub", "company-news"): (("number", (0, "datetime")), ("unix", (0, "datetime")), ("text", (0, "headline"))),
    ("finnhub", "stock/metric"): (("number", ("metric", "52WeekHigh")),),
    ("finnhub", "stock/candle"): (("number", ("o", 0)), ("unix", ("t", -1))),
    ("finnhub", "search"): (("text", ("result", 0, "description")),),
    ("alphavantage", "GLOBAL_QUOTE"): (("number", ("Global Quote", "05. price")),
                                       ("date", ("Global Quote", "07. latest trading day"))),
    ("alphavantage", "OVERVIEW"): (("number", ("MarketCapitalization",)), ("text", ("Name",))),
    ("alphavantage", "TIME_SERIES_DAILY"): (("number", ("Time Series (Daily)", None, "1. open")),
                                            ("date", ("Time Series (Daily)", None))),
    ("alphavantage", "NEWS_SENTIMENT"): (("avtime", ("feed", 0, "time_published")), ("text", ("feed", 0, "title"))),
    ("alphavantage", "SYMBOL_SEARCH"): (("text", ("bestMatches", 0, "2. name")),),
}
_BAD_NUMBERS = {"negative": -5, "huge": 1e308, "tiny": 1e-320}
_YEAR_9999 = {"unix": 253402214400, "date": "9999-12-31", "avtime": "99991231T000000"}  # 9999-12-31


def _out_of_range(provider: str, endpoint: str, data: Any, variant: str) -> Any:
    """``data`` with one value out of range for ``variant``, where the answer has such a field.

    A path step None is "the newest entry" of Alpha Vantage's date-keyed series;
    renaming that key is how a bar gets a date in 9999.
    """
    for family, path in _OUT_OF_RANGE_FIELDS.get((provider, endpoint), ()):
        if family == "number" and variant in _BAD_NUMBERS:
            bad: Any = _BAD_NUMBERS[variant]
            value = str(bad) if provider == "alphavantage" else bad
        elif family in _YEAR_9999 and variant == "future":
            value = _YEAR_9999[family]
        elif family == "text" and variant == "long":
            value = "x" * 100_000
        else:
            continue
        try:
            *parents, last = path
            holder = data
            for step in parents:
                holder = holder[max(holder) if step is None else step]
            if last is None:  # rename the newest date key
                holder[value] = holder.pop(max(holder))
            else:
                holder[last] = value
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # an answer without that field (an empty list): sent as it is
        return data
    return data


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(obj).encode()


def _finnhub_key(query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    header = headers.get("X-Finnhub-Token")
    if header:
        return header, "header"
    if "token" in query:
        return query["token"], "query"
    return None, None


def _precedence(provider: str, symbol: str | None) -> tuple[tuple[str | None, str | None], ...]:
    return ((provider, symbol), (None, symbol), (provider, None), (None, None))


def _sym(symbol: str | None) -> str | None:
    return symbol.strip().upper() if symbol else None


def _provider(provider: str | None) -> str | None:
    if provider is not None and provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}")
    return provider


def _check_plan(plan: str) -> str:
    if plan not in FINNHUB_PLANS:
        raise ValueError(f"finnhub_plan must be one of {FINNHUB_PLANS}")
    return plan


def is_non_us(symbol: str | None) -> bool:
    """Whether ``symbol`` is a listing outside the US by its venue suffix (``SAP.DE``; not ``BRK.B``)."""
    return symbol is not None and symbol.upper().endswith(NON_US_SUFFIXES)


def _check_fault(fault: str) -> str:
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}")
    return fault


def _day_start(text: str) -> float:
    day = date.fromisoformat(text)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted, printing the base URL of every API to point stockcache at."""
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finnhub-key", default=None, help="the only Finnhub key accepted (default: any)")
    parser.add_argument("--alphavantage-key", default=None, help="the only Alpha Vantage key accepted")
    parser.add_argument("--candles", action="store_true", help="answer Finnhub /stock/candle (a paid plan)")
    parser.add_argument("--finnhub-plan", choices=FINNHUB_PLANS, default="free",
                        help="free: non-US listings get 403 'no access', as on the real free plan")
    parser.add_argument("--no-av-news-quirks", dest="av_news_quirks", action="store_false",
                        help="Alpha Vantage time_published always with seconds and without 'Z' (the real feed "
                             "sends both now and then)")
    parser.add_argument("--twelvedata-key", default=None, help="the only Twelve Data key accepted")
    parser.add_argument("--twelvedata-errors", choices=("real", "200"), default="real",
                        help="Twelve Data errors with their real HTTP status, or with HTTP 200")
    parser.add_argument("--twelvedata-per-minute", type=int, default=8, help="credits a minute (0: unlimited)")
    parser.add_argument("--twelvedata-per-day", type=int, default=800, help="credits a day (0: unlimited)")
    parser.add_argument("--twelvedata-plan", choices=("basic", "grow"), default="basic")
    parser.add_argument("--lse-currency", choices=("GBp", "GBP"), default="GBp",
                        help="how Twelve Data reports London prices")
    parser.add_argument("--coingecko-key", default=None, help="the only CoinGecko demo key accepted")
    parser.add_argument("--openfigi-key", default=None, help="the only OpenFIGI key accepted")
    parser.add_argument("--llm-key", default=None, help="the only bearer key the chat API accepts")
    parser.add_argument("--llm-latency", type=float, default=None, help="seconds per chat completion")
    parser.add_argument("--notify", action="store_true", help="also run the ntfy/webhook receiver")
    args = parser.parse_args(argv)
    fake = FakeUpstream(
        host=args.host, port=args.port, latency=args.latency, error_rate=args.error_rate, seed=args.seed,
        expected_keys={"finnhub": args.finnhub_key, "alphavantage": args.alphavantage_key}, candles=args.candles,
        finnhub_plan=args.finnhub_plan,
    )
    fake.av_news_quirks = args.av_news_quirks
    twelvedata = fake.api("twelvedata")
    twelvedata.expected_key, twelvedata.error_status = args.twelvedata_key, args.twelvedata_errors
    twelvedata.plan, twelvedata.lse_currency = args.twelvedata_plan, args.lse_currency
    twelvedata.set_limits(per_minute=args.twelvedata_per_minute or None, per_day=args.twelvedata_per_day or None)
    fake.api("coingecko").expected_key = args.coingecko_key
    fake.api("openfigi").expected_key = args.openfigi_key
    fake.api("openai").expected_key = args.llm_key
    if args.llm_latency is not None:
        fake.set_latency(args.llm_latency, provider="openai")
    receiver = NotifyReceiver() if args.notify else None
    fake.start()
    print(f"STOCKCACHE_FINNHUB_URL={fake.finnhub_url}", flush=True)
    print(f"STOCKCACHE_ALPHAVANTAGE_URL={fake.alphavantage_url}", flush=True)
    for name in fake.mounted():
        print(f"{fake.api(name).env_var}={fake.url(name)}", flush=True)
    if receiver is not None:
        receiver.start()
        print(f"NOTIFY_URL={receiver.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        if receiver is not None:
            receiver.stop()


if __name__ == "__main__":
    main()
