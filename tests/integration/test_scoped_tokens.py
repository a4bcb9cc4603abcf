"""Market-scoped API tokens over real HTTP (issue 18, point 1): what they may read, and ``?token=``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Live, start_service, upstream_settings
from tests.integration.test_cli_users import run

MARKET_GETS = ["/api/quote/AAPL", "/api/quotes?symbols=AAPL,MSFT", "/api/profile/AAPL", "/api/history/AAPL?days=5",
               "/api/news/AAPL", "/api/fx/USD/EUR"]
# What a market token must never read or change: portfolios, watchlists, the account, admin routes.
REFUSED = [("GET", "/api/portfolio"), ("POST", "/api/portfolio"), ("GET", "/api/portfolio/performance"),
           ("PUT", "/api/portfolio/1"), ("DELETE", "/api/portfolio/1"), ("GET", "/api/watchlist"),
           ("POST", "/api/watchlist"), ("DELETE", "/api/watchlist/AAPL"), ("GET", "/api/me"), ("PUT", "/api/me"),
           ("PUT", "/api/me/password"), ("GET", "/api/cache/stats"), ("DELETE", "/api/cache?pattern=quote:*"),
           ("GET", "/api/kpis"), ("GET", "/metrics")]


def _tokens(live: Live, name: str, *, admin: bool = False) -> tuple[str, str]:
    """A market-scoped and a full API token for a new user ``name``."""
    live.add_user(name, admin=admin)
    market, _ = live.runtime.auth.create_api_token(name, "sheet", scope="market")
    full, _ = live.runtime.auth.create_api_token(name, "script")
    return market, full


def _error(answer: requests.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()["error"]
    assert body["code"] == code
    return str(body["message"])


def test_scoped_token_market_reads_market_data_by_header_and_by_query(live: Live) -> None:
    market, _ = _tokens(live, "sheet")
    for path in MARKET_GETS:
        by_header = live.api.get(path, token=market)
        assert by_header.status_code == 200, (path, by_header.text)
        joiner = "&" if "?" in path else "?"
        by_query = requests.get(f"{live.url}{path}{joiner}token={market}", timeout=10)
        assert by_query.status_code == 200, (path, by_query.text)
    batch = live.api.post("/api/batch-quotes", json={"tickers": ["AAPL"]}, token=market)
    assert batch.status_code == 200 and "AAPL" in batch.json()["quotes"]


def test_scoped_token_market_is_refused_on_portfolio_watchlist_account_and_admin_routes(live: Live) -> None:
    market, full = _tokens(live, "root", admin=True)  # even an admin's market token
    live.api.post("/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 1}, token=full)
    for method, path in REFUSED:
        message = _error(live.api.request(method, path, token=market, json={}), 403, "forbidden")
        assert "market data only" in message, (method, path)
    # Nothing changed behind the refusals: the full token still sees its one position.
    assert len(live.api.get("/api/portfolio", token=full).json()["positions"]) == 1


def test_scoped_token_jwt_in_query_is_refused_saying_why(live: Live) -> None:
    alice = live.add_user("alice")
    jwt = alice.token
    assert jwt is not None and alice.get("/api/quote/AAPL").status_code == 200  # valid as a header
    answer = requests.get(f"{live.url}/api/quote/AAPL", params={"token": jwt}, timeout=10)
    message = _error(answer, 401, "unauthorized")
    assert "JWT" in message and "URL" in message and "Authorization: Bearer" in message
    assert jwt not in answer.text


def test_scoped_token_full_token_in_query_is_refused_saying_why(live: Live) -> None:
    _, full = _tokens(live, "alice")
    answer = requests.get(f"{live.url}/api/quote/AAPL", params={"token": full}, timeout=10)
    message = _error(answer, 401, "unauthorized")
    assert "full scope" in message and "--scope market" in message
    assert full not in answer.text
    assert live.api.get("/api/quote/AAPL", token=full).status_code == 200  # as a header it works


def test_scoped_token_query_token_only_on_get_market_routes(live: Live) -> None:
    market, _ = _tokens(live, "alice")
    post = requests.post(f"{live.url}/api/batch-quotes", params={"token": market}, json={"tickers": ["AAPL"]},
                         timeout=10)
    assert "GET market-data routes" in _error(post, 401, "unauthorized")
    portfolio = requests.get(f"{live.url}/api/portfolio", params={"token": market}, timeout=10)
    assert "GET market-data routes" in _error(portfolio, 401, "unauthorized")
    bogus = requests.get(f"{live.url}/api/quote/AAPL", params={"token": "sc_abcdefgh_" + "x" * 43}, timeout=10)
    _error(bogus, 401, "unauthorized")


def test_scoped_token_revoked_market_token_in_query_is_refused(live: Live) -> None:
    market, _ = _tokens(live, "alice")
    url = f"{live.url}/api/quote/AAPL?token={market}"
    assert requests.get(url, timeout=10).status_code == 200
    assert live.runtime.auth.revoke_api_token(market)
    _error(requests.get(url, timeout=10), 401, "unauthorized")


def test_scoped_token_query_token_never_reaches_a_log_line(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    market, full = _tokens(live, "alice")
    for token in (market, full, "not-a-token"):
        requests.get(f"{live.url}/api/quote/AAPL", params={"token": token}, timeout=10)
        requests.get(f"{live.url}/api/portfolio", params={"token": token}, timeout=10)
    ours = [r for r in caplog.records if r.name.startswith(("stockcache", "waitress", "bottle"))]
    access = [r.getMessage() for r in ours if r.name == "stockcache.access"]
    assert sum("/api/quote/<symbol>" in line for line in access) == 3
    for record in ours:
        text = record.getMessage() + str(record.exc_text or "")
        assert "token=" not in text and market not in text and full not in text and "not-a-token" not in text


def test_scoped_token_cli_creates_lists_and_serves_a_market_token(tmp_path: Path, upstream) -> None:
    data = tmp_path / "data"
    assert run(data, "users", "add", "alice", stdin="Cli-Test-Passw0rd-5e6f\n").returncode == 0
    created = run(data, "tokens", "create", "alice", "--scope", "market", "--label", "sheet")
    assert created.returncode == 0, created.stderr
    market = created.stdout.strip()
    assert market.startswith("sc_") and "market scope" in created.stderr and "?token=" in created.stderr
    full = run(data, "tokens", "create", "alice").stdout.strip()
    refused = run(data, "tokens", "create", "alice", "--scope", "admin")
    assert refused.returncode != 0 and "invalid choice" in refused.stderr

    listed = run(data, "tokens", "list", "alice").stdout.splitlines()
    assert listed[0].split()[:3] == ["ID", "SCOPE", "LABEL"]
    scopes = {line.split()[0]: line.split()[1] for line in listed[1:]}
    assert scopes == {market[3:11]: "market", full[3:11]: "full"}

    live = start_service(upstream_settings(tmp_path, upstream))
    try:
        assert requests.get(f"{live.url}/api/quote/AAPL?token={market}", timeout=10).status_code == 200
        assert live.api.get("/api/watchlist", token=market).status_code == 403
        assert live.api.get("/api/watchlist", token=full).status_code == 200
    finally:
        live.stop()
