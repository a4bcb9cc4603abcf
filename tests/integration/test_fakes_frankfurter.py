"""The fake Frankfurter v1 over real HTTP: ECB rates, carried dates, rebasing, its errors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket

pytestmark = pytest.mark.timeout(60)

FRIDAY = date(2026, 1, 2)
SATURDAY_NOON = datetime(2026, 1, 3, 12, tzinfo=UTC).timestamp()
MONDAY = date(2026, 1, 5)


def at(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


@pytest.fixture
def fake(clock):
    clock.set(SATURDAY_NOON)
    with FakeUpstream(clock=clock) as server:
        yield server


@pytest.fixture
def get(fake):
    session = requests.Session()

    def get(path: str, **params: str) -> requests.Response:
        return session.get(fake.url("frankfurter") + path, params=params, timeout=10)

    yield get
    session.close()


def test_frankfurter_latest_is_the_ecb_table_as_published(get):
    body = get("/latest").json()
    assert body["amount"] == 1.0 and body["base"] == "EUR" and body["date"] == FRIDAY.isoformat()
    assert body["rates"] == DemoMarket().ecb_rates(FRIDAY)
    assert "EUR" not in body["rates"] and "BGN" not in body["rates"] and len(body["rates"]) == 29
    assert get("/current").json() == body


def test_frankfurter_dates_without_a_publication_answer_the_last_one_with_its_date(get, clock):
    assert get("/2026-01-03").json()["date"] == "2026-01-02"  # Saturday -> Friday
    assert get("/2026-01-04").json()["date"] == "2026-01-02"
    assert get("/2025-12-26").json()["date"] == "2025-12-24"  # Christmas holidays of TARGET
    assert get("/2026-01-01").json()["date"] == "2025-12-31"  # New Year's Day
    assert get("/2030-06-01").json()["date"] == "2026-01-02"  # the future: the latest
    clock.set(at(MONDAY, 14, 59))  # 15:59 in Frankfurt: not published yet
    assert get("/latest").json()["date"] == "2026-01-02"
    assert get(f"/{MONDAY}").json()["date"] == "2026-01-02"
    clock.set(at(MONDAY, 15, 1))
    assert get("/latest").json()["date"] == MONDAY.isoformat()


def test_frankfurter_rebases_through_eur_and_rounds_like_frankfurter(get):
    ecb = DemoMarket().ecb_rates(FRIDAY)
    body = get("/latest", **{"from": "USD", "to": "EUR,GBP,JPY,SEK,IDR"}).json()
    assert body["base"] == "USD" and set(body["rates"]) == {"EUR", "GBP", "JPY", "SEK", "IDR"}
    rates = body["rates"]
    # Frankfurter's rule: > 5000 no decimals, > 80 two, > 20 three, > 1 four, else five; applied to each EUR
    # rate first (a no-op for the ECB's own decimals, except IDR's), then to the ratio.
    assert rates["GBP"] == float(f"{ecb['GBP'] / ecb['USD']:.5f}")
    assert rates["EUR"] == float(f"{1 / ecb['USD']:.5f}")
    assert rates["JPY"] == float(f"{ecb['JPY'] / ecb['USD']:.2f}")
    assert rates["SEK"] == float(f"{ecb['SEK'] / ecb['USD']:.4f}")
    assert rates["IDR"] == float(round(round(ecb["IDR"]) / ecb["USD"]))
    # "from" wins over its alias "base", "to" over "symbols"; codes are upper-cased.
    assert get("/latest", base="GBP", **{"from": "usd", "to": "gbp", "symbols": "JPY"}).json()["rates"] == {
        "GBP": rates["GBP"]}
    everything = get("/latest", base="USD").json()["rates"]
    assert "EUR" in everything and "USD" not in everything and len(everything) == 29


def test_frankfurter_amount_multiplies_and_rounds(get):
    ecb = DemoMarket().ecb_rates(FRIDAY)
    body = get("/latest", amount="100", to="USD").json()
    assert body["amount"] == 100.0 and body["rates"] == {"USD": float(f"{100 * ecb['USD']:.2f}")}
    for bad in ("0", "-5", "abc"):
        answer = get("/latest", amount=bad)
        assert (answer.status_code, answer.json()) == (422, {"message": "invalid amount"})


def test_frankfurter_unknown_currencies_are_404_or_silently_dropped(get):
    for params in ({"from": "XXX"}, {"to": "XXX"}, {"from": "USD", "to": "XXX,YYY"}):
        answer = get("/latest", **params)
        assert (answer.status_code, answer.json()) == (404, {"message": "not found"})
    body = get("/latest", **{"from": "USD", "to": "GBP,XXX"}).json()
    assert list(body["rates"]) == ["GBP"]  # a client must check that every code came back
    assert get("/2025-12-30", to="BGN").json()["rates"]["BGN"] == 1.9558
    assert get("/latest", to="BGN").status_code == 404  # no longer published in 2026


def test_frankfurter_bad_input_is_422_and_unknown_paths_404(get, fake):
    for path, params, message in (("/2026-13-45", {}, "invalid date"),
                                  ("/latest", {"from": "USD", "to": "USD"}, "bad currency pair")):
        answer = get(path, **params)
        assert (answer.status_code, answer.json()) == (422, {"message": message})
    for path in ("/yesterday", "/2026-01-02/extra"):
        answer = get(path)
        assert (answer.status_code, answer.json()) == (404, {"status": 404, "message": "not found"})
    answer = requests.get(fake.base_url + "/frankfurter/v2/rates", timeout=10)
    assert answer.status_code == 404


def test_frankfurter_ranges_list_business_days_from_the_publication_before_the_start(get):
    body = get("/2025-12-27..2026-01-06", to="USD").json()
    assert body["start_date"] == "2025-12-24"  # before the start asked for
    assert body["end_date"] == "2026-01-02"  # "today" is Saturday the 3rd
    assert list(body["rates"]) == ["2025-12-24", "2025-12-29", "2025-12-30", "2025-12-31", "2026-01-02"]
    assert body["rates"]["2025-12-29"] == {"USD": DemoMarket().ecb_rates(date(2025, 12, 29))["USD"]}
    assert list(get("/2025-12-31..", to="GBP").json()["rates"]) == ["2025-12-31", "2026-01-02"]


def test_frankfurter_currencies_and_cache_headers(get):
    answer = get("/currencies")
    names = answer.json()
    assert names["USD"] == "United States Dollar" and names["EUR"] == "Euro" and "BGN" not in names
    assert len(names) == 30
    latest = get("/latest")
    assert latest.headers["Cache-Control"] == "public, max-age=86400" and latest.headers["ETag"]
    assert latest.headers["Content-Type"].startswith("application/json")


def test_frankfurter_calls_are_counted_by_endpoint_and_base(get, fake):
    get("/latest", **{"from": "USD"})
    get("/latest")
    get("/2026-01-02", base="GBP")
    assert fake.calls(provider="frankfurter") == 3
    assert fake.calls(provider="frankfurter", endpoint="latest") == 2
    assert fake.calls(provider="frankfurter", symbol="USD") == 1
    assert fake.calls(provider="frankfurter", symbol="GBP") == 1
