"""Cache hit latency: our tiers through TieredCache beside common alternatives, in one run.

Run: ``.venv/bin/python -m bench.bench_cache`` (``--ops N`` for more samples).
Prints a markdown table; results go in docs/benchmarks.md with this command.

Every row is a hit on a warm cache of 1,000 quote-sized values. Each operation
is timed on its own with ``perf_counter_ns`` and the timer's own cost (measured
in the same run) is subtracted. redis-server is started on a free loopback port
for the run and stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stockcache.cache import MemoryTier, SQLiteTier, TieredCache
from stockcache.settings import Settings

QUOTE = {
    "symbol": "AAPL", "price": 261.74, "change": 2.29, "change_percent": 0.8826, "high": 263.31,
    "low": 260.68, "open": 261.07, "previous_close": 259.45, "timestamp": 1582641000,
}
N_KEYS = 1000
BATCH = 100
KEYS = [f"quote:S{i:04d}" for i in range(N_KEYS)]
BATCHES = [KEYS[i : i + BATCH] for i in range(0, N_KEYS, BATCH)]
TTLS = Settings().ttls
GRACE = 86400


def timer_overhead(samples: int = 20000) -> int:
    counter = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        start = counter()
        costs.append(counter() - start)
    return int(statistics.median(costs))


def measure(op: Callable[[int], Any], ops: int, overhead: int) -> tuple[float, float]:
    """Median and p99 in ns of ``op(i)``, each call timed alone, timer cost removed."""
    for i in range(min(ops, 2000)):  # warm-up
        op(i)
    gc.collect()
    counter = time.perf_counter_ns
    costs = [0] * ops
    for i in range(ops):
        start = counter()
        op(i)
        costs[i] = counter() - start - overhead
    costs.sort()
    return float(statistics.median(costs)), float(costs[min(ops - 1, int(ops * 0.99))])


@contextmanager
def redis_server() -> Iterator[Any]:
    """A throwaway redis-server on a free loopback port, or None if there is none."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        import redis
    except ImportError:
        yield None
        return
    if not os.path.exists(binary):
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000, help="timed single-key operations per row")
    parser.add_argument("--batch-ops", type=int, default=1000, help="timed 100-key batches per row")
    args = parser.parse_args(argv)

    overhead = timer_overhead()
    rows: list[tuple[str, str, tuple[float, float], tuple[float, float]]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))

    def single_key(i: int) -> str:
        return KEYS[(i * 7919) % N_KEYS]  # a fixed stride, so caches cannot guess the next key

    try:
        # 1. a dict behind a lock: the floor for an in-process hit
        lock = threading.Lock()
        plain = {key: QUOTE for key in KEYS}

        def dict_get(i: int) -> Any:
            with lock:
                return plain.get(single_key(i))

        def dict_batch(i: int) -> Any:
            keys = BATCHES[i % len(BATCHES)]
            with lock:
                return {k: plain[k] for k in keys if k in plain}

        rows.append(("dict + threading.Lock", "in-process", measure(dict_get, args.ops, overhead),
                     measure(dict_batch, args.batch_ops, overhead)))

        # 2. cachetools TTLCache behind a lock
        import cachetools

        ttl_lock = threading.Lock()
        ttl_cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=10_000, ttl=300)
        for key in KEYS:
            ttl_cache[key] = QUOTE

        def ttl_get(i: int) -> Any:
            with ttl_lock:
                return ttl_cache.get(single_key(i))

        def ttl_batch(i: int) -> Any:
            keys = BATCHES[i % len(BATCHES)]
            with ttl_lock:
                return {k: v for k in keys if (v := ttl_cache.get(k)) is not None}

        rows.append(("cachetools.TTLCache + Lock", "in-process", measure(ttl_get, args.ops, overhead),
                     measure(ttl_batch, args.batch_ops, overhead)))

        # 3. our memory tier through TieredCache (SQLite below it, as in production)
        cache = TieredCache(
            [MemoryTier(10_000, grace=GRACE), SQLiteTier(work / "ours.sqlite", grace=GRACE)],
            ttls=TTLS, grace=GRACE,
        )
        cache.set_many({key: QUOTE for key in KEYS})
        cache.flush()
        rows.append((
            "stockcache memory tier (TieredCache.get / get_many)", "in-process",
            measure(lambda i: cache.get(single_key(i)), args.ops, overhead),
            measure(lambda i: cache.get_many(BATCHES[i % len(BATCHES)]), args.batch_ops, overhead),
        ))

        # 4. diskcache (SQLite + files), no multi-get: a batch is 100 gets
        import diskcache

        disk = diskcache.Cache(str(work / "diskcache"))
        for key in KEYS:
            disk.set(key, QUOTE, expire=300)

        def disk_batch(i: int) -> Any:
            return {k: v for k in BATCHES[i % len(BATCHES)] if (v := disk.get(k)) is not None}

        rows.append(("diskcache.Cache.get (batch: 100 gets)", "SQLite file",
                     measure(lambda i: disk.get(single_key(i)), args.ops, overhead),
                     measure(disk_batch, args.batch_ops, overhead)))
        disk.close()

        # 5. our SQLite tier through TieredCache, two ways
        sqlite_only = TieredCache([SQLiteTier(work / "ours.sqlite", grace=GRACE)], ttls=TTLS, grace=GRACE)
        rows.append((
            "stockcache SQLite tier (TieredCache with only the SQLite tier)", "SQLite file",
            measure(lambda i: sqlite_only.get(single_key(i)), args.ops, overhead),
            measure(lambda i: sqlite_only.get_many(BATCHES[i % len(BATCHES)]), args.batch_ops, overhead),
        ))
        sqlite_only.close()
        # A 1-item memory tier misses every time, so each read is memory miss +
        # SQLite hit + promotion (with an eviction): the full production path.
        promoting = TieredCache(
            [MemoryTier(1, grace=GRACE), SQLiteTier(work / "ours.sqlite", grace=GRACE)],
            ttls=TTLS, grace=GRACE,
        )

        def promoting_batch(i: int) -> Any:
            return promoting.get_many(BATCHES[i % len(BATCHES)])

        rows.append((
            "stockcache SQLite tier (memory miss, SQLite hit, promotion)", "SQLite file",
            measure(lambda i: promoting.get(single_key(i)), args.ops, overhead),
            measure(promoting_batch, args.batch_ops, overhead),
        ))
        assert promoting.get_stats()["sqlite"]["hits"] > 0
        promoting.close()

        # Reference: the same reads as round trips through sqlitedict's worker
        # thread, which SQLiteTier uses for writes only (see its docstring).
        import sqlitedict

        raw = sqlitedict.SqliteDict(
            str(work / "ours.sqlite"), tablename="cache", journal_mode="WAL",
            encode=json.dumps, decode=json.loads, outer_stack=False,
        )
        one_sql = 'SELECT value FROM "cache" WHERE key = ?'
        many_sql = f'SELECT key, value FROM "cache" WHERE key IN ({",".join("?" * BATCH)})'

        def worker_batch(i: int) -> Any:
            return {k: json.loads(v) for k, v in raw.conn.select(many_sql, BATCHES[i % len(BATCHES)])}

        rows.append((
            "reference: sqlitedict worker round trip (not used for reads)", "SQLite file",
            measure(lambda i: json.loads(raw.conn.select_one(one_sql, (single_key(i),))[0]),
                    args.ops // 4, overhead),
            measure(worker_batch, args.batch_ops, overhead),
        ))
        raw.close()
        cache.close()

        # 6. redis-py against a local redis-server (GET returns bytes: no decoding counted)
        with redis_server() as client:
            if client is None:
                print("redis-server or redis-py not found: Redis rows skipped", file=sys.stderr)
            else:
                payload = json.dumps(QUOTE)
                client.mset({key: payload for key in KEYS})
                rows.append((
                    "redis-py GET / MGET (loopback, bytes not decoded)", "redis-server",
                    measure(lambda i: client.get(single_key(i)), args.ops, overhead),
                    measure(lambda i: client.mget(BATCHES[i % len(BATCHES)]), args.batch_ops, overhead),
                ))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(rows, overhead, args)
    return 0


def report(
    rows: list[tuple[str, str, tuple[float, float], tuple[float, float]]],
    overhead: int,
    args: argparse.Namespace,
) -> None:
    by_name = {name: (single, batch) for name, _, single, batch in rows}
    base_single, base_batch = by_name["dict + threading.Lock"]
    redis_row = next((v for k, v in by_name.items() if k.startswith("redis-py")), None)

    def ratio(value: float, base: float | None) -> str:
        if not base:
            return "n/a"
        r = value / base
        return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x" if r < 10 else f"{r:.0f}x"

    print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}; timer overhead {overhead} ns subtracted; "
          f"{args.ops} single-key ops and {args.batch_ops} batches of {BATCH} per row; "
          f"{N_KEYS} warm keys, quote-sized JSON values.\n")
    print("| cache | storage | single median ns | single p99 ns | vs dict | vs redis GET "
          "| batch-100 median ns/key | batch p99 ns/key | vs dict | vs redis MGET |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, storage, (median, p99), batch in rows:
        b_median, b_p99 = batch
        print(
            f"| {name} | {storage} | {median:,.0f} | {p99:,.0f} | {ratio(median, base_single[0])} "
            f"| {ratio(median, redis_row[0][0] if redis_row else None)} "
            f"| {b_median / BATCH:,.0f} | {b_p99 / BATCH:,.0f} | {ratio(b_median, base_batch[0])} "
            f"| {ratio(b_median, redis_row[1][0] if redis_row else None)} |"
        )

    memory = by_name["stockcache memory tier (TieredCache.get / get_many)"][0][0]
    sqlite_single = by_name["stockcache SQLite tier (memory miss, SQLite hit, promotion)"][0][0]
    sqlite_batch = by_name["stockcache SQLite tier (memory miss, SQLite hit, promotion)"][1][0] / BATCH
    print("\nTargets (issue 2):")
    mem_ratio = memory / base_single[0]
    print(f"- memory-tier hit within 5x of a locked dict get: {mem_ratio:.1f}x "
          f"-> {'met' if mem_ratio <= 5 else 'MISSED'}")
    if redis_row:
        share = sqlite_single / redis_row[0][0]
        print(f"- SQLite-tier single hit at most half a redis-py GET: {share:.2f} of a GET "
              f"-> {'met' if share <= 0.5 else 'MISSED'}")
    else:
        print("- SQLite-tier single hit at most half a redis-py GET: not measured (no redis-server)")
    print(f"- 100-key batch from SQLite at most 50 us per key: {sqlite_batch / 1000:.1f} us per key "
          f"-> {'met' if sqlite_batch <= 50_000 else 'MISSED'}")


if __name__ == "__main__":
    raise SystemExit(main())
