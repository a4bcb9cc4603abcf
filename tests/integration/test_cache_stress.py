"""Many threads on one cache (real SQLite file): no errors, no foreign values, bounds kept."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest_cache import make_cache

THREADS = 8
ITERATIONS = 1500
KEYS = [f"quote:S{i}" for i in range(40)]
MAX_ITEMS = 16


@pytest.mark.timeout(120)
def test_cache_stress_mixed_operations_keep_invariants(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, time.time, memory_max_items=MAX_ITEMS)
    written: dict[str, set[tuple[int, int]]] = {key: set() for key in KEYS}
    written_lock = threading.Lock()
    wrong: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def check(key: str, value: Any) -> None:
        if value is None:
            return
        stamp = (value["writer"], value["n"])
        with written_lock:
            known = stamp in written[key]
        if value["key"] != key or not known:
            wrong.append((key, dict(value)))

    def worker(writer: int) -> None:
        rng = random.Random(writer)
        try:
            start.wait()
            for n in range(ITERATIONS):
                key = rng.choice(KEYS)
                op = rng.random()
                if op < 0.45:
                    check(key, cache.get(key))
                elif op < 0.75:
                    with written_lock:  # recorded before the write, so a reader can never see it first
                        written[key].add((writer, n))
                    cache.set(key, {"key": key, "writer": writer, "n": n})
                elif op < 0.85:
                    batch = rng.sample(KEYS, 8)
                    for got_key, entry in cache.get_many(batch).items():
                        assert got_key in batch
                        check(got_key, entry.value)
                elif op < 0.95:
                    cache.delete(key)
                elif op < 0.98:
                    entry = cache.get_stale(key)
                    check(key, entry.value if entry else None)
                else:
                    cache.clear_pattern(f"quote:S{rng.randrange(4)}*")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), name=f"stress-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert wrong == []
        stats = cache.get_stats()
        assert stats["errors"] == 0
        assert stats["memory"]["size"] <= MAX_ITEMS
        assert stats["memory"]["evictions"] > 0
        # After the storm, each key reads back as one of its own writes.
        for key in KEYS:
            check(key, cache.get(key))
        assert wrong == []
        cache.flush()
        assert cache.get_stats()["sqlite"]["size"] <= len(KEYS)
    finally:
        cache.close()
