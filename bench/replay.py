"""Replay a simulated US trading day through the real StockService and Refresher, in accelerated time.

``python -m bench.replay`` prints one table (markdown) comparing, for 10, 50 and
200 users, the day with and without the background refresher: hit rate of the
items users asked for, upstream calls per user-day, calls per distinct held
symbol, stale answers, errors and the busiest budget windows.
``--market europe`` runs the European day instead (:mod:`bench.replay_europe`).

The market: a universe of 500 symbols whose popularity follows Zipf's law
(s=1.1); each user holds 5 to 20 of them (drawn by popularity). Each user
visits 1 to 5 times a day (session starts uniform over 09:30-16:00 New York),
and each visit loads their portfolio page (one batch of all their quotes) a
few times, about 90 s apart (exponential). Seeded, so runs are reproducible.

Time is a fake clock the simulation moves from event to event: nothing sleeps.
The path is the real one (cache tiers on a temp SQLite file, fetcher with
single-flight, budgets and breakers, Finnhub/Alpha Vantage providers parsing
real-shaped bodies); only the network is replaced by :class:`InProcessSession`,
which answers from ``bench.fake_upstream.FakeUpstream`` in-process and counts
every call at the time its budget booked it.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.fake_upstream import FakeUpstream
from stockcache.cache import open_cache
from stockcache.metrics import Metrics
from stockcache.refresher import Refresher
from stockcache.runtime import build_service
from stockcache.settings import Settings
from stockcache.store import open_store
from stockcache.venues import US

# Never connected to: the in-process session answers instead.
FINNHUB_URL = "http://127.0.0.1:9/finnhub/api/v1"
ALPHAVANTAGE_URL = "http://127.0.0.1:9/alphavantage/query"
FX_URL = "http://127.0.0.1:9/frankfurter/v1"  # the fake's Frankfurter (ECB rates) mount
# The fake's other mounts: Twelve Data and OpenFIGI need a key to be used, CoinGecko runs keyless
# once another key is set; none of them may ever be pointed at the real host by a replay.
TWELVEDATA_URL = "http://127.0.0.1:9/twelvedata"
COINGECKO_URL = "http://127.0.0.1:9/coingecko/api/v3"
OPENFIGI_URL = "http://127.0.0.1:9/openfigi/v3"


class FakeClock:
    """A settable clock. Thread-safe."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class _Response:
    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Sent:
    """One upstream call: provider, endpoint, symbol, the (fake) time its budget booked it for, and the
    time the fake answered it (``asked``: its data is the market at that time; ``at`` adds the delay the
    per-second budget asked for, which the in-process session reports instead of waiting)."""

    provider: str
    endpoint: str
    symbol: str | None
    at: float
    asked: float = 0.0


class InProcessSession:
    """Stands in for the transport's HTTP session: answers from a FakeUpstream without sockets.

    Answers are synchronous (the transport calls it inline), so a simulation
    stays single-threaded and deterministic. Thread-safe.
    """

    def __init__(self, fake: FakeUpstream, clock: Callable[[], float]) -> None:
        self.fake = fake
        self._clock = clock
        self._lock = threading.Lock()
        self.sent: list[Sent] = []

    def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, delay: float = 0.0, **_: Any) -> _Response:
        params = dict(params or {})
        route = urlsplit(url).path
        path = route + ("?" + urlencode(params) if params else "")
        provider, endpoint = self._what(route, params)
        now = self._clock()
        with self._lock:
            self.sent.append(Sent(provider, endpoint, params.get("symbol") or params.get("from"), now + delay, now))
        # FakeUpstream._handle is the fake's routing without its HTTP server: the same
        # bodies, faults and key checks as over loopback, at in-process speed.
        status, response_headers, body = self.fake._handle(method, path, dict(headers or {}))
        return _Response(status, response_headers, body)

    def _what(self, route: str, params: Mapping[str, str]) -> tuple[str, str]:
        """(provider, endpoint) of a request path: Finnhub, Alpha Vantage, or a mounted API (``frankfurter``)."""
        if route.startswith("/finnhub/"):
            return "finnhub", route.split("/api/v1/", 1)[1]
        if route.startswith("/alphavantage/"):
            return "alphavantage", params.get("function", "")
        for name in self.fake.mounted():
            api = self.fake.api(name)
            if route.startswith(api.prefix + "/"):
                return name, route[len(api.prefix):].removeprefix(api.base_path).strip("/")
        return "unknown", route

    def close(self) -> None:
        pass

    def calls(self, provider: str | None = None, endpoint: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.sent if (provider is None or s.provider == provider)
                       and (endpoint is None or s.endpoint == endpoint))

    def busiest(self, provider: str, window: float) -> int:
        """Most calls to ``provider`` booked inside any ``window`` seconds (sliding)."""
        with self._lock:
            times = sorted(s.at for s in self.sent if s.provider == provider)
        most, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            most = max(most, end - start + 1)
        return most


