"""``stockcache serve`` as a process: one access line per request, none lost when it stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_log_has_every_request_line_after_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKCACHE_") and k not in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "REDIS_URL")}
    env["STOCKCACHE_REFRESH"] = "off"
    log = tmp_path / "stderr.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "run.py", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until it listens (a condition with a deadline, not a fixed sleep)
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.02)
        with requests.Session() as session:
            statuses = [session.get(f"http://127.0.0.1:{port}/api/quote/AAPL", timeout=5).status_code
                        for _ in range(50)]
        assert statuses == [401] * 50
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = log.read_text().splitlines()
    assert sum(" stockcache.access: GET /api/quote/<symbol> 401 " in line for line in lines) == 50
    assert lines[-1].endswith("stockcache.web.server: stopped cleanly")
