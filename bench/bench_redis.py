"""The Redis tier: hit latency beside memory and SQLite, and two instances with and without it.

Run: ``.venv/bin/python -m bench.bench_redis`` (``--ops N`` for more samples).
Prints markdown tables; results go in docs/benchmarks.md ("Redis tier") with
this command. redis-server is started on a free loopback port for the run.

Part 1 times cache reads through ``TieredCache`` (the same method as
bench/bench_cache.py, whose helpers it reuses) in the two possible layouts:
Redis between memory and SQLite, or last (memory -> SQLite -> Redis, what
open_cache builds). A 1-item memory tier makes every read a memory miss, so
each row is one path through the tiers.

Part 2 runs two StockService instances (own data dirs) against one fake
upstream that enforces Finnhub's free plan (60 calls a minute), once with each
instance on its own and once sharing a Redis, and counts upstream calls.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_cache import (
    BATCH,
    GRACE,
    QUOTE,
    TTLS,
    measure,
    redis_server,
    timer_overhead,
)
from bench.fake_upstream import FakeUpstream
from stockcache.cache import Entry, MemoryTier, SQLiteTier, TieredCache, freeze
from stockcache.cache.redis import RedisTier
from stockcache.runtime import build_service
from stockcache.service import StockService
from stockcache.settings import Settings

WARM = [f"quote:S{i:04d}" for i in range(1000)]
WARM_BATCHES = [WARM[i:i + BATCH] for i in range(0, len(WARM), BATCH)]


def latency_rows(url: str, work: Path, ops: int, batch_ops: int, overhead: int) -> list[tuple[str, str, Any, Any]]:
    rows: list[tuple[str, str, Any, Any]] = []
    work.mkdir(parents=True, exist_ok=True)

    def single(i: int) -> str:
        return WARM[(i * 7919) % len(WARM)]

    def row(name: str, layout: str, cache: TieredCache) -> None:
        """Warm keys, read again and again."""
        rows.append((name, layout, measure(lambda i: cache.get(single(i)), ops, overhead),
                     measure(lambda i: cache.get_many(WARM_BATCHES[i % len(WARM_BATCHES)]), batch_ops, overhead)))

    def redis_tier(namespace: str) -> RedisTier:
        return RedisTier(url, grace=GRACE, namespace=namespace)

    # memory hit: the layout does not matter
    memory = TieredCache([MemoryTier(10_000, grace=GRACE), SQLiteTier(work / "m.sqlite", grace=GRACE)],
                         ttls=TTLS, grace=GRACE)
    memory.set_many({k: QUOTE for k in WARM})
    row("memory hit", "any", memory)
    memory.close()

    # Redis last (what open_cache builds): a SQLite hit never touches Redis
    last = TieredCache([MemoryTier(1, grace=GRACE), SQLiteTier(work / "last.sqlite", grace=GRACE),
                        redis_tier("last")], ttls=TTLS, grace=GRACE)
    last.set_many({k: QUOTE for k in WARM})
    last.flush()
    row("memory miss, SQLite hit", "memory -> SQLite -> Redis", last)

    # Redis between: every memory miss is a Redis round trip
    between = TieredCache([MemoryTier(1, grace=GRACE), redis_tier("between"),
                           SQLiteTier(work / "between.sqlite", grace=GRACE)], ttls=TTLS, grace=GRACE)
    between.set_many({k: QUOTE for k in WARM})
    between.flush()
    row("memory miss, Redis hit", "memory -> Redis -> SQLite", between)

    # Entries only in Redis (stored by a peer), each read once: the first read on this
    # instance of what another instance fetched. measure() warms up on up to 2000 ops first.
    value = freeze(QUOTE)
    for name, cache in (("last", last), ("between", between)):
        singles = [f"quote:P{name}{i:06d}" for i in range(ops + 2000)]
        batches = [f"quote:B{name}{i:06d}" for i in range((batch_ops + min(batch_ops, 2000)) * BATCH)]
        peer = redis_tier(name)
        now = time.time()
        for keys in (singles, batches):
            for start in range(0, len(keys), 1000):
                peer.set_many({k: Entry(value, now, now + 300, "redis") for k in keys[start:start + 1000]})
        peer.close()
        layout = "memory -> SQLite -> Redis" if name == "last" else "memory -> Redis -> SQLite"
        what = "memory and SQLite miss, Redis hit (a peer's entry, first read)" if name == "last" \
            else "memory miss, Redis hit (a peer's entry, first read)"
        # measure() passes the same i to its warm-up and timed calls: a counter hands
        # out every key once instead.
        next_single = itertools.count().__next__
        next_batch = itertools.count().__next__
        rows.append((what, layout,
                     measure(lambda i, ks=singles, c=cache, n=next_single: c.get(ks[n()]), ops, overhead),
                     measure(lambda i, ks=batches, c=cache, n=next_batch: c.get_many(ks[(j := n()) * BATCH:(j + 1) * BATCH]),
                             batch_ops, overhead)))
    last.close()
    between.close()

    # Reference: redis-py alone (values not decoded)
    import redis

    client = redis.Redis.from_url(url)
    client.mset({f"raw:{k}": "x" * 180 for k in WARM})
    rows.append(("reference: redis-py GET / MGET (bytes, not decoded)", "-",
                 measure(lambda i: client.get(f"raw:{single(i)}"), ops, overhead),
                 measure(lambda i: client.mget([f"raw:{k}" for k in WARM_BATCHES[i % len(WARM_BATCHES)]]),
                         batch_ops, overhead)))
    client.close()
    return rows


def print_latency(rows: list[tuple[str, str, Any, Any]], overhead: int, args: argparse.Namespace) -> None:
    base = rows[0][2][0]
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; timer overhead "
          f"{overhead} ns subtracted; up to {args.ops} single reads and {args.batch_ops} batches of {BATCH} "
          "per row; quote-sized JSON values; redis-server on loopback.\n")
    print("| read path | layout | single median µs | single p99 µs | vs memory hit "
          "| batch-100 median µs/key | batch p99 µs/key |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, layout, (median, p99), (b_median, b_p99) in rows:
        print(f"| {name} | {layout} | {median / 1000:,.1f} | {p99 / 1000:,.1f} | {median / base:,.0f}x "
              f"| {b_median / BATCH / 1000:,.1f} | {b_p99 / BATCH / 1000:,.1f} |")


# -- part 2: two instances -------------------------------------------------------

def settings_for(data_dir: Path, upstream: FakeUpstream, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "refresh": False, "finnhub_api_key": "BENCHKEY_fh",
        "alphavantage_api_key": "BENCHKEY_av", "finnhub_url": upstream.finnhub_url,
        "alphavantage_url": upstream.alphavantage_url, "redis_url": redis_url, "upstream_timeout": 5.0,
        "finnhub_per_second": 0, "alphavantage_per_second": 0, "alphavantage_per_day": 0,
    }
    values.update(overrides)
    return Settings(**values)


def run_pair(work: Path, upstream: FakeUpstream, redis_url: str, workload: Callable[[list[StockService]], Any],
             **overrides: Any) -> Any:
    upstream.reset()
    upstream.set_rate_limit("finnhub", per_minute=60)  # the free plan, enforced by the "provider"
    services = [build_service(settings_for(work / name, upstream, redis_url, **overrides)) for name in "ab"]
    try:
        return workload(services)
    finally:
        for service in services:
            service.close()


def overlapping(services: list[StockService], *, symbols: int = 60, clients: int = 8, requests: int = 10,
                batch: int = 10) -> dict[str, Any]:
    """Each instance serves ``clients`` threads asking random batches from the same symbols."""
    names = [f"S{i:03d}X" for i in range(symbols)]
    latencies: list[float] = []
    served = 0
    lock = threading.Lock()
    start = threading.Barrier(clients * len(services))

    def client(service: StockService, seed: int) -> None:
        nonlocal served
        rng = random.Random(seed)
        start.wait()
        for _ in range(requests):
            began = time.perf_counter()
            answer = service.fetch_multiple_quotes(rng.sample(names, batch))
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                served += len(answer["quotes"])

    threads = [threading.Thread(target=client, args=(service, n * 100 + c))
               for n, service in enumerate(services) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"served": served, "asked": len(threads) * requests * batch,
            "p50": statistics.median(latencies), "p95": latencies[int(len(latencies) * 0.95)]}


def disjoint(services: list[StockService], *, per_instance: int = 40) -> dict[str, Any]:
    """Each instance asks for its own ``per_instance`` symbols at once (a cold start on both)."""
    results: list[dict[str, Any]] = []

    def ask(service: StockService, offset: int) -> None:
        results.append(service.fetch_multiple_quotes([f"D{offset + i:03d}X" for i in range(per_instance)]))

    threads = [threading.Thread(target=ask, args=(s, n * per_instance)) for n, s in enumerate(services)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"served": sum(len(r["quotes"]) for r in results), "asked": per_instance * len(services)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10000, help="timed single-key reads per row")
    parser.add_argument("--batch-ops", type=int, default=300, help="timed 100-key batches per row")
    parser.add_argument("--latency", type=float, default=0.2, help="fake upstream latency in seconds")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    try:
        with redis_server() as client:
            if client is None:
                print("redis-server or redis-py not found: nothing to measure", file=sys.stderr)
                return 1
            url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
            overhead = timer_overhead()
            print("## Part 1: hit latency through TieredCache\n")
            print_latency(latency_rows(url, work / "latency", args.ops, args.batch_ops, overhead), overhead, args)

            print(f"\n## Part 2: two instances, one fake upstream ({args.latency:g} s latency, "
                  "Finnhub free plan 60/min enforced by the fake)\n")
            print("| scenario | instances share | upstream calls (Finnhub + Alpha Vantage) "
                  "| Finnhub 429s (over its plan) | symbols served / asked | request p50 ms | p95 ms |")
            print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
            with FakeUpstream(latency=args.latency) as upstream:
                figures: dict[tuple[str, str], tuple[int, int]] = {}
                for scenario, workload, overrides in (
                    ("8 clients per instance, random batches of 10 from the same 60 symbols", overlapping, {}),
                    ("cold start: 40 different symbols on each instance, finnhub budget 60/min", disjoint, {}),
                ):
                    for mode, redis_url in (("nothing (each on its own)", ""), ("Redis", url)):
                        client.flushall()
                        result = run_pair(work / f"{workload.__name__}-{bool(redis_url)}", upstream, redis_url,
                                          workload, **overrides)
                        calls, refused = upstream.calls(), upstream.rate_limited()
                        figures[(workload.__name__, mode)] = (calls, refused)
                        p50 = f"{result['p50'] * 1000:,.1f}" if "p50" in result else "-"
                        p95 = f"{result['p95'] * 1000:,.1f}" if "p95" in result else "-"
                        print(f"| {scenario} | {mode} | {calls} ({upstream.calls('finnhub')} + "
                              f"{upstream.calls('alphavantage')}) | {refused} "
                              f"| {result['served']} / {result['asked']} | {p50} | {p95} |")
            print()
            for name in ("overlapping", "disjoint"):
                alone, shared = figures[(name, "nothing (each on its own)")], figures[(name, "Redis")]
                print(f"- {name}: upstream calls with Redis / without = {shared[0]} / {alone[0]} "
                      f"= {shared[0] / alone[0]:.2f}x; provider 429s {shared[1]} vs {alone[1]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
