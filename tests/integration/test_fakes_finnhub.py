"""The fake Finnhub's empty answers for known symbols over real HTTP: profile2 ``{}``, metric without ``metric``."""

from __future__ import annotations

import pytest
import requests

from bench.fake_upstream import FakeUpstream

pytestmark = pytest.mark.timeout(60)

KEY = "TESTKEY_finnhub_4d5e6f"


@pytest.fixture
def fake(clock):
    with FakeUpstream(clock=clock, expected_keys={"finnhub": KEY}) as server:
        yield server


def fh(fake, path: str, **params: str) -> requests.Response:
    return requests.get(fake.finnhub_url + path, params={"token": KEY, **params}, timeout=10)


@pytest.mark.parametrize("etf", ["SPY", "QQQ", "VOO"])
def test_finnhub_known_etfs_have_a_quote_but_no_fundamentals(fake, etf):
    assert fh(fake, "/quote", symbol=etf).json()["c"] > 0  # known: it has a price
    assert fh(fake, "/stock/profile2", symbol=etf).json() == {}  # the same {} as an unknown symbol
    metric = fh(fake, "/stock/metric", symbol=etf, metric="all").json()
    assert "metric" not in metric and metric["symbol"] == etf


def test_finnhub_symbols_without_fundamentals_are_configurable(fake):
    fake.set_no_fundamentals(["IBM"])
    assert fh(fake, "/stock/profile2", symbol="IBM").json() == {}
    assert "metric" not in fh(fake, "/stock/metric", symbol="IBM", metric="all").json()
    assert fh(fake, "/stock/profile2", symbol="SPY").json()["ticker"] == "SPY"
    assert fh(fake, "/stock/metric", symbol="SPY", metric="all").json()["metric"]["52WeekHigh"] > 0
    unknown = fh(fake, "/stock/metric", symbol="ZZZZ1", metric="all").json()
    assert unknown == {"metric": {}, "metricType": "all", "series": {}}  # unknown symbols answer differently