def bench_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "refresh": False, "finnhub_api_key": "BENCHKEY_fh",
        "alphavantage_api_key": "BENCHKEY_av", "finnhub_url": FINNHUB_URL, "alphavantage_url": ALPHAVANTAGE_URL,
        "fx_url": FX_URL, "twelvedata_url": TWELVEDATA_URL, "coingecko_url": COINGECKO_URL,
        "openfigi_url": OPENFIGI_URL,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Market:
    symbols: list[str]
    weights: list[float]


def zipf_market(size: int, s: float) -> Market:
    symbols = [f"Z{i:03d}X" for i in range(size)]  # never ZZZZ*: the fake's unknown symbols
    return Market(symbols, [1.0 / (rank ** s) for rank in range(1, size + 1)])


def portfolios(market: Market, users: int, rng: random.Random) -> list[list[str]]:
    out = []
    for _ in range(users):
        want = rng.randint(5, 20)
        held: dict[str, None] = {}
        while len(held) < want:
            held[rng.choices(market.symbols, market.weights)[0]] = None
        out.append(list(held))
    return out


def page_loads(users: int, open_at: float, close_at: float, rng: random.Random) -> list[tuple[float, int]]:
    """(time, user) of every portfolio page load of the day."""
    loads = []
    for user in range(users):
        for _ in range(rng.randint(1, 5)):
            at = rng.uniform(open_at, close_at)
            for _ in range(1 + min(int(rng.expovariate(1 / 4)), 20)):
                if at >= close_at:
                    break
                loads.append((at, user))
                at += rng.expovariate(1 / 90)
    return sorted(loads)


@dataclass
class Outcome:
    users: int
    refresher: bool
    distinct: int
    page_loads: int
    items: int
    hits: int
    misses: int
    stale: int
    errors: int
    calls: Counter[str] = field(default_factory=Counter)
    busiest_minute: dict[str, int] = field(default_factory=dict)
    busiest_second: dict[str, int] = field(default_factory=dict)
    refreshed: int = 0
    skipped: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def simulate(users: int, *, refresher: bool, day: str = "2026-03-02", seed: int = 7,
             universe: int = 500, zipf_s: float = 1.1, **setting_overrides: Any) -> Outcome:
    """One trading day for ``users``; the same seed gives the same portfolios and visits."""
    rng = random.Random(seed)
    market = zipf_market(universe, zipf_s)
    held = portfolios(market, users, rng)
    local_open = datetime.fromisoformat(f"{day}T09:30:00").replace(tzinfo=US.zone)
    open_at = local_open.timestamp()
    close_at = open_at + 6.5 * 3600
    loads = page_loads(users, open_at, close_at, rng)
    clock = FakeClock(open_at - 3600)

    # tmpfs when there is one: the figures are counts, and thousands of fsyncs only slow the run down.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="stockcache-replay-", dir=shm if shm.is_dir() else None) as tmp:
        settings = bench_settings(Path(tmp), **setting_overrides)
        fake = FakeUpstream(clock=clock)
        session = InProcessSession(fake, clock)
        cache = open_cache(settings=settings, clock=clock, janitor_interval=None)
        store = open_store(Path(tmp) / "store.sqlite", clock=clock)
        service = build_service(settings, cache=cache, session=session, clock=clock)
        positions: list[list[dict[str, Any]]] = []
        for index, symbols in enumerate(held):
            user = store.create_user(f"user{index}", "x")
            positions.append([store.add_position(user.id, s, 10, 100.0).to_dict() for s in symbols])
        worker = Refresher(service, store.held_symbol_counts, hours=settings.refresh_hours,
                           share=settings.refresh_budget_share, lead=settings.refresh_lead,
                           clock=clock) if refresher else None

        order = itertools.count()
        events: list[tuple[float, int, str, int]] = [(at, next(order), "load", user) for at, user in loads]
        if worker is not None:
            events.append((open_at, next(order), "refresh", -1))
        heapq.heapify(events)
        stale = errors = 0
        while events:
            at, _, what, user = heapq.heappop(events)
            if at >= close_at and what == "refresh":
                continue
            clock.set(at)
            if what == "refresh":
                assert worker is not None
                heapq.heappush(events, (at + worker.run_once(), next(order), "refresh", -1))
                continue
            answer = service.fetch_portfolio_quotes(positions[user])
            stale += sum(1 for row in answer["positions"] if row["stale"])
            errors += len(answer["errors"])

        hits, misses = quote_reads(service.metrics)
        outcome = Outcome(
            users=users, refresher=refresher, distinct=len(store.held_symbols()), page_loads=len(loads),
            items=hits + misses, hits=hits, misses=misses, stale=stale, errors=errors,
            calls=Counter({p: session.calls(p) for p in ("finnhub", "alphavantage")}),
            busiest_minute={p: session.busiest(p, 60.0) for p in ("finnhub", "alphavantage")},
            busiest_second={p: session.busiest(p, 1.0) for p in ("finnhub", "alphavantage")},
            refreshed=service.metrics.total(Metrics.REFRESHED),
            skipped=service.metrics.total(Metrics.REFRESH_SKIPPED),
        )
        service.close()
        cache.close()
        store.close()
    return outcome


