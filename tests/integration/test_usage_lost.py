"""A corrupt usage ledger: the service starts, and spends nothing past a day budget for the rest of that day.

The ledger holds today's upstream calls of every process on the data folder.
When it is lost, nobody knows how much of today's daily budgets is left, so
they count as spent until UTC midnight (docs/reliability.md, "Start-up and
disks"). The clock is injected: midnight is crossed by setting it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from stockcache.clock import seconds_to_utc_midnight
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(90)
PASSWORD = "correct horse battery"


def _login(live: Live) -> Api:
    answer = live.api.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return live.api.as_user(answer.json()["access_token"])


def test_lost_usage_ledger_spends_no_daily_budget_until_utc_midnight(tmp_path: Path, upstream, clock) -> None:
    settings = upstream_settings(tmp_path, upstream, finnhub_per_day=500, alphavantage_per_day=25)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "usage.sqlite").write_bytes(os.urandom(8192))

    live = start_service(settings, clock=clock)
    try:
        live.add_user("alice", PASSWORD, admin=True)
        alice = _login(live)
        refused = alice.get("/api/quote/AAPL")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "rate_limited", refused.text
        assert int(refused.headers["Retry-After"]) == math.ceil(seconds_to_utc_midnight(clock()))
        upstream_stats = alice.get("/api/cache/stats").json()["upstream"]
        assert {name: figures["budget_left"]["day"] for name, figures in upstream_stats.items()} == {
            # FX rates and ISIN lookups have no daily budget to lose.
            "finnhub": 0, "alphavantage": 0, "ecb": None, "openfigi": None,
            "coingecko": None}  # keyless beside the Finnhub key: a minute budget only
    finally:
        live.stop()
    assert upstream.calls() == 0
    assert len(list(settings.data_dir.glob("usage.sqlite.corrupt-*"))) == 1

    # A restart later that day still knows: the mark is in the fresh ledger, not only in memory.
    clock.advance(3600)
    live = start_service(settings, clock=clock)
    try:
        assert _login(live).get("/api/quote/AAPL").status_code == 503
        assert upstream.calls() == 0
        clock.advance(seconds_to_utc_midnight(clock()) + 1)  # the next UTC day: budgets are whole again
        fresh = _login(live).get("/api/quote/AAPL")
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["source"] == "finnhub"
    finally:
        live.stop()
    assert upstream.calls("finnhub", "quote") == 1
