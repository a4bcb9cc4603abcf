"""Connection pressure: slow and idle clients must not lock a normal client out.

300 slowloris clients trickle their request a byte at a time (headers, or a
body after complete headers) and 300 keep-alive clients sit idle after one
request; meanwhile a normal client on a fresh connection is answered within
1 s. The waitress limits that make this hold are chosen and explained in
``stockcache.web.server`` (``waitress_options``).
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from stockcache.settings import Settings
from tests.integration.conftest import Live, start_service

pytestmark = pytest.mark.timeout(60)

SLOW = 300
IDLE = 300
NORMAL_LIMIT = 1.0  # seconds a normal request may take under pressure


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """Both ends of every connection live in this process: ~1300 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def svc(tmp_path) -> Iterator[Live]:
    live = start_service(Settings(data_dir=tmp_path / "data", refresh=False, port=0))
    try:
        yield live
    finally:
        live.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Trickler:
    """Sends each slow client's request one byte at a time, round-robin, until stopped."""

    def __init__(self, socks: list[socket.socket], payloads: list[bytes]) -> None:
        self._socks, self._payloads = socks, payloads
        self._sent = [0] * len(socks)
        self._stop = threading.Event()
        self.rounds = 0
        self.round_done = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Trickler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, sock in enumerate(self._socks):
                payload, sent = self._payloads[i], self._sent[i]
                if sent < len(payload) - 1:  # never the last byte: the request stays incomplete
                    try:
                        sock.send(payload[sent:sent + 1])
                    except OSError:
                        continue
                    self._sent[i] = sent + 1
            with self.round_done:
                self.rounds += 1
                self.round_done.notify_all()
            self._stop.wait(0.02)  # pacing: a slow client, not a synchronisation

    def wait_rounds(self, n: int, timeout: float = 20.0) -> bool:
        with self.round_done:
            return self.round_done.wait_for(lambda: self.rounds >= n, timeout=timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (headers and Content-Length body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        body += chunk
    return head + b"\r\n\r\n" + body


def timed_get(url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = requests.get(url, timeout=10, **kwargs)  # a fresh connection every time
    return answer, time.monotonic() - started


def test_connections_slow_and_idle_clients_do_not_lock_out_a_normal_client(svc):
    port = svc.server.port
    user = svc.add_user("alice")
    slow: list[socket.socket] = []
    idle: list[socket.socket] = []
    trickler = None
    try:
        header = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nUser-Agent: " + b"x" * 200 + b"\r\n\r\n"
        body = (b"POST /api/watchlist HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
                b"Content-Length: 300\r\n\r\n" + b"{" + b" " * 298 + b"}")
        payloads = []
        for i in range(SLOW):
            sock = connect(port)
            if i % 2:  # a slow body: headers at once, then the body trickles
                sock.sendall(body[:body.index(b"\r\n\r\n") + 4])
                payloads.append(body[body.index(b"\r\n\r\n") + 4:])
            else:
                payloads.append(header)
            slow.append(sock)
        trickler = Trickler(slow, payloads).start()

        for _ in range(IDLE):  # one answered request each, then the connection stays open and silent
            sock = connect(port)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
            assert read_answer(sock).startswith(b"HTTP/1.1 200 OK")
            idle.append(sock)
        assert trickler.wait_rounds(20)

        for _ in range(5):
            answer, elapsed = timed_get(svc.url + "/healthz")
            assert answer.status_code == 200 and elapsed < NORMAL_LIMIT, elapsed
            answer, elapsed = timed_get(svc.url + "/api/quote/AAPL",
                                        headers={"Authorization": f"Bearer {user.token}"})
            assert answer.status_code == 200 and elapsed < NORMAL_LIMIT, elapsed
        # The idle keep-alive clients can still use their connections.
        for sock in idle[:10]:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
            assert read_answer(sock).startswith(b"HTTP/1.1 200 OK")
    finally:
        if trickler is not None:
            trickler.stop()
        for sock in slow + idle:
            sock.close()


def test_connections_idle_clients_are_dropped_after_the_channel_timeout(tmp_path):
    live = start_service(Settings(data_dir=tmp_path / "data", refresh=False, port=0, channel_timeout=1))
    socks: list[socket.socket] = []
    try:
        for i in range(50):
            sock = connect(live.server.port)
            sock.sendall(b"GET /heal" if i % 2 else b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
            socks.append(sock)
        deadline = time.monotonic() + 10
        still_open = 0
        for sock in socks:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                while sock.recv(65536):  # the answer to a complete request, then EOF once dropped
                    pass
            except TimeoutError:
                still_open += 1
            except OSError:
                pass  # reset: dropped too
        assert still_open == 0, f"{still_open} connections still open after the channel timeout"
        assert requests.get(live.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()
        live.stop()
