"""Upstream HTTP, once: the pooled requests-futures session, one deadline per exchange, bounded answers.

Everything that touches the network for a provider is here, and so is the
translation of ``requests``/``urllib3`` errors into ours (with ``raise ... from``,
type names only: their texts can carry a URL with a key). The router hands a
:class:`~stockcache.upstream.providers.base.UpstreamRequest` to
:meth:`Transport.send` and gets back a future of an :class:`Answer` (status,
headers, the whole body) or one of our errors.

One deadline bounds every attempt at a provider, from the moment it asks for
a slot in the provider's lane (waiting for a free connection, smoothing,
connect, send, headers, body): requests' timeout is per socket read, so an
upstream trickling its headers or body a byte at a time would otherwise hold a
pool thread for minutes. The session's adapter registers each request's socket
with one watchdog thread, which shuts the socket down when the deadline passes
(a blocked ``recv`` returns at once); requests' per-read timeout stays the
inner bound.

Each provider has its own lane of ``workers`` concurrent requests; the pool
has ``workers`` threads per provider, so a provider that holds all of its
connections for the full timeout delays only its own requests (they wait in
its lane, never longer than their deadline) and never takes a thread another
provider needs. A cap below the pool size would have isolated providers too,
but would also slow a large batch to one provider for everyone; threads are
started only when used.

Tests may inject any object with the :class:`Transport` interface (or a
``requests``-like ``session``, as the replay benchmark does), besides
answering real HTTP with ``responses`` or the fake upstream.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests_futures.sessions import FuturesSession

from ..errors import UpstreamError, UpstreamTimeout
from .providers.base import UpstreamRequest, redact_secrets

log = logging.getLogger(__name__)

# The largest upstream answer read. Real ones are a few KB (100 days of history is
# about 20 KB); anything near this is a captive portal or a mistyped URL, and on a
# Raspberry Pi every one of ``workers`` concurrent requests may hold this much RAM.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024
# close() waits this long past the upstream timeout for running requests (their
# callbacks write to the cache, which closes right after).
CLOSE_MARGIN = 1.0


@dataclass(frozen=True)
class Answer:
    """One upstream answer, read whole: what a provider's ``parse`` gets."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class ProviderDown(UpstreamError):
    """No connection could be made at all (refused, unresolvable): the provider is at fault, not a symbol."""


