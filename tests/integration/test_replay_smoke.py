"""The replay benchmarks at a tiny size, so they cannot rot: they run, and their invariants hold.

The benchmarks themselves (``python -m bench.replay``) are never part of the suite;
these runs take a few seconds on the same path (real service, SQLite cache, fetcher,
providers, the fake upstream in-process, a fake clock).
"""

from __future__ import annotations

from pathlib import Path

from bench.replay import bench_settings, simulate, within_budget
from bench.replay_europe import CRYPTO_NAME, FX_API, VENUES, overruns, report, simulate_europe


def test_replay_us_day_runs_within_budget_without_errors():
    """The US day reads its portfolios in the server's base currency (USD) as well: the page's FX table
    comes from the fake's Frankfurter, never from whichever API the URL does not name."""
    outcome = simulate(5, refresher=False)
    assert outcome.page_loads > 0 and outcome.items > 0
    assert outcome.errors == 0 and outcome.stale == 0
    assert within_budget(outcome, bench_settings(Path(".")))
    # Finnhub serves every US quote on the default plan; Alpha Vantage is a fallback nobody needed.
    assert outcome.calls["finnhub"] > 0 and outcome.calls["alphavantage"] == 0


def test_replay_europe_day_answers_no_wrong_currency_and_stays_within_every_budget():
    """EUR portfolios of US, Xetra, London, Paris and Amsterdam listings on free keys, refresher on:
    every priced position carries its listing's major currency and the ground truth's price (pence
    priced in pounds among them), every page's totals match ours from ground truth and ECB rates, and
    no provider received a call beyond its real budget in any window."""
    outcome = simulate_europe(4, refresher=True, plan="free")
    checks = outcome.checks
    assert checks.wrong_currency == 0 and checks.pence_as_pounds == 0 and checks.wrong_price == 0
    assert outcome.overruns == 0
    assert checks.pages > 0 and checks.totals_right == checks.pages and checks.fx_date_wrong == 0
    # Not vacuous: pence-priced London listings were shown and converted, FX was read from the fake ECB.
    assert checks.right_from_minor > 0 and outcome.api_calls(FX_API) > 0
    assert set(outcome.distinct) >= {venue.name for venue, _ in VENUES}
    assert f"| 4 | free | on | {sum(outcome.distinct.values())} (" in report([outcome])


def test_replay_europe_day_with_twelve_data_and_coingecko_answers_right_within_every_budget():
    """Issue 15's rerun at a tiny size: both free plans plus Twelve Data's free plan (8 credits a minute,
    800 a day) and a CoinGecko Demo key, with BTC-USD and ETH-EUR among the holdings, refresher on: no
    wrong currency or price, crypto included, and no provider got a credit or call beyond its budget;
    the fake itself refused nothing."""
    outcome = simulate_europe(4, refresher=True, plan="twelvedata", crypto=True)
    checks = outcome.checks
    assert checks.wrong_currency == 0 and checks.pence_as_pounds == 0 and checks.wrong_price == 0
    assert outcome.overruns == 0 and not outcome.refused
    assert checks.pages > 0 and checks.totals_right == checks.pages and checks.fx_date_wrong == 0
    # Not vacuous: Twelve Data priced European listings in batches (credits per symbol, more than its
    # calls), within its minute budget, and CoinGecko priced the crypto pairs right.
    assert outcome.api_calls("twelvedata") > 0 and outcome.credits["twelvedata"] > outcome.api_calls("twelvedata")
    assert outcome.windows[("twelvedata", "minute")][0] == 8
    assert outcome.api_calls("coingecko") > 0 and checks.by_venue[(CRYPTO_NAME, True)]["right"] > 0
    assert outcome.distinct[CRYPTO_NAME] > 0
    assert f"| 4 | twelvedata | on | {sum(outcome.distinct.values())} (" in report([outcome])


def test_replay_europe_overruns_count_twelve_data_credits_not_calls():
    """Two batches of 5 symbols a few seconds apart are 10 credits in one minute: 2 beyond Twelve Data's 8,
    though only 2 calls; a minute later the window has room again."""
    assert overruns([0.0, 10.0], 60.0, 8, [5, 5]) == (10, 2)
    assert overruns([0.0, 10.0], 60.0, 8) == (2, 0)
    assert overruns([0.0, 60.0], 60.0, 8, [5, 5]) == (5, 0)