def quote_reads(metrics: Metrics) -> tuple[int, int]:
    """(hits, misses) of the quotes users asked for (a page's FX table is a read of its own kind)."""
    reads = metrics.by_label(Metrics.READS)
    misses = reads.get(("quote", Metrics.READ_MISS), 0)
    hits = sum(n for (kind, tier), n in reads.items() if kind == "quote" and tier != Metrics.READ_MISS)
    return hits, misses


def within_budget(o: Outcome, settings: Settings) -> bool:
    """No window of any provider saw more calls than its limit (0 means no limit)."""
    checks = [
        (o.busiest_second["finnhub"], settings.get("finnhub_per_second")),
        (o.busiest_minute["finnhub"], settings.get("finnhub_per_minute")),
        (o.calls["finnhub"], settings.get("finnhub_per_day")),
        (o.busiest_second["alphavantage"], settings.get("alphavantage_per_second")),
        (o.busiest_minute["alphavantage"], settings.get("alphavantage_per_minute")),
        (o.calls["alphavantage"], settings.get("alphavantage_per_day")),
    ]
    return all(not limit or used <= limit for used, limit in checks)


def table(outcomes: list[Outcome], settings: Settings) -> str:
    lines = [
        ("| users | distinct held symbols | refresher | page loads | items asked | hit rate | upstream calls "
         "| calls / user-day | calls / held symbol | calls vs refresher off | stale | errors "
         "| busiest Finnhub second / minute | AV calls | within budgets |"),
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    off_calls = {o.users: o.total_calls for o in outcomes if not o.refresher}
    for o in outcomes:
        ratio = o.total_calls / off_calls[o.users] if off_calls.get(o.users) else float("nan")
        lines.append(
            f"| {o.users} | {o.distinct} | {'on' if o.refresher else 'off'} | {o.page_loads:,} | {o.items:,} "
            f"| {o.hit_rate:.2%} | {o.total_calls:,} | {o.total_calls / o.users:,.1f} "
            f"| {o.total_calls / max(o.distinct, 1):.1f} | {ratio:.2f}x | {o.stale} | {o.errors} "
            f"| {o.busiest_second['finnhub']} / {o.busiest_minute['finnhub']} | {o.calls['alphavantage']} "
            f"| {'yes' if within_budget(o, settings) else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--market", choices=("us", "europe"), default="us",
                        help="us: the US session (the default); europe: a EUR portfolio of Xetra, London, Paris, "
                             "Amsterdam and US listings on free keys, with Alpha Vantage premium, and with Twelve Data "
                             "and CoinGecko keys to compare (bench/replay_europe.py)")
    parser.add_argument("--users", default=None, help="comma-separated user counts (us: 10,50,200; europe: 50)")
    parser.add_argument("--finnhub-per-minute", default="300,60",
                        help="us only: comma-separated Finnhub plans to compare, calls per minute (free: 60)")
    parser.add_argument("--plans", default=None,
                        help="europe only: comma-separated plans of bench.replay_europe.PLANS (default: all of them)")
    parser.add_argument("--crypto", action="store_true",
                        help="europe only: some users also hold BTC-USD and ETH-EUR (the same stock portfolios)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.market == "europe":
        from bench.replay_europe import PLANS, run  # imports this module: loaded only when asked for

        plans = tuple(args.plans.split(",")) if args.plans else tuple(PLANS)
        unknown = [plan for plan in plans if plan not in PLANS]
        if unknown:
            parser.error(f"unknown plan(s) {', '.join(unknown)}; known: {', '.join(PLANS)}")
        print(run([int(n) for n in (args.users or "50").split(",")], plans=plans, seed=args.seed,
                  crypto=args.crypto))
        print(f"\n({time.monotonic() - started:.0f} s wall time)")
        return
    args.users = args.users or "10,50,200"
    for per_minute in (int(p) for p in args.finnhub_per_minute.split(",")):
        overrides = {"finnhub_per_minute": per_minute}
        settings = bench_settings(Path("."), **overrides)
        outcomes = [simulate(int(users), refresher=refresher, seed=args.seed, **overrides)
                    for users in args.users.split(",") for refresher in (False, True)]
        print(f"Finnhub {settings.get('finnhub_per_minute')}/min and {settings.get('finnhub_per_second')}/s, "
              f"Alpha Vantage {settings.get('alphavantage_per_day')}/day and "
              f"{settings.get('alphavantage_per_second')}/s; quote TTL "
              f"{settings.ttl_quote} s; refresher share {settings.refresh_budget_share}, lead "
              f"{settings.refresh_lead} s; market hours only; seed {args.seed}.\n")
        print(table(outcomes, settings))
        print()
    print(f"({time.monotonic() - started:.0f} s wall time)")


if __name__ == "__main__":
    main()
