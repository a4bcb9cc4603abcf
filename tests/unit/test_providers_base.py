"""Provider plumbing: request masking, redaction, Retry-After, routing, construction from settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stockcache.errors import InvalidRequest
from stockcache.settings import Settings
from stockcache.symbols import listing
from stockcache.upstream.providers import (
    AlphaVantageProvider,
    DemoProvider,
    FinnhubProvider,
    UpstreamRequest,
    build_providers,
)
from stockcache.upstream.providers.base import (
    days_param,
    redact_secrets,
    retry_after_seconds,
    seconds_to_utc_midnight,
)
from stockcache.upstream.providers.finnhub import FinnhubConfig
from stockcache.upstream.router import plan

KEY = "TESTKEY_finnhub_9f8e7d"


def test_upstream_request_repr_masks_every_secret_name():
    request = UpstreamRequest(
        url="https://x/q", params={"symbol": "AAPL", "token": KEY, "apikey": KEY},
        headers={"X-Finnhub-Token": KEY, "x-finnhub-token": KEY}, secret=frozenset({"X-Finnhub-Token"}),
    )
    for text in (repr(request), str(request), request.safe_url(), f"{request!r}"):
        assert KEY not in text
    assert "AAPL" in repr(request) and "***" in repr(request)
    assert request.safe_url() == "https://x/q?symbol=AAPL&token=***&apikey=***"


@pytest.mark.parametrize("text", [
    f"GET https://finnhub.io/api/v1/quote?symbol=AAPL&token={KEY} failed",
    f"https://www.alphavantage.co/query?function=X&apikey={KEY}&symbol=Y",
    f"headers {{'X-Finnhub-Token': '{KEY}'}}",
    f"We have detected your API key as {KEY} and our standard API rate limit is 25 requests per day.",
])
def test_redact_removes_keys_in_any_form(text):
    assert KEY not in redact_secrets(text)
    assert KEY not in redact_secrets(text, KEY)


def test_provider_redact_removes_own_key_anywhere():
    provider = FinnhubProvider(FinnhubConfig(api_key=KEY, url="https://finnhub.io/api/v1"))
    assert provider.redact(f"boom {KEY} boom") == "boom *** boom"


@pytest.mark.parametrize("headers,expected", [
    ({}, None),
    ({"Retry-After": "30"}, 30),
    ({"retry-after": "2.5"}, 3),
    ({"Retry-After": "-4"}, 0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, 60),
])
def test_retry_after_seconds(headers, expected):
    assert retry_after_seconds(headers, now=40.0) == expected


def test_seconds_to_utc_midnight():
    assert seconds_to_utc_midnight(86400 * 3) == 86400
    assert seconds_to_utc_midnight(86400 * 3 + 86399.5) == 1


def test_days_param_defaults_and_bounds():
    assert days_param("history", {}) == 30 and days_param("news", {}) == 7
    assert days_param("history", {"days": "100"}) == 100
    with pytest.raises(InvalidRequest):
        days_param("history", {"days": 101})


def test_build_providers_from_settings():
    assert set(build_providers(Settings())) == {"demo"}
    both = build_providers(Settings(finnhub_api_key="a", alphavantage_api_key="b"))
    # FX rates and ISIN lookups need no key and CoinGecko runs keyless: on whenever not in demo mode;
    # without a model API the demo source writes analyses.
    assert set(both) == {"finnhub", "alphavantage", "ecb", "coingecko", "openfigi", "demo"}
    assert both["demo"].kinds == {"analysis"}
    assert isinstance(both["finnhub"], FinnhubProvider) and isinstance(both["alphavantage"], AlphaVantageProvider)
    assert set(build_providers(Settings(alphavantage_api_key="b"))) == {
        "alphavantage", "ecb", "coingecko", "openfigi", "demo"}
    assert set(build_providers(Settings(openfigi_api_key="c"))) == {"demo"}  # no prices: still demo mode
    with_model = build_providers(Settings(alphavantage_api_key="b", llm_api_key="k"))
    assert set(with_model) == {"alphavantage", "ecb", "coingecko", "openfigi", "llm"}
    demo_data = build_providers(Settings(llm_url="http://127.0.0.1:11434/v1"))  # a local model, demo market data
    assert set(demo_data) == {"llm", "demo"} and "analysis" not in demo_data["demo"].kinds
    assert "KEY" not in repr(both) and "'a'" not in repr(both)


def test_build_providers_passes_the_clock(clock):
    demo = build_providers(Settings(), clock=clock)["demo"]
    first = demo.produce("quote", "AAPL", {})
    clock.advance(6 * 3600)  # from before the session (09:20 UTC) into it
    assert demo.produce("quote", "AAPL", {}) != first


def test_routes_cover_every_kind_in_the_agreed_order():
    providers = build_providers(Settings(finnhub_api_key="a", alphavantage_api_key="b"))
    us = listing("AAPL")
    for kind in ("quote", "profile", "news", "metric", "search"):
        assert [p.name for p in plan(kind, us, providers)] == ["finnhub", "alphavantage"]
    assert [p.name for p in plan("history", us, providers)] == ["alphavantage"]  # candles are premium
    paid = build_providers(Settings(finnhub_api_key="a", alphavantage_api_key="b", finnhub_plan="paid"))
    assert [p.name for p in plan("history", us, paid)] == ["alphavantage", "finnhub"]
    assert [p.name for p in plan("fx", None, providers)] == ["ecb"]
    demo = {"demo": DemoProvider()}
    assert [p.name for p in plan("history", us, demo)] == ["demo"]
    assert [p.name for p in plan("fx", None, demo)] == ["demo"]


def test_route_setting_orders_the_providers():
    settings = Settings(finnhub_api_key="a", alphavantage_api_key="b", route_quote=("alphavantage", "finnhub"))
    providers = build_providers(settings)
    assert [p.name for p in plan("quote", listing("AAPL"), providers, settings.routes["quote"])] == [
        "alphavantage", "finnhub"]


def test_providers_import_only_the_bottom_layers_and_never_the_network():
    allowed_local = {"settings", "errors", "models", "clock", "kinds", "symbols", "venues", "validation", "currency",
                     "analysis"}
    for path in (Path(__file__).parents[2] / "stockcache" / "upstream" / "providers").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 3:
                assert node.module in allowed_local, f"{path.name} imports {node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module == "guard", f"{path.name} imports upstream.{node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in ("requests", "urllib3", "socket", "http"), path.name
