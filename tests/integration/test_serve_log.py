"""``stockcache serve`` as a process: one access line per request, none lost when it stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
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


def test_serve_second_ctrl_c_stops_at_once_while_a_request_is_in_flight(tmp_path: Path) -> None:
    from bench.fake_upstream import FakeUpstream

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKCACHE_") and k not in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "REDIS_URL")}
    env.update(STOCKCACHE_REFRESH="off", STOCKCACHE_DATA_DIR=str(data))
    cli = [sys.executable, "-m", "stockcache"]
    password = "correct horse battery staple"
    assert subprocess.run([*cli, "users", "add", "admin", "--admin"], input=password + "\n", text=True,
                          cwd=ROOT, env=env, capture_output=True, timeout=60).returncode == 0
    token = subprocess.run([*cli, "tokens", "create", "admin"], text=True, cwd=ROOT, env=env,
                           capture_output=True, timeout=60).stdout.strip()
    assert token.startswith("sc_")

    with FakeUpstream() as upstream:
        upstream.set_latency(120, symbol="AAPL")  # far past any wait below: only a forced stop ends it
        env.update(FINNHUB_API_KEY="TESTKEY_finnhub_9f8e7d6c", STOCKCACHE_FINNHUB_URL=upstream.finnhub_url,
                   STOCKCACHE_FX_URL=upstream.url("frankfurter"), STOCKCACHE_UPSTREAM_TIMEOUT="120")
        port = _free_port()
        log = tmp_path / "stderr.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([*cli, "serve", "--port", str(port)], cwd=ROOT, env=env,
                                       stdout=out, stderr=out)
        base = f"http://127.0.0.1:{port}"
        answers: list[object] = []
        try:
            deadline = time.monotonic() + 30
            while True:  # poll the external process until it listens, with a deadline
                assert process.poll() is None, log.read_text()
                try:
                    if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.02)

            def ask() -> None:
                try:
                    answers.append(requests.get(f"{base}/api/quote/AAPL", timeout=60,
                                                headers={"Authorization": f"Bearer {token}"}))
                except requests.RequestException as exc:
                    answers.append(exc)

            client = threading.Thread(target=ask, daemon=True)
            client.start()
            assert upstream.wait_calls(1, symbol="AAPL", timeout=30), "the quote never reached the upstream"

            process.send_signal(signal.SIGINT)
            # The first Ctrl-C drains: the listening socket closes, the request in flight is waited for.
            deadline = time.monotonic() + 30
            while "received SIGINT, shutting down" not in log.read_text():  # an external process: poll
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            assert process.poll() is None and client.is_alive()
            assert "1 request(s) in flight (Ctrl-C again stops at once)" in log.read_text()

            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            code = process.wait(timeout=10)
            assert time.monotonic() - started < 5
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        client.join(timeout=10)
    text = log.read_text()
    assert code == 128 + signal.SIGINT, text
    assert "received SIGINT again: stopping now, abandoning 1 request(s) in flight" in text.splitlines()[-1]
    assert len(answers) == 1 and isinstance(answers[0], requests.ConnectionError)
