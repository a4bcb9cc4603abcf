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
not waitress's text/plain page.
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from ..errors import ConfigError
from ..runtime import Runtime
from ..settings import Settings
from .app import AccessLog, create_app

log = logging.getLogger(__name__)


# waitress's own refusals mapped to our stable codes (anything else it refuses is a bad request).
_WAITRESS_CODES = {413: "payload_too_large", 431: "invalid_request", 500: "internal"}


class _JsonErrorTask(ErrorTask):
    """Writes waitress's own errors as ``{"error": {"code", "message"}}``, never echoing the request."""

    def execute(self) -> None:
        error = self.request.error
        status = int(getattr(error, "code", 400))
        reason = str(getattr(error, "reason", "Bad Request"))
        if status == 501:  # an unsupported Transfer-Encoding: the client's mistake, not a server failure
            status, reason = 400, "Bad Request"
        body = json.dumps({"error": {"code": _WAITRESS_CODES.get(status, "invalid_request"),
                                     "message": f"{reason}."}}).encode()
        self.status = f"{status} {reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


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

    def __init__(self, runtime: Runtime, *, host: str | None = None, port: int | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.app = create_app(runtime)
        self._server = create_server(
            AccessLog(self.app, runtime.metrics), host=host or settings.host,
            port=settings.port if port is None else port, **waitress_options(settings),
        )
        for listener in list(self._server._map.values()) + [self._server]:
            if isinstance(listener, BaseWSGIServer):
                listener.channel_class = _JsonChannel  # type: ignore[misc]
        self._runner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()

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
            busy = [ch for ch in list(server._map.values())
                    if getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0)]
            if not busy:
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
            records = []
            while self._pending:
                records.append(self._pending.popleft())
            if not records:
                return
            target = self.target
            if type(target) is logging.StreamHandler:
                self._write_batch(target, records)
            else:
                for record in records:
                    target.handle(record)

    @staticmethod
    def _write_batch(target: logging.StreamHandler[Any], records: list[logging.LogRecord]) -> None:
        """StreamHandler.emit for many records: one write and one flush."""
        lines = [target.format(r) + target.terminator for r in records
                 if r.levelno >= target.level and target.filter(r)]
        if not lines:
            return
        target.acquire()
        try:
            target.stream.write("".join(lines))
            target.flush()
        except Exception:
            target.handleError(records[0])
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
        server = Server(runtime)
    except (OSError, ValueError) as exc:  # waitress says ValueError for an address it cannot resolve
        runtime.abort()
        if handler is not None:
            handler.flush()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"STOCKCACHE_HOST / STOCKCACHE_PORT (--host / --port): cannot listen on "
                          f"{settings.host}:{settings.port}: {reason}") from None

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        server.stop(wait=None)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if handler is not None:
        handler.flush()  # start-up lines before the banner, which is printed straight to stderr
    _banner(runtime, server)
    server.run()
    log.info("stopped cleanly")
    return 0


def _banner(runtime: Runtime, server: Server) -> None:
    from ..store import first_run_hint

    settings = runtime.settings
    lines = [f"stockcache listening on {server.url}  (data: {settings.data_dir.resolve()})"]
    if settings.demo:
        lines.append("DEMO MODE: no FINNHUB_API_KEY or ALPHAVANTAGE_API_KEY set; serving offline demo data "
                     '(every answer says "source": "demo").')
    else:
        lines.append("upstream sources: " + ", ".join(runtime.service.source_names))
    if runtime.store.count_users() == 0:
        lines.append(first_run_hint(settings.data_dir))
    lines.append(f"Try: curl {server.url}/healthz")
    print("\n".join(lines), file=sys.stderr, flush=True)
