"""Security over real HTTP: auth bypasses, user isolation, admin routes, brute force, secrets, file modes.

Routes are enumerated from the running app, so a route added later is covered
without touching this file: every non-public route refuses every bad token,
and every admin route refuses a plain user.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from argon2 import PasswordHasher

from bench.fake_upstream import FakeUpstream
from stockcache.auth import SECRET_FILENAME, Authenticator, load_or_create_secret
from stockcache.runtime import Runtime
from stockcache.web.plugins import ApiPlugin
from stockcache.web.server import Server
from tests.integration.conftest import (
    AV_KEY,
    FINNHUB_KEY,
    Api,
    Live,
    start_service,
    upstream_settings,
)

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]  # the HS512 forgery

PARAM_RE = re.compile(r"<([^:>]+)(?::[^>]*)?>")
SAMPLE = {"symbol": "AAPL", "position_id": "1", "id": "1", "alert_id": "1"}
ADMIN_RULES = {("GET", "/api/cache/stats"), ("DELETE", "/api/cache"), ("GET", "/metrics")}


def start_fast_login_service(settings: Any) -> Live:
    """The service with a cheap argon2 setting: login limiting is tested over HTTP, not argon2's cost."""
    runtime = Runtime(settings, janitor_interval=None)
    runtime.auth = Authenticator(
        runtime.store, secret=load_or_create_secret(settings.data_dir / SECRET_FILENAME),
        jwt_ttl=settings.jwt_ttl, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    server = Server(runtime, host="127.0.0.1", port=0)
    server.start_in_thread()
    return Live(runtime, server, server.url, Api(server.url))


@pytest.fixture
def fast(tmp_path, upstream) -> Any:
    live = start_fast_login_service(upstream_settings(tmp_path, upstream))
    try:
        yield live
    finally:
        live.stop()


def quick_user(live: Live, name: str, *, admin: bool = False, password: str | None = None) -> tuple[Api, int]:
    """A user and a client holding a fresh JWT (issued directly; logging in is tested on its own)."""
    auth = live.runtime.auth
    user = live.runtime.store.create_user(
        name, auth.hash_password(password) if password else "not-a-password-hash", is_admin=admin)
    return live.api.as_user(auth.issue_jwt(user.id, user.username, user.is_admin)), user.id


def routes(live: Live) -> list[tuple[str, str, str]]:
    """(method, concrete path, auth level) for every route the app serves through ApiPlugin.

    Routes that skip ApiPlugin (the drop-in provider APIs) authenticate on their
    own and answer in the provider's shape; they are tested separately below.
    """
    out = []
    for route in live.server.app.routes:
        if ApiPlugin in route.skiplist:
            continue
        path = PARAM_RE.sub(lambda m: SAMPLE.get(m.group(1), "x"), route.rule)
        out.append((route.method, path, route.config.get("auth", "user")))
    return out


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id: int, name: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user_id), "name": name, "adm": False, "iat": now, "exp": now + 3600, "jti": "t", **changes}


def secret_of(live: Live) -> bytes:
    return bytes.fromhex((live.runtime.settings.data_dir / SECRET_FILENAME).read_text().strip())


