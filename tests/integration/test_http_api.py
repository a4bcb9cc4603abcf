"""The HTTP API over a real waitress server on loopback, backed by the fake upstream."""

from __future__ import annotations

import json

import jwt
import pytest

from .conftest import Api, start_service, upstream_settings


def _error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


# -- open routes -------------------------------------------------------------------------------


def test_http_healthz_is_open_and_says_ok(live):
    answer = live.api.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok" and answer.json()["version"]


def test_http_openapi_describes_every_route(live):
    spec = live.api.get("/openapi.json").json()
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    app = live.server.app
    served = set()
    for route in app.routes:
        path = route.rule.replace("<symbol>", "{symbol}").replace("<position_id:int>", "{id}")
        if "<" in path:  # catch-all routes of other modules describe themselves by prefix
            continue
        served.add((route.method, path))
    assert served <= described, served - described


# -- errors are JSON ------------------------------------------------------------------------------


def test_http_unknown_route_is_json_404(live):
    _error(live.api.get("/no/such/thing"), 404, "not_found")


def test_http_wrong_method_is_json_405(live):
    _error(live.api.delete("/healthz"), 405, "method_not_allowed")


def test_http_oversize_body_is_json_413(live, alice):
    body = json.dumps({"tickers": ["AAPL"] * 200_000})
    assert len(body) > 1_048_576
    answer = alice.post("/api/batch-quotes", data=body, headers={"Content-Type": "application/json"})
    _error(answer, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("body", "ctype"),
    [("{not json", "application/json"), ('{"tickers": ["AAPL"]}', "text/plain"), ("", "application/json"),
     ('{"tickers": "AAPL"}', "application/json"), ('["AAPL"]', "application/json"),
     ('{"tickers": [NaN]}', "application/json"), ('{"tickers": ["AAPL"], "x": 1}', "application/json")],
)
def test_http_malformed_bodies_are_400(alice, body, ctype):
    answer = alice.post("/api/batch-quotes", data=body.encode(), headers={"Content-Type": ctype})
    assert answer.status_code == 400 and answer.json()["error"]["code"] in ("invalid_request", "invalid_symbol")


# -- authentication ------------------------------------------------------------------------------


def test_http_api_routes_need_a_token(live):
    for path in ("/api/quote/AAPL", "/api/portfolio", "/api/watchlist", "/api/quotes?symbols=AAPL"):
        _error(live.api.get(path), 401, "unauthorized")


def test_http_login_wrong_password_is_401(live, alice):
    answer = live.api.post("/api/auth/login", json={"username": "alice", "password": "wrong"})
    _error(answer, 401, "unauthorized")


@pytest.mark.parametrize("kind", ["garbage", "forged", "alg_none", "expired"])
def test_http_bad_tokens_are_refused(live, alice, kind):
    good = alice.token
    claims = jwt.decode(good, options={"verify_signature": False})
    if kind == "garbage":
        token = "not-a-token"
    elif kind == "forged":
        token = jwt.encode(claims, "wrong-secret-but-long-enough-for-hs256!", algorithm="HS256")
    elif kind == "alg_none":
        token = jwt.encode(claims, None, algorithm="none")
    else:
        secret = (live.runtime.settings.data_dir / "jwt.secret").read_text().strip()
        expired = {**claims, "iat": claims["iat"] - 7200, "exp": claims["iat"] - 3600}
        token = jwt.encode(expired, bytes.fromhex(secret), algorithm="HS256")
    _error(live.api.get("/api/portfolio", token=token), 401, "unauthorized")


def test_http_admin_routes_refuse_plain_users(live, alice):
    _error(alice.get("/api/cache/stats"), 403, "forbidden")
    _error(alice.delete("/api/cache?pattern=quote:*"), 403, "forbidden")
    _error(alice.get("/metrics"), 403, "forbidden")


def test_http_api_token_works_and_revocation_stops_it(live, alice):
    token, record = live.runtime.auth.create_api_token("alice", "script")
    api = live.api.as_user(token)
    assert api.get("/api/portfolio").status_code == 200
    live.runtime.auth.revoke_api_token(record.id)
    _error(api.get("/api/portfolio"), 401, "unauthorized")


