"""Cache hit latency: our tiers through TieredCache beside common alternatives, in one run.

Run: ``.venv/bin/python -m bench.bench_cache`` (``--ops N`` for more samples).
``--baseline DIR`` also measures the stockcache checked out in DIR (e.g.
``git worktree add /tmp/cache-old <commit>``), in the same run, rounds of the
two interleaved, and prints old against new. Prints markdown tables; results
go in docs/benchmarks.md with this command.

Every read row is a hit on a warm cache of 1,000 quote-sized values. Each
operation is timed on its own with ``perf_counter_ns`` and the timer's own
cost (measured in the same run) is subtracted. The stockcache rows run in a
subprocess per code version and round (this script with ``--worker``, that
version's ``stockcache`` first on ``PYTHONPATH``), using only the API both
versions share. redis-server is started on a free loopback port for the run
and stopped at the end.
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

ROOT = Path(__file__).resolve().parents[1]

QUOTE = {
    "symbol": "AAPL", "price": 261.74, "change": 2.29, "change_percent": 0.8826, "high": 263.31,
    "low": 260.68, "open": 261.07, "previous_close": 259.45, "timestamp": 1582641000,
}
N_KEYS = 1000
BATCH = 100
KEYS = [f"quote:S{i:04d}" for i in range(N_KEYS)]
BATCHES = [KEYS[i : i + BATCH] for i in range(0, N_KEYS, BATCH)]
TTLS = {"quote": 300, "news": 1800, "history": 3600, "fundamentals": 86400, "ai_analysis": 604800}
GRACE = 86400
# The stockcache rows, as the worker names them, and their labels in the table.
OURS = {
    "memory": "stockcache memory tier (TieredCache.get / get_many)",
    "sqlite_only": "stockcache SQLite tier (TieredCache with only the SQLite tier)",
    "promotion": "stockcache SQLite tier (memory miss, SQLite hit, promotion)",
    "write": "stockcache write, queued (TieredCache.set / set_many; memory + SQLite)",
    "write_flush": "stockcache write and commit (set / set_many, then flush)",
}


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


Row = tuple[str, str, tuple[float, float], tuple[float, float]]


def run_worker(ops: int, batch_ops: int) -> dict[str, Any]:
    """The stockcache rows for whichever ``stockcache`` is first on the path (run in a subprocess)."""
    import stockcache
    from stockcache.cache import MemoryTier, SQLiteTier, TieredCache

    overhead = timer_overhead()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-worker-"))
    rows: dict[str, list[float]] = {}

    def single_key(i: int) -> str:
        return KEYS[(i * 7919) % N_KEYS]

    def row(name: str, single: tuple[float, float], batch: tuple[float, float]) -> None:
        rows[name] = [*single, *batch]

    try:
        cache = TieredCache(
            [MemoryTier(10_000, grace=GRACE), SQLiteTier(work / "ours.sqlite", grace=GRACE)], ttls=TTLS, grace=GRACE,
        )
        cache.set_many({key: QUOTE for key in KEYS}, "quote")
        cache.flush()
        row("memory", measure(lambda i: cache.get(single_key(i)), ops, overhead),
            measure(lambda i: cache.get_many(BATCHES[i % len(BATCHES)]), batch_ops, overhead))

        sqlite_only = TieredCache([SQLiteTier(work / "ours.sqlite", grace=GRACE)], ttls=TTLS, grace=GRACE)
        row("sqlite_only", measure(lambda i: sqlite_only.get(single_key(i)), ops, overhead),
            measure(lambda i: sqlite_only.get_many(BATCHES[i % len(BATCHES)]), batch_ops, overhead))
        sqlite_only.close()
        # A 1-item memory tier misses every time, so each read is memory miss +
        # SQLite hit + promotion (with an eviction): the full production path.
        promoting = TieredCache(
            [MemoryTier(1, grace=GRACE), SQLiteTier(work / "ours.sqlite", grace=GRACE)], ttls=TTLS, grace=GRACE,
        )
        row("promotion", measure(lambda i: promoting.get(single_key(i)), ops, overhead),
            measure(lambda i: promoting.get_many(BATCHES[i % len(BATCHES)]), batch_ops, overhead))
        assert promoting.get_stats()["sqlite"]["hits"] > 0
        promoting.close()

        # Writes: what a request pays (queued behind the caller), and the same made durable.
        row("write", measure(lambda i: cache.set(single_key(i), QUOTE, "quote"), ops, overhead),
            measure(lambda i: cache.set_many(dict.fromkeys(BATCHES[i % len(BATCHES)], QUOTE), "quote"),
                    batch_ops, overhead))
        cache.flush()

        def set_flush(i: int) -> None:
            cache.set(single_key(i), QUOTE, "quote")
            cache.flush()

        def set_many_flush(i: int) -> None:
            cache.set_many(dict.fromkeys(BATCHES[i % len(BATCHES)], QUOTE), "quote")
            cache.flush()

        row("write_flush", measure(set_flush, max(ops // 10, 100), overhead),
            measure(set_many_flush, max(batch_ops // 2, 100), overhead))
        cache.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"module": stockcache.__file__, "rows": rows}


def worker_rows(code: Path, ops: int, batch_ops: int) -> dict[str, list[float]]:
    """Run :func:`run_worker` in a subprocess importing stockcache from the checkout ``code``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCACHE_") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(code)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", "--ops", str(ops), "--batch-ops", str(batch_ops)],
        cwd=code, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the benchmark worker for {code} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    expected = (code / "stockcache" / "__init__.py").resolve()
    if Path(out["module"]).resolve() != expected:  # the wrong checkout measured would be a silent lie
        raise SystemExit(f"the worker imported {out['module']}, not {expected}")
    return out["rows"]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000, help="timed single-key operations per row")
    parser.add_argument("--batch-ops", type=int, default=1000, help="timed 100-key batches per row")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of older stockcache code to measure against this one, in the same run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="worker runs per code version, interleaved (default 3 with --baseline, else 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.ops, args.batch_ops)))
        return 0
    rounds = args.rounds or (3 if args.baseline else 1)
    variants = [("new", ROOT)]
    if args.baseline is not None:
        variants.insert(0, ("baseline", args.baseline.resolve()))

    overhead = timer_overhead()
    rows: list[Row] = []
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

        # 3. diskcache (SQLite + files), no multi-get: a batch is 100 gets
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

        # 4. sqlitedict through its public API only: each read is a round trip through its
        # worker thread; there is no multi-get, so a batch is 100 gets. (stockcache's tier
        # used sqlitedict through its internals until this was measured; it no longer uses it.)
        import sqlitedict

        raw = sqlitedict.SqliteDict(
            str(work / "sqlitedict.sqlite"), tablename="cache", journal_mode="WAL",
            encode=json.dumps, decode=json.loads, outer_stack=False,
        )
        raw.update({key: QUOTE for key in KEYS})
        raw.commit()

        def raw_batch(i: int) -> Any:
            return {k: raw[k] for k in BATCHES[i % len(BATCHES)]}

        rows.append(("sqlitedict public API: SqliteDict[key] (batch: 100 gets)", "SQLite file",
                     measure(lambda i: raw[single_key(i)], args.ops // 4, overhead),
                     measure(raw_batch, args.batch_ops, overhead)))

        def raw_set_commit(i: int) -> None:
            raw[single_key(i)] = QUOTE
            raw.commit()

        def raw_update_commit(i: int) -> None:
            raw.update(dict.fromkeys(BATCHES[i % len(BATCHES)], QUOTE))
            raw.commit()

        rows.append(("sqlitedict public API write and commit (d[key] = v / update, then commit)", "SQLite file",
                     measure(raw_set_commit, max(args.ops // 10, 100), overhead),
                     measure(raw_update_commit, max(args.batch_ops // 2, 100), overhead)))
        raw.close()

        # 5. redis-py against a local redis-server (GET returns bytes: no decoding counted)
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

    # 6. stockcache, each version in its own process, rounds interleaved (the order swapped
    # every round), so load on a shared box falls on both alike.
    measured: dict[str, list[dict[str, list[float]]]] = {name: [] for name, _ in variants}
    for round_ in range(rounds):
        for name, code in variants if round_ % 2 == 0 else list(reversed(variants)):
            measured[name].append(worker_rows(code, args.ops, args.batch_ops))
    ours: dict[str, dict[str, list[float]]] = {
        name: {row: [statistics.median(run[row][i] for run in runs) for i in range(4)] for row in OURS}
        for name, runs in measured.items()
    }
    for row, label in OURS.items():
        figures = ours["new"][row]
        rows.append((label, "SQLite file" if row != "memory" else "in-process",
                     (figures[0], figures[1]), (figures[2], figures[3])))

    report(rows, overhead, args, rounds)
    if args.baseline is not None:
        compare(ours["baseline"], ours["new"], _commit(args.baseline), _commit(ROOT), rounds)
    return 0


def report(rows: list[Row], overhead: int, args: argparse.Namespace, rounds: int = 1) -> None:
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
          f"{args.ops} single-key ops and {args.batch_ops} batches of {BATCH} per row "
          f"(a tenth of the single ops, half the batches for rows that commit); "
          f"{N_KEYS} warm keys, quote-sized JSON values; stockcache rows: median of {rounds} worker run(s).\n")
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

    memory = by_name[OURS["memory"]][0][0]
    sqlite_single = by_name[OURS["promotion"]][0][0]
    sqlite_batch = by_name[OURS["promotion"]][1][0] / BATCH
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


def compare(old: dict[str, list[float]], new: dict[str, list[float]], old_name: str, new_name: str,
            rounds: int) -> None:
    """Old against new, row by row (medians of the rounds; below 1.00x is faster)."""
    print(f"\nOld ({old_name}) against new ({new_name}), medians of {rounds} interleaved rounds each:\n")
    print("| stockcache row | single median ns, old / new | new / old | single p99 ns, old / new "
          "| batch median ns/key, old / new | new / old | batch p99 ns/key, old / new |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row, label in OURS.items():
        o, n = old[row], new[row]
        print(f"| {label} | {o[0]:,.0f} / {n[0]:,.0f} | {n[0] / o[0]:.2f}x | {o[1]:,.0f} / {n[1]:,.0f} "
              f"| {o[2] / BATCH:,.0f} / {n[2] / BATCH:,.0f} | {n[2] / o[2]:.2f}x "
              f"| {o[3] / BATCH:,.0f} / {n[3] / BATCH:,.0f} |")


def _commit(code: Path) -> str:
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "?") + ("+changes" if dirty else "")


if __name__ == "__main__":
    raise SystemExit(main())
