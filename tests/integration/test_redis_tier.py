"""The Redis tier against a real redis-server: sharing, JSON on the wire, native expiry, bounded failures.

The tier contract itself runs in tests/unit/test_cache_tiers.py; these are
what only a real server (or a real dead or silent one) can show.
"""

from __future__ import annotations

import json
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache import TieredCache, open_cache
from stockcache.cache.redis import RedisTier
from stockcache.errors import CacheError
from stockcache.settings import Settings
from tests.redis_server import redis_url  # noqa: F401 (fixture)
from tests.unit.conftest_cache import GRACE, QUOTE, TTLS


def opened(data_dir: Path, url: str, **kwargs: Any) -> TieredCache:
    options: dict[str, Any] = {"ttls": TTLS, "memory_max_items": 100, "settings": Settings(),
                               "stale_grace": GRACE, "janitor_interval": None}
    options.update(kwargs)
    return open_cache(data_dir, redis_url=url, **options)


@pytest.fixture
def two(tmp_path: Path, redis_url: str) -> Iterator[tuple[TieredCache, TieredCache]]:  # noqa: F811
    """Two instances' caches: their own memory and SQLite, one Redis."""
    a, b = opened(tmp_path / "a", redis_url), opened(tmp_path / "b", redis_url)
    yield a, b
    a.close()
    b.close()


def client_for(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def commandstat(client: Any, name: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))


def test_redis_tier_comes_after_memory_and_sqlite(two: tuple[TieredCache, TieredCache]) -> None:
    assert [t.name for t in two[0].tiers] == ["memory", "sqlite", "redis"]


def test_redis_tier_shares_an_entry_between_instances(two: tuple[TieredCache, TieredCache]) -> None:
    a, b = two
    a.set("quote:AAPL", QUOTE)
    entry = b.get_entry("quote:AAPL")
    assert entry is not None and entry.tier == "redis" and entry.value == QUOTE
    # Promoted into B's own tiers with its original timing: the next read is local.
    again = b.get_entry("quote:AAPL")
    assert again is not None and again.tier == "memory"
    assert (again.stored_at, again.expires_at) == (entry.stored_at, entry.expires_at)
    b.flush()
    assert b.tiers[1].get("quote:AAPL") is not None


