"""A full disk, for real: ``stockcache serve`` on a 2 MB tmpfs, filled and emptied by the test.

Why a real tmpfs rather than ``PRAGMA max_page_count``: the fault is a failed
COMMIT (no room to append to the WAL), which killed sqlitedict's worker for
good. max_page_count refuses a statement that needs a new database page
instead, an error the old worker survived, and it is a setting of one
connection, so it would vanish the moment the tier opened a new one. A full
filesystem fails every connection, old and new, until space returns, and
fails exactly where a full SD card does.

The service runs in a user and mount namespace of its own (``unshare``), so
mounting the tmpfs needs no root outside it; the test reaches the mount
through ``/proc/<pid>/root``. Where namespaces are not allowed the tests are
skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Disk-Full-Passw0rd-7c1d"
TMPFS_SIZE = "2m"

pytestmark = pytest.mark.timeout(120)


def _unshare() -> str | None:
    tool = shutil.which("unshare")
    if tool is None:
        return None
    probe = subprocess.run([tool, "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k stockcache-probe /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k stockcache-probe /tmp"],
                           capture_output=True, timeout=30)
    return tool if probe.returncode == 0 else None


UNSHARE = _unshare()
needs_namespaces = pytest.mark.skipif(
    UNSHARE is None, reason="needs unshare(1) with user and mount namespaces, to mount a small tmpfs")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    data: Path  # the data folder as the test sees it (through /proc/<pid>/root)
    log: Path
    token: str = ""

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def fill_disk(self) -> None:
        """Write zeros until the tmpfs has not one byte left."""
        with open(self.data / "filler", "wb", buffering=0) as filler:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        filler.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == 28, exc  # ENOSPC

    def free_disk(self) -> None:
        (self.data / "filler").unlink()

    def cached_keys(self, scratch: Path) -> set[str]:
        """The keys committed to cache.sqlite, as any reader would see them.

        SQLite resolves symbolic links in a path, and /proc/<pid>/root is one
        that only means something to the kernel, so the file and its WAL are
        copied out and opened here. SQLite replays the copied WAL up to its
        last whole commit, so a copy taken during a write is still consistent.
        """
        scratch.mkdir(exist_ok=True)
        for suffix in ("", "-wal"):
            source = self.data / f"cache.sqlite{suffix}"
            target = scratch / f"cache.sqlite{suffix}"
            if source.exists():
                shutil.copyfile(source, target)
            else:
                target.unlink(missing_ok=True)
        (scratch / "cache.sqlite-shm").unlink(missing_ok=True)
        conn = sqlite3.connect(scratch / "cache.sqlite", timeout=5)
        try:
            return {row[0] for row in conn.execute("SELECT key FROM cache")}
        finally:
            conn.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    assert UNSHARE is not None
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKCACHE_") and k not in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "REDIS_URL")}
    env.update(STOCKCACHE_REFRESH="off", PASSWORD=PASSWORD, DATA=str(mount_point), PY=sys.executable,
               PORT=str(port))
    script = (
        'set -e; mount -t tmpfs -o size=' + TMPFS_SIZE + ',mode=0700 stockcache-test "$DATA"; '
        'printf "%s\\n" "$PASSWORD" | "$PY" -m stockcache users add alice --data-dir "$DATA"; '
        'exec "$PY" -m stockcache serve --port "$PORT" --data-dir "$DATA"'
    )
    log = tmp_path / "stderr.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", script],
                                   cwd=ROOT, env=env, stdout=out, stderr=out)
    live = Service(process, f"http://127.0.0.1:{port}", Path(f"/proc/{process.pid}/root{mount_point}"), log)
    try:
        deadline = time.monotonic() + 60
        while True:  # poll the external process until it listens, with a deadline
            assert process.poll() is None, log.read_text()
            try:
                if live.request("GET", "/healthz").status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
                time.sleep(0.05)
        answer = live.request("POST", "/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        live.token = answer.json()["access_token"]
        yield live
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _quotes(service: Service, symbols: list[str]) -> requests.Response:
    return service.request("POST", "/api/batch-quotes", json={"tickers": symbols})


@needs_namespaces
def test_disk_full_cache_tier_recovers_by_itself_when_space_returns(service: Service, tmp_path: Path) -> None:
    scratch = tmp_path / "copy"
    assert _quotes(service, ["AAPL"]).status_code == 200
    deadline = time.monotonic() + 10
    while "quote:AAPL" not in service.cached_keys(scratch):  # written behind the answer: polled
        assert time.monotonic() < deadline
        time.sleep(0.05)

    service.fill_disk()
    # Quotes are still served (from upstream and memory) while cache writes fail; the
    # failure shows in /healthz once the tier has met it (writes are queued, so polled).
    deadline = time.monotonic() + 30
    batch = 0
    while True:
        batch += 1
        symbols = [f"F{batch}X{i}" for i in range(40)]
        answer = _quotes(service, symbols)
        assert answer.status_code == 200 and sorted(answer.json()["quotes"]) == sorted(symbols)
        health = service.request("GET", "/healthz").json()
        if health["status"] == "degraded":
            break
        assert time.monotonic() < deadline, "a full disk never showed in /healthz"
    assert any("sqlite" in reason for reason in health["reasons"]), health
    assert not {key for key in service.cached_keys(scratch) if key.startswith("quote:F")}  # nothing got through

    service.free_disk()
    # No restart: a new quote reaches cache.sqlite again (the tier retries every few seconds).
    deadline = time.monotonic() + 30
    attempt = 0
    while True:
        attempt += 1
        symbol = f"BACK{attempt}"
        assert _quotes(service, [symbol]).status_code == 200
        if f"quote:{symbol}" in service.cached_keys(scratch):
            break
        assert time.monotonic() < deadline, "the SQLite tier did not recover:\n" + service.log.read_text()[-3000:]
        time.sleep(0.2)
    assert service.request("GET", "/api/quote/AAPL").status_code == 200
    service.process.send_signal(signal.SIGTERM)  # a clean stop writes every pending log line
    assert service.process.wait(timeout=30) == 0
    log = service.log.read_text()
    assert "SQLite cache writes failed (database or disk is full)" in log
    assert "SQLite cache writes work again" in log
    assert "Traceback" not in log


@needs_namespaces
def test_disk_full_store_write_is_503_storage_full_and_works_again_after(service: Service) -> None:
    first = service.request("POST", "/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 100})
    assert first.status_code == 201, first.text

    service.fill_disk()
    refused = service.request("POST", "/api/portfolio", json={"symbol": "MSFT", "shares": 2, "cost_basis": 300})
    assert refused.status_code == 503, refused.text
    assert refused.headers["Content-Type"].startswith("application/json")
    error = refused.json()["error"]
    assert error["code"] == "storage_full" and "disk is full" in error["message"]
    assert int(refused.headers["Retry-After"]) > 0
    for change in (lambda: service.request("PUT", f"/api/portfolio/{first.json()['id']}", json={"shares": 5}),
                   lambda: service.request("POST", "/api/watchlist", json={"symbol": "MSFT"})):
        answer = change()
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "storage_full", answer.text
    # Reads still work, and nothing of the refused writes is there.
    positions = service.request("GET", "/api/portfolio").json()["positions"]
    assert [(p["symbol"], p["shares"]) for p in positions] == [("AAPL", 1.0)]
    assert service.request("GET", "/api/watchlist").json()["items"] == []

    service.free_disk()
    again = service.request("POST", "/api/portfolio", json={"symbol": "MSFT", "shares": 2, "cost_basis": 300})
    assert again.status_code == 201, again.text
    assert len(service.request("GET", "/api/portfolio").json()["positions"]) == 2
