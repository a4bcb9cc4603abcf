"""The ``cached`` decorator beside a running service on the same data dir (the README's own example)."""

from __future__ import annotations

from typing import Any

from stockcache.cache import open_cache
from stockcache.settings import Settings

from .conftest import Api, Live


def test_cache_decorator_readme_example_never_meets_the_service_entries(live: Live, alice: Api) -> None:
    data_dir = live.runtime.settings.data_dir
    calls: list[str] = []

    def load_profile(symbol: str) -> dict[str, Any]:  # the user's own function, as in the README
        calls.append(symbol)
        return {"symbol": symbol, "mine": True}

    served = alice.get("/api/profile/AAPL")
    assert served.status_code == 200 and served.json()["name"]
    live.runtime.cache.flush()  # the service's profile:AAPL is in cache.sqlite now

    with open_cache(data_dir=data_dir, settings=Settings(), janitor_interval=None) as cache:
        mine = cache.cached(ttl_level="fundamentals", key_prefix="profile")(load_profile)
        # Not the server's internal record: the user's own function runs.
        assert mine("AAPL") == {"symbol": "AAPL", "mine": True}
        assert mine("MSFT") == {"symbol": "MSFT", "mine": True}
    assert calls == ["AAPL", "MSFT"]

    # The service serves its own data for both, undisturbed by the user's entries...
    for symbol in ("AAPL", "MSFT"):
        answer = alice.get(f"/api/profile/{symbol}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["symbol"] == symbol and "mine" not in answer.json()
    live.runtime.cache.flush()

    # ...and leaves the user's entries alone: a restarted script finds them, computing nothing.
    with open_cache(data_dir=data_dir, settings=Settings(), janitor_interval=None) as cache:
        mine = cache.cached(ttl_level="fundamentals", key_prefix="profile")(load_profile)
        assert mine("AAPL") == {"symbol": "AAPL", "mine": True}
        assert mine("MSFT") == {"symbol": "MSFT", "mine": True}
    assert calls == ["AAPL", "MSFT"]
