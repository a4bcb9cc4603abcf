"""``python -m stockcache warm`` and ``stats`` run as a person would: subprocesses against the fake upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import AV_KEY, FINNHUB_KEY, start_service, upstream_settings

ROOT = Path(__file__).resolve().parents[2]


def run(data_dir: Path, upstream, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCACHE_", "FINNHUB", "ALPHAVANTAGE"))}
    environ.update({
        "FINNHUB_API_KEY": FINNHUB_KEY, "ALPHAVANTAGE_API_KEY": AV_KEY,
        "STOCKCACHE_FINNHUB_URL": upstream.finnhub_url, "STOCKCACHE_ALPHAVANTAGE_URL": upstream.alphavantage_url,
        "STOCKCACHE_ALPHAVANTAGE_PER_DAY": "1000", "STOCKCACHE_ALPHAVANTAGE_PER_SECOND": "0",
        "STOCKCACHE_FINNHUB_COST_PER_CALL": "0.25", **env,
    })
    command = [sys.executable, "-m", "stockcache", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, env=environ,
                          timeout=60)


def test_cli_warm_fills_the_cache_lists_failures_and_exits_1(tmp_path, upstream):
    data = tmp_path / "data"
    first = run(data, upstream, "warm", "aapl", "MSFT", "ZZZZ", "--kinds", "quote,profile")
    assert first.returncode == 1, first.stderr
    assert "6/6" in first.stderr  # the progress bar ran to the end
    assert "Warmed 4 of 6 items (3 symbols x 2 kinds)" in first.stdout
    table = [line.split() for line in first.stdout.splitlines()]
    assert ["quote", "2", "0", "1"] in table and ["profile", "2", "0", "1"] in table
    assert ["quote:ZZZZ", "symbol_not_found"] in [row[:2] for row in table]
    assert ["profile:ZZZZ", "symbol_not_found"] in [row[:2] for row in table]
    assert FINNHUB_KEY not in first.stdout + first.stderr
    assert (upstream.calls("finnhub", "quote"), upstream.calls("finnhub", "stock/profile2")) == (3, 3)
    # Finnhub's {} profile is said of known symbols without fundamentals too: Alpha Vantage is asked.
    assert upstream.calls("alphavantage", "OVERVIEW", symbol="ZZZZ") == 1

    # A second run (another process) finds them in the shared SQLite cache and calls nobody.
    second = run(data, upstream, "warm", "AAPL", "MSFT", "--kinds", "quote,profile")
    assert second.returncode == 0, second.stderr
    assert ["quote", "0", "2", "0"] in [line.split() for line in second.stdout.splitlines()]
    assert upstream.calls() == 7


def test_cli_warm_counts_each_item_once_so_the_columns_add_up(tmp_path, upstream):
    """Run twice, a remembered "not found" was counted as fresh and as failed: "FETCHED -1"."""
    data = tmp_path / "data"
    for expected in (["quote", "1", "0", "1"], ["quote", "0", "1", "1"]):  # the second run: MSFT is fresh
        answer = run(data, upstream, "warm", "ZZZZ77", "MSFT")
        assert answer.returncode == 1, answer.stderr
        assert expected in [line.split() for line in answer.stdout.splitlines()], answer.stdout
        assert "Warmed 1 of 2 items" in answer.stdout
    assert upstream.calls(symbol="ZZZZ77") == 1  # the "not found" was remembered, not asked again


def test_cli_warm_counts_a_stale_copy_as_a_failure(tmp_path, upstream):
    data = tmp_path / "data"
    expired = {"STOCKCACHE_TTL_QUOTE": "0"}  # cached, but stale at once (kept for the grace period)
    assert run(data, upstream, "warm", "AAPL", **expired).returncode == 0
    upstream.set_outage(True)
    answer = run(data, upstream, "warm", "AAPL", **expired)
    assert answer.returncode == 1
    assert ["quote:AAPL", "upstream_error"] in [line.split()[:2] for line in answer.stdout.splitlines()]


def test_cli_warm_refuses_a_bad_symbol_or_kind(tmp_path, upstream):
    bad_symbol = run(tmp_path / "data", upstream, "warm", "AAPL", "../etc")
    assert bad_symbol.returncode == 1 and "../ETC" in bad_symbol.stderr
    bad_kind = run(tmp_path / "data", upstream, "warm", "AAPL", "--kinds", "quote,gossip")
    assert bad_kind.returncode == 2 and "quote, profile, history" in bad_kind.stderr
    assert upstream.calls() == 0


def test_cli_stats_shows_what_the_server_saved(tmp_path, upstream):
    settings = upstream_settings(tmp_path, upstream, finnhub_cost_per_call=0.25)
    live = start_service(settings)
    try:
        alice = live.add_user("alice")
        assert alice.get("/api/quote/AAPL").status_code == 200
        assert alice.get("/api/quote/AAPL").status_code == 200
        assert alice.get("/api/quotes?symbols=AAPL,MSFT").status_code == 200
    finally:
        live.stop()  # the runtime saves its last figures as it closes

    answer = run(settings.data_dir, upstream, "stats", "--json")
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    server = report["server"]
    assert server["reads"]["by_kind"]["quote"] == {"memory": 2, "miss": 2, "hits": 2, "misses": 2,
                                                   "hit_rate": 0.5}
    assert server["upstream"]["finnhub"]["calls"] == 2
    assert report["calls_today"] == {"finnhub": 2}
    (today,) = report["kpis"]
    assert (today["requests"], today["calls_saved"], today["hit_rate"]) == (4, 2, 0.5)  # the login counts
    assert today["upstream_calls"] == {"alphavantage": 0, "finnhub": 2}
    assert today["estimated_cost"] == 0.5
    assert report["saved_seconds_ago"] is not None

    table = run(settings.data_dir, upstream, "stats")
    assert table.returncode == 0, table.stderr
    for heading in ("TIER", "PROVIDER", "ROUTE", "DATE", "Refresher: off"):
        assert heading in table.stdout, heading
    assert FINNHUB_KEY not in table.stdout


def test_cli_stats_on_a_fresh_data_dir_says_so_and_creates_nothing(tmp_path, upstream):
    data = tmp_path / "data"
    data.mkdir()
    answer = run(data, upstream, "stats")
    assert answer.returncode == 0, answer.stderr
    assert "No server figures yet" in answer.stdout and "No KPI history yet" in answer.stdout
    assert list(data.iterdir()) == []


def test_cli_warm_spends_the_same_daily_budget_as_the_running_server(tmp_path, upstream):
    from stockcache.upstream.guard import Budget, Limits
    from stockcache.usage import UsageLedger

    settings = upstream_settings(tmp_path, upstream, alphavantage_per_day=3)
    live = start_service(settings)
    try:
        server_budget = live.runtime.service.router.budgets["alphavantage"]
        assert server_budget.remaining()["day"] == 3
        answer = run(settings.data_dir, upstream, "warm", "AAPL", "MSFT", "--kinds", "history", "--quiet",
                     STOCKCACHE_ALPHAVANTAGE_PER_DAY="3")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert upstream.calls("alphavantage") == 2  # history comes from Alpha Vantage first
        live.runtime.ledger.flush()  # what the server's flusher does about once a second
        assert server_budget.remaining()["day"] == 1
    finally:
        live.stop()

    # A process started afterwards (the next warm, a restarted server) counts them too.
    ledger = UsageLedger(settings.data_dir / "usage.sqlite", flush_interval=None)
    try:
        assert Budget("alphavantage", Limits(per_day=3), ledger=ledger).calls_today() == 2
    finally:
        ledger.close()
