"""Serving the app on waitress, with limits chosen for a small box that may face the internet.

waitress settings and why:

- ``threads`` (8): request handlers; upstream work runs on the fetcher's own pool,
  so a few threads keep many slow-upstream requests in flight.
- ``connection_limit`` (1000): waitress's default of 100 lets 100 idle keep-alive
  or slow-header clients lock everyone else out. Connections cost little here
  (waitress is event-driven; no thread is held until a request is complete), so
  the limit is set by file descriptors, not threads.
- ``channel_timeout`` (30 s): an idle or trickling connection is dropped after this.
- ``max_request_body_size``: waitress refuses bodies past 4x our JSON limit outright;
  the app answers JSON 413 for anything over ``STOCKCACHE_MAX_REQUEST_BODY`` (1 MB).
- ``asyncore_use_poll``: select() cannot watch more than 1024 sockets.
- ``clear_untrusted_proxy_headers``: X-Forwarded-* from clients are not believed.

What waitress refuses itself, before the app sees the request (a body past
``max_request_body_size``, headers past 64 KiB, a malformed request line or
chunk), is answered in our JSON error shape too (:class:`_JsonErrorTask`),
not waitress's text/plain page, with the security headers the app's answers
carry, and the connection is closed.

:class:`_StrictParser` refuses at once (400, or 413 for a chunk past the body
limit) what waitress would serve or wait on:

- ``Content-Length`` together with ``Transfer-Encoding``, and ``Transfer-Encoding``
  in an HTTP/1.0 request. waitress goes by one framing where a proxy in front
  may go by the other, and kept the connection open: the rest of the body
  then ran as a request of its own (request smuggling; RFC 9112 section 6.1
  says close at least).
- A chunk size past the body limit (``ffffffffffffffff``): waitress counts
  only the bytes that arrived, so it waited for the chunk until ``channel_timeout``.
- A bare LF or CR in the request head: waitress looks for CR LF CR LF to end
  the head, so ``GET / HTTP/1.1\\n\\n`` waited until ``channel_timeout``
  (a complete head with one was refused already).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.receiver import ChunkedReceiver
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import BadRequest, RequestEntityTooLarge

from ..errors import ConfigError, for_status
from ..runtime import Runtime
from ..settings import Settings
from .app import API_CSP, SECURITY_HEADERS, AccessLog, AccessSink, access_log, create_app
from .errors import error_body
from .fastpath import ANSWERED, Answer, FastReads

log = logging.getLogger(__name__)


class _JsonErrorTask(ErrorTask):
    """Writes waitress's own errors as ``{"error": {"code", "message"}}``, never echoing the request."""

    def execute(self) -> None:
        error = self.request.error
        status = int(getattr(error, "code", 400))
        reason = str(getattr(error, "reason", "Bad Request"))
        if status == 501:  # an unsupported Transfer-Encoding: the client's mistake, not a server failure
            status, reason = 400, "Bad Request"
        body = error_body(for_status(status, f"{reason}."))
        self.status = f"{status} {reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                      *SECURITY_HEADERS, API_CSP])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


# A LF without its CR, or a CR followed by anything but LF (a CR at the very end may be waiting for its LF).
_BARE_LINE_END = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")


class _StrictParser(HTTPRequestParser):
    """waitress's request parser, refusing ambiguous framing and what can never complete (module docstring)."""

    body_rcv: Any
    completed: bool
    error: Any
    # The answer made for this request on the I/O thread (:class:`_IoThreadAnswers`), if any.
    answer: Answer | None = None

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.body_rcv is None and not self.completed:
            # Still in the head: look at what just arrived (and the byte before it), so a
            # head trickled in byte by byte is not scanned over and over.
            if _BARE_LINE_END.search(self.header_plus, max(0, len(self.header_plus) - len(data) - 1)):
                self.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for its 431: a request to answer
                self.error = BadRequest("Bare CR or LF found in HTTP message")
                self.completed = True
        return consumed

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # waitress has taken Transfer-Encoding out of the headers of an HTTP/1.1 request; in others it stays.
        has_transfer_encoding = self.chunked or "TRANSFER_ENCODING" in self.headers
        if has_transfer_encoding and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length with Transfer-Encoding")
        if "TRANSFER_ENCODING" in self.headers:
            raise ParsingError("Transfer-Encoding in a request that is not HTTP/1.1")
        if self.chunked:
            self.body_rcv = _BoundedChunkedReceiver(self.body_rcv.getbuf(), self.adj.max_request_body_size)


