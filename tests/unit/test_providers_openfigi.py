"""The OpenFIGI provider, pure: its mapping job, the three per-job shapes, Bloomberg tickers, its limits."""

from __future__ import annotations

import json

import pytest

from stockcache.errors import InvalidRequest, RateLimited, SymbolNotFound, UpstreamAuthError, UpstreamError
from stockcache.kinds import check
from stockcache.symbols import normalize_isin
from stockcache.upstream.providers.openfigi import OpenFigiConfig, OpenFigiProvider, symbol_for_ticker
from stockcache.venues import BY_MIC, US

KEY = "TESTKEY_openfigi_0a1b2c"
SAP = "DE0007164600"
IBM = "US4592001014"


def provider(**config: object) -> OpenFigiProvider:
    return OpenFigiProvider(OpenFigiConfig(**config), clock=lambda: 1_767_000_000.0)  # type: ignore[arg-type]


def row(ticker: str, code: str, name: str = "SAP SE", figi: str = "BBG000BLNNH6") -> dict[str, str]:
    return {"figi": figi, "name": name, "ticker": ticker, "exchCode": code, "compositeFIGI": figi,
            "securityType": "Common Stock", "marketSector": "Equity", "shareClassFIGI": "BBG001S5S399",
            "securityType2": "Common Stock", "securityDescription": ticker}


def parse(body: object, status: int = 200, headers: dict[str, str] | None = None, isin: str = SAP) -> object:
    return provider().parse("lookup", isin, {}, status, headers or {}, json.dumps(body).encode())


def test_openfigi_request_is_one_isin_job_with_the_key_in_a_header_never_logged():
    keyed = provider(api_key=KEY, url="http://fake/openfigi/v3").build_request("lookup", SAP, {})
    assert (keyed.method, keyed.url) == ("POST", "http://fake/openfigi/v3/mapping")
    assert keyed.json == [{"idType": "ID_ISIN", "idValue": SAP}] and keyed.params == {}
    assert keyed.headers["X-OPENFIGI-APIKEY"] == KEY and KEY not in repr(keyed)
    assert "X-OPENFIGI-APIKEY" not in provider().build_request("lookup", SAP, {}).headers


def test_openfigi_listings_come_one_per_venue_we_know_in_venue_order_whatever_the_row_order():
    rows = [row("SAP", "GM"), row("SAP", "GF", figi="BBG000FRNK12"), row("SAP", "GR"), row("SAP", "GS"),
            row("SAP", "GY", figi="BBG000XTRS12")]
    answer = parse([{"data": rows}])
    assert answer == {"isin": SAP, "listings": [
        {"symbol": "SAP.DE", "name": "SAP SE", "exchange": "XETR", "figi": "BBG000XTRS12", "currency": "EUR"},
        {"symbol": "SAP.F", "name": "SAP SE", "exchange": "XFRA", "figi": "BBG000FRNK12", "currency": "EUR"}]}
    check("lookup", SAP, answer)


def test_openfigi_a_us_share_on_several_us_venues_is_one_listing_on_its_listing_venue():
    # The captured IBM answer (upstream-apis-2.md): composite US, NYSE, and other US venues.
    rows = [row("IBM", code, "INTL BUSINESS MACHINES CORP") for code in ("UA", "US", "UC", "UN", "UP", "UB")]
    assert [(item["symbol"], item["exchange"]) for item in parse([{"data": rows}], isin=IBM)["listings"]] == [
        ("IBM", "XNYS")]
    nasdaq = [row("AAPL", code, "APPLE INC") for code in ("UP", "US", "UW", "UA")]
    assert [item["exchange"] for item in parse([{"data": nasdaq}], isin="US0378331005")["listings"]] == ["XNAS"]


def test_openfigi_london_listings_carry_no_currency_the_venue_cannot_say():
    listings = parse([{"data": [row("VOD", "LN", "VODAFONE GROUP PLC")]}], isin="GB00BH4HKS39")["listings"]
    assert listings == [{"symbol": "VOD.L", "name": "VODAFONE GROUP PLC", "exchange": "XLON",
                         "figi": "BBG000BLNNH6"}]


@pytest.mark.parametrize(("ticker", "mic", "name", "symbol"), [
    ("ERICB", "XSTO", "TELEFONAKTIEBOLAGET LM ERICSSON", "ERIC-B.ST"),
    ("ATCOA", "XSTO", "ATLAS COPCO AB-A SHS", "ATCO-A.ST"),
    ("ALFA", "XSTO", "ALFA LAVAL AB", "ALFA.ST"),  # a trailing A with no class marker is part of the name
    ("700", "XHKG", "TENCENT HOLDINGS LTD", "0700.HK"),
    ("BRK/B", "XNYS", "BERKSHIRE HATHAWAY INC-CL B", "BRK.B"),
    ("BT/A", "XLON", "BT GROUP PLC", "BT-A.L"),
    ("7203", "XTKS", "TOYOTA MOTOR CORP", "7203.T"),
])
def test_openfigi_bloomberg_tickers_become_our_symbols(ticker, mic, name, symbol):
    venue = US if mic == "XNYS" else BY_MIC[mic]
    assert symbol_for_ticker(ticker, venue, name) == symbol


def test_openfigi_unknown_isin_is_not_found_naming_the_isin():
    for job in ({"warning": "No identifier found."}, {"error": "Invalid idValue format."}):
        with pytest.raises(SymbolNotFound) as info:
            parse([job])
        assert info.value.fields["isin"] == SAP


@pytest.mark.parametrize(("status", "body", "error"), [
    (200, [{"error": "Internal mapping job error."}], UpstreamError),
    (200, [], UpstreamError),  # not one answer for the one job
    (200, {"data": []}, UpstreamError),
    (200, [{"data": {"ticker": "SAP"}}], UpstreamError),
    (413, "Too many mapping jobs.", UpstreamError),
    (400, "Request body must be a JSON array.", UpstreamError),
    (401, "Invalid API key.", UpstreamAuthError),
    (500, "oops", UpstreamError),
])
def test_openfigi_failures_are_classified(status, body, error):
    with pytest.raises(error) as info:
        parse(body, status)
    assert not isinstance(info.value, SymbolNotFound)


def test_openfigi_429_is_rate_limited_for_retry_after():
    with pytest.raises(RateLimited) as info:
        parse("Too Many Requests", 429, {"Retry-After": "7"})
    assert info.value.fields["retry_after"] == 7


def test_openfigi_limit_is_25_a_minute_without_a_key_and_250_with_one_unless_set():
    assert provider().limits().per_minute == 25
    assert provider(api_key=KEY).limits().per_minute == 250
    assert provider(api_key=KEY, per_minute=10).limits().per_minute == 10


@pytest.mark.parametrize("isin", [SAP, "us0378331005", " GB00BH4HKS39 ", "KYG875721634", "DE000BASF111"])
def test_isin_with_a_right_check_digit_is_accepted_upper_cased(isin):
    assert normalize_isin(isin) == isin.strip().upper()


@pytest.mark.parametrize("isin", ["DE0007164601", "US0378331006", "DE000BASF112", "DE000716460", "0E0007164600",
                                  "DE00071646000", "DE00071646O0", "", 12, None, "DE0007164600\u00a0"])
def test_isin_with_a_wrong_shape_or_check_digit_is_invalid_request_naming_isin(isin):
    with pytest.raises(InvalidRequest) as info:
        normalize_isin(isin)
    assert info.value.fields["field"] == "isin"
