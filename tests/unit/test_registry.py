"""Adding a provider is one class plus one registration call: settings, routes and stats follow by themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import responses

from stockcache.models import Quote
from stockcache.runtime import build_service
from stockcache.settings import Section, Settings, non_negative_int, setting, settings_table
from stockcache.upstream import providers as registry
from stockcache.upstream.providers.base import Provider, UpstreamRequest

URL = "https://throwaway.test/v1"


@dataclass(frozen=True)
class ThrowawayConfig(Section):
    prefix = "throwaway"
    api_key: str = setting("", env="THROWAWAY_API_KEY", secret=True, help="A test provider's key.")
    per_minute: int = setting(7, env="STOCKCACHE_THROWAWAY_PER_MINUTE", parse=non_negative_int,
                              help="Its calls per minute.")


class ThrowawayProvider(Provider):
    """A provider that exists only in this test: quotes from one JSON endpoint."""

    name = "throwaway"
    label = "Throwaway"
    config = ThrowawayConfig
    kinds = frozenset({"quote"})
    priority = {"quote": 1}  # ahead of every real provider

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        return UpstreamRequest(url=f"{URL}/price", params={"s": symbol}, headers={"X-Key": self._api_key},
                               secret=frozenset({"X-Key"}))

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        price = json.loads(body)["price"]
        return Quote(symbol=symbol, price=price, change=None, change_percent=None, high=None, low=None,
                     open=None, previous_close=None, timestamp=None)


@pytest.fixture
def registered() -> Iterator[None]:
    registry.register(ThrowawayProvider)  # the one registration line
    try:
        yield
    finally:
        registry.PROVIDERS.remove(ThrowawayProvider)


@responses.activate
def test_registry_a_provider_registered_with_one_call_is_configured_routed_and_counted(registered, tmp_path):
    responses.add(responses.GET, f"{URL}/price", json={"price": 12.5})
    # Its settings section joined the table, with its variables, defaults and secrecy.
    rows = {row.name: row for row in settings_table()}
    assert rows["throwaway_api_key"].env == ("THROWAWAY_API_KEY",) and rows["throwaway_api_key"].secret
    settings = Settings.from_env({"THROWAWAY_API_KEY": "k-123", "FINNHUB_API_KEY": "f"},
                                 data_dir=tmp_path / "data", refresh=False)
    assert settings.get("throwaway_per_minute") == 7 and not settings.demo
    service = build_service(settings)
    try:
        assert service.route("quote", "AAPL")[0] == "throwaway"
        quote = service.get_quote("AAPL")
        assert quote["source"] == "throwaway" and quote["price"] == 12.5
        assert responses.calls[0].request.headers["X-Key"] == "k-123"
        stats = service.stats()["upstream"]["throwaway"]
        assert stats["calls"] == 1 and stats["budget_left"]["minute"] == 6
    finally:
        service.close()


def test_registry_refuses_a_second_provider_of_the_same_name(registered):
    with pytest.raises(ValueError, match="registered already"):
        registry.register(ThrowawayProvider)
