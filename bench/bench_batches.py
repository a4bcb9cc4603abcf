"""Many symbols in one upstream call: a cold batch through Twelve Data and CoinGecko, batched vs one call each.

Run: ``.venv/bin/python -m bench.bench_batches`` (``--latency`` for the fake
upstream's answer time, default 0.2 s). Prints a markdown table; results go in
docs/benchmarks.md with this command.

In one run, against one fake upstream (no budgets on either side): 40 stock
listings (US and European) routed to Twelve Data and 40 crypto pairs routed to
CoinGecko, each asked cold as one ``/api/quotes`` request, timed end to end.
Then the same with the providers' batch size forced to 1 (one upstream call
per symbol, as before batching), on a fresh data dir. "One round trip" is a
single cold quote of each provider in the same run. Targets: ceil(40 / max)
calls per provider and a batch within 1.5x of one round trip.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.fake_upstream import FakeUpstream
from stockcache.runtime import Runtime
from stockcache.settings import Settings
from stockcache.upstream.providers import provider_classes
from stockcache.web.server import Server

STOCKS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "BRK.B", "JPM", "V", "MA", "WMT", "JNJ",
          "XOM", "KO", "DIS", "NFLX", "AMD", "INTC", "IBM", "SPY", "QQQ", "VOO", "SAP.DE", "SIE.DE", "ALV.DE",
          "DTE.DE", "BMW.DE", "BAS.DE", "VOD.L", "HSBA.L", "BP.L", "SHEL.L", "MC.PA", "AIR.PA", "OR.PA", "TTE.PA",
          "ASML.AS", "INGA.AS", "NESN.SW"]
PAIRS = [f"{coin}-{cur}" for coin in ("BTC", "ETH", "USDT", "XRP", "BNB", "SOL", "USDC", "DOGE", "ADA", "TRX")
         for cur in ("USD", "EUR", "GBP", "JPY")]
# (provider, its quote endpoint on the fake, the batch, a symbol outside it for one round trip)
ROUTES = (("twelvedata", "quote", STOCKS, "ENEL.MI"), ("coingecko", "simple/price", PAIRS, "BTC-CHF"))


@contextmanager
def one_per_call(names: tuple[str, ...]) -> Iterator[None]:
    """The providers named take one symbol per request while inside (the code before batching)."""
    classes = {cls: cls.batch for cls in provider_classes() if cls.name in names}
    for cls in classes:
        cls.batch = {}
    try:
        yield
    finally:
        for cls, batch in classes.items():
            cls.batch = batch


def measure(fake: FakeUpstream, label: str) -> list[tuple[str, str, int, float, float, int, int, float]]:
    """(mode, provider, symbols, one round trip ms, batch ms, quote calls, other calls, the fake's own ms for
    the batch request) per provider, on a fresh service. Other calls are listing lookups."""
    data = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    settings = Settings(
        data_dir=data, refresh=False, port=0, finnhub_api_key="", alphavantage_api_key="",
        twelvedata_api_key="BENCHKEY_twelvedata", twelvedata_url=fake.url("twelvedata"),
        twelvedata_per_minute=0, twelvedata_per_day=0,
        coingecko_api_key="BENCHKEY_coingecko", coingecko_url=fake.url("coingecko"), coingecko_per_minute=0,
        fx_url=fake.url("frankfurter"), upstream_timeout=30.0,
    )
    runtime = Runtime(settings, janitor_interval=None)
    server = Server(runtime, host="127.0.0.1", port=0)
    server.start_in_thread()
    runtime.store.create_user("bench", runtime.auth.hash_password("bench password 123"))
    token, _ = runtime.auth.create_api_token("bench")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    rows = []
    try:
        for provider, endpoint, symbols, single in ROUTES:
            start = time.perf_counter()
            session.get(f"{server.url}/api/quote/{single}", timeout=60).raise_for_status()
            one = (time.perf_counter() - start) * 1000
            cold = list(symbols)
            before, before_all = fake.calls(provider, endpoint=endpoint), fake.calls(provider)
            start = time.perf_counter()
            answer = session.get(f"{server.url}/api/quotes", params={"symbols": ",".join(cold)}, timeout=60)
            wall = (time.perf_counter() - start) * 1000
            body = answer.json()
            assert answer.status_code == 200 and not body["errors"] and len(body["quotes"]) == len(cold), body
            assert {q["source"] for q in body["quotes"].values()} == {provider}
            calls = fake.calls(provider, endpoint=endpoint) - before
            rows.append((label, provider, len(cold), one, wall, calls, fake.calls(provider) - before_all - calls,
                         direct_ms(runtime, provider, cold) if label == "batched" else math.nan))
    finally:
        server.stop()
    return rows


def direct_ms(runtime: Runtime, name: str, symbols: list[str]) -> float:
    """The fake's own time for the provider's batch request, asked straight (no stockcache): 200 ms of
    latency plus the fake computing every symbol's answer in Python."""
    provider = runtime.service.router.providers[name]
    request = provider.build_batch_request("quote", symbols, {})
    start = time.perf_counter()
    requests.get(request.url, params=request.params, headers=request.headers, timeout=60).raise_for_status()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_batches", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="fake upstream answer time, seconds")
    args = parser.parse_args(argv)
    fake = FakeUpstream(latency=args.latency).start()
    fake.api("twelvedata").set_limits(per_minute=None, per_day=None)
    fake.api("coingecko").set_limits(keyless_per_minute=None, keyed_per_minute=None)
    try:
        # A discarded pass first: the venues' holiday calendars and the code paths warm up once per
        # process, and would otherwise be charged to whichever row came first.
        measure(fake, "warm-up")
        rows = measure(fake, "batched")
        with one_per_call(("twelvedata", "coingecko")):
            rows += measure(fake, "one call per symbol")
    finally:
        fake.stop()
    most = {cls.name: cls.batch.get("quote", 1) for cls in provider_classes()}
    print(f"Python {platform.python_version()}, {sys.platform}; fake upstream latency {args.latency * 1000:.0f} ms; "
          "one cold /api/quotes request per row; no budgets.\n")
    print("| mode | provider | symbols | quote calls | target | listing lookups | wall ms | one round trip ms "
          "| wall / round trip | fake's own answer to the batch ms | wall / that |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, provider, count, one, wall, calls, other, direct in rows:
        target = math.ceil(count / most[provider]) if label == "batched" else count
        tail = "| - | - |" if math.isnan(direct) else f"| {direct:.0f} | {wall / direct:.2f}x |"
        print(f"| {label} | {provider} | {count} | {calls} | {target} | {other} | {wall:.0f} | {one:.0f} "
              f"| {wall / one:.2f}x {tail}")


if __name__ == "__main__":
    main()