class Transport:
    """Sends upstream requests on a pooled session, each within one deadline, one lane per provider. Thread-safe.

    ``session`` may be injected: a FuturesSession, or an in-process stand-in
    (tests, the replay benchmark) whose ``request(method, url, delay=..., **kw)``
    answers with an object carrying ``status_code``, ``headers`` and
    ``content``, or with a future of one.
    """

    def __init__(self, lanes: Iterable[str], *, workers: int = 32, timeout: float = 10.0,
                 session: Any = None) -> None:
        self._timeout = timeout
        self._lanes = {name: _Lane(workers) for name in lanes}
        self._lane_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._session = session or _pooled_session(workers * max(1, len(self._lanes)), self._watchdog)
        self._closing = threading.Event()
        # Requests sent whose callback has not finished yet; close() waits for them.
        self._running: set[Future[Any]] = set()
        self._idle = threading.Condition()
        _redact_urllib3_logs()

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    # -- lanes -----------------------------------------------------------------------------

    def enter_lane(self, name: str, deadline: float, start: Callable[[], bool],
                   expired: Callable[[], None]) -> bool:
        """Take a slot in ``name``'s lane (True: go ahead), or queue for one.

        When queued, ``start()`` runs once a slot frees (on the freeing thread)
        and returns whether it used it, or ``expired()`` runs at ``deadline`` (on
        the watchdog's thread) if no slot came in time; the caller must
        :meth:`leave_lane` after every exchange it started.
        """
        waiting = _Waiting(name, deadline, start, expired)
        with self._lane_lock:
            lane = self._lanes.get(name)
            if lane is None or lane.running < lane.size:
                if lane is not None:
                    lane.running += 1
                return True
            lane.waiting.append(waiting)
        waiting.timer = self._watchdog.call_at(deadline, lambda: self._lane_expired(waiting))
        return False

    def leave_lane(self, name: str) -> None:
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
            if not self._closing.is_set() and time.monotonic() < waiting.deadline:
                try:
                    if waiting.start():
                        return
                except Exception:
                    log.exception("starting a queued upstream request failed")
            else:
                waiting.expired()
            # that attempt did not use the slot: offer it to the next

    def _lane_expired(self, waiting: _Waiting) -> None:
        with self._lane_lock:
            lane = self._lanes.get(waiting.name)
            if lane is None or waiting not in lane.waiting:
                return  # it got its slot (or close() took it) just now
            lane.waiting.remove(waiting)
        waiting.expired()

    def pool(self) -> dict[str, dict[str, int]]:
        """Each provider's lane: requests ``in_flight`` of ``size``, and how many are ``waiting``. No I/O."""
        with self._lane_lock:
            return {name: {"in_flight": lane.running, "size": lane.size, "waiting": len(lane.waiting)}
                    for name, lane in self._lanes.items()}

    # -- sending ----------------------------------------------------------------------------

    def send(self, name: str, request: UpstreamRequest, *, delay: float, deadline: float,
             done: Callable[[Future[Answer]], None]) -> None:
        """Send ``request`` after ``delay`` seconds, within ``deadline``; ``done(future)`` runs once it ends.

        The future holds the :class:`Answer`, or raises UpstreamTimeout /
        UpstreamError (ProviderDown when no connection could be made). It is
        cancelled, never sent, when the transport closes first. RuntimeError
        if the pool is already shut down.
        """
        if not isinstance(self._session, requests.Session):
            self._send_to_standin(name, request, delay, done)
            return
        future = self._session.executor.submit(self._exchange, name, request, delay, deadline)  # type: ignore[attr-defined]
        with self._idle:
            self._running.add(future)

        def finished(f: Future[Answer]) -> None:
            try:
                done(f)
            finally:
                with self._idle:
                    self._running.discard(f)
                    if not self._running:
                        self._idle.notify_all()

        future.add_done_callback(finished)

    def _exchange(self, name: str, request: UpstreamRequest, delay: float, deadline: float) -> Answer:
        # On a pool thread: smoothing a per-second limit waits here, the caller does not.
        if delay > 0 and self._closing.wait(delay):
            raise UpstreamError("stockcache is shutting down.", provider=name)
        if time.monotonic() >= deadline:
            raise UpstreamTimeout(f"waited past the {self._timeout:g} s deadline to keep a per-second budget.",
                                  provider=name)
        kwargs = _request_kwargs(request, timeout=_ExchangeTimeout(deadline))
        with self._translated(name):
            response = requests.Session.request(self._session, request.method, request.url, **kwargs)
        return self._answer(name, response)

    def _send_to_standin(self, name: str, request: UpstreamRequest, delay: float,
                         done: Callable[[Future[Answer]], None]) -> None:
        """An injected in-process stand-in (the replay benchmark, tests): answered inline, or by a future.

        It is told the smoothing ``delay`` instead of being made to wait: its clock is not the wall clock.
        """
        answer: Future[Answer] = Future()

        def settle(get: Callable[[], Any]) -> None:
            try:
                with self._translated(name):
                    response = get()
                answer.set_result(self._answer(name, response))
            except BaseException as exc:
                answer.set_exception(exc)
            done(answer)

        kwargs = _request_kwargs(request, timeout=self._timeout)
        try:
            with self._translated(name):
                got = self._session.request(request.method, request.url, delay=delay, **kwargs)
        except BaseException as exc:
            answer.set_exception(exc)
            done(answer)
            return
        if isinstance(got, Future):
            got.add_done_callback(lambda f: settle(f.result))
        else:
            settle(lambda: got)

    @contextlib.contextmanager
    def _translated(self, name: str) -> Iterator[None]:
        """requests' errors as ours, once, here (type names only: their texts can carry a URL with a key)."""
        try:
            yield
        except requests.Timeout as exc:
            raise UpstreamTimeout(f"{name} did not answer within {self._timeout:g} s.", provider=name) from exc
        except requests.RequestException as exc:
            cls = ProviderDown if _connect_failed(exc) else UpstreamError
            raise cls(f"could not reach {name} ({type(exc).__name__}).", provider=name) from exc

    def _answer(self, name: str, response: Any) -> Answer:
        try:
            body = _read_body(response, name, self._timeout)
            return Answer(response.status_code, response.headers, body)
        finally:
            _close(response)

    def close(self) -> None:
        """Stop: queued attempts expire, unsent requests are cancelled, running ones get the timeout. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lane_lock:
            waiting = [item for lane in self._lanes.values() for item in lane.waiting]
            for lane in self._lanes.values():
                lane.waiting.clear()
        for item in waiting:
            item.cancel_timer()
            item.expired()
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
        executor = getattr(self._session, "executor", None)
        if executor is not None:
            executor.shutdown(wait=drained, cancel_futures=True)
        self._watchdog.close()


def _request_kwargs(request: UpstreamRequest, *, timeout: Any) -> dict[str, Any]:
    # stream=True: the body is read by _read_body, bounded in time and size, which requests would not do.
    kwargs: dict[str, Any] = {"params": request.params, "headers": request.headers, "timeout": timeout,
                              "allow_redirects": False, "stream": True}
    if request.json is not None:
        kwargs["json"] = request.json
    return kwargs


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
    """One attempt waiting for a slot in ``name``'s lane; its deadline covers the wait and the whole exchange."""

    name: str
    deadline: float  # time.monotonic()
    start: Callable[[], bool]
    expired: Callable[[], None]
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
