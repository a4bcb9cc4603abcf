"""Cold-batch wall time of the concurrent fetcher beside sequential requests and aiohttp, in one run.

Run: ``.venv/bin/python -m bench.bench_fetcher`` (``--latency``, ``--sizes``, ``--repeat``).
Prints markdown tables; results go in docs/benchmarks.md with this command.

Every design fetches N distinct, never-seen Finnhub quotes from the local fake
upstream (:mod:`bench.fake_upstream`, loopback, fixed latency per answer), run
in its own process as a real upstream would be, so its CPU does not compete
for this process's GIL:

- sequential: one keep-alive ``requests.Session``, one call after another;
- stockcache: ``StockService.fetch_multiple_quotes`` on a fresh data dir
  (cold memory and SQLite tiers), default ``STOCKCACHE_WORKERS``, budgets off
  so they never delay a call;
- aiohttp: ``asyncio.gather`` over one ``ClientSession`` (the design we
  replace; aiohttp's default connector, at most 100 connections), and the same
  capped at the worker count, which is what a thread pool can do at best.

Each concurrent design is timed twice: as a running client (it fetched one
batch of other symbols first, so its pool threads and connections exist: the
service after its first minutes) and as a brand-new client (the first batch
after start-up pays for starting them). The ideal is ceil(N / workers) x
latency. Each concurrent design runs ``--repeat`` times per N (median
reported); sequential runs once.
Finally 40 threads ask for one cold symbol at once; an in-process fake
upstream's counter says how many calls reached it (single-flight: 1).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.runtime import build_service
from stockcache.settings import Settings

KEY = "bench-finnhub-key"
ROOT = Path(__file__).resolve().parent.parent


class Upstream(Protocol):
    finnhub_url: str


class UpstreamProcess:
    """The fake upstream served by a child process (``python -m bench.fake_upstream``)."""

    def __init__(self, finnhub_url: str) -> None:
        self.finnhub_url = finnhub_url


@contextmanager
def upstream_process(latency: float) -> Iterator[UpstreamProcess]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", "--latency", str(latency), "--finnhub-key", KEY],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # printed once it listens
        if not line.startswith("STOCKCACHE_FINNHUB_URL="):
            raise SystemExit(f"the fake upstream did not start: {line!r}")
        yield UpstreamProcess(line.split("=", 1)[1])
    finally:
        process.terminate()
        process.wait(timeout=10)


class Symbols:
    """Fresh symbols on every call, so no run is served from a warm connection's cache or ours."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, n: int) -> list[str]:
        start, self._next = self._next, self._next + n
        return [f"B{i:05d}" for i in range(start, start + n)]


def service_settings(upstream: Upstream, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "refresh": False, "finnhub_api_key": KEY, "finnhub_url": upstream.finnhub_url,
        # Budgets off (0 = no limit): this measures the fetcher, not the smoothing of a 30/s limit.
        "finnhub_per_second": 0, "finnhub_per_minute": 0, "finnhub_per_day": 0,
    }
    values.update(overrides)
    return Settings(**values)


def run_sequential(upstream: Upstream, symbols: list[str]) -> float:
    with requests.Session() as session:
        start = time.perf_counter()
        for symbol in symbols:
            response = session.get(upstream.finnhub_url + "/quote", params={"symbol": symbol, "token": KEY},
                                   timeout=30)
            response.raise_for_status()
            response.json()
        return time.perf_counter() - start


def run_stockcache(upstream: Upstream, symbols: list[str], root: Path, warmup: list[str] | None = None) -> float:
    """One cold batch on a fresh data dir; ``warmup`` symbols are fetched first, untimed."""
    data_dir = Path(tempfile.mkdtemp(dir=root))
    service = build_service(service_settings(upstream, data_dir))
    try:
        if warmup:
            service.fetch_multiple_quotes(warmup)
        start = time.perf_counter()
        answer = service.fetch_multiple_quotes(symbols)
        elapsed = time.perf_counter() - start
    finally:
        service.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    if answer["errors"] or len(answer["quotes"]) != len(symbols):
        raise SystemExit(f"stockcache batch failed: {list(answer['errors'].items())[:3]}")
    return elapsed


def run_aiohttp(upstream: Upstream, symbols: list[str], limit: int = 100,
                warmup: list[str] | None = None) -> float:
    """One gather on a fresh session; ``warmup`` symbols are gathered first, untimed."""

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=limit)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(symbol: str) -> Any:
                async with session.get(upstream.finnhub_url + "/quote",
                                       params={"symbol": symbol, "token": KEY}) as response:
                    response.raise_for_status()
                    return await response.json()

            await asyncio.gather(*(one(s) for s in warmup or ()))
            start = time.perf_counter()
            await asyncio.gather(*(one(s) for s in symbols))
            return time.perf_counter() - start

    return asyncio.run(main())


