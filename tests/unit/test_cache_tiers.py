"""One contract, run against every cache tier (add a tier: one line in TIERS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache import Entry, MemoryTier, SQLiteTier, freeze
from stockcache.cache.base import Tier
from stockcache.cache.frozen import FrozenDict
from stockcache.cache.redis import RedisTier
from tests.redis_server import shared_server
from tests.unit.conftest_cache import GRACE, QUOTE

TIERS: dict[str, Callable[[Path, Any], Tier]] = {
    "memory": lambda tmp_path, clock: MemoryTier(100, grace=GRACE, clock=clock),
    "sqlite": lambda tmp_path, clock: SQLiteTier(tmp_path / "tier.sqlite", grace=GRACE, clock=clock),
    # A real redis-server (tests/redis_server.py); a namespace per test keeps tests apart.
    "redis": lambda tmp_path, clock: RedisTier(shared_server().url, grace=GRACE, clock=clock,
                                               namespace=f"test-{tmp_path.name}"),
}


@pytest.fixture(params=sorted(TIERS))
def tier(request: pytest.FixtureRequest, tmp_path: Path, clock: Any) -> Iterator[Tier]:
    made = TIERS[request.param](tmp_path, clock)
    yield made
    made.close()


def entry(clock: Any, value: Any = QUOTE, ttl: float = 300) -> Entry:
    now = clock()
    return Entry(freeze(value), now, now + ttl, "test")


class TestTierContract:
    def test_tier_get_missing_returns_none(self, tier: Tier) -> None:
        assert tier.get("quote:NOPE") is None

    def test_tier_set_then_get_returns_entry_tagged_with_tier(self, tier: Tier, clock: Any) -> None:
        stored = entry(clock)
        tier.set("quote:AAPL", stored)
        got = tier.get("quote:AAPL")
        assert got is not None
        assert got.value == QUOTE
        assert (got.stored_at, got.expires_at) == (stored.stored_at, stored.expires_at)
        assert got.tier == tier.name

    def test_tier_returns_frozen_values(self, tier: Tier, clock: Any) -> None:
        tier.set("history:AAPL", entry(clock, {"candles": [{"close": 1.0}, {"close": 2.0}]}))
        got = tier.get("history:AAPL")
        assert got is not None
        assert isinstance(got.value, FrozenDict)
        assert got.value["candles"] == ({"close": 1.0}, {"close": 2.0})
        with pytest.raises(TypeError):
            got.value["candles"][0]["close"] = 3.0

    def test_tier_set_overwrites(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock, {"price": 1}))
        tier.set("quote:AAPL", entry(clock, {"price": 2}))
        got = tier.get("quote:AAPL")
        assert got is not None and got.value == {"price": 2}

    def test_tier_scalar_values_round_trip(self, tier: Tier, clock: Any) -> None:
        for i, value in enumerate([None, 0, 1.5, "text", True, [], {}, [1, [2, "x"]]]):
            tier.set(f"misc:{i}", entry(clock, value))
            got = tier.get(f"misc:{i}")
            assert got is not None and got.value == freeze(value), value

    def test_tier_get_many_returns_only_present_keys(self, tier: Tier, clock: Any) -> None:
        tier.set_many({"quote:A": entry(clock, 1), "quote:B": entry(clock, 2)})
        got = tier.get_many(["quote:A", "quote:B", "quote:C", "quote:A"])
        assert {k: e.value for k, e in got.items()} == {"quote:A": 1, "quote:B": 2}
        assert all(e.tier == tier.name for e in got.values())
        assert tier.get_many([]) == {}

    def test_tier_get_many_handles_large_batches(self, tier: Tier, clock: Any) -> None:
        keys = [f"quote:S{i}" for i in range(80)]
        tier.set_many({key: entry(clock, i) for i, key in enumerate(keys)})
        got = tier.get_many(keys * 20)  # 1600 lookups: more than one SQL chunk
        assert {k: e.value for k, e in got.items()} == {key: i for i, key in enumerate(keys)}

    def test_tier_delete_reports_presence(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock))
        assert tier.delete("quote:AAPL") is True
        assert tier.get("quote:AAPL") is None
        assert tier.delete("quote:AAPL") is False

    @pytest.mark.parametrize(
        ("pattern", "removed"),
        [
            ("quote:A*", {"quote:AAPL", "quote:AMD"}),
            ("quote:???", {"quote:AMD"}),
            ("quote:[AM]*", {"quote:AAPL", "quote:AMD", "quote:MSFT"}),
            ("quote:[^A]*", {"quote:MSFT"}),
            ("*:AAPL", {"quote:AAPL", "news:AAPL"}),
            ("QUOTE:*", set()),  # case-sensitive
            ("*", {"quote:AAPL", "quote:AMD", "quote:MSFT", "news:AAPL"}),
        ],
    )
    def test_tier_delete_pattern_uses_glob(
        self, tier: Tier, clock: Any, pattern: str, removed: set[str]
    ) -> None:
        keys = ["quote:AAPL", "quote:AMD", "quote:MSFT", "news:AAPL"]
        tier.set_many({key: entry(clock) for key in keys})
        assert tier.delete_pattern(pattern) == len(removed)
        left = set(tier.get_many(keys))
        assert left == set(keys) - removed

    def test_tier_keeps_expired_entry_within_grace(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock, ttl=300))
        clock.advance(300 + GRACE - 1)
        got = tier.get("quote:AAPL")
        assert got is not None and not got.is_fresh(clock())
        assert set(tier.get_many(["quote:AAPL"])) == {"quote:AAPL"}

    def test_tier_drops_entry_after_grace(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock, ttl=300))
        clock.advance(300 + GRACE)
        assert tier.get("quote:AAPL") is None
        assert tier.get_many(["quote:AAPL"]) == {}

    def test_tier_purge_removes_past_grace_in_bounded_steps(self, tier: Tier, clock: Any) -> None:
        tier.set_many({f"quote:OLD{i}": entry(clock, i, ttl=10) for i in range(25)})
        tier.set_many({f"quote:KEEP{i}": entry(clock, i, ttl=10_000) for i in range(5)})
        clock.advance(10 + GRACE)
        if getattr(tier, "expires_natively", False):
            # Redis drops keys itself at expires_at + grace (tested in real time in
            # tests/integration/test_redis_tier.py); the fake clock only hides them.
            assert tier.purge(10) == 0
            assert tier.get_many([f"quote:OLD{i}" for i in range(25)]) == {}
            assert len(tier.get_many([f"quote:KEEP{i}" for i in range(5)])) == 5
            return
        assert tier.purge(10) == 10
        assert tier.purge(10) == 10
        assert tier.purge(10) == 5
        assert tier.purge(10) == 0
        assert tier.stats()["size"] == 5
        assert len(tier.get_many([f"quote:KEEP{i}" for i in range(5)])) == 5

    def test_tier_purge_keeps_entries_within_grace(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock, ttl=10))
        clock.advance(10 + GRACE - 1)
        assert tier.purge(100) == 0
        assert tier.get("quote:AAPL") is not None

    def test_tier_stats_report_size_and_leave_hits_to_the_chain(self, tier: Tier, clock: Any) -> None:
        tier.set_many({"quote:A": entry(clock), "quote:B": entry(clock)})
        tier.get("quote:A")
        tier.get_many(["quote:A", "quote:B", "quote:Y"])
        tier.flush()
        stats = tier.stats()
        assert stats["size"] == 2
        # Hits and misses are counted once, by the tier chain (test_cache_tiered.py).
        assert "hits" not in stats and "misses" not in stats

    def test_tier_reads_its_own_writes_and_deletes_at_once(self, tier: Tier, clock: Any) -> None:
        # No flush in between: a tier that writes behind (SQLite) answers from what it has queued.
        for round_ in range(3):
            tier.set("quote:AAPL", entry(clock, {"v": round_}))
            assert tier.get("quote:AAPL").value == {"v": round_}  # type: ignore[union-attr]
            assert tier.delete("quote:AAPL") is True
            assert tier.get("quote:AAPL") is None and tier.get_many(["quote:AAPL"]) == {}
        tier.set_many({"quote:A1": entry(clock, 1), "quote:A2": entry(clock, 2), "quote:B": entry(clock, 3)})
        assert tier.delete_pattern_keys("quote:A*") == {"quote:A1", "quote:A2"}
        assert set(tier.get_many(["quote:A1", "quote:A2", "quote:B"])) == {"quote:B"}

    def test_tier_flush_keeps_entries(self, tier: Tier, clock: Any) -> None:
        tier.set("quote:AAPL", entry(clock))
        tier.flush()
        assert tier.get("quote:AAPL") is not None

    def test_tier_close_is_idempotent(self, tier: Tier) -> None:
        tier.close()
        tier.close()
