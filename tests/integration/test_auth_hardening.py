"""Logins under load and forged-but-signed JWTs, over HTTP against the real service (real argon2).

- A flood of logins must not hold every waitress thread: logins beyond a small
  admission limit are refused at once (429, Retry-After), so /healthz and the
  other routes keep their threads.
- Only failed logins count against a username: six correct logins at once all
  succeed. Concurrent wrong guesses still stop at the limit, because attempts
  in flight beyond what the limit allows wait for the verdicts before them.
- A JWT signed with the service's own key whose ``sub`` is past SQLite's
  integer range is just an unknown user: 401, never a 500.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
import requests
from argon2 import PasswordHasher

from stockcache.auth import SECRET_FILENAME
from tests.integration.conftest import Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)
PASSWORD = "alice's right password"


@pytest.fixture
def live(tmp_path, upstream):
    """The service with argon2's real parameters: these tests are about what hashing costs."""
    service = start_service(upstream_settings(tmp_path, upstream), hasher=PasswordHasher())
    try:
        yield service
    finally:
        service.stop()


def _login(url: str, password: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(f"{url}/api/auth/login", json={"username": "alice", "password": password},
                                      timeout=60)


def _at_once(url: str, passwords: list[str]) -> list[requests.Response]:
    """One login per password, all sent together (a barrier releases them)."""
    barrier = threading.Barrier(len(passwords))

    def attempt(password: str) -> requests.Response:
        with requests.Session() as session:
            session.get(f"{url}/healthz", timeout=30)  # connected before the barrier
            barrier.wait(timeout=30)
            return _login(url, password, session)

    with ThreadPoolExecutor(len(passwords)) as pool:
        return list(pool.map(attempt, passwords))


def test_login_six_concurrent_correct_logins_all_succeed(live: Live) -> None:
    live.add_user("alice", PASSWORD)
    answers = _at_once(live.url, [PASSWORD] * 6)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert all(a.json()["token_type"] == "bearer" for a in answers)
    assert _login(live.url, PASSWORD).status_code == 200  # and none of them was counted as a failure


def test_login_concurrent_wrong_guesses_still_stop_at_the_limit(live: Live) -> None:
    live.add_user("alice", PASSWORD)
    limit = live.runtime.auth.limiter.per_user
    answers = _at_once(live.url, [f"guess {n}" for n in range(12)])
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {401: limit, 429: 12 - limit}, [a.text for a in answers]
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers if a.status_code == 429)
    locked = _login(live.url, PASSWORD)
    assert locked.status_code == 429 and "failed logins" in locked.json()["error"]["message"]


# The flood runs in a process of its own: client threads in this one would compete with the
# in-process server for the GIL and slow /healthz down by themselves.
FLOOD = """
import json, sys, threading, requests
url, password, clients, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
stop, counts, lock = threading.Event(), {}, threading.Lock()
def flood(user):
    with requests.Session() as session:
        while not stop.is_set():
            status = session.post(url + "/api/auth/login", json={"username": user, "password": password},
                                  timeout=60).status_code
            with lock:
                counts[status] = counts.get(status, 0) + 1
                if sum(counts.values()) == clients:
                    print("flooding", flush=True)
threads = [threading.Thread(target=flood, args=(users[n % len(users)],)) for n in range(clients)]
for thread in threads:
    thread.start()
sys.stdin.read()  # until the test closes it
stop.set()
for thread in threads:
    thread.join()
print(json.dumps(counts), flush=True)
"""


def test_login_flood_keeps_healthz_fast(live: Live) -> None:
    # Correct logins of 16 users, two clients each: no username nears its failure limit, so
    # only a bound on logins as such keeps them from taking every waitress thread.
    password_hash = live.runtime.auth.hash_password(PASSWORD)
    users = [f"user{n}" for n in range(16)]
    for name in users:
        live.runtime.store.create_user(name, password_hash)
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, live.url, PASSWORD, "32", ",".join(users)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdin is not None
        assert flood.stdout.readline().strip() == "flooding"  # 32 answers back: every client is in
        timings = []
        for _ in range(10):
            started = time.monotonic()
            health = requests.get(f"{live.url}/healthz", timeout=30)  # a fresh connection each time
            timings.append(time.monotonic() - started)
            assert health.status_code == 200
        flood.stdin.close()
        seen = {int(k): v for k, v in json.loads(flood.stdout.readline()).items()}
        assert flood.wait(timeout=60) == 0
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert max(timings) < 1.0, timings
    assert set(seen) <= {200, 429} and seen.get(200, 0) > 0, seen  # refused at once, never a 5xx or a hang


@pytest.mark.parametrize("sub", ["9999999999999999999", str(2**63), str(2**63 - 1)])
def test_jwt_with_a_sub_past_any_user_id_is_401(live: Live, sub: str) -> None:
    live.add_user("alice", PASSWORD)
    secret = bytes.fromhex((Path(live.runtime.settings.data_dir) / SECRET_FILENAME).read_text().strip())
    now = int(time.time())
    token = jwt.encode({"sub": sub, "name": "alice", "adm": True, "iat": now, "exp": now + 600}, secret,
                       algorithm="HS256")
    for path in ("/api/me", "/api/portfolio", "/api/quote/AAPL"):
        answer = live.api.get(path, token=token)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
