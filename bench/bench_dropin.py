"""Drop-in latency: the official Finnhub and Alpha Vantage clients, direct vs through stockcache, in one run.

Run: ``.venv/bin/python -m bench.bench_dropin`` (``--latency`` for the fake
upstream's answer time, default 0.25 s, the fast end of the real APIs).
Prints a markdown table; results go in docs/benchmarks.md with this command.

Every row is a quote call made by a real client, timed end to end with
``perf_counter`` on one thread: ``finnhub-python`` straight at the fake
Finnhub (each call pays the upstream), the same client pointed at stockcache's
``/finnhub/api/v1`` (first call per symbol, then warm), ``alpha-vantage``
pointed at ``/alphavantage/query`` (warm), and a pooled ``requests`` session on
the native ``/api/quote`` (warm) for comparison. Loopback only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import finnhub
import requests
from alpha_vantage.alphavantage import AlphaVantage
from alpha_vantage.timeseries import TimeSeries

from bench.fake_upstream import FakeUpstream
from stockcache.runtime import Runtime
from stockcache.settings import Settings
from stockcache.web.server import Server

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "JPM", "V", "MA",
           "WMT", "JNJ", "XOM", "KO", "DIS", "NFLX", "AMD", "INTC", "IBM", "BRK.B"]


def timed(call: Callable[[str], Any], symbols: list[str]) -> list[float]:
    """Milliseconds of each ``call(symbol)``, one at a time."""
    out = []
    for symbol in symbols:
        start = time.perf_counter()
        call(symbol)
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dropin", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.25, help="fake upstream answer time, seconds")
    parser.add_argument("--warm", type=int, default=1000, help="warm calls per cached row")
    args = parser.parse_args(argv)

    fake = FakeUpstream(latency=args.latency).start()
    data = Path(tempfile.mkdtemp(prefix="bench-dropin-"))
    settings = Settings(
        data_dir=data, refresh=False, port=0, finnhub_api_key="BENCHKEY_finnhub",
        alphavantage_api_key="BENCHKEY_av", finnhub_url=fake.finnhub_url, alphavantage_url=fake.alphavantage_url,
        finnhub_per_minute=10_000, finnhub_per_second=1000, alphavantage_per_day=10_000,
        alphavantage_per_second=0,
    )
    runtime = Runtime(settings, janitor_interval=None)
    server = Server(runtime, host="127.0.0.1", port=0)
    server.start_in_thread()
    runtime.store.create_user("bench", runtime.auth.hash_password("bench password 123"))
    token, _ = runtime.auth.create_api_token("bench")
    AlphaVantage._ALPHA_VANTAGE_API_URL = server.url + "/alphavantage/query?"
    rows: list[tuple[str, list[float], int]] = []
    try:
        direct = finnhub.Client(api_key="BENCHKEY_finnhub")
        direct.API_URL = fake.finnhub_url
        before = fake.calls()
        rows.append(("finnhub-python -> Finnhub (fake, no cache)", timed(direct.quote, SYMBOLS), fake.calls() - before))

        client = finnhub.Client(api_key=token)
        client.API_URL = server.url + "/finnhub/api/v1"
        before = fake.calls()
        rows.append(("finnhub-python -> stockcache /finnhub, first call per symbol",
                      timed(client.quote, SYMBOLS), fake.calls() - before))
        warm = [SYMBOLS[i % len(SYMBOLS)] for i in range(args.warm)]
        before = fake.calls()
        rows.append(("finnhub-python -> stockcache /finnhub, cached", timed(client.quote, warm),
                     fake.calls() - before))

        ts = TimeSeries(key=token)
        before = fake.calls()
        rows.append(("alpha-vantage -> stockcache /alphavantage, cached",
                     timed(ts.get_quote_endpoint, warm), fake.calls() - before))

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"

        def native(symbol: str) -> None:
            session.get(f"{server.url}/api/quote/{symbol}", timeout=10).raise_for_status()

        before = fake.calls()
        rows.append(("requests -> stockcache native /api/quote, cached", timed(native, warm), fake.calls() - before))
    finally:
        server.stop()
        fake.stop()

    base = statistics.median(rows[0][1])
    print(f"Python {platform.python_version()}, {sys.platform}; fake upstream latency {args.latency * 1000:.0f} ms; "
          f"{len(SYMBOLS)} symbols; {args.warm} warm calls per cached row; one client thread.\n")
    print("| client -> server | calls | p50 ms | p95 ms | p99 ms | upstream calls | p50 vs direct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, samples, calls in rows:
        p50 = statistics.median(samples)
        print(f"| {name} | {len(samples)} | {p50:.2f} | {pct(samples, 0.95):.2f} | {pct(samples, 0.99):.2f} "
              f"| {calls} | {base / p50:.0f}x faster |" if p50 < base * 0.9 else
              f"| {name} | {len(samples)} | {p50:.2f} | {pct(samples, 0.95):.2f} | {pct(samples, 0.99):.2f} "
              f"| {calls} | {p50 / base:.2f}x |")


if __name__ == "__main__":
    main()