# -- market data -----------------------------------------------------------------------------------


def test_http_quote_is_cached_after_the_first_call(live, alice, upstream):
    first = alice.get("/api/quote/aapl").json()
    second = alice.get("/api/quote/AAPL").json()
    assert first["symbol"] == "AAPL" and first["price"] > 0 and first["source"] == "finnhub"
    assert (first["cache"], second["cache"]) == ("upstream", "memory")
    assert first["price"] == second["price"] and second["stale"] is False
    assert upstream.calls("finnhub", "quote", "AAPL") == 1


def test_http_batch_with_an_invalid_symbol_answers_every_other_symbol(alice):
    """The issue's own example: one '???' used to refuse the whole batch with 400."""
    body = alice.post("/api/batch-quotes", json={"tickers": ["aapl", "???", "ZZZZ1", "BRK.B"]}).json()
    assert set(body["quotes"]) == {"AAPL", "BRK.B"}
    assert {s: e["code"] for s, e in body["errors"].items()} == {"???": "invalid_symbol",
                                                                  "ZZZZ1": "symbol_not_found"}
    same = alice.get("/api/quotes?symbols=aapl,???,ZZZZ1,BRK.B").json()
    assert set(same["quotes"]) == {"AAPL", "BRK.B"} and same["errors"]["???"]["code"] == "invalid_symbol"
    _error(alice.post("/api/batch-quotes", json={"tickers": []}), 400, "invalid_request")
    _error(alice.post("/api/batch-profiles", json={"tickers": []}), 400, "invalid_request")
    profiles = alice.post("/api/batch-profiles", json={"tickers": ["AAPL", "A$B"]}).json()
    assert set(profiles["profiles"]) == {"AAPL"} and profiles["errors"]["A$B"]["code"] == "invalid_symbol"


def test_http_portfolio_and_watchlist_refuse_a_symbol_nobody_knows(live, alice, upstream):
    """A typo used to be kept (201) and show up later as "NO QUOTE"."""
    _error(alice.post("/api/portfolio", json={"symbol": "ZZZZ9", "shares": 1, "cost_basis": 10}), 404,
           "symbol_not_found")
    _error(alice.post("/api/watchlist", json={"symbol": "ZZZZ9"}), 404, "symbol_not_found")
    assert alice.get("/api/portfolio").json()["positions"] == []
    assert alice.get("/api/watchlist").json()["items"] == []
    added = alice.post("/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 10})
    assert added.status_code == 201 and added.json()["verified"] is True
    _error(alice.put(f"/api/portfolio/{added.json()['id']}", json={"symbol": "ZZZZ8"}), 404, "symbol_not_found")
    assert alice.get("/api/portfolio").json()["positions"][0]["symbol"] == "AAPL"
    # The upstream cannot say just now: the symbol is kept, and the answer says it is not verified.
    upstream.set_outage(True)
    later = alice.post("/api/watchlist", json={"symbol": "NVDA"})
    assert later.status_code == 201 and later.json() == {**later.json(), "symbol": "NVDA", "verified": False}
    upstream.set_outage(False)
    assert alice.post("/api/watchlist", json={"symbol": "NVDA"}).status_code == 409


def test_http_unknown_and_invalid_symbols(alice):
    error = _error(alice.get("/api/quote/ZZZZQ"), 404, "symbol_not_found")
    assert error["symbol"] == "ZZZZQ"
    _error(alice.get("/api/quote/TOO_LONG_SYMBOL_NAME_X"), 400, "invalid_symbol")
    _error(alice.get("/api/quote/A$B"), 400, "invalid_symbol")


def test_http_batch_quotes_each_symbol_once(alice, upstream):
    answer = alice.post("/api/batch-quotes", json={"tickers": ["AAPL", "msft", "AAPL", "ZZZZ1"]})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["quotes"]) == {"AAPL", "MSFT"} and set(body["errors"]) == {"ZZZZ1"}
    assert body["errors"]["ZZZZ1"]["code"] == "symbol_not_found"
    again = alice.get("/api/quotes?symbols=AAPL,MSFT").json()
    assert {q["cache"] for q in again["quotes"].values()} == {"memory"}
    assert upstream.calls("finnhub", "quote") == 3