def median_of(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def single_flight(upstream: FakeUpstream, root: Path, callers: int = 40) -> tuple[int, int]:
    """(upstream calls, answers) when ``callers`` threads miss one cold symbol at the same moment."""
    data_dir = Path(tempfile.mkdtemp(dir=root))
    service = build_service(service_settings(upstream, data_dir))
    symbol = "SFLIGHT"
    barrier = threading.Barrier(callers)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        quote = service.get_quote(symbol)
        with lock:
            answers.append(quote)

    before = upstream.calls(endpoint="quote", symbol=symbol)
    threads = [threading.Thread(target=call) for _ in range(callers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        service.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return upstream.calls(endpoint="quote", symbol=symbol) - before, len(answers)


def timed_rows(upstream: Upstream, sizes: list[int], workers: int, latency: float, repeat: int,
               names: Symbols, root: Path) -> list[tuple[float, ...]]:
    """Wall times in seconds per size: (N, ideal, sequential, then for a running client stockcache,
    aiohttp, aiohttp capped at the worker count, then for a brand-new client stockcache, aiohttp).

    A running client has already fetched one batch of ``workers`` other symbols, so its threads
    and connections exist; a brand-new one starts them during the timed batch.
    """
    # One untimed round of each, so imports and first-use costs are not billed to the first size.
    run_stockcache(upstream, names.take(2), root)
    run_aiohttp(upstream, names.take(2))
    rows: list[tuple[float, ...]] = []
    for n in sizes:
        ideal = math.ceil(n / workers) * latency
        seq = run_sequential(upstream, names.take(n))

        def ours(warm: bool, n: int = n) -> float:
            return run_stockcache(upstream, names.take(n), root, names.take(workers) if warm else None)

        def aio(warm: bool, limit: int = 100, n: int = n) -> float:
            return run_aiohttp(upstream, names.take(n), limit, names.take(workers) if warm else None)

        rows.append((n, ideal, seq,
                     median_of(repeat, lambda: ours(True)), median_of(repeat, lambda: aio(True)),
                     median_of(repeat, lambda: aio(True, workers)),
                     median_of(repeat, lambda: ours(False)), median_of(repeat, lambda: aio(False))))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fetcher", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="fake upstream seconds per answer")
    parser.add_argument("--sizes", default="10,32,50,100",
                        help="batch sizes, comma-separated (32: exactly the default worker count)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per concurrent design and size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = Settings().workers
    names = Symbols()
    latency = args.latency

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench_fetcher_"))
    try:
        with upstream_process(latency) as upstream:
            rows = timed_rows(upstream, sizes, workers, latency, args.repeat, names, root)
        counted = FakeUpstream(latency=latency, expected_keys={"finnhub": KEY}).start()
        try:
            calls, answered = single_flight(counted, root)
        finally:
            counted.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"Fake upstream latency {latency * 1000:.0f} ms, STOCKCACHE_WORKERS={workers}, "
          f"median of {args.repeat} runs (sequential: 1 run)\n")
    print("A running client (threads and connections already open), cold data:\n")
    print("| N | ideal ceil(N/workers) x latency | sequential requests | stockcache | stockcache / ideal "
          f"| aiohttp gather | stockcache / aiohttp | aiohttp gather, limit={workers} "
          f"| stockcache / aiohttp limit={workers} |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, ideal, seq, ours, aio, aio_capped, _, _ in rows:
        print(f"| {n:.0f} | {ideal * 1000:.0f} ms | {seq * 1000:.0f} ms | {ours * 1000:.0f} ms | {ours / ideal:.2f}x "
              f"| {aio * 1000:.0f} ms | {ours / aio:.2f}x | {aio_capped * 1000:.0f} ms | {ours / aio_capped:.2f}x |")
    print("\nThe first batch of a brand-new client (starts its threads and connections while timed):\n")
    print("| N | stockcache | stockcache / ideal | aiohttp gather | stockcache / aiohttp |")
    print("|---:|---:|---:|---:|---:|")
    for n, ideal, _, _, _, _, ours, aio in rows:
        print(f"| {n:.0f} | {ours * 1000:.0f} ms | {ours / ideal:.2f}x | {aio * 1000:.0f} ms | {ours / aio:.2f}x |")
    print(f"\nSingle-flight: 40 concurrent get_quote() calls for one cold symbol -> {calls} upstream call(s), "
          f"{answered} answers")


if __name__ == "__main__":
    main()
