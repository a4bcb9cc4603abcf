"""Mounted APIs share the fake upstream's machinery: counts, latency, faults, outage, reset, command line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from tests.fakes import TwelveData

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parents[2]
TD_KEY = {"apikey": "k"}


@pytest.fixture
def fake(clock):
    with FakeUpstream(clock=clock) as server:
        yield server


def td_quote(fake, symbol: str = "AAPL", **kwargs) -> requests.Response:
    return requests.get(fake.url("twelvedata") + "/quote", params={"symbol": symbol, **TD_KEY}, timeout=10, **kwargs)


def fx_latest(fake) -> requests.Response:
    return requests.get(fake.url("frankfurter") + "/latest", timeout=10)


def test_mounted_apis_have_their_base_urls_and_are_counted_apart(fake):
    assert fake.mounted() == ["twelvedata", "coingecko", "frankfurter", "openfigi", "openai"]
    assert fake.url("frankfurter") == fake.base_url + "/frankfurter/v1"
    assert fake.url("coingecko") == fake.base_url + "/coingecko/api/v3"
    assert fake.url("finnhub") == fake.finnhub_url
    td_quote(fake)
    fx_latest(fake)
    fx_latest(fake)
    requests.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL", "token": "k"}, timeout=10)
    assert (fake.calls(provider="twelvedata"), fake.calls(provider="frankfurter"), fake.calls(provider="finnhub")) == (
        1, 2, 1)
    assert fake.calls() == 4
    with pytest.raises(ValueError):
        fake.mount(TwelveData())  # its prefix is taken


@pytest.mark.parametrize("fault", ["500", "503", "html", "wrongshape", "badjson"])
def test_shared_faults_reach_one_mounted_api_only(fake, fault):
    fake.set_fault(fault, provider="twelvedata")
    broken = td_quote(fake)
    if fault in ("wrongshape", "badjson"):
        assert broken.status_code == 200
        with pytest.raises((ValueError, KeyError, TypeError)):
            assert broken.json()["symbol"]
    else:
        assert broken.status_code in (500, 502, 503)
    assert fx_latest(fake).status_code == 200
    assert requests.get(fake.finnhub_url + "/quote", params={"symbol": "AAPL", "token": "k"},
                        timeout=10).status_code == 200


def test_shared_fault_per_symbol_and_times_on_a_mounted_api(fake):
    fake.set_fault("500", provider="twelvedata", symbol="MSFT", times=1)
    assert td_quote(fake, "AAPL").status_code == 200
    assert td_quote(fake, "MSFT").status_code == 500
    assert td_quote(fake, "MSFT").status_code == 200


def test_shared_429_fault_speaks_each_apis_language(fake):
    fake.set_fault("429", retry_after=5)
    twelvedata = td_quote(fake)
    assert twelvedata.status_code == 429 and twelvedata.json()["code"] == 429
    assert "for the current minute" in twelvedata.json()["message"]
    coingecko = requests.get(fake.url("coingecko") + "/ping", timeout=10)
    assert coingecko.status_code == 429 and coingecko.json()["status"]["error_code"] == 429
    assert coingecko.headers["Retry-After"] == "5"
    openfigi = requests.post(fake.url("openfigi") + "/mapping", json=[], timeout=10)
    assert openfigi.status_code == 429


def test_shared_reset_hang_and_outage_reach_mounted_apis(fake):
    fake.set_fault("reset", provider="frankfurter", times=1)
    with pytest.raises(requests.ConnectionError):
        fx_latest(fake)
    assert fx_latest(fake).status_code == 200
    fake.set_fault("hang", provider="frankfurter", times=1)
    with pytest.raises(requests.Timeout):
        requests.get(fake.url("frankfurter") + "/latest", timeout=0.5)
    assert fake.wait_hanging(1)
    fake.release_hangs()
    fake.outage = True
    assert fx_latest(fake).status_code == 503 and td_quote(fake).status_code == 503
    fake.outage = False
    assert fx_latest(fake).status_code == 200


def test_shared_latency_and_trickle_on_a_mounted_api(fake):
    fake.set_latency(0.3, provider="frankfurter")
    started = time.monotonic()
    assert fx_latest(fake).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert td_quote(fake).status_code == 200
    assert time.monotonic() - started < 0.3  # only that API is slow
    fake.set_latency(None, provider="frankfurter")
    fake.set_fault("trickle", provider="frankfurter", times=1)
    got: list[requests.Response] = []
    reader = threading.Thread(target=lambda: got.append(fx_latest(fake)))
    reader.start()
    assert fake.wait_hanging(1)  # a byte at a time: every read succeeds, the answer never ends
    assert got == []
    fake.release_hangs()
    reader.join(timeout=10)
    assert got[0].status_code == 200 and got[0].json()["base"] == "EUR"  # the rest at once, the real answer


def test_reset_forgets_mounted_apis_counters(fake):
    td_quote(fake, "AAPL,MSFT")
    assert fake.api("twelvedata").credits() == 2
    fake.reset()
    assert fake.api("twelvedata").credits() == 0 and fake.calls() == 0


def test_fake_upstream_runs_alone_with_every_api(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "bench.fake_upstream", "--notify", "--twelvedata-key", "K",
                                "--lse-currency", "GBP"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        urls = dict(process.stdout.readline().strip().split("=", 1) for _ in range(8))
        assert set(urls) == {"STOCKCACHE_FINNHUB_URL", "STOCKCACHE_ALPHAVANTAGE_URL", "STOCKCACHE_TWELVEDATA_URL",
                             "STOCKCACHE_COINGECKO_URL", "STOCKCACHE_FX_URL", "STOCKCACHE_OPENFIGI_URL",
                             "STOCKCACHE_LLM_URL", "NOTIFY_URL"}
        quote = requests.get(urls["STOCKCACHE_TWELVEDATA_URL"] + "/quote", params={"symbol": "VOD:XLON", "apikey": "K"},
                             timeout=10).json()
        assert quote["currency"] == "GBP"
        assert requests.get(urls["STOCKCACHE_TWELVEDATA_URL"] + "/quote", params={"symbol": "VOD:XLON",
                                                                                  "apikey": "other"},
                            timeout=10).json()["code"] == 401
        assert requests.get(urls["STOCKCACHE_FX_URL"] + "/latest", timeout=10).json()["base"] == "EUR"
        assert requests.post(urls["NOTIFY_URL"] + "/topic", data=b"hi", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_mounted_apis_answer_the_in_process_path_of_bench_replay(fake):
    """bench/replay.py calls FakeUpstream._handle with a plain dict of headers, any case."""
    status, _, body = fake._handle("GET", "/twelvedata/quote?symbol=AAPL", {"authorization": "apikey k"})
    assert status == 200 and b'"symbol": "AAPL"' in body
    status, _, body = fake._handle("POST", "/openfigi/v3/mapping", {},
                                   b'[{"idType": "ID_ISIN", "idValue": "US0378331005"}]')
    assert status == 200 and b'"exchCode": "UW"' in body
