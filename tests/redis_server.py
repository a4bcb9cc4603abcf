"""A real redis-server for tests: a free loopback port, its own temp dir, stopped at the end.

``./scripts/test`` installs Debian's redis-server when it is missing. Without it
these helpers raise, so the Redis tests fail loudly instead of being skipped.

The server runs with ``KEYS`` renamed away, so any code path that still used
KEYS instead of SCAN would fail the tests.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process; ``start()``, ``kill()`` (SIGKILL), ``start()`` again on the same port."""

    def __init__(self) -> None:
        if not os.path.exists(BINARY):
            raise RuntimeError(
                f"redis-server not found ({BINARY}); ./scripts/test installs it "
                "(apt-get install redis-server). The Redis tests never skip.")
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stockcache-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> RedisServer:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._proc = subprocess.Popen(
            [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
             "--rename-command", "KEYS", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:  # poll the condition "it answers PING" against a deadline
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self._proc.poll() is not None:
                        raise RuntimeError(f"redis-server exited at start (port {self.port})") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not answer within 10 s") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would; data is lost (no persistence)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: RedisServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> RedisServer:
    """One server for the whole test run, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            server = RedisServer().start()
            atexit.register(server.stop)
            _shared = server
        return _shared


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The shared server's URL, flushed before the test."""
    server = shared_server()
    client = server.client()
    try:
        client.flushall()
    finally:
        client.close()
    yield server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, which it may kill and restart."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
