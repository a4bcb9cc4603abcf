"""AI analyses: 50 concurrent requests for 10 symbols against a model API that takes 800 ms, cold then warm.

Run: ``.venv/bin/python -m bench.bench_analysis`` (``--latency`` for the fake
model's answer time, default 0.8 s; ``--rounds`` warm rounds, default 20).
Prints a markdown table; results go in docs/benchmarks.md with this command.

Each round is 50 requests (each of 10 symbols 5 times) started together on
50 threads, each with its own connection, timed end to end with
``perf_counter``. The cold round finds nothing cached (market data included:
its context is read too); the warm rounds find every analysis cached. In the
same run, after the analyses, the same rounds ask ``/api/quote`` for the same
symbols, all cached, as the reference the warm analyses must not be slower
than. Model calls are counted by the fake, tokens by the service
(``/api/cache/stats`` ``llm_tokens``). Loopback only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.fake_upstream import FakeUpstream
from stockcache.runtime import Runtime
from stockcache.settings import Settings
from stockcache.web.server import Server

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "JPM", "V", "IBM"]
CONCURRENT = 50


def one_round(url: str, token: str, path: str) -> list[float]:
    """Milliseconds of each of ``CONCURRENT`` requests started together, one thread and connection each."""
    start = threading.Barrier(CONCURRENT)
    samples: list[float] = []
    lock = threading.Lock()

    def ask(symbol: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        start.wait()
        began = time.perf_counter()
        answer = session.get(f"{url}{path}{symbol}", timeout=60)
        elapsed = (time.perf_counter() - began) * 1000
        answer.raise_for_status()
        with lock:
            samples.append(elapsed)

    threads = [threading.Thread(target=ask, args=(SYMBOLS[i % len(SYMBOLS)],)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_analysis", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.8, help="fake model answer time, seconds")
    parser.add_argument("--rounds", type=int, default=20, help="warm rounds of 50 requests each")
    args = parser.parse_args(argv)

    fake = FakeUpstream().start()
    fake.set_latency(args.latency, provider="openai")
    data = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    settings = Settings(
        data_dir=data, refresh=False, port=0, finnhub_api_key="BENCHKEY_finnhub", alphavantage_api_key="BENCHKEY_av",
        finnhub_url=fake.finnhub_url, alphavantage_url=fake.alphavantage_url, fx_url=fake.url("frankfurter"),
        finnhub_per_minute=10_000, finnhub_per_second=1000, alphavantage_per_day=10_000, alphavantage_per_second=0,
        llm_url=fake.url("openai"), llm_api_key="sk-BENCHKEY", upstream_timeout=10.0,
    )
    runtime = Runtime(settings, janitor_interval=None)
    server = Server(runtime, host="127.0.0.1", port=0)
    server.start_in_thread()
    runtime.store.create_user("bench", runtime.auth.hash_password("bench password 123"), is_admin=True)
    token, _ = runtime.auth.create_api_token("bench")
    rows: list[tuple[str, list[float], int, int]] = []

    def tokens() -> int:
        return int(requests.get(server.url + "/api/cache/stats", headers={"Authorization": f"Bearer {token}"},
                                timeout=10).json()["llm_tokens"]["spent"])

    def model_calls() -> int:
        return fake.calls(provider="openai", endpoint="chat/completions")

    try:
        calls, spent = model_calls(), tokens()
        cold = one_round(server.url, token, "/api/analysis/")
        rows.append(("analysis, cold (nothing cached)", cold, model_calls() - calls, tokens() - spent))
        calls, spent = model_calls(), tokens()
        warm = [ms for _ in range(args.rounds) for ms in one_round(server.url, token, "/api/analysis/")]
        rows.append(("analysis, warm", warm, model_calls() - calls, tokens() - spent))
        calls, spent = model_calls(), tokens()
        quotes = [ms for _ in range(args.rounds) for ms in one_round(server.url, token, "/api/quote/")]
        rows.append(("quote, cached (reference)", quotes, model_calls() - calls, tokens() - spent))
    finally:
        server.stop()
        fake.stop()

    print(f"Python {platform.python_version()}, {sys.platform}; fake model latency {args.latency * 1000:.0f} ms; "
          f"{len(SYMBOLS)} symbols; {CONCURRENT} concurrent requests per round; {args.rounds} warm rounds; "
          f"{settings.threads} server threads.\n")
    print("| round | requests | model calls | tokens | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, samples, n_calls, n_tokens in rows:
        print(f"| {name} | {len(samples)} | {n_calls} | {n_tokens} | {statistics.median(samples):.1f} "
              f"| {pct(samples, 0.99):.1f} |")


if __name__ == "__main__":
    main()