class _BoundedChunkedReceiver(ChunkedReceiver):
    """A chunked body whose declared chunk sizes are checked against the body limit as they arrive."""

    error: Any

    def __init__(self, buf: Any, limit: int) -> None:
        super().__init__(buf)
        self._limit = limit

    def received(self, s: bytes) -> int:
        consumed: int = super().received(s)
        declared = len(self.buf) + self.chunk_remainder  # the body so far plus what the current chunk still owes
        if declared > self._limit and self.error is None:
            # Past 64 bits no client means it (and proxies refuse it too): a malformed chunk, not a big one.
            self.error = (BadRequest("Invalid chunk size") if self.chunk_remainder >= 2**63
                          else RequestEntityTooLarge(f"exceeds max_body of {self._limit}"))
            self.all_chunks_received = True
        return consumed


class _JsonTask(WSGITask):
    """waitress's WSGI task, handing FastReads the answer made on the I/O thread, if there is one."""

    request: _StrictParser

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        if self.request.answer is not None:
            environ[ANSWERED] = self.request.answer
        return environ


class _JsonChannel(HTTPChannel):
    """waitress's channel with our JSON error task, answers made on the I/O thread, and no busy wait.

    waitress's ``writable()`` is true whenever the channel holds unsent output.
    While a task is still running and that output is under ``send_bytes``, its
    ``handle_write`` sends nothing, but poll() reports the socket writable at
    once: the main loop spins, taking the GIL from the worker threads, until
    the task ends. Under 8 or more busy connections that spin was most of the
    server's CPU (CPU per cached quote doubled from 1 to 8 connections). Here
    the channel is not writable in exactly that state; the task's end pulls
    the trigger (``HTTPChannel.service``), which wakes the loop to flush.
    """

    error_task_class = _JsonErrorTask
    task_class = _JsonTask
    parser_class = _StrictParser
    requests: list[Any]
    # Set by _IoThreadAnswers when the request just queued has its answer made: serve it here.
    answer_here = False

    def writable(self) -> bool:
        if (self.requests and self.total_outbufs_len < self.adj.send_bytes
                and not self.will_close and not self.close_when_flushed):
            return False  # handle_write would send nothing now
        return bool(super().writable())

    def handle_read(self) -> None:
        super().handle_read()
        # After received() (which holds the requests lock while it queues), as a worker would.
        while self.answer_here:
            self.answer_here = False
            self.service()


class _IoThreadAnswers:
    """A listener's ``add_task``: a cached read is answered on the I/O thread, the rest go to the workers.

    Why: waitress hands every request to a worker thread and the worker's end
    back to the I/O thread. For a cached quote that hand-off is most of the
    cost: with 8 or more busy connections the threads queue for the GIL at
    every hand-off and system call (about 50 voluntary context switches per
    request were counted for the bare Bottle app at 8 connections), and CPU
    per request doubled or tripled from 1 connection. A read FastReads can
    answer from memory, for a token verified before (``answer_request``: no
    I/O, no lock held for long), takes tens of microseconds, less than the
    hand-off, so it is answered where it was read, as an event loop would.

    Only a request the I/O thread itself queues, alone on its connection, with
    little output waiting, is answered here (waitress may block a worker until
    output drains, which on this thread would block everything); anything else,
    and whatever FastReads cannot answer, goes to the workers as before.
    """

    def __init__(self, dispatch: Any, fast: FastReads, loop_thread: Callable[[], int | None]) -> None:
        self._dispatch = dispatch
        self._fast = fast
        self._loop_thread = loop_thread

    def __call__(self, channel: Any) -> None:
        if (len(channel.requests) == 1 and channel.total_outbufs_len < _IO_THREAD_OUTPUT_LIMIT
                and threading.get_ident() == self._loop_thread()):
            request = channel.requests[0]
            if request.error is None and not request.expect_continue:
                try:
                    request.answer = self._fast.answer_request(request.command, request.path, request.query,
                                                               request.headers, request.get_body_stream())
                except Exception:  # noqa: BLE001 - a worker's full path will answer (and log) it
                    request.answer = None
                if request.answer is not None:
                    channel.answer_here = True
                    return
        self._dispatch(channel)


