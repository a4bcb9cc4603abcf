"""Finding listings by ISIN (OpenFIGI) and adding holdings by ISIN, through real HTTP against the fake upstream.

The fake OpenFIGI answers from the demo market's named listings (the ground
truth): a row per venue, composites and venues stockcache does not know among
them, in no useful order, with Bloomberg's tickers and exchange codes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.settings import Settings
from stockcache.upstream.providers import DemoMarket
from tests.integration.conftest import Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)

SAP, APPLE, ROYAL_BANK, ERICSSON = "DE0007164600", "US0378331005", "CA7800871021", "SE0000108656"
NOBODY = "US0000000002"  # a well-formed ISIN no listing has
FIGI_KEY = "TESTKEY_openfigi_5e6f7a8b"


@pytest.fixture
def figi(upstream: FakeUpstream):
    api = upstream.api("openfigi")
    api.set_limits(keyless_per_minute=None, keyed_per_minute=None)  # its limits have a test of their own
    return api


def serve(tmp_path, upstream: FakeUpstream, **overrides) -> Iterator[Live]:
    live = start_service(upstream_settings(tmp_path, upstream, **overrides))
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def live(tmp_path, upstream, figi) -> Iterator[Live]:
    yield from serve(tmp_path, upstream)


def figi_calls(upstream: FakeUpstream) -> int:
    return upstream.calls("openfigi")


def test_lookup_by_isin_answers_every_listing_we_know_with_mic_figi_and_currency(live, upstream):
    alice = live.add_user("alice")
    answer = alice.get(f"/api/lookup?isin={SAP.lower()}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["isin"] == SAP and body["source"] == "openfigi" and body["cache"] == "upstream"
    assert [(item["symbol"], item["exchange"], item["currency"]) for item in body["listings"]] == [
        ("SAP.DE", "XETR", "EUR"), ("SAP.F", "XFRA", "EUR")]  # Stuttgart, Munich and the composite dropped
    assert sorted(item["symbol"] for item in body["listings"]) == sorted(DemoMarket().listings_by_isin(SAP))
    assert all(len(item["figi"]) == 12 and item["figi"].startswith("BBG") for item in body["listings"])
    again = alice.get(f"/api/lookup?isin={SAP}").json()
    assert again["cache"] == "memory" and again["listings"] == body["listings"]
    assert figi_calls(upstream) == 1  # cached in the fundamentals tier


def test_lookup_maps_bloomberg_tickers_to_symbols_the_providers_know(live):
    alice = live.add_user("alice")
    market = DemoMarket()
    for isin in (ERICSSON, "KYG875721634", "US0846707026", ROYAL_BANK, "IE00BK5BQT80"):
        symbols = [item["symbol"] for item in alice.get(f"/api/lookup?isin={isin}").json()["listings"]]
        assert sorted(symbols) == sorted(market.listings_by_isin(isin)), isin  # ERIC-B.ST, 0700.HK, BRK.B...
        for symbol in symbols:  # a symbol the providers know, on its venue (or one this plan does not cover)
            quote = alice.get(f"/api/quote/{symbol}")
            assert quote.status_code == 200 or quote.json()["error"]["code"] == "symbol_not_covered", symbol


def test_lookup_isin_with_a_bad_check_digit_is_400_without_an_upstream_call(live, upstream):
    alice = live.add_user("alice")
    for bad in ("DE0007164601", "DE000716460", "XX"):
        answer = alice.get(f"/api/lookup?isin={bad}")
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "invalid_request" and answer.json()["error"]["field"] == "isin"
    assert figi_calls(upstream) == 0


def test_lookup_unknown_isin_is_404_symbol_not_found_and_remembered(live, upstream):
    alice = live.add_user("alice")
    for _ in range(2):
        answer = alice.get(f"/api/lookup?isin={NOBODY}")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "symbol_not_found" and answer.json()["error"]["isin"] == NOBODY
    assert figi_calls(upstream) == 1


def test_lookup_by_text_searches_names_through_the_search_route(live):
    alice = live.add_user("alice")
    body = alice.get("/api/lookup?q=vodafone").json()
    assert body["query"] == "VODAFONE" and "VOD.L" in [item["symbol"] for item in body["listings"]]
    assert alice.get("/api/lookup").status_code == 400
    assert alice.get(f"/api/lookup?isin={SAP}&q=sap").status_code == 400


def test_portfolio_add_by_isin_keeps_both_on_the_preferred_exchange(live):
    alice = live.add_user("alice")
    added = alice.post("/api/portfolio", json={"isin": SAP, "shares": 2, "cost_basis": 180})
    assert added.status_code == 201, added.text
    assert added.json() | {"id": 0} == {"id": 0, "symbol": "SAP.DE", "isin": SAP, "shares": 2.0,
                                        "cost_basis": 180.0, "verified": True}
    canadian = alice.post("/api/portfolio", json={"isin": ROYAL_BANK, "shares": 1, "cost_basis": 100}).json()
    assert canadian["symbol"] == "RY"  # New York (XNYS) comes before Toronto, which is not on the list
    positions = alice.get("/api/portfolio").json()["positions"]
    assert [(p["symbol"], p["isin"]) for p in positions] == [("SAP.DE", SAP), ("RY", ROYAL_BANK)]
    performance = alice.get("/api/portfolio/performance?currency=EUR").json()
    assert performance["totals"]["complete"] is True and [p["symbol"] for p in performance["positions"]] == [
        "SAP.DE", "RY"]


def test_portfolio_add_by_isin_follows_the_preferred_exchanges_setting(tmp_path, upstream, figi):
    for live in serve(tmp_path, upstream, preferred_exchanges=("XTSE", "XFRA")):
        alice = live.add_user("alice")
        assert alice.post("/api/portfolio", json={"isin": SAP, "shares": 1, "cost_basis": 1}).json()[
            "symbol"] == "SAP.F"
        assert alice.post("/api/watchlist", json={"isin": ROYAL_BANK}).json()["symbol"] == "RY.TO"
        # No listing on a preferred venue: the ISIN's first listing.
        assert alice.post("/api/watchlist", json={"isin": "GB00BH4HKS39"}).json()["symbol"] == "VOD.L"


def test_portfolio_and_watchlist_refuse_bad_and_unknown_isins_keeping_nothing(live, upstream):
    alice = live.add_user("alice")
    bad = alice.post("/api/portfolio", json={"isin": "DE0007164601", "shares": 1, "cost_basis": 1})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "isin"
    both = alice.post("/api/watchlist", json={"isin": SAP, "symbol": "SAP.DE"})
    assert both.status_code == 400
    unknown = alice.post("/api/watchlist", json={"isin": NOBODY})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "symbol_not_found"
    assert alice.get("/api/portfolio").json()["positions"] == [] and alice.get("/api/watchlist").json()[
        "items"] == []
    assert figi_calls(upstream) == 1  # only the unknown one was asked


def test_watchlist_add_by_isin_keeps_both_and_a_repeat_is_409(live):
    alice = live.add_user("alice")
    added = alice.post("/api/watchlist", json={"isin": APPLE})
    assert added.status_code == 201 and added.json()["symbol"] == "AAPL" and added.json()["isin"] == APPLE
    assert alice.post("/api/watchlist", json={"isin": APPLE}).status_code == 409
    assert alice.post("/api/watchlist", json={"symbol": "AAPL"}).status_code == 409
    items = alice.get("/api/watchlist").json()["items"]
    assert [(item["symbol"], item["isin"]) for item in items] == [("AAPL", APPLE)] and items[0]["quote"]


def test_lookup_sends_the_key_in_its_header_and_a_refused_key_is_an_upstream_error(tmp_path, upstream, figi):
    figi.expected_key = FIGI_KEY
    for live in serve(tmp_path / "right", upstream, openfigi_api_key=FIGI_KEY):
        assert live.add_user("alice").get(f"/api/lookup?isin={SAP}").status_code == 200
    for live in serve(tmp_path / "wrong", upstream, openfigi_api_key="TESTKEY_openfigi_wrong"):
        answer = live.add_user("alice").get(f"/api/lookup?isin={SAP}")
        assert answer.status_code == 502 and "TESTKEY" not in answer.text


def test_lookup_past_openfigis_rate_limit_is_503_rate_limited(tmp_path, upstream, figi):
    figi.set_limits(keyless_per_minute=1)
    for live in serve(tmp_path, upstream):
        alice = live.add_user("alice")
        assert alice.get(f"/api/lookup?isin={SAP}").status_code == 200
        throttled = alice.get(f"/api/lookup?isin={APPLE}")
        assert throttled.status_code == 503 and throttled.json()["error"]["code"] == "rate_limited"
        assert throttled.headers["Retry-After"]


def test_lookup_budget_per_minute_is_kept_before_any_call(tmp_path, upstream, figi):
    for live in serve(tmp_path, upstream, openfigi_per_minute=1):
        alice = live.add_user("alice")
        assert alice.get(f"/api/lookup?isin={SAP}").status_code == 200
        assert alice.get(f"/api/lookup?isin={APPLE}").status_code == 503
        assert figi_calls(upstream) == 1


def test_lookup_in_demo_mode_answers_from_the_demo_listings_offline(tmp_path, upstream):
    live = start_service(Settings(data_dir=tmp_path / "data", refresh=False, port=0,
                                  openfigi_url=upstream.url("openfigi")))
    try:
        alice = live.add_user("alice")
        body = alice.get(f"/api/lookup?isin={SAP}").json()
        assert body["source"] == "demo" and [item["symbol"] for item in body["listings"]] == ["SAP.DE", "SAP.F"]
        added = alice.post("/api/portfolio", json={"isin": SAP, "shares": 1, "cost_basis": 1}).json()
        assert (added["symbol"], added["isin"]) == ("SAP.DE", SAP)
        assert alice.get(f"/api/lookup?isin={NOBODY}").status_code == 404
    finally:
        live.stop()
    assert figi_calls(upstream) == 0
