"""How each provider failure becomes our error, and that no key ever leaks into one."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses

from stockcache.errors import (
    NoData,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
)
from stockcache.upstream.providers import AlphaVantageProvider, FinnhubProvider, UpstreamRequest
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig
from stockcache.upstream.providers.finnhub import FinnhubConfig

FH_BASE = "https://finnhub.io/api/v1"
AV_BASE = "https://www.alphavantage.co/query"
FH_KEY = "TESTKEY_finnhub_9f8e7d"
AV_KEY = "TESTKEY_alphavantage_1a2b3c"
NOW = 1_715_100_000.0  # 2024-05-07T16:40:00Z: 26400 s to the next UTC midnight
TO_MIDNIGHT = 26400

HTML_502 = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
            b"</h1></center><hr><center>cloudflare</center></body></html>")

AV_DAILY = ("We have detected your API key as " + AV_KEY + " and our standard API rate limit is 25 requests "
            "per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ "
            "to instantly remove all daily rate limits.")
AV_DAILY_THANKS = ("Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. "
                   "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to "
                   "instantly remove all daily rate limits.")
AV_BURST = ("Thank you for using Alpha Vantage! Please consider spreading out your free API requests more "
            "sparingly (1 request per second). You may subscribe to any of the premium plans at "
            "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), "
            "raise the per-second burst limit, and instantly unlock all premium endpoints")
AV_LEGACY = ("Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and "
             "500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to "
             "target a higher API call frequency.")
AV_PREMIUM_ENDPOINT = ("Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to "
                       "any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock "
                       "all premium endpoints")
AV_PREMIUM_PARAM = ("Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium "
                    "feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium "
                    "plans at https://www.alphavantage.co/premium/ to instantly unlock all premium features")
AV_BAD_KEY = ("the parameter apikey is invalid or missing. Please claim your free API key on "
              "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds.")
AV_INVALID_CALL = ("Invalid API call. Please retry or visit the documentation "
                   "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY.")


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# (provider, kind, status, headers, body, error class, code, retry_after)
CASES = [
    ("finnhub", "quote", 401, {}, b'{"error":"Invalid API key."}', UpstreamAuthError, "upstream_error", None),
    ("finnhub", "quote", 401, {}, b'{"error":"Invalid API key"}', UpstreamAuthError, "upstream_error", None),
    ("finnhub", "quote", 401, {}, b'{"error":"Please use an API key."}', UpstreamAuthError, "upstream_error", None),
    # "No access" refuses one listing (non-US on the free plan), with 403 or sometimes 401; not the key.
    ("finnhub", "profile", 403, {}, b'{"error":"You don\'t have access to this resource."}', SymbolRefused,
     "upstream_error", None),
    ("finnhub", "quote", 401, {}, b'{"error":"You don\'t have access to this resource."}', SymbolRefused,
     "upstream_error", None),
    ("finnhub", "quote", 200, {}, b'{"error":"You don\'t have access to this resource."}', SymbolRefused,
     "upstream_error", None),
    # Candles are premium and search has no symbol: there it refuses the endpoint, a plan error.
    ("finnhub", "history", 403, {}, b'{"error":"You don\'t have access to this resource."}', UpstreamAuthError,
     "upstream_error", None),
    ("finnhub", "search", 403, {}, b'{"error":"You don\'t have access to this resource."}', UpstreamAuthError,
     "upstream_error", None),
    ("finnhub", "quote", 403, {}, b'{"error":"Invalid API key."}', UpstreamAuthError, "upstream_error", None),
    ("finnhub", "quote", 429, {}, b'{"error":"API limit reached. Please try again later. Remaining Limit: 0"}',
     RateLimited, "rate_limited", None),
    ("finnhub", "quote", 429, {"Retry-After": "17"},
     b'{"error":"API limit reached. Please try again later. Remaining Limit: 0"}', RateLimited, "rate_limited", 17),
    ("finnhub", "quote", 429, {"Retry-After": "Tue, 07 May 2024 16:41:30 GMT"}, b"", RateLimited, "rate_limited", 90),
    ("finnhub", "quote", 500, {}, b"Internal Server Error", UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 503, {}, b'{"error":"Service unavailable"}', UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 502, {"Content-Type": "text/html"}, HTML_502, UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {"Content-Type": "text/html"}, HTML_502, UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {}, b'{"c":261.74,"d":2.2', UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {}, b"[1, 2, 3]", UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {}, b'{"d":2.29}', UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {}, b'{"c":"261.74"}', UpstreamError, "upstream_error", None),
    ("finnhub", "profile", 200, {}, b'["AAPL"]', UpstreamError, "upstream_error", None),
    ("finnhub", "news", 200, {}, b'{"headline":"x"}', UpstreamError, "upstream_error", None),
    ("finnhub", "news", 200, {}, b'[{"headline":"x"}]', UpstreamError, "upstream_error", None),
    ("finnhub", "quote", 200, {}, _json({"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}),
     SymbolNotFound, "symbol_not_found", None),
    # {} for a known symbol without fundamentals too: "no data here", the next provider is asked.
    ("finnhub", "profile", 200, {}, b"{}", NoData, "symbol_not_found", None),
    ("finnhub", "quote", 200, {}, b'{"error":"API limit reached. Please try again later. Remaining Limit: 0"}',
     RateLimited, "rate_limited", None),
    ("alphavantage", "quote", 200, {}, _json({"Information": AV_DAILY}), RateLimited, "rate_limited", TO_MIDNIGHT),
    ("alphavantage", "quote", 200, {}, _json({"Note": AV_DAILY_THANKS}), RateLimited, "rate_limited", TO_MIDNIGHT),
    ("alphavantage", "quote", 200, {}, _json({"Information": AV_DAILY_THANKS}), RateLimited, "rate_limited",
     TO_MIDNIGHT),
    ("alphavantage", "quote", 200, {}, _json({"Information": AV_BURST}), RateLimited, "rate_limited", 1),
    ("alphavantage", "profile", 200, {}, _json({"Note": AV_LEGACY}), RateLimited, "rate_limited", 60),
    ("alphavantage", "history", 200, {}, _json({"Information": AV_PREMIUM_PARAM}), UpstreamAuthError,
     "upstream_error", None),
    ("alphavantage", "quote", 200, {}, _json({"Information": AV_PREMIUM_ENDPOINT}), UpstreamAuthError,
     "upstream_error", None),
    ("alphavantage", "quote", 200, {}, _json({"Error Message": AV_BAD_KEY}), UpstreamAuthError, "upstream_error",
     None),
    ("alphavantage", "history", 200, {}, _json({"Error Message": AV_INVALID_CALL}), SymbolNotFound,
     "symbol_not_found", None),
    ("alphavantage", "news", 200, {}, _json({"Information": "Invalid inputs. Please refer to the API "
                                             "documentation https://www.alphavantage.co/documentation#newsapi"}),
     SymbolNotFound, "symbol_not_found", None),
    ("alphavantage", "quote", 200, {}, _json({"Information": "Something new we have never seen."}),
     UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 200, {}, b'{"Global Quote": {}}', SymbolNotFound, "symbol_not_found", None),
    ("alphavantage", "profile", 200, {}, b"{}", NoData, "symbol_not_found", None),
    ("alphavantage", "quote", 502, {"Content-Type": "text/html"}, HTML_502, UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 200, {"Content-Type": "text/html"}, HTML_502, UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 200, {}, b'{"Global Quote": {"05. price": "1', UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 200, {}, b'[{"Global Quote": {}}]', UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 200, {}, b'{"Global Quote": {"05. price": "n/a"}}', UpstreamError, "upstream_error",
     None),
    ("alphavantage", "history", 200, {}, b'{"Time Series (Daily)": {"2024-05-06": {"1. open": "1"}}}',
     UpstreamError, "upstream_error", None),
    ("alphavantage", "news", 200, {}, b'{"feed": {"title": "x"}}', UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 429, {"Retry-After": "5"}, b"", RateLimited, "rate_limited", 5),
    ("alphavantage", "quote", 500, {}, b"oops", UpstreamError, "upstream_error", None),
    ("alphavantage", "quote", 401, {}, b"", UpstreamAuthError, "upstream_error", None),
]


def _provider(name: str):
    if name == "finnhub":
        return FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH_BASE), clock=lambda: NOW, candles=True)
    return AlphaVantageProvider(AlphaVantageConfig(api_key=AV_KEY, url=AV_BASE), clock=lambda: NOW)


def _params(kind: str) -> dict[str, Any]:
    return {"days": 30} if kind in ("history", "news") else {}


def _via_requests(provider, kind: str, status: int, headers: dict[str, str], body: bytes) -> StockcacheError:
    """Send the built request to a mocked real URL and return what parse raises."""
    request = provider.build_request(kind, "AAPL", _params(kind))
    with responses.RequestsMock() as mock:
        extra = {k: v for k, v in headers.items() if k != "Content-Type"}
        mock.add(responses.GET, request.url, body=body, status=status, headers=extra,
                 content_type=headers.get("Content-Type", "application/json"))
        response = requests.get(request.url, params=request.params, headers=request.headers)
    with pytest.raises(StockcacheError) as info:
        provider.parse(kind, "AAPL", _params(kind), response.status_code, response.headers, response.content)
    return info.value


@pytest.mark.parametrize(
    "name,kind,status,headers,body,cls,code,retry_after",
    CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)],
)
def test_provider_error_mapping(name, kind, status, headers, body, cls, code, retry_after):
    error = _via_requests(_provider(name), kind, status, headers, body)
    assert type(error) is cls
    assert error.code == code
    assert error.fields.get("retry_after") == retry_after
    text = json.dumps(error.to_dict()) + str(error) + repr(error) + error.message
    assert FH_KEY not in text and AV_KEY not in text
    assert "apikey=" not in text and "token=" not in text
    assert "http" not in error.message, "no URL (and so no query string) in an error message"
    if issubclass(cls, SymbolNotFound):
        assert error.fields["symbol"] == "AAPL"


def test_alphavantage_daily_cap_key_is_redacted_even_if_it_is_not_ours():
    provider = _provider("alphavantage")
    other = AV_DAILY.replace(AV_KEY, "SOMEOTHERKEY123")
    assert "SOMEOTHERKEY123" not in provider.redact(other)
    assert AV_KEY not in provider.redact(AV_DAILY)


def test_errors_do_not_chain_the_raw_body():
    provider = _provider("alphavantage")
    with pytest.raises(RateLimited) as info:
        provider.parse("quote", "AAPL", {}, 200, {}, _json({"Information": AV_DAILY}))
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("name", ["finnhub", "alphavantage"])
def test_upstream_request_repr_masks_key(name):
    provider = _provider(name)
    key = FH_KEY if name == "finnhub" else AV_KEY
    for kind in ("quote", "profile", "history", "news", "metric", "search"):
        request = provider.build_request(kind, "AAPL", {"days": 5, "q": "apple"})
        assert isinstance(request, UpstreamRequest)
        assert key not in repr(request) and key not in str(request) and key not in f"{request}"
        assert key not in request.safe_url()
        assert key in json.dumps(request.params) + json.dumps(request.headers)  # but it is sent


def test_finnhub_key_only_in_header():
    request = _provider("finnhub").build_request("quote", "AAPL", {})
    assert request.headers == {"X-Finnhub-Token": FH_KEY, "Accept": "application/json"}
    assert FH_KEY not in json.dumps(request.params) + request.url


def test_alphavantage_full_outputsize_never_requested():
    request = _provider("alphavantage").build_request("history", "AAPL", {"days": 100})
    assert request.params["outputsize"] == "compact"