def bad_tokens(live: Live) -> dict[str, str]:
    """Bearer values that must all be refused, named for the attack they stand for."""
    auth, store = live.runtime.auth, live.runtime.store
    victim = store.create_user("victim", "not-a-password-hash", is_admin=True)
    key = secret_of(live)
    good = auth.issue_jwt(victim.id, victim.username, True)
    head, sig = good.split(".")[0], good.split(".")[2]
    removed = store.create_user("removed", "not-a-password-hash")
    removed_token = auth.issue_jwt(removed.id, removed.username, False)
    store.delete_user("removed")
    store.create_user("removed", "not-a-password-hash")  # the name comes back; the old token must not
    api_token, record = auth.create_api_token("victim", "to revoke")
    assert auth.authenticate_token(api_token).username == "victim"
    auth.revoke_api_token(record.id)
    live_api_token, _ = auth.create_api_token("victim", "live")
    me = claims(victim.id, "victim", adm=True)
    return {
        "expired": jwt.encode(claims(victim.id, "victim", iat=int(time.time()) - 7200,
                                     exp=int(time.time()) - 3600), key, algorithm="HS256"),
        "wrong-signature": jwt.encode(me, b"k" * 32, algorithm="HS256"),
        "alg-none": b64({"alg": "none", "typ": "JWT"}) + "." + b64(me) + ".",
        "alg-none-signed": b64({"alg": "none", "typ": "JWT"}) + "." + b64(me) + "." + sig,
        "alg-HS512": jwt.encode(me, key, algorithm="HS512"),
        "tampered-payload": head + "." + b64({**me, "sub": "1"}) + "." + sig,
        "no-exp": jwt.encode({k: v for k, v in me.items() if k != "exp"}, key, algorithm="HS256"),
        "issued-in-future": jwt.encode(claims(victim.id, "victim", iat=int(time.time()) + 3600,
                                              exp=int(time.time()) + 7200), key, algorithm="HS256"),
        "unknown-user": jwt.encode(claims(999_999, "ghost"), key, algorithm="HS256"),
        "removed-user": removed_token,
        "revoked-api-token": api_token,
        "api-token-wrong-secret": live_api_token[:-4] + ("AAAA" if not live_api_token.endswith("AAAA") else "BBBB"),
        "api-token-truncated": live_api_token[:14],
        "garbage": "not.a.token",
        "huge": "A" * 20_000,
    }


# -- authentication ------------------------------------------------------------------------


def test_security_every_protected_route_refuses_every_bad_token(live):
    tokens = bad_tokens(live)
    protected = [(m, p) for m, p, level in routes(live) if level != "public"]
    assert len(protected) >= 15
    headers_list = [{}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic YTpi"},
                    {"Authorization": "Token x"}]
    headers_list += [{"Authorization": f"Bearer {value}"} for value in tokens.values()]
    session = requests.Session()
    for method, path in protected:
        for headers in headers_list:
            answer = session.request(method, live.url + path, headers=headers, json={}, timeout=10)
            name = next((k for k, v in tokens.items() if headers.get("Authorization", "").endswith(v)), headers)
            assert answer.status_code == 401, (method, path, name, answer.text)
            assert answer.json()["error"]["code"] == "unauthorized"
            assert "AAAA" not in answer.text and "victim" not in answer.text


def test_security_dropin_routes_refuse_every_bad_token(live):
    rules = {route.rule for route in live.server.app.routes if ApiPlugin in route.skiplist}
    assert rules  # /finnhub/api/v1/<path> and /alphavantage/query
    tokens = bad_tokens(live)
    session = requests.Session()
    for name, value in [*tokens.items(), ("none", "")]:
        finnhub = session.get(live.url + "/finnhub/api/v1/quote", params={"symbol": "AAPL", "token": value})
        assert finnhub.status_code == 401 and '"c"' not in finnhub.text, (name, finnhub.text)
        finnhub = session.get(live.url + "/finnhub/api/v1/quote?symbol=AAPL", headers={"X-Finnhub-Token": value})
        assert finnhub.status_code == 401, (name, finnhub.text)
        av = session.get(live.url + "/alphavantage/query",
                         params={"function": "GLOBAL_QUOTE", "symbol": "AAPL", "apikey": value})
        assert "Global Quote" not in av.json() and (not value or value[:20] not in av.text), (name, av.text)


def test_security_revocation_and_removal_by_another_process_reach_every_thread(live):
    """Tokens remembered as verified in every server thread die once the store watcher has looked.

    The watcher looks every 0.25 s; here it is called by hand, so the test does
    not depend on time (``test_revocation_bound.py`` holds the 1 s bound with a
    real command-line process).
    """
    from stockcache.store import open_store, store_path

    auth, store = live.runtime.auth, live.runtime.store
    carol = store.create_user("carol", "not-a-password-hash")
    jwt_token = auth.issue_jwt(carol.id, carol.username, False)
    api_token, record = auth.create_api_token("carol")
    store.create_user("dave", "not-a-password-hash")
    dave_token, _ = auth.create_api_token("dave")

    def statuses(token: str) -> set[int]:
        # A fresh connection per request, so every waitress thread sees the token.
        return {requests.get(live.url + "/api/portfolio", headers={"Authorization": f"Bearer {token}"},
                             timeout=10).status_code for _ in range(3 * live.runtime.settings.threads)}

    assert statuses(api_token) == statuses(jwt_token) == statuses(dave_token) == {200}
    cli = open_store(store_path(live.runtime.settings.data_dir))  # a second connection, as the CLI has
    try:
        assert cli.revoke_api_token(record.id)
        store.check_for_changes()
        assert statuses(api_token) == {401}
        assert statuses(jwt_token) == {200}  # revoking one token leaves the user's others alone
        assert cli.delete_user("carol")
        store.check_for_changes()
        assert statuses(jwt_token) == {401}
        assert statuses(dave_token) == {200}
    finally:
        cli.close()


