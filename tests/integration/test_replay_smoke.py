"""The replay benchmarks at a tiny size, so they cannot rot: they run, and their invariants hold.

The benchmarks themselves (``python -m bench.replay``) are never part of the suite;
these runs take a few seconds on the same path (real service, SQLite cache, fetcher,
providers, the fake upstream in-process, a fake clock).
"""

from __future__ import annotations

from pathlib import Path

from bench.replay import bench_settings, simulate, within_budget


def test_replay_us_day_runs_within_budget_without_errors():
    """The US day reads its portfolios in the server's base currency (USD) as well: the page's FX table
    comes from the fake's Frankfurter, never from whichever API the URL does not name."""
    outcome = simulate(5, refresher=False)
    assert outcome.page_loads > 0 and outcome.items > 0
    assert outcome.errors == 0 and outcome.stale == 0
    assert within_budget(outcome, bench_settings(Path(".")))
    # Finnhub serves every US quote on the default plan; Alpha Vantage is a fallback nobody needed.
    assert outcome.calls["finnhub"] > 0 and outcome.calls["alphavantage"] == 0
