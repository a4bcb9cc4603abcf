"""A local notification receiver: what an ntfy server or a webhook endpoint sees.

A real HTTP server on loopback that records every POST: its path, headers and
body. ntfy deliveries are ``POST /<topic>`` with a text body and ``Title``,
``Priority`` and ``Tags`` headers; generic webhooks POST JSON
(:attr:`Delivery.json`). It answers like ntfy (200 with a JSON message
object) or, for a JSON ``Content-Type``, a webhook receiver (204), can be told to fail the
next N deliveries (HTTP 500, or a TCP reset), and lets a test wait for the
Nth delivery with a timeout, on a condition, never a sleep.

Run it alone: ``python -m tests.fakes.notify --port 9998``.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

FAILURES = ("500", "reset")


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got; ``answered`` is the status it sent (0 for a reset)."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def topic(self) -> str:
        return self.path.strip("/").split("?")[0]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    receiver: NotifyReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("notify receiver: connection from %s ended abruptly", client_address, exc_info=True)


class NotifyReceiver:
    """The receiver. Thread-safe; configure it while it runs.

    :meth:`deliveries` holds every POST, failed ones included (``answered``
    500 or 0); :meth:`wait_for` counts only successful ones unless told not to.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._cond = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._failures: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> NotifyReceiver:
        if self._server is not None:
            raise RuntimeError("already started")
        server = _Server((self._host, self._port), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="notify-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> NotifyReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL: ntfy topics are ``url + "/<topic>"``, webhooks any path below it."""
        if self._server is None:
            raise RuntimeError("not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, count: int, mode: str = "500") -> None:
        """Fail the next ``count`` deliveries with HTTP 500 or a TCP reset (added to any already queued)."""
        if mode not in FAILURES:
            raise ValueError(f"mode must be one of {FAILURES}")
        with self._cond:
            self._failures.extend([mode] * count)

    def deliveries(self, *, successful: bool = False) -> list[Delivery]:
        with self._cond:
            return [d for d in self._deliveries if not successful or 200 <= d.answered < 300]

    def clear(self) -> None:
        with self._cond:
            self._deliveries.clear()
            self._failures.clear()

    def wait_for(self, count: int, timeout: float = 5.0, *, successful: bool = True) -> list[Delivery]:
        """Block until ``count`` deliveries arrived (successful ones by default); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [d for d in self._deliveries if not successful or 200 <= d.answered < 300]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"waited {timeout} s for {count} deliveries, got {len(got)}")
                self._cond.wait(left)

    def _receive(self, path: str, headers: Mapping[str, str], body: bytes) -> str | None:
        """Record one POST; returns the failure to act out, if any."""
        with self._cond:
            failure = self._failures.pop(0) if self._failures else None
            answered = 0 if failure == "reset" else 500 if failure == "500" else 204 if _is_json(headers) else 200
            self._deliveries.append(Delivery(path, dict(headers), body, time.time(), answered))
            self._cond.notify_all()
        return failure


def _is_json(headers: Mapping[str, str]) -> bool:
    """A webhook delivery (JSON, answered 204) rather than an ntfy one (text, answered 200)."""
    return any(k.lower() == "content-type" and "json" in v.lower() for k, v in headers.items())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(min(max(length, 0), 1024 * 1024)) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        failure = self.server.receiver._receive(self.path, headers, body)
        if failure == "reset":
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass
            return
        if failure == "500":
            self._send(500, b'{"code":50001,"http":500,"error":"internal server error"}')
            return
        if _is_json(headers):
            self._send(204, b"")
            return
        topic = self.path.strip("/").split("?")[0]
        message = {"id": f"m{len(self.server.receiver.deliveries())}", "time": int(time.time()), "event": "message",
                   "topic": topic, "message": body.decode("utf-8", "replace")}
        for name in ("Title", "Priority", "Tags"):
            value = self.headers.get(name)
            if value:
                message[name.lower()] = value.split(",") if name == "Tags" else value
        self._send(200, json.dumps(message).encode())

    def do_GET(self) -> None:  # noqa: N802
        self._send(405, b'{"code":40501,"http":405,"error":"method not allowed"}')

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("notify receiver: " + format, *args)


def main(argv: list[str] | None = None) -> None:
    """Receive until interrupted, printing each delivery."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.notify", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with NotifyReceiver(port=args.port) as receiver:
        print(f"NOTIFY_URL={receiver.url}", flush=True)
        seen = 0
        try:
            while True:
                got = receiver.wait_for(seen + 1, timeout=3600, successful=False)
                for delivery in got[seen:]:
                    print(f"POST {delivery.path} {delivery.answered} {delivery.text[:200]!r}", flush=True)
                seen = len(got)
        except (KeyboardInterrupt, AssertionError):
            pass


if __name__ == "__main__":
    main()