def test_security_revocation_through_the_api_process_bites_at_once(live):
    """A revocation through this process's own store needs no watcher: the next request is refused."""
    auth = live.runtime.auth
    live.runtime.store.create_user("erin", "not-a-password-hash")
    token, record = auth.create_api_token("erin")
    assert requests.get(live.url + "/api/portfolio", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code == 200
    assert auth.revoke_api_token(record.id)
    assert requests.get(live.url + "/api/portfolio", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code == 401


def test_security_valid_tokens_work_and_admin_rights_come_from_the_store(live):
    auth, store = live.runtime.auth, live.runtime.store
    user = store.create_user("mallory", "not-a-password-hash")
    # A JWT that claims admin, signed with the real key, still gets only what the store says.
    forged_admin = jwt.encode(claims(user.id, "mallory", adm=True), secret_of(live), algorithm="HS256")
    api = live.api.as_user(forged_admin)
    assert api.get("/api/me").json()["is_admin"] is False
    assert api.get("/api/cache/stats").status_code == 403
    token, _ = auth.create_api_token("mallory")
    assert live.api.as_user(token).get("/api/portfolio").status_code == 200


def test_security_public_routes_are_only_the_expected_ones(live):
    public = {(m, p) for m, p, level in routes(live) if level == "public"}
    api_public = {(m, p) for m, p in public if p.startswith("/api/")}
    assert api_public == {("POST", "/api/auth/login")}, api_public
    assert ("GET", "/metrics") not in public


# -- admin routes ----------------------------------------------------------------------------


def test_security_admin_routes_forbid_users_and_serve_admins(live):
    user, _ = quick_user(live, "alice")
    admin, _ = quick_user(live, "root", admin=True)
    admin_routes = {(m, p) for m, p, level in routes(live) if level == "admin"}
    concrete = {(m, p.split("?")[0]) for m, p in admin_routes}
    assert ADMIN_RULES <= concrete, concrete
    if any(p == "/api/kpis" for _, p, _ in routes(live)):
        assert ("GET", "/api/kpis") in concrete
    for method, path in sorted(admin_routes):
        params = {"pattern": "quote:NOPE*"} if path == "/api/cache" else {}
        refused = user.request(method, path, params=params)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", (method, path)
        served = admin.request(method, path, params=params)
        assert served.status_code < 400, (method, path, served.text)


# -- isolation -------------------------------------------------------------------------------


def test_security_users_never_see_or_touch_each_others_data(live):
    alice, _ = quick_user(live, "alice")
    bob, _ = quick_user(live, "bob")
    ids = []
    for symbol in ("AAPL", "MSFT", "NVDA"):
        created = alice.post("/api/portfolio", json={"symbol": symbol, "shares": 3, "cost_basis": 100})
        assert created.status_code == 201
        ids.append(created.json()["id"])
    assert alice.post("/api/watchlist", json={"symbol": "AAPL"}).status_code == 201
    before = (alice.get("/api/portfolio").json(), alice.get("/api/watchlist").json()["items"])

    assert bob.get("/api/portfolio").json() == {"positions": []}
    assert bob.get("/api/watchlist").json()["items"] == []
    assert bob.get("/api/portfolio/performance").json()["positions"] == []
    for position_id in [*ids, 0, -1, max(ids) + 1]:
        changed = bob.put(f"/api/portfolio/{position_id}", json={"shares": 999})
        assert changed.status_code == 404 and changed.json()["error"]["code"] == "not_found"
        removed = bob.delete(f"/api/portfolio/{position_id}")
        assert removed.status_code == 404 and removed.json()["error"]["code"] == "not_found"
    assert bob.delete("/api/watchlist/AAPL").status_code == 404
    assert bob.post("/api/watchlist", json={"symbol": "AAPL"}).status_code == 201  # bob's own list
    assert bob.delete("/api/watchlist/AAPL").status_code == 204

    after = (alice.get("/api/portfolio").json(), alice.get("/api/watchlist").json()["items"])
    assert after[0] == before[0]
    assert [i["symbol"] for i in after[1]] == [i["symbol"] for i in before[1]] == ["AAPL"]
    # The error for another user's id is the same as for a missing one: nothing to enumerate.
    assert (bob.delete(f"/api/portfolio/{ids[0]}").json()
            == bob.delete(f"/api/portfolio/{max(ids) + 50}").json())


# -- login brute force -------------------------------------------------------------------------


def login(live: Live, username: str, password: str) -> requests.Response:
    return live.api.post("/api/auth/login", json={"username": username, "password": password})


def test_security_login_brute_force_on_one_user_is_limited(fast):
    live = fast
    quick_user(live, "alice", password="alice right password")
    for _ in range(live.runtime.auth.limiter.per_user):
        wrong = login(live, "alice", "guess")
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    limited = login(live, "ALICE", "alice right password")  # names are case-insensitive; so is the limit
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
    assert "access_token" not in limited.text


def test_security_login_brute_force_from_one_address_is_limited(fast):
    live = fast
    quick_user(live, "bob", password="bob right password")
    for i in range(live.runtime.auth.limiter.per_address):
        assert login(live, f"nobody{i}", "guess").status_code == 401
    limited = login(live, "bob", "bob right password")
    assert limited.status_code == 429 and "Retry-After" in limited.headers


# -- secrets ------------------------------------------------------------------------------------

LLM_KEY = "sk-TESTKEY_openai_7h6g5f4e"
ALICE_PASSWORD = "PASSWORD_alice_Zq8w"
ROOT_PASSWORD = "PASSWORD_root_Kx3v"
WRONG_PASSWORD = "PASSWORD_wrongguess_Jp5t"


def test_security_no_secret_in_logs_responses_metrics_or_files(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    upstream = FakeUpstream()
    upstream.start()
    upstream.api("openai").expected_key = LLM_KEY
    live = start_fast_login_service(upstream_settings(tmp_path, upstream, upstream_timeout=1.0,
                                                      llm_url=upstream.url("openai"), llm_api_key=LLM_KEY))
    seen: list[str] = []

    def record(answer: requests.Response) -> requests.Response:
        seen.append(f"{answer.status_code} {dict(answer.headers)} {answer.text}")
        return answer

    try:
        quick_user(live, "alice", password=ALICE_PASSWORD)
        quick_user(live, "root", password=ROOT_PASSWORD, admin=True)
        record(login(live, "alice", WRONG_PASSWORD))
        alice_token = login(live, "alice", ALICE_PASSWORD).json()["access_token"]
        root_token = login(live, "root", ROOT_PASSWORD).json()["access_token"]
        api_token, _ = live.runtime.auth.create_api_token("alice", "scenario")
        alice, root = live.api.as_user(alice_token), live.api.as_user(root_token)
        via_api_token = live.api.as_user(api_token)

        upstream.set_rate_limit("alphavantage", per_day=0)  # its answer quotes our key back
        for path in ("/api/quote/AAPL", "/api/profile/AAPL", "/api/news/AAPL", "/api/history/AAPL?days=5",
                     "/api/quote/ZZZZ1", "/api/quotes?symbols=AAPL,MSFT,ZZZZ2"):
            record(alice.get(path))
        for fault in ("500", "429", "badjson", "wrongshape", "html", "reset"):
            upstream.set_fault(fault, symbol=f"F{fault.upper()}")
            record(via_api_token.get(f"/api/quote/F{fault.upper()}"))
        upstream.set_fault("500", provider="finnhub")
        record(alice.get("/api/quote/IBM"))  # Finnhub fails, Alpha Vantage's daily cap answers
        upstream.clear_faults()
        upstream.set_expected_key("finnhub", "another-key")  # Finnhub refuses our key
        record(alice.get("/api/quote/ORCL"))
        record(alice.post("/api/portfolio", json={"symbol": "AAPL", "shares": 2, "cost_basis": 100}))
        record(alice.post("/api/watchlist", json={"symbol": "MSFT"}))
        record(alice.get("/api/portfolio/performance"))
        record(alice.get("/api/watchlist"))
        record(alice.get("/api/me"))
        record(alice.get("/api/cache/stats"))
        record(live.api.get("/api/me", token=alice_token + "x"))
        for path in ("/api/cache/stats", "/metrics", "/healthz", "/openapi.json"):
            record(root.get(path))
        record(root.delete("/api/cache", params={"pattern": "quote:*"}))
        # The drop-in APIs take the caller's token in the query string, as the providers' clients send it.
        record(live.api.get("/finnhub/api/v1/quote", params={"symbol": "AAPL", "token": api_token}))
        record(live.api.get("/alphavantage/query", params={"function": "GLOBAL_QUOTE", "symbol": "NVDA",
                                                            "apikey": api_token}))
        # The model API: an analysis, then each fault (401 quotes part of the key in OpenAI's text).
        record(alice.get("/api/analysis/AAPL"))
        llm = upstream.api("openai")
        for fault, symbol in (("401", "MSFT"), ("429", "IBM"), ("500", "ORCL"), ("badjson", "NVDA"),
                              ("llamacpp", "TSLA")):
            llm.set_fault(fault)
            record(alice.get(f"/api/analysis/{symbol}"))
        llm.set_fault(None)
        llm.expected_key = "sk-another"  # the model API refuses our key
        record(alice.get("/api/analysis/AMZN"))
        record(root.get("/api/cache/stats"))
        record(root.get("/metrics"))
        record(root.get("/api/kpis"))
        assert upstream.rate_limited("alphavantage") >= 1  # the daily-cap text with our key was seen

        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_files(live)}
    finally:
        live.stop()
        upstream.stop()

    key = (tmp_path / "data" / SECRET_FILENAME).read_text().strip()
    secrets = {"finnhub key": FINNHUB_KEY, "alphavantage key": AV_KEY, "model key": LLM_KEY,
               "model key body": LLM_KEY[3:], "alice password": ALICE_PASSWORD,
               "root password": ROOT_PASSWORD, "wrong password": WRONG_PASSWORD, "alice jwt": alice_token,
               "root jwt": root_token, "api token": api_token, "api token secret": api_token[12:],
               "jwt signing key": key}
    # Every logger of this process but the fake upstream's own (it plays the provider, who knows the keys).
    logs = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith("bench."))
    assert len(caplog.records) > 20 and "stockcache" in logs
    outputs = {"logs": logs, "responses": "\n".join(seen)}
    for path in data_files_after(tmp_path / "data"):
        if path.name != SECRET_FILENAME:
            outputs[path.name] = path.read_bytes().decode("latin-1")
    leaks = [(name, where) for name, value in secrets.items() for where, text in outputs.items() if value in text]
    assert leaks == []
    assert {"store.sqlite", "jwt.secret"} <= set(modes)
    assert all(mode == 0o600 for mode in modes.values()), {n: oct(m) for n, m in modes.items()}


def data_files(live: Live) -> list[Path]:
    """The secret and every database file (with -wal/-shm) in the data dir, while the service runs."""
    folder = live.runtime.settings.data_dir
    files = [p for p in folder.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert any(n.endswith("-wal") for n in names), names  # WAL files exist while the databases are open
    return files


def data_files_after(folder: Path) -> list[Path]:
    return [Path(root, name) for root, _, names in os.walk(folder) for name in names]


def test_security_file_modes_hold_under_a_permissive_umask(tmp_path, upstream):
    old = os.umask(0)
    try:
        live = start_service(upstream_settings(tmp_path, upstream))
        try:
            quick_user(live, "alice")[0].get("/api/quote/AAPL")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_files(live)}
        finally:
            live.stop()
    finally:
        os.umask(old)
    assert modes and all(mode == 0o600 for mode in modes.values()), {n: oct(m) for n, m in modes.items()}