def test_http_batch_too_many_symbols(alice):
    _error(alice.post("/api/batch-quotes", json={"tickers": [f"S{i}" for i in range(101)]}), 400,
           "too_many_symbols")


def test_http_profile_history_news(alice):
    profile = alice.get("/api/profile/MSFT").json()
    assert profile["symbol"] == "MSFT" and profile["name"] and profile["market_cap"] > 1e6
    batch = alice.post("/api/batch-profiles", json={"tickers": ["MSFT", "AAPL"]}).json()
    assert set(batch["profiles"]) == {"MSFT", "AAPL"} and batch["profiles"]["MSFT"]["cache"] == "memory"
    history = alice.get("/api/history/IBM?days=10").json()
    assert history["interval"] == "1d" and len(history["candles"]) == 10 and history["source"] == "alphavantage"
    dates = [c["date"] for c in history["candles"]]
    assert dates == sorted(dates)
    news = alice.get("/api/news/AAPL?days=3").json()
    assert news["symbol"] == "AAPL" and isinstance(news["articles"], list)
    _error(alice.get("/api/history/IBM?days=500"), 400, "invalid_request")
    _error(alice.get("/api/history/IBM?days=abc"), 400, "invalid_request")


def test_http_upstream_rate_limit_is_503_with_retry_after(tmp_path, upstream):
    live = start_service(upstream_settings(tmp_path, upstream, finnhub_per_minute=1,
                                           alphavantage_api_key=""))
    try:
        api = live.add_user("carol")
        assert api.get("/api/quote/AAPL").status_code == 200
        answer = api.get("/api/quote/MSFT")
        error = _error(answer, 503, "rate_limited")
        assert int(answer.headers["Retry-After"]) == error["retry_after"] > 0
    finally:
        live.stop()


# -- portfolio and watchlist -----------------------------------------------------------------------------


