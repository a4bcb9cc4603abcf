"""TieredCache: TTL levels, grace, promotion, write-through, stats, decorator, degradation."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache import Entry, MemoryTier, SQLiteTier, TieredCache, open_cache
from stockcache.cache.base import Tier
from stockcache.cache.frozen import FrozenDict
from stockcache.cache.sqlite import WRITE_RETRY_SECONDS
from stockcache.errors import CacheError, ConfigError
from stockcache.settings import Settings
from tests.unit.conftest_cache import GRACE, QUOTE, TTLS, make_cache


@pytest.fixture
def cache(tmp_path: Path, clock: Any) -> Iterator[TieredCache]:
    made = make_cache(tmp_path, clock)
    yield made
    made.close()


def memory_of(cache: TieredCache) -> Tier:
    return cache.tiers[0]


def sqlite_of(cache: TieredCache) -> Tier:
    return cache.tiers[-1]


# TTL levels ---------------------------------------------------------------


@pytest.mark.parametrize("level", sorted(TTLS))
def test_cache_ttl_level_sets_freshness(cache: TieredCache, clock: Any, level: str) -> None:
    cache.set("anything:KEY", {"v": 1}, ttl_level=level)
    clock.advance(TTLS[level] - 1)
    assert cache.get("anything:KEY") == {"v": 1}
    clock.advance(1)
    assert cache.get("anything:KEY") is None


@pytest.mark.parametrize(
    ("key", "level"),
    [("quote:AAPL", "quote"), ("profile:AAPL", "fundamentals"), ("metric:AAPL", "fundamentals"),
     ("history:AAPL:30", "history"), ("news:AAPL:7", "news"), ("analysis:AAPL", "ai_analysis")],
)
def test_cache_ttl_follows_key_kind(cache: TieredCache, clock: Any, key: str, level: str) -> None:
    cache.set(key, 1)
    entry = cache.get_entry(key)
    assert entry is not None
    assert entry.expires_at - entry.stored_at == TTLS[level]


def test_cache_explicit_ttl_wins(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", 1, ttl_level="ai_analysis", ttl=5)
    clock.advance(5)
    assert cache.get("quote:AAPL") is None


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [("nokind", {}), ("weird:AAPL", {}), ("quote:AAPL", {"ttl_level": "forever"}),
     ("quote:AAPL", {"ttl": -1}), ("quote:AAPL", {"ttl": float("nan")})],
)
def test_cache_set_refuses_unknown_ttl(cache: TieredCache, key: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cache.set(key, 1, **kwargs)
    assert memory_of(cache).stats()["size"] == 0


def test_cache_get_never_returns_expired(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE)
    clock.advance(TTLS["quote"])
    # Both tiers still hold it (grace), yet it is not served as fresh.
    assert memory_of(cache).get("quote:AAPL") is not None
    assert sqlite_of(cache).get("quote:AAPL") is not None
    assert cache.get("quote:AAPL") is None
    assert cache.get_entry("quote:AAPL") is None
    assert cache.get_many(["quote:AAPL"]) == {}


def test_cache_zero_ttl_is_never_fresh_but_kept_for_stale(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE, ttl=0)
    assert cache.get("quote:AAPL") is None
    assert cache.get_stale("quote:AAPL") is not None


# stale-if-error -------------------------------------------------------------


def test_cache_get_stale_within_grace(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE)
    clock.advance(TTLS["quote"] + GRACE - 1)
    entry = cache.get_stale("quote:AAPL")
    assert entry is not None
    assert entry.value == QUOTE
    assert not entry.is_fresh(clock())
    assert entry.age(clock()) == TTLS["quote"] + GRACE - 1


def test_cache_get_stale_gone_after_grace(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE)
    clock.advance(TTLS["quote"] + GRACE)
    assert cache.get_stale("quote:AAPL") is None
    assert cache.get_stale_many(["quote:AAPL"]) == {}


def test_cache_get_stale_returns_fresh_entries_too(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE)
    entry = cache.get_stale("quote:AAPL")
    assert entry is not None and entry.is_fresh(clock())


def test_cache_get_stale_counts_stale_reads_not_hits(cache: TieredCache, clock: Any) -> None:
    cache.set_many({"quote:A": 1, "quote:B": 2})
    clock.advance(TTLS["quote"] + 1)
    assert set(cache.get_stale_many(["quote:A", "quote:B", "quote:C"])) == {"quote:A", "quote:B"}
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["stale_reads"]) == (0, 0, 3)


def test_cache_get_stale_prefers_fresh_copy_from_lower_tier(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", {"price": 1})
        clock.advance(TTLS["quote"] + 1)
        # Another process refreshed the file; our memory copy is stale.
        now = clock()
        sqlite_of(cache).set("quote:AAPL", Entry(FrozenDict(price=2), now, now + 300, "x"))
        entry = cache.get_stale("quote:AAPL")
        assert entry is not None and entry.value == {"price": 2} and entry.tier == "sqlite"


# promotion and write-through ----------------------------------------------------


def test_cache_sqlite_hit_is_promoted_with_original_timing(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", QUOTE)
        first = cache.get_entry("quote:AAPL")
    clock.advance(10)
    with make_cache(tmp_path, clock) as cache:
        from_disk = cache.get_entry("quote:AAPL")
        again = cache.get_entry("quote:AAPL")
    assert first is not None and from_disk is not None and again is not None
    assert (first.tier, from_disk.tier, again.tier) == ("memory", "sqlite", "memory")
    assert (again.stored_at, again.expires_at) == (first.stored_at, first.expires_at)
    assert again.value == QUOTE


def test_cache_set_writes_through_to_every_tier(cache: TieredCache) -> None:
    cache.set("quote:AAPL", QUOTE)
    for tier in cache.tiers:
        entry = tier.get("quote:AAPL")
        assert entry is not None and entry.value == QUOTE and entry.tier == tier.name


def test_cache_stale_memory_entry_falls_through_to_newer_sqlite(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", {"price": 1})
    clock.advance(TTLS["quote"] + 1)
    now = clock()
    sqlite_of(cache).set("quote:AAPL", Entry(FrozenDict(price=2), now, now + 300, "x"))
    assert cache.get("quote:AAPL") == {"price": 2}
    assert memory_of(cache).get("quote:AAPL").value == {"price": 2}  # type: ignore[union-attr]


class CountingSQLiteTier(SQLiteTier):
    """Counts calls to get_many, to prove a batch is one round trip."""

    calls: list[list[str]]

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        keys = list(keys)
        self.calls = [*getattr(self, "calls", []), keys]
        return super().get_many(keys)


def test_cache_get_many_asks_sqlite_once_for_memory_misses(tmp_path: Path, clock: Any) -> None:
    memory = MemoryTier(100, grace=GRACE, clock=clock)
    disk = CountingSQLiteTier(tmp_path / "c.sqlite", grace=GRACE, clock=clock)
    with TieredCache([memory, disk], ttls=TTLS, grace=GRACE, clock=clock) as cache:
        cache.set_many({f"quote:S{i}": i for i in range(10)})
        memory.delete_pattern("quote:S[5-9]")
        got = cache.get_many([f"quote:S{i}" for i in range(12)])
        assert {k: e.value for k, e in got.items()} == {f"quote:S{i}": i for i in range(10)}
        assert {e.tier for k, e in got.items() if k >= "quote:S5"} == {"sqlite"}
        assert disk.calls == [[f"quote:S{i}" for i in range(5, 12)]]
        # promoted: a second batch is answered by memory alone
        again = cache.get_many([f"quote:S{i}" for i in range(10)])
        assert {e.tier for e in again.values()} == {"memory"}
        assert len(disk.calls) == 1


def test_cache_delete_then_read_does_not_resurrect_from_sqlite(cache: TieredCache) -> None:
    cache.set("quote:AAPL", QUOTE)
    assert cache.delete("quote:AAPL") is True
    assert cache.get("quote:AAPL") is None
    assert all(tier.get("quote:AAPL") is None for tier in cache.tiers)
    assert cache.delete("quote:AAPL") is False


# memory LRU -----------------------------------------------------------------


def test_cache_memory_evicts_least_recently_used(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock, memory_max_items=3) as cache:
        cache.set_many({"quote:A": 1, "quote:B": 2, "quote:C": 3})
        cache.get("quote:A")  # B is now the least recently used
        cache.set("quote:D", 4)
        memory = memory_of(cache)
        assert memory.get("quote:B") is None
        assert {k for k in ("quote:A", "quote:C", "quote:D") if memory.get(k)} == {"quote:A", "quote:C", "quote:D"}
        stats = cache.get_stats()["memory"]
        assert (stats["size"], stats["max_size"], stats["evictions"]) == (3, 3, 1)
        # Evicted from memory, still on disk.
        assert cache.get_entry("quote:B").tier == "sqlite"  # type: ignore[union-attr]


# frozen values and JSON only ---------------------------------------------------


def test_cache_values_are_read_only(cache: TieredCache) -> None:
    cache.set("history:AAPL", {"candles": [{"close": 1.0}]})
    value = cache.get("history:AAPL")
    with pytest.raises(TypeError):
        value["candles"] = []
    with pytest.raises(TypeError):
        value["candles"][0]["close"] = 2.0
    with pytest.raises(TypeError):
        value.update(x=1)
    with pytest.raises(AttributeError):
        value["candles"].append({})  # tuples have no append
    assert cache.get("history:AAPL") == {"candles": ({"close": 1.0},)}


def test_cache_caller_mutation_after_set_does_not_leak(cache: TieredCache) -> None:
    mine = {"price": 1.0, "tags": ["a"]}
    cache.set("quote:AAPL", mine)
    mine["price"] = 2.0
    mine["tags"].append("b")
    assert cache.get("quote:AAPL") == {"price": 1.0, "tags": ("a",)}


def test_cache_memory_hit_returns_same_object(cache: TieredCache) -> None:
    cache.set("quote:AAPL", QUOTE)
    assert cache.get("quote:AAPL") is cache.get("quote:AAPL")


def test_cache_frozen_values_serialise_and_copy(cache: TieredCache) -> None:
    cache.set("quote:AAPL", {"price": 1.0, "list": [1, 2]})
    value = cache.get("quote:AAPL")
    assert json.loads(json.dumps(value)) == {"price": 1.0, "list": [1, 2]}
    copy = dict(value)
    copy["price"] = 5.0
    assert {**value, "stale": True}["stale"] is True
    assert cache.get("quote:AAPL")["price"] == 1.0


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, {"x": float("nan")}, {"x": float("inf")}, {1: "int key"}, {"x": b"bytes"}],
    ids=["object", "set", "nan", "inf", "int-key", "bytes"],
)
def test_cache_refuses_non_json_values_before_touching_tiers(cache: TieredCache, value: Any) -> None:
    with pytest.raises(ValueError):
        cache.set("quote:AAPL", value)
    with pytest.raises(ValueError):
        cache.set_many({"quote:OK": 1, "quote:AAPL": value})
    cache.flush()
    assert [tier.stats()["size"] for tier in cache.tiers] == [0, 0]


def test_cache_refuses_self_containing_value(cache: TieredCache) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        cache.set("quote:AAPL", loop)


# clear_pattern ----------------------------------------------------------------


def test_cache_clear_pattern_counts_distinct_keys_across_tiers(cache: TieredCache, clock: Any) -> None:
    cache.set_many({"quote:AAPL": 1, "quote:AMD": 2, "quote:MSFT": 3, "news:AAPL": 4})
    now = clock()
    sqlite_of(cache).set("quote:ABNB", Entry(5, now, now + 300, "x"))  # only on disk
    memory_of(cache).set("quote:ACN", Entry(6, now, now + 300, "x"))  # only in memory
    assert cache.clear_pattern("quote:A*") == 4
    assert cache.get_many(["quote:AAPL", "quote:AMD", "quote:ABNB", "quote:ACN"]) == {}
    assert set(cache.get_many(["quote:MSFT", "news:AAPL"])) == {"quote:MSFT", "news:AAPL"}
    assert cache.clear_pattern("quote:A*") == 0


# stats ---------------------------------------------------------------------------


def test_cache_stats_shape_and_counters(cache: TieredCache) -> None:
    cache.set_many({"quote:AAPL": 1, "news:AAPL:7": 2})
    cache.get("quote:AAPL")
    cache.get("quote:AAPL")
    cache.get("quote:MSFT")
    cache.get_many(["news:AAPL:7", "news:MSFT:7", "profile:AAPL"])
    cache.flush()
    stats = cache.get_stats()
    assert stats["redis"] is None
    assert set(stats["memory"]) >= {"size", "max_size", "hits", "misses", "evictions"}
    assert set(stats["sqlite"]) >= {"size", "hits", "misses", "file_bytes"}
    assert stats["sqlite"]["size"] == 2 and stats["sqlite"]["file_bytes"] > 0
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (3, 3, 0.5)
    assert stats["by_kind"] == {
        "quote": {"hits": 2, "misses": 1, "hit_rate": round(2 / 3, 4)},
        "news": {"hits": 1, "misses": 1, "hit_rate": 0.5},
        "profile": {"hits": 0, "misses": 1, "hit_rate": 0.0},
    }
    assert stats["errors"] == 0 and stats["failing_tiers"] == []
    json.dumps(stats)


def test_cache_stats_count_each_read_once_by_the_tier_that_answered(cache: TieredCache) -> None:
    cache.set_many({"quote:A": 1, "quote:B": 2})
    memory_of(cache).delete("quote:B")  # B is on disk only
    cache.get("quote:A")  # memory hit
    cache.get("quote:B")  # memory miss, SQLite hit (and promoted)
    cache.get("quote:C")  # missed everywhere
    assert cache.memory_hit("quote:D") is None  # a fast-path miss: counted by the full lookup that follows
    cache.peek("quote:A")
    cache.peek("quote:Z")  # second looks: never counted
    cache.get_stale("quote:A")  # stale-if-error: a stale read, not a hit
    cache.get_many(["quote:A", "quote:B", "quote:E"])  # two memory hits, one miss everywhere
    stats = cache.get_stats()
    assert {k: stats["memory"][k] for k in ("hits", "misses")} == {"hits": 3, "misses": 3}
    assert {k: stats["sqlite"][k] for k in ("hits", "misses")} == {"hits": 1, "misses": 2}
    assert (stats["hits"], stats["misses"], stats["stale_reads"]) == (4, 2, 1)
    assert stats["by_kind"] == {"quote": {"hits": 4, "misses": 2, "hit_rate": round(4 / 6, 4)}}


def test_cache_level_of_is_injected(clock: Any) -> None:
    by_kind = TieredCache([MemoryTier(10, grace=GRACE, clock=clock)], ttls=TTLS, grace=GRACE, clock=clock,
                          level_of={"thing": "news"})
    by_kind.set("thing:X", 1)
    entry = by_kind.get_entry("thing:X")
    assert entry is not None and entry.expires_at - entry.stored_at == TTLS["news"]
    with pytest.raises(ValueError, match="thing"):
        by_kind.set("quote:X", 1)  # not a kind this cache was told about
    by_call = TieredCache([MemoryTier(10, grace=GRACE, clock=clock)], ttls=TTLS, grace=GRACE, clock=clock,
                          level_of=lambda key: "history" if key.endswith(":30") else None)
    by_call.set("anything:30", 1)
    entry = by_call.get_entry("anything:30")
    assert entry is not None and entry.expires_at - entry.stored_at == TTLS["history"]
    with pytest.raises(ValueError):
        by_call.set("anything:7", 1)


def test_cache_peek_finds_fresh_entries_without_counting(tmp_path: Path, clock: Any) -> None:
    first = make_cache(tmp_path, clock)
    first.set("quote:AAPL", {"v": 1})
    first.close()
    cache = make_cache(tmp_path, clock)  # the entry is in SQLite only now
    try:
        assert cache.peek("quote:MSFT") is None
        entry = cache.peek("quote:AAPL")
        assert entry is not None and entry.value == {"v": 1} and entry.tier == "sqlite"
        assert memory_of(cache).get("quote:AAPL") is not None  # promoted like any read
        clock.advance(TTLS["quote"])
        assert cache.peek("quote:AAPL") is None  # expired is not fresh
        stats = cache.get_stats()
        assert (stats["hits"], stats["misses"], stats["by_kind"]) == (0, 0, {})
    finally:
        cache.close()


def test_cache_stats_by_kind_stays_bounded(cache: TieredCache) -> None:
    for i in range(100):
        cache.get(f"kind{i}:X")
    cache.get("no-colon")
    by_kind = cache.get_stats()["by_kind"]
    assert len(by_kind) <= 33 and "other" in by_kind
    assert sum(v["misses"] for v in by_kind.values()) == 101


# degradation ---------------------------------------------------------------------


class BrokenTier(Tier):
    """A tier whose every operation fails, like a disk gone read-only."""

    name = "sqlite"

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise CacheError("disk I/O error")

    get = get_many = set = set_many = delete = delete_pattern_keys = purge = stats = flush = close = _fail  # type: ignore[assignment]


def test_cache_broken_lower_tier_degrades_to_memory(clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryTier(10, grace=GRACE, clock=clock)
    cache = TieredCache([memory, BrokenTier()], ttls=TTLS, grace=GRACE, clock=clock)
    with caplog.at_level(logging.WARNING, logger="stockcache.cache.tiered"):
        cache.set("quote:AAPL", {"secret_price": 123.456})
        assert cache.get("quote:AAPL") == {"secret_price": 123.456}
        assert cache.get("quote:MSFT") is None
        assert set(cache.get_many(["quote:AAPL", "quote:MSFT"])) == {"quote:AAPL"}
        assert cache.get_stale("quote:AAPL") is not None
        assert cache.clear_pattern("quote:Z*") == 0
        assert cache.delete("quote:AAPL") is True
        assert cache.purge_expired() == 0
        cache.flush()
        stats = cache.get_stats()
        cache.close()
    assert stats["sqlite"] is None and stats["memory"] is not None
    assert stats["errors"] == 8 and stats["tier_errors"] == {"sqlite": stats["errors"]}
    assert stats["failing_tiers"] == ["sqlite"]
    warnings = [r for r in caplog.records if "sqlite" in r.getMessage()]
    assert len(warnings) == 1  # at most one per minute per tier
    assert "123.456" not in caplog.text and "secret_price" not in caplog.text


def test_cache_broken_sqlite_writes_degrade_then_recover(cache: TieredCache, clock: Any) -> None:
    cache.set("quote:AAPL", QUOTE)
    cache.flush()
    sqlite_of(cache)._conn.close()  # type: ignore[attr-defined]  # the write connection dies under us
    cache.set("quote:MSFT", QUOTE)
    cache.flush()  # the tier reports the failed write here
    assert cache.get("quote:AAPL") == QUOTE
    assert cache.get("quote:MSFT") == QUOTE  # from memory
    stats = cache.get_stats()
    assert stats["errors"] >= 1 and stats["failing_tiers"] == ["sqlite"]
    assert stats["sqlite"]["writes"] == "failing" and stats["sqlite"]["dropped_writes"] == 1
    clock.advance(WRITE_RETRY_SECONDS)
    cache.set("quote:TSLA", QUOTE)
    cache.flush()
    assert sqlite_of(cache).get("quote:TSLA") is not None and cache.get_stats()["sqlite"]["writes"] == "ok"


# lifecycle and open_cache -------------------------------------------------------------


def test_cache_close_is_idempotent_and_stops_janitor(tmp_path: Path, clock: Any) -> None:
    cache = make_cache(tmp_path, clock, janitor_interval=3600)
    janitor = cache._janitor
    assert janitor is not None and janitor.is_alive()
    cache.close()
    assert not janitor.is_alive()
    cache.close()


def test_cache_janitor_runs_housekeeping(tmp_path: Path, clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = threading.Event()
    cache = make_cache(tmp_path, clock)
    monkeypatch.setattr(cache, "housekeep", lambda limit=1000: ran.set())
    cache.start_janitor(0.001)
    try:
        assert ran.wait(timeout=10)
    finally:
        cache.close()


def test_cache_housekeep_purges_backlog_and_flushes(cache: TieredCache, clock: Any) -> None:
    cache.set_many({f"quote:S{i}": i for i in range(25)})
    clock.advance(TTLS["quote"] + GRACE)
    cache.set("quote:NEW", 1)
    assert cache.housekeep(limit=10) == 50  # three bounded steps per tier
    assert sqlite_of(cache).stats()["pending_writes"] == 0
    assert [t.stats()["size"] for t in cache.tiers] == [1, 1]


def test_cache_purge_expired_is_bounded_per_tier(cache: TieredCache, clock: Any) -> None:
    cache.set_many({f"quote:S{i}": i for i in range(25)})
    clock.advance(TTLS["quote"] + GRACE)
    assert cache.purge_expired(limit=10) == 20  # 10 from memory, 10 from SQLite
    assert [t.stats()["size"] for t in cache.tiers] == [15, 15]
    assert cache.purge_expired(limit=10) == 20
    assert cache.purge_expired(limit=10) == 10
    assert cache.purge_expired(limit=10) == 0


def test_open_cache_with_unreachable_redis_still_opens_and_serves_locally(tmp_path: Path) -> None:
    # Nothing listens on a port just freed; the Redis tier goes last and the cache works without it.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open_cache(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", settings=Settings(),
                    janitor_interval=None) as cache:
        assert [t.name for t in cache.tiers] == ["memory", "sqlite", "redis"]
        cache.set("quote:A", 1)
        assert cache.get("quote:A") == 1
        stats = cache.get_stats()
        assert stats["redis"]["status"] == "down" and "size" not in stats["redis"]


def test_open_cache_merges_partial_ttls_over_settings(tmp_path: Path, clock: Any) -> None:
    settings = Settings(data_dir=tmp_path / "nested" / "data", ttl_news=50, stale_grace=7)
    with open_cache(ttls={"quote": 5}, settings=settings, clock=clock, janitor_interval=None) as cache:
        cache.set("quote:A", 1)
        cache.set("news:A", 1)
        entries = cache.get_many(["quote:A", "news:A"])
        assert {k: e.expires_at - e.stored_at for k, e in entries.items()} == {"quote:A": 5, "news:A": 50}
        assert cache.grace == 7
        assert cache.get_stats()["memory"]["max_size"] == settings.memory_max_items
    assert (tmp_path / "nested" / "data" / "cache.sqlite").exists()


def test_open_cache_reads_environment_when_no_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKCACHE_DATA_DIR", str(tmp_path / "envdir"))
    monkeypatch.setenv("STOCKCACHE_MEMORY_MAX_ITEMS", "7")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("STOCKCACHE_REDIS_URL", raising=False)
    with open_cache(janitor_interval=None) as cache:
        assert cache.get_stats()["memory"]["max_size"] == 7
    assert (tmp_path / "envdir" / "cache.sqlite").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"ttls": {"forever": 1}}, {"ttls": {"quote": -1}}, {"memory_max_items": 0}, {"stale_grace": -1}],
)
def test_open_cache_refuses_bad_arguments(tmp_path: Path, kwargs: Mapping[str, Any]) -> None:
    with pytest.raises(ConfigError):
        open_cache(tmp_path, settings=Settings(), janitor_interval=None, **kwargs)


# promotion races --------------------------------------------------------------------


class RacingTier(MemoryTier):
    """A lower tier that lets a test run a write while a read is in flight."""

    name = "sqlite"
    in_process = False
    during_read: Any = None

    def get(self, key: str) -> Entry | None:
        entry = super().get(key)
        if self.during_read is not None:
            action, self.during_read = self.during_read, None
            action()
        return entry

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        found = super().get_many(keys)
        if self.during_read is not None:
            action, self.during_read = self.during_read, None
            action()
        return found


@pytest.fixture
def racing(clock: Any) -> tuple[TieredCache, MemoryTier, RacingTier]:
    memory = MemoryTier(10, grace=GRACE, clock=clock)
    lower = RacingTier(10, grace=GRACE, clock=clock)
    return TieredCache([memory, lower], ttls=TTLS, grace=GRACE, clock=clock), memory, lower


@pytest.mark.parametrize("batch", [False, True], ids=["get", "get_many"])
def test_cache_promotion_cannot_resurrect_a_concurrent_delete(racing: Any, batch: bool) -> None:
    cache, memory, lower = racing
    cache.set("quote:AAPL", 1)
    memory.delete("quote:AAPL")
    lower.during_read = lambda: cache.delete("quote:AAPL")
    cache.get_many(["quote:AAPL"]) if batch else cache.get("quote:AAPL")
    assert memory.get("quote:AAPL") is None
    assert cache.get("quote:AAPL") is None


@pytest.mark.parametrize("batch", [False, True], ids=["get", "get_many"])
def test_cache_promotion_cannot_overwrite_a_concurrent_set(racing: Any, batch: bool) -> None:
    cache, memory, lower = racing
    cache.set("quote:AAPL", 1)
    memory.delete("quote:AAPL")
    lower.during_read = lambda: cache.set("quote:AAPL", 2)
    cache.get_many(["quote:AAPL"]) if batch else cache.get("quote:AAPL")
    assert cache.get("quote:AAPL") == 2


def test_cache_promotion_cannot_undo_a_concurrent_clear_pattern(racing: Any) -> None:
    cache, memory, lower = racing
    cache.set("quote:AAPL", 1)
    memory.delete("quote:AAPL")
    lower.during_read = lambda: cache.clear_pattern("quote:*")
    cache.get("quote:AAPL")
    assert cache.get("quote:AAPL") is None


def test_cache_health_reports_failing_tiers_without_counting_or_scanning(tmp_path, clock):
    cache = open_cache(data_dir=tmp_path, clock=clock, janitor_interval=None)
    try:
        cache.set("quote:AAPL", {"price": 1.0}, ttl_level="quote")
        before = cache.get_stats()
        assert cache.health() == {"failing_tiers": []}
        sqlite = next(t for t in cache.tiers if t.name == "sqlite")
        sqlite.close()  # every later use of the tier fails
        cache.get_many(["quote:MSFT"])
        assert cache.health()["failing_tiers"] == ["sqlite"]
        after = cache.get_stats()
        assert (after["hits"], after["misses"]) == (before["hits"], before["misses"] + 1)
    finally:
        cache.close()
