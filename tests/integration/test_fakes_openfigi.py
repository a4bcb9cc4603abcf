"""The fake OpenFIGI v3 over real HTTP: data/warning/error per job, a row per venue, job and rate limits."""

from __future__ import annotations

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket

pytestmark = pytest.mark.timeout(60)

KEY = "TESTKEY_openfigi_7d8e9f"
SAP = "DE0007164600"
APPLE = "US0378331005"
ROW_KEYS = {"figi", "name", "ticker", "exchCode", "compositeFIGI", "securityType", "marketSector", "shareClassFIGI",
            "securityType2", "securityDescription"}


@pytest.fixture
def fake(clock):
    with FakeUpstream(clock=clock) as server:
        yield server


@pytest.fixture
def figi(fake):
    return fake.api("openfigi")


@pytest.fixture
def post(fake):
    session = requests.Session()

    def post(path: str, body: object, *, key: str | None = None) -> requests.Response:
        headers = {"X-OPENFIGI-APIKEY": key} if key else {}
        return session.post(fake.url("openfigi") + path, json=body, headers=headers, timeout=10)

    yield post
    session.close()


def isin(job_value: str, **filters: str) -> dict[str, str]:
    return {"idType": "ID_ISIN", "idValue": job_value, **filters}


def test_openfigi_answers_each_job_in_order_with_data_warning_or_error(post):
    answer = post("/mapping", [isin(SAP), isin("US0000000002"), isin("US0378331006"), {"idType": "NOPE",
                                                                                          "idValue": "X"}])
    assert answer.status_code == 200
    body = answer.json()
    assert len(body) == 4 and [set(item) for item in body] == [{"data"}, {"warning"}, {"error"}, {"error"}]
    assert body[1] == {"warning": "No identifier found."}
    assert body[2] == {"error": "Invalid idValue format."}  # a bad check digit
    assert all(set(row) == ROW_KEYS for row in body[0]["data"])


def test_openfigi_an_isin_without_filters_has_a_row_per_venue_composites_included(post):
    rows = post("/mapping", [isin(SAP)]).json()[0]["data"]
    codes = [row["exchCode"] for row in rows]
    assert {"GY", "GF", "GR", "GS", "GM"} <= set(codes) and len(codes) == len(set(codes))
    assert codes[0] != "GY"  # no useful order: the Xetra line has to be looked for
    assert {row["ticker"] for row in rows} == {"SAP"} and {row["name"] for row in rows} == {"SAP SE"}
    assert len({row["compositeFIGI"] for row in rows}) == 1
    apple = [row["exchCode"] for row in post("/mapping", [isin(APPLE)]).json()[0]["data"]]
    assert {"US", "UW"} <= set(apple) and "UN" not in apple  # Apple is on Nasdaq, not the NYSE
    shop = {row["exchCode"] for row in post("/mapping", [isin("CA82509L1076")]).json()[0]["data"]}
    assert {"CT", "CN", "UN", "US"} <= shop  # one ISIN, Toronto and New York


def test_openfigi_filters_by_mic_or_exchange_code_but_not_both(post):
    by_mic, by_code, both = post("/mapping", [isin(SAP, micCode="XETR"), isin(SAP, exchCode="GY"),
                                              isin(SAP, micCode="XETR", exchCode="GY")]).json()
    assert [row["exchCode"] for row in by_mic["data"]] == ["GY"] and by_code == by_mic
    assert "error" in both
    swiss = post("/mapping", [isin("CH0038863350", micCode="XSWX")]).json()[0]["data"]
    assert [row["exchCode"] for row in swiss] == ["SE"]  # exchCode is not a MIC
    assert post("/mapping", [isin(SAP, micCode="XLON")]).json() == [{"warning": "No identifier found."}]
    etf = post("/mapping", [isin("IE00BK5BQT80", securityType="ETP")]).json()[0]["data"]
    assert etf and all(row["securityType"] == "ETP" for row in etf)


def test_openfigi_tickers_are_bloombergs(post):
    eric, tencent, berkshire = (post("/mapping", [isin(code)]).json()[0]["data"][0]["ticker"]
                                for code in ("SE0000108656", "KYG875721634", "US0846707026"))
    assert (eric, tencent, berkshire) == ("ERICB", "700", "BRK/B")
    by_ticker = post("/mapping", [{"idType": "TICKER", "idValue": "VOD", "exchCode": "LN"}]).json()[0]["data"]
    assert [(row["ticker"], row["exchCode"]) for row in by_ticker] == [("VOD", "LN")]


def test_openfigi_figis_are_well_formed_and_stable(post):
    first = post("/mapping", [isin(SAP)]).json()[0]["data"]
    assert post("/mapping", [isin(SAP)]).json()[0]["data"] == first
    for row in first:
        code = row["figi"]
        assert len(code) == 12 and code.startswith("BBG") and not set(code) & set("AEIOU")
    by_figi = post("/mapping", [{"idType": "ID_BB_GLOBAL", "idValue": first[0]["figi"]}]).json()[0]["data"]
    assert by_figi == [first[0]]


def test_openfigi_too_many_jobs_is_413_ten_without_a_key_and_a_hundred_with_one(post):
    assert post("/mapping", [isin(APPLE)] * 10).status_code == 200
    assert post("/mapping", [isin(APPLE)] * 11).status_code == 413
    assert post("/mapping", [isin(APPLE)] * 100, key=KEY).status_code == 200
    assert post("/mapping", [isin(APPLE)] * 101, key=KEY).status_code == 413


def test_openfigi_rate_limit_is_429_past_25_a_minute_without_a_key(post, figi, clock):
    for _ in range(25):
        assert post("/mapping", [isin(APPLE)]).status_code == 200
    assert post("/mapping", [isin(APPLE)]).status_code == 429
    assert post("/mapping", [isin(APPLE)], key=KEY).status_code == 200  # a key has 250 a minute
    clock.advance(61)
    assert post("/mapping", [isin(APPLE)]).status_code == 200
    assert figi.jobs() == 27


def test_openfigi_malformed_bodies_are_400(fake, post):
    url = fake.url("openfigi") + "/mapping"
    assert requests.post(url, data=b"[{not json", headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 400
    assert post("/mapping", {"idType": "ID_ISIN", "idValue": SAP}).status_code == 400  # not an array
    assert requests.get(url, timeout=10).status_code == 405


def test_openfigi_search_pages_with_next(post):
    first = post("/search", {"query": "SAP"}).json()
    assert len(first["data"]) == 10 and first["next"]
    second = post("/search", {"query": "SAP", "start": first["next"]}).json()
    assert second["data"] and second["data"][0] not in first["data"]
    assert post("/search", {"query": "nothing like it"}).json() == {"data": []}
    listed = {row["exchCode"] for row in post("/search", {"query": "VODAFONE", "exchCode": "LN"}).json()["data"]}
    assert listed == {"LN"}


def test_openfigi_knows_every_named_demo_listing(post):
    market = DemoMarket()
    isins = sorted({market.isin(symbol) for symbol in market.listings()})
    answers = []
    for start in range(0, len(isins), 100):
        answers += post("/mapping", [isin(code) for code in isins[start:start + 100]], key=KEY).json()
    assert all("data" in answer for answer in answers)