def test_http_portfolio_crud_and_performance(alice):
    created = alice.post("/api/portfolio", json={"symbol": "aapl", "shares": 10, "cost_basis": 100})
    assert created.status_code == 201
    position = created.json()
    assert position["symbol"] == "AAPL" and position["shares"] == 10 and position["cost_basis"] == 100
    alice.post("/api/portfolio", json={"symbol": "MSFT", "shares": 2, "cost_basis": 300})
    assert len(alice.get("/api/portfolio").json()["positions"]) == 2

    updated = alice.put(f"/api/portfolio/{position['id']}", json={"shares": 20})
    assert updated.status_code == 200 and updated.json()["shares"] == 20

    perf = alice.get("/api/portfolio/performance").json()
    quote = alice.get("/api/quote/AAPL").json()
    row = next(p for p in perf["positions"] if p["symbol"] == "AAPL")
    assert row["price"] == quote["price"]
    assert row["value"] == pytest.approx(20 * quote["price"])
    assert row["gain"] == pytest.approx(20 * quote["price"] - 20 * 100)
    assert row["day_change"] == pytest.approx(20 * quote["change"])
    assert perf["totals"]["cost"] == pytest.approx(20 * 100 + 2 * 300)
    assert perf["totals"]["value"] == pytest.approx(sum(p["value"] for p in perf["positions"]))

    assert alice.delete(f"/api/portfolio/{position['id']}").status_code == 204
    _error(alice.delete(f"/api/portfolio/{position['id']}"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [{"symbol": "AAPL", "shares": 0, "cost_basis": 1}, {"symbol": "AAPL", "shares": -1, "cost_basis": 1},
     {"symbol": "AAPL", "shares": 1, "cost_basis": -1}, {"symbol": "AAPL", "shares": "1", "cost_basis": 1},
     {"symbol": "AAPL", "shares": True, "cost_basis": 1}, {"symbol": "../x", "shares": 1, "cost_basis": 1},
     {"shares": 1, "cost_basis": 1}, {"symbol": "AAPL", "shares": 1, "cost_basis": 1, "extra": 1}],
)
def test_http_portfolio_validation(alice, body):
    answer = alice.post("/api/portfolio", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] in ("invalid_request", "invalid_symbol")


def test_http_portfolio_refuses_infinite_numbers(alice):
    answer = alice.post("/api/portfolio", data=b'{"symbol": "AAPL", "shares": Infinity, "cost_basis": 1}',
                        headers={"Content-Type": "application/json"})
    _error(answer, 400, "invalid_request")


def test_http_users_cannot_touch_each_others_rows(alice, bob):
    position = alice.post("/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 1}).json()
    alice.post("/api/watchlist", json={"symbol": "NVDA"})
    _error(bob.put(f"/api/portfolio/{position['id']}", json={"shares": 5}), 404, "not_found")
    _error(bob.delete(f"/api/portfolio/{position['id']}"), 404, "not_found")
    _error(bob.delete("/api/watchlist/NVDA"), 404, "not_found")
    assert bob.get("/api/portfolio").json()["positions"] == []
    assert bob.get("/api/watchlist").json()["items"] == []
    assert alice.get("/api/portfolio").json()["positions"][0]["shares"] == 1


def test_http_watchlist_and_performance_serve_more_symbols_than_max_batch(tmp_path, upstream):
    live = start_service(upstream_settings(tmp_path, upstream, max_batch=3))
    try:
        api = live.add_user("wendy")
        symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "ZZZZ1"]
        user_id = live.runtime.store.get_user_by_name("wendy")[0].id
        for symbol in symbols:
            if symbol.startswith("ZZZZ"):  # kept before symbols were checked on the way in (older versions)
                live.runtime.store.add_watch(user_id, symbol)
                live.runtime.store.add_position(user_id, symbol, 2, 10)
                continue
            assert api.post("/api/watchlist", json={"symbol": symbol}).status_code == 201
            position = {"symbol": symbol, "shares": 2, "cost_basis": 10}
            assert api.post("/api/portfolio", json=position).status_code == 201
        watch = api.get("/api/watchlist")
        assert watch.status_code == 200, watch.text
        items = watch.json()["items"]
        assert [item["symbol"] for item in items] == symbols
        assert all(item["quote"]["price"] > 0 for item in items[:-1]) and items[-1]["quote"] is None
        assert set(watch.json()["errors"]) == {"ZZZZ1"}
        perf = api.get("/api/portfolio/performance")
        assert perf.status_code == 200, perf.text
        rows = perf.json()["positions"]
        assert [row["symbol"] for row in rows] == symbols and rows[-1]["price"] is None
        assert perf.json()["totals"]["value"] == pytest.approx(sum(row["value"] for row in rows[:-1]))
        assert set(perf.json()["errors"]) == {"ZZZZ1"}
        # The batch routes keep their cap: it bounds one request, not what a user may keep.
        _error(api.get("/api/quotes?symbols=" + ",".join(symbols)), 400, "too_many_symbols")
    finally:
        live.stop()


def test_http_watchlist_and_portfolio_sizes_are_capped_at_add_time(live):
    from stockcache.web.routes import MAX_POSITIONS, MAX_WATCHLIST_ITEMS

    api = live.add_user("hoarder")
    user, _ = live.runtime.store.get_user_by_name("hoarder")
    for i in range(MAX_WATCHLIST_ITEMS - 1):
        live.runtime.store.add_watch(user.id, f"W{i}")
    for _ in range(MAX_POSITIONS - 1):
        live.runtime.store.add_position(user.id, "AAPL", 1.0, 1.0)
    assert api.post("/api/watchlist", json={"symbol": "LAST"}).status_code == 201
    assert api.post("/api/portfolio", json={"symbol": "LAST", "shares": 1, "cost_basis": 1}).status_code == 201
    error = _error(api.post("/api/watchlist", json={"symbol": "MORE"}), 400, "too_many_symbols")
    assert str(MAX_WATCHLIST_ITEMS) in error["message"]
    error = _error(api.post("/api/portfolio", json={"symbol": "MORE", "shares": 1, "cost_basis": 1}),
                   400, "invalid_request")
    assert str(MAX_POSITIONS) in error["message"]
    # Making room works again, and another user is not affected.
    assert api.delete("/api/watchlist/LAST").status_code == 204
    assert api.post("/api/watchlist", json={"symbol": "MORE"}).status_code == 201
    assert live.add_user("other").post("/api/watchlist", json={"symbol": "MORE"}).status_code == 201


def test_http_watchlist_add_list_conflict_remove(live, alice):
    assert alice.post("/api/watchlist", json={"symbol": "nvda"}).status_code == 201
    _error(alice.post("/api/watchlist", json={"symbol": "NVDA"}), 409, "conflict")
    # A symbol kept before symbols were checked on the way in (older versions) is listed with its error.
    live.runtime.store.add_watch(live.runtime.store.get_user_by_name("alice")[0].id, "ZZZZ9")
    listing = alice.get("/api/watchlist").json()
    items = {item["symbol"]: item for item in listing["items"]}
    assert items["NVDA"]["quote"]["price"] > 0 and items["NVDA"]["added_at"]
    assert items["ZZZZ9"]["quote"] is None and listing["errors"]["ZZZZ9"]["code"] == "symbol_not_found"
    assert alice.delete("/api/watchlist/nvda").status_code == 204
    assert [i["symbol"] for i in alice.get("/api/watchlist").json()["items"]] == ["ZZZZ9"]


# -- admin -------------------------------------------------------------------------------------------------


def test_http_cache_stats_and_pattern_delete(admin, upstream):
    admin.get("/api/quote/AAPL")
    admin.get("/api/quote/AMZN")
    admin.get("/api/quote/AAPL")
    stats = admin.get("/api/cache/stats").json()
    assert stats["memory"]["size"] >= 2 and stats["memory"]["hits"] >= 1
    # Two cold reads and one warm one: each read counted once, whatever the read path looks at.
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 2, round(1 / 3, 4))
    assert stats["by_kind"]["quote"] == {"hits": 1, "misses": 2, "hit_rate": round(1 / 3, 4)}
    assert (stats["reads"]["hits"], stats["reads"]["misses"]) == (1, 2)
    metrics = admin.get("/metrics").text
    assert 'stockcache_cache_kind_hits_total{kind="quote"} 1.0' in metrics
    assert 'stockcache_cache_kind_misses_total{kind="quote"} 2.0' in metrics
    assert stats["upstream"]["finnhub"]["calls"] == 2
    assert stats["sqlite"]["file_bytes"] > 0 and stats["redis"] is None
    deleted = admin.delete("/api/cache?pattern=quote:A*").json()
    assert deleted == {"deleted": 2}
    assert admin.get("/api/quote/AAPL").json()["cache"] == "upstream"
    _error(admin.delete("/api/cache"), 400, "invalid_request")