def test_redis_tier_stores_namespaced_json_with_native_ttl(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with opened(tmp_path, redis_url, settings=Settings(redis_namespace="shop1")) as cache:
        cache.set("quote:AAPL", QUOTE)
    client = client_for(redis_url)
    raw = client.get("shop1:cache:quote:AAPL")
    value, stored_at, expires_at = json.loads(raw)  # JSON, never pickle
    assert value == QUOTE and expires_at - stored_at == TTLS["quote"]
    ttl_ms = client.pttl("shop1:cache:quote:AAPL")
    assert (TTLS["quote"] + GRACE - 5) * 1000 < ttl_ms <= (TTLS["quote"] + GRACE) * 1000
    assert client.get("stockcache:cache:quote:AAPL") is None


def test_redis_tier_lets_redis_expire_keys_after_grace(redis_url: str) -> None:  # noqa: F811
    tier = RedisTier(redis_url, grace=0.05, namespace="expiry")
    cache = TieredCache([tier], ttls=TTLS, grace=0)
    cache.set("quote:AAPL", QUOTE, ttl=0.05)
    client = client_for(redis_url)
    assert client.exists("expiry:cache:quote:AAPL")
    deadline = time.monotonic() + 5
    while client.exists("expiry:cache:quote:AAPL") and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for Redis's own clock: the behaviour under test
    assert not client.exists("expiry:cache:quote:AAPL")
    assert tier.purge(100) == 0
    cache.close()


def test_redis_tier_get_many_is_one_round_trip(two: tuple[TieredCache, TieredCache], redis_url: str) -> None:  # noqa: F811
    a, b = two
    a.set_many({f"quote:S{i}": {"price": i} for i in range(100)})
    client = client_for(redis_url)
    mget, get = commandstat(client, "mget"), commandstat(client, "get")
    found = b.get_many([f"quote:S{i}" for i in range(100)] + ["quote:NOPE"])
    assert len(found) == 100 and {e.tier for e in found.values()} == {"redis"}
    assert (commandstat(client, "mget") - mget, commandstat(client, "get") - get) == (1, 0)


def test_redis_tier_clear_pattern_uses_scan_and_stays_in_its_namespace(
    tmp_path: Path, redis_url: str  # noqa: F811
) -> None:
    client = client_for(redis_url)
    client.set("other-app:quote:AAPL", "theirs")
    client.set("stockcache:lock:quote:AAPL", "a lock, not an entry")
    with opened(tmp_path / "a", redis_url) as a, opened(tmp_path / "b", redis_url) as b:
        a.set_many({"quote:AAPL": 1, "quote:AMD": 2, "quote:MSFT": 3, "news:AAPL": 4})
        # The server refuses KEYS (tests/redis_server.py), so this went through SCAN.
        assert b.clear_pattern("quote:A*") == 2
        assert set(a.tiers[2].get_many(["quote:AAPL", "quote:AMD", "quote:MSFT", "news:AAPL"])) == {
            "quote:MSFT", "news:AAPL"}
        assert b.clear_pattern("*") == 2
    assert client.get("other-app:quote:AAPL") == "theirs"
    assert client.get("stockcache:lock:quote:AAPL") == "a lock, not an entry"


def test_redis_tier_treats_foreign_values_as_misses(redis_url: str) -> None:  # noqa: F811
    client = client_for(redis_url)
    tier = RedisTier(redis_url, grace=GRACE)
    import redis

    raw = redis.Redis.from_url(redis_url)
    raw.set("stockcache:cache:quote:EVIL", pickle.dumps(["value", 1.0, 2e10]))
    client.set("stockcache:cache:quote:TEXT", "not json")
    assert tier.get_many(["quote:EVIL", "quote:TEXT"]) == {}
    assert tier.stats()["bad_values"] == 2
    tier.close()


def test_redis_tier_stats_report_size_and_status(two: tuple[TieredCache, TieredCache]) -> None:
    a, b = two
    a.set_many({"quote:A": 1, "quote:B": 2})
    stats = b.get_stats()["redis"]
    assert stats["status"] == "ok" and stats["size"] == 2 and stats["namespace"] == "stockcache"


def test_redis_tier_down_fails_fast_and_cache_serves_from_sqlite(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with opened(tmp_path, f"redis://127.0.0.1:{port}/0") as cache:
        cache.set("quote:AAPL", QUOTE)
        cache.flush()
        cache.tiers[0].delete("quote:AAPL")
        started = time.monotonic()
        for _ in range(50):
            assert cache.get("quote:AAPL") == QUOTE
            cache.tiers[0].delete("quote:AAPL")
        assert time.monotonic() - started < 1.0
        stats = cache.get_stats()
        assert stats["redis"]["status"] == "down" and stats["redis"]["errors"] >= 1


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung Redis."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


def test_redis_tier_silent_server_costs_one_short_timeout_not_one_per_request(
    tmp_path: Path, silent_redis: str
) -> None:
    with opened(tmp_path, silent_redis) as cache:  # open_cache's PING already timed out once
        cache.set("quote:AAPL", QUOTE)
        cache.flush()
        took: list[float] = []
        until = time.monotonic() + 1.5  # long enough for the link to try Redis again twice
        while time.monotonic() < until:
            started = time.monotonic()
            assert cache.get("quote:MISSING") is None  # a local miss asks Redis
            took.append(time.monotonic() - started)
            assert cache.get("quote:AAPL") == QUOTE
        slow = [t for t in took if t >= 0.2]
        assert max(took) < 0.6  # one 0.25 s socket timeout at most, never retried
        assert 1 <= len(slow) <= 3 and len(took) > 100  # a probe per pause; the rest fail fast
        with pytest.raises(CacheError):
            cache.tiers[2].get("quote:AAPL")
        assert cache.get_stats()["redis"]["status"] == "down"


def test_redis_tier_command_error_is_not_an_outage(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    client_for(redis_url).lpush("stockcache:cache:quote:ODD", "a list, not our string")
    with opened(tmp_path, redis_url) as cache:
        with pytest.raises(CacheError):
            cache.tiers[2].get("quote:ODD")  # WRONGTYPE: Redis answered, the command failed
        assert cache.get("quote:ODD") is None  # the tiered cache skips the tier for this read
        cache.set("quote:OK", 1)
        assert cache.tiers[2].get("quote:OK") is not None  # no fail-fast pause: Redis is up
        assert cache.get_stats()["redis"]["status"] == "ok"