# Output already waiting on a connection past which its next request goes to a worker (see above).
_IO_THREAD_OUTPUT_LIMIT = 1 << 20


def waitress_options(settings: Settings) -> dict[str, Any]:
    return {
        "threads": settings.threads,
        "connection_limit": settings.connection_limit,
        "channel_timeout": settings.channel_timeout,
        "cleanup_interval": min(30, max(1, settings.channel_timeout // 2)),
        "max_request_body_size": settings.max_request_body * 4,
        "max_request_header_size": 64 * 1024,
        "asyncore_use_poll": True,
        "clear_untrusted_proxy_headers": True,
        # Behind a reverse proxy every client would share its address (and one client's failed
        # logins would lock out all): believe X-Forwarded-For from that proxy only.
        **({"trusted_proxy": settings.trusted_proxy, "trusted_proxy_headers": {"x-forwarded-for"},
            "trusted_proxy_count": 1} if settings.trusted_proxy else {}),
        "ident": "stockcache",
        "backlog": 2048,
    }


class Server:
    """One waitress server for a Runtime; ``run()`` blocks until ``stop()``. Thread-safe stop.

    ``stop()`` is graceful: the listening socket closes at once, requests already
    received finish (up to ``grace`` seconds) and their answers are written,
    then the runtime flushes and closes the cache and store.
    """

    def __init__(self, runtime: Runtime, *, host: str | None = None, port: int | None = None,
                 access_sink: AccessSink | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.app = create_app(runtime)
        fast = FastReads(self.app, runtime.service.readthrough, runtime.auth, max_body=settings.max_request_body,
                         max_batch=settings.max_batch, max_items=settings.memory_max_items)
        self._server = create_server(
            AccessLog(fast, runtime.metrics, sink=access_sink), host=host or settings.host,
            port=settings.port if port is None else port, **waitress_options(settings),
        )
        self._runner: threading.Thread | None = None
        listeners = {id(x): x for x in [*self._server._map.values(), self._server] if isinstance(x, BaseWSGIServer)}
        for listener in listeners.values():
            listener.channel_class = _JsonChannel  # type: ignore[misc]
            listener.add_task = _IoThreadAnswers(listener.add_task, fast, self._runner_ident)  # type: ignore[method-assign]
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def _runner_ident(self) -> int | None:
        return self._runner.ident if self._runner is not None else None

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` has been asked for."""
        return self._stopping.is_set()

    def in_flight(self) -> int:
        """Requests received and not yet fully answered (read from the thread in ``run()``)."""
        return sum(1 for ch in list(self._server._map.values())
                   if getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0))

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        self._runner = threading.current_thread()
        server = self._server
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
            self._drain(grace=10.0)
        finally:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            wasyncore.close_all(server._map)
            self.runtime.close()
            self._stopped.set()

    def _drain(self, grace: float) -> None:
        """Stop accepting; keep the loop turning until in-flight requests are answered."""
        server = self._server
        server.accepting = False
        server.del_channel()
        server.socket.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.in_flight():
                break
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    def stop(self, wait: float | None = 15.0) -> None:
        """Ask run() to finish (safe from any thread or a signal handler).

        From any thread but the one in run(), waits up to ``wait`` seconds until
        the runtime is closed, so a restart on the same data dir starts clean.
        """
        self._stopping.set()
        try:
            self._server.pull_trigger()
        except OSError:
            pass
        if wait and threading.current_thread() is not self._runner:
            self._stopped.wait(wait)

    def start_in_thread(self) -> threading.Thread:
        """Run in a daemon thread (tests, embedding); returns once the socket is listening."""
        thread = threading.Thread(target=self.run, name="stockcache-server", daemon=True)
        thread.start()
        return thread


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class BackgroundHandler(logging.Handler):
    """Writes ``target``'s records from a thread of its own, in batches. Thread-safe.

    Why: a StreamHandler writes and flushes on the calling thread, one
    ``write(2)`` per record. For the access log that is a system call on every
    request thread, and every call that releases the GIL under load costs
    thread switches (about a third of the switches stockcache made per cached
    quote). Here the calling thread only freezes the message and appends the
    record to a deque; a writer thread wakes every ``interval`` seconds and
    writes all pending lines at once. Lines keep the time they were logged at
    and their order.

    A record at WARNING or above is written at once, on the calling thread,
    after everything pending, so a problem reaches the log even if the process
    dies right after. ``flush()`` writes everything pending; ``close()`` (also
    called by ``logging.shutdown`` at exit) flushes and stops the thread, and
    records emitted after it are written directly. So a clean stop loses no
    line; a crash loses at most ``interval`` seconds of info lines.
    """

    def __init__(self, target: logging.Handler, *, interval: float = 0.1, max_pending: int = 10_000) -> None:
        super().__init__()
        self.target = target
        self._interval = interval
        self._max_pending = max_pending
        self._pending: deque[logging.LogRecord] = deque()
        self._write_lock = threading.Lock()  # one writer at a time, so batches keep their order
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._run, name="stockcache-log-writer", daemon=True)
        self._writer.start()

    def access(self, method: str, rule: str, status: str, elapsed_ms: float, cache: str) -> None:
        """An access-log line (the ``stockcache.access`` logger at INFO), as cheap as a deque append.

        The request thread only appends the fields and the time; the writer
        thread formats the line (``_format_access``), so building a LogRecord
        (about a tenth of a cached quote's time) stays off the request path.
        """
        if access_log.isEnabledFor(logging.INFO):
            self._pending.append((time.time(), method, rule, status, elapsed_ms, cache))  # type: ignore[arg-type]
            if len(self._pending) >= self._max_pending:
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Freeze what the line will say now: its arguments may change after the call returns.
            if record.args:
                record.msg, record.args = record.getMessage(), None
            if record.exc_info and not record.exc_text:
                record.exc_text = (self.target.formatter or logging.Formatter()).formatException(record.exc_info)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(record)
        if record.levelno >= logging.WARNING or self._closing.is_set() or len(self._pending) >= self._max_pending:
            self.flush()

    def flush(self) -> None:
        """Write every pending record now, on the calling thread."""
        with self._write_lock:
            items: list[Any] = []
            while self._pending:
                items.append(self._pending.popleft())
            if not items:
                return
            target = self.target
            if type(target) is logging.StreamHandler:
                self._write_batch(target, items)
            else:
                for item in items:
                    target.handle(item if isinstance(item, logging.LogRecord) else _access_record(item))

    @staticmethod
    def _write_batch(target: logging.StreamHandler[Any], items: list[Any]) -> None:
        """StreamHandler.emit for many records and access lines: one write and one flush."""
        plain = (target.formatter is not None and target.formatter._fmt == LOG_FORMAT
                 and not target.filters and target.level <= logging.INFO)
        lines = []
        for item in items:
            if not isinstance(item, logging.LogRecord):
                if plain:
                    lines.append(_format_access(item) + target.terminator)
                    continue
                item = _access_record(item)
            if item.levelno >= target.level and target.filter(item):
                lines.append(target.format(item) + target.terminator)
        if not lines:
            return
        target.acquire()
        try:
            target.stream.write("".join(lines))
            target.flush()
        except Exception:
            target.handleError(items[0] if isinstance(items[0], logging.LogRecord) else _access_record(items[0]))
        finally:
            target.release()

    def _run(self) -> None:
        while not self._closing.wait(self._interval):
            self.flush()
        self.flush()

    def close(self) -> None:
        """Flush, stop the writer thread and close the target."""
        self._closing.set()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self.flush()
        self.target.close()
        super().close()


def _access_record(fields: tuple[Any, ...]) -> logging.LogRecord:
    """The LogRecord an access line would have had (for targets other than a plain stream)."""
    created, method, rule, status, elapsed_ms, cache = fields
    record = access_log.makeRecord(access_log.name, logging.INFO, "(access)", 0, "%s %s %s %.1fms %s",
                                   (method, rule, status, elapsed_ms, cache), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    return record


@functools.lru_cache(maxsize=8)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def _format_access(fields: tuple[Any, ...]) -> str:
    """An access line exactly as LOG_FORMAT would print it, without a LogRecord."""
    created, method, rule, status, elapsed_ms, cache = fields
    second = int(created)
    return (f"{_local_second(second)},{int((created - second) * 1000):03d} INFO {access_log.name}: "
            f"{method} {rule} {status} {elapsed_ms:.1f}ms {cache}")


def configure_logging(level: str) -> BackgroundHandler | None:
    """Log to stderr through a :class:`BackgroundHandler`, unless logging is configured already.

    Returns the handler, for the caller to close when it stops serving.
    """
    handler = None
    if not logging.getLogger().handlers:  # as logging.basicConfig: leave an existing configuration alone
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        handler = BackgroundHandler(stream)
        logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # The access log writes a record per request. The format above uses none of
    # the caller's frame, thread or process, so skip collecting them (the
    # logging HOWTO's "Optimization" settings): about a third of a record's cost.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return handler


def serve(settings: Settings) -> int:
    """Build the runtime, print where it listens, serve until SIGTERM or Ctrl-C."""
    handler = configure_logging(settings.log_level)
    try:
        return _serve(settings, handler)
    finally:
        if handler is not None:
            handler.close()  # the last lines are written before serve() returns


def check_listen(host: str, port: int) -> None:
    """ConfigError naming the setting unless ``host:port`` can be listened on.

    Checked before anything is built, so a bad address leaves nothing behind
    in the data folder. (The port can still be taken before waitress binds
    it; :func:`_serve` cleans up after that too.)
    """
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"STOCKCACHE_HOST / --host: cannot listen on {host!r}: {reason}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
        try:
            sock.bind(address)
        except OSError as exc:
            setting = "STOCKCACHE_HOST / --host" if exc.errno == errno.EADDRNOTAVAIL else "STOCKCACHE_PORT / --port"
            raise ConfigError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _serve(settings: Settings, handler: BackgroundHandler | None) -> int:
    check_listen(settings.host, settings.port)
    runtime = Runtime(settings)
    try:
        server = Server(runtime, access_sink=handler.access if handler is not None else None)
    except (OSError, ValueError) as exc:  # waitress says ValueError for an address it cannot resolve
        runtime.abort()
        if handler is not None:
            handler.flush()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"STOCKCACHE_HOST / STOCKCACHE_PORT (--host / --port): cannot listen on "
                          f"{settings.host}:{settings.port}: {reason}") from None

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if server.stopping:
            _force_exit(signum, server.in_flight(), handler)
            return
        busy = server.in_flight()
        if busy:
            log.info("received %s, shutting down: finishing %d request(s) in flight (%s again stops at once)",
                     name, busy, "Ctrl-C" if signum == signal.SIGINT else name)
        else:
            log.info("received %s, shutting down", name)
        server.stop(wait=None)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if handler is not None:
        handler.flush()  # start-up lines before the banner, which is printed straight to stderr
    _banner(runtime, server)
    server.run()
    log.info("stopped cleanly")
    return 0


def _force_exit(signum: int, in_flight: int, handler: BackgroundHandler | None) -> None:
    """The second Ctrl-C (or SIGTERM): exit now, without the drain or the upstream calls still on the wire.

    Done from a thread of its own: the signal interrupted the main thread
    anywhere, possibly inside a log handler's lock, which the line below needs.
    What was committed to SQLite stays, as after a crash; what is lost is the
    answers in flight and the last minute of KPI counts.
    """

    def stop_now() -> None:
        log.warning("received %s again: stopping now, abandoning %d request(s) in flight",
                    signal.Signals(signum).name, in_flight)
        if handler is not None:
            handler.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    threading.Thread(target=stop_now, name="stockcache-force-stop", daemon=True).start()


def _banner(runtime: Runtime, server: Server) -> None:
    from ..store import first_run_hint

    settings = runtime.settings
    lines = [f"stockcache listening on {server.url}  (data: {settings.data_dir.resolve()})"]
    if settings.demo:
        from ..upstream.providers import market_key_names

        lines.append(f"DEMO MODE: none of {', '.join(market_key_names())} is set; serving offline demo data "
                     '(market data answers say "source": "demo").')
    else:
        lines.append("upstream sources: " + ", ".join(runtime.service.source_names))
    if runtime.store.count_users() == 0:
        lines.append(first_run_hint(settings.data_dir))
    lines.append(f"Try: curl {server.url}/healthz")
    print("\n".join(lines), file=sys.stderr, flush=True)