def test_http_metrics_are_prometheus_text(admin):
    admin.get("/api/quote/AAPL")
    answer = admin.get("/metrics")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    assert 'stockcache_upstream_calls_total{provider="finnhub"} 1.0' in answer.text
    assert 'route="/api/quote/<symbol>"' in answer.text


# -- restart -----------------------------------------------------------------------------------------------


def test_http_restart_keeps_portfolios_and_serves_quotes_from_sqlite(tmp_path, upstream):
    settings = upstream_settings(tmp_path, upstream)
    first = start_service(settings)
    api = first.add_user("dora", "a long enough password")
    api.post("/api/portfolio", json={"symbol": "AAPL", "shares": 3, "cost_basis": 10})
    price = api.get("/api/quote/AAPL").json()["price"]
    first.stop()
    calls_before = upstream.calls()

    second = start_service(settings)
    try:
        token = second.api.post("/api/auth/login", json={"username": "dora", "password": "a long enough password"})
        api = Api(second.url, token.json()["access_token"])
        assert [p["symbol"] for p in api.get("/api/portfolio").json()["positions"]] == ["AAPL"]
        quote = api.get("/api/quote/AAPL").json()
        assert quote["cache"] == "sqlite" and quote["price"] == price
        assert upstream.calls() == calls_before
    finally:
        second.stop()
