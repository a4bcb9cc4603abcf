"""Soak: a mixed workload at a fixed rate for N minutes; RSS over time, errors and latency percentiles.

Run: ``.venv/bin/python -m bench.soak`` (``--minutes 10``, ``--rate 40``, ``--workers 16``,
``--sample 10``). Not run in CI; results go in docs/reliability.md with the command.

The service runs as a subprocess (``python -m stockcache serve``) against the
local fake upstream (:mod:`bench.fake_upstream`, loopback, 20 ms per answer),
with short TTLs (quotes 30 s) so the upstream is called all along, budgets
off (the fake has no limits; a spent budget would be a 503 here, not a leak)
and the background refresher on at all hours. Requests are scheduled
open-loop at ``--rate`` per second (latency is measured from the scheduled
moment, so a stall shows up instead of silently lowering the rate) and mixed:
single and batch quotes, profiles, history, news, portfolio and watchlist
writes and reads, performance, admin stats, KPIs and metrics, health.

An error is a connection failure, a 5xx or an unexpected status. RSS, threads
and open descriptors come from ``/proc/PID``. Flat after warm-up means the
RSS at the end is within a few MB of the RSS after the first minute.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import queue
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.crash_kill import ServiceProcess, make_users
from bench.fake_upstream import FakeUpstream

SYMBOLS = [f"S{i:03d}" for i in range(150)] + ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA"]
SOAK_FINNHUB_KEY = "SOAKKEY_finnhub"
SOAK_AV_KEY = "SOAKKEY_alphavantage"


@dataclass
class Sample:
    at: float
    rss_mb: float
    threads: int
    fds: int
    requests: int
    errors: int
    p99_ms: float


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, threads, open descriptors) of a process, from /proc."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


class Worker(threading.Thread):
    """One user with a keep-alive session, taking scheduled requests from the shared queue."""

    def __init__(self, soak: Soak, name: str, token: str, admin_token: str, seed: int) -> None:
        super().__init__(name=f"soak-{name}", daemon=True)
        self.soak, self.rng = soak, random.Random(seed)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.positions: list[int] = []
        self.watch: set[str] = set()

    def symbol(self) -> str:
        # Skewed: a few symbols are asked for much more often, as in real use.
        return SYMBOLS[min(len(SYMBOLS) - 1, int(self.rng.paretovariate(1.2)) - 1)]

    def run(self) -> None:
        url = self.soak.url
        while True:
            scheduled = self.soak.tasks.get()
            if scheduled is None:
                return
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # open-loop pacing, not synchronisation
            try:
                kind, ok = self.one(url)
            except requests.RequestException as exc:
                kind, ok = f"exception {type(exc).__name__}", False
            self.soak.record(kind, (time.monotonic() - scheduled) * 1000, ok)

    def one(self, url: str) -> tuple[str, bool]:
        get, rng = self.session.get, self.rng
        roll = rng.random()
        if roll < 0.33:
            answer = get(f"{url}/api/quote/{self.symbol()}", timeout=30)
            return "quote", answer.status_code == 200
        if roll < 0.41:
            tickers = list({self.symbol() for _ in range(20)})
            answer = self.session.post(url + "/api/batch-quotes", json={"tickers": tickers}, timeout=30)
            return "batch-quotes", answer.status_code == 200 and not answer.json()["errors"]
        if roll < 0.45:
            answer = get(url + "/api/quotes", params={"symbols": ",".join({self.symbol() for _ in range(5)})},
                         timeout=30)
            return "quotes", answer.status_code == 200
        if roll < 0.52:
            return "profile", get(f"{url}/api/profile/{self.symbol()}", timeout=30).status_code == 200
        if roll < 0.56:
            return "history", get(f"{url}/api/history/{self.symbol()}?days=30", timeout=30).status_code == 200
        if roll < 0.60:
            return "news", get(f"{url}/api/news/{self.symbol()}", timeout=30).status_code == 200
        if roll < 0.68:
            return self.portfolio_write(url)
        if roll < 0.73:
            return self.watch_write(url)
        if roll < 0.80:
            return "performance", get(url + "/api/portfolio/performance", timeout=30).status_code == 200
        if roll < 0.84:
            return "watchlist", get(url + "/api/watchlist", timeout=30).status_code == 200
        if roll < 0.88:
            return "portfolio", get(url + "/api/portfolio", timeout=30).status_code == 200
        if roll < 0.91:
            return "cache-stats", get(url + "/api/cache/stats", headers=self.admin, timeout=30).status_code == 200
        if roll < 0.94:
            return "kpis", get(url + "/api/kpis?days=7", headers=self.admin, timeout=30).status_code == 200
        if roll < 0.97:
            return "metrics", get(url + "/metrics", headers=self.admin, timeout=30).status_code == 200
        return "healthz", get(url + "/healthz", timeout=30).status_code == 200

    def portfolio_write(self, url: str) -> tuple[str, bool]:
        rng = self.rng
        if len(self.positions) >= 15 or (self.positions and rng.random() < 0.3):
            position_id = self.positions.pop(rng.randrange(len(self.positions)))
            return "position-delete", self.session.delete(f"{url}/api/portfolio/{position_id}",
                                                          timeout=30).status_code == 204
        if self.positions and rng.random() < 0.4:
            position_id = rng.choice(self.positions)
            answer = self.session.put(f"{url}/api/portfolio/{position_id}",
                                      json={"shares": rng.randint(1, 100)}, timeout=30)
            return "position-update", answer.status_code == 200
        answer = self.session.post(url + "/api/portfolio", json={
            "symbol": self.symbol(), "shares": rng.randint(1, 100), "cost_basis": round(rng.uniform(1, 500), 2)},
            timeout=30)
        if answer.status_code == 201:
            self.positions.append(answer.json()["id"])
        return "position-add", answer.status_code == 201

    def watch_write(self, url: str) -> tuple[str, bool]:
        if len(self.watch) >= 10 or (self.watch and self.rng.random() < 0.4):
            symbol = self.rng.choice(sorted(self.watch))
            self.watch.discard(symbol)
            return "watch-delete", self.session.delete(f"{url}/api/watchlist/{symbol}", timeout=30).status_code == 204
        symbol = self.symbol()
        answer = self.session.post(url + "/api/watchlist", json={"symbol": symbol}, timeout=30)
        self.watch.add(symbol)
        return "watch-add", answer.status_code in (201, 409)


class Soak:
    """Scheduler, workers and the sampler around one service process."""

    def __init__(self, *, minutes: float, rate: float, workers: int, sample: float, seed: int) -> None:
        self.minutes, self.rate, self.n_workers, self.sample_every = minutes, rate, workers, sample
        self.seed = seed
        self.tasks: queue.Queue[float | None] = queue.Queue()
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self._window: list[float] = []
        self._errors = Counter[str]()
        self._window_errors = 0
        self._count = Counter[str]()
        self.url = ""

    def record(self, kind: str, ms: float, ok: bool) -> None:
        with self._lock:
            self._latencies.append(ms)
            self._window.append(ms)
            self._count[kind] += 1
            if not ok:
                self._errors[kind] += 1
                self._window_errors += 1

    def _take_window(self) -> tuple[int, int, float]:
        with self._lock:
            window, errors = self._window, self._window_errors
            self._window, self._window_errors = [], 0
        return len(window), errors, percentile(window, 99)

    def run(self) -> int:
        folder = Path(tempfile.mkdtemp(prefix="stockcache-soak-"))
        upstream = FakeUpstream(latency=0.02)
        upstream.start()
        try:
            users = make_users(folder, self.n_workers, prefix="soak")
            admin = make_users(folder, 1, prefix="admin", admin=True)[0][1]
            env = {
                "FINNHUB_API_KEY": SOAK_FINNHUB_KEY, "ALPHAVANTAGE_API_KEY": SOAK_AV_KEY,
                "STOCKCACHE_FINNHUB_URL": upstream.finnhub_url, "STOCKCACHE_ALPHAVANTAGE_URL": upstream.alphavantage_url,
                "STOCKCACHE_FINNHUB_PER_MINUTE": "0", "STOCKCACHE_FINNHUB_PER_SECOND": "0",
                "STOCKCACHE_ALPHAVANTAGE_PER_DAY": "0", "STOCKCACHE_ALPHAVANTAGE_PER_SECOND": "0",
                "STOCKCACHE_TTL_QUOTE": "30", "STOCKCACHE_TTL_NEWS": "120", "STOCKCACHE_TTL_HISTORY": "300",
                "STOCKCACHE_TTL_FUNDAMENTALS": "600", "STOCKCACHE_REFRESH": "on", "STOCKCACHE_REFRESH_HOURS": "always",
            }
            service = ServiceProcess(folder, env=env)
            self.url = service.url
            try:
                return self.drive(service, users, admin, upstream)
            finally:
                status = service.terminate()
                print(f"graceful stop exit status: {status}")
        finally:
            upstream.stop()
            shutil.rmtree(folder, ignore_errors=True)

    def drive(self, service: ServiceProcess, users: list[tuple[str, str]], admin: str,
              upstream: FakeUpstream) -> int:
        workers = [Worker(self, name, token, admin, self.seed * 100 + i) for i, (name, token) in enumerate(users)]
        for worker in workers:
            worker.start()
        pid = service.proc.pid
        duration = self.minutes * 60
        start = time.monotonic()
        samples: list[Sample] = []
        next_sample = start + self.sample_every
        rss, threads, fds = proc_figures(pid)
        print(f"start: RSS {rss:.1f} MB, {threads} threads, {fds} fds; {self.rate:g} req/s for {self.minutes:g} min")
        for i in itertools.count():
            at = start + i / self.rate
            if at - start >= duration:
                break
            while time.monotonic() >= next_sample or at > next_sample:
                now = time.monotonic()
                if now < next_sample:
                    time.sleep(next_sample - now)  # pacing the sampler
                rss, threads, fds = proc_figures(pid)
                n, errors, p99 = self._take_window()
                samples.append(Sample(next_sample - start, rss, threads, fds, n, errors, p99))
                print(f"  {samples[-1].at:6.0f} s  RSS {rss:6.1f} MB  threads {threads:3d}  fds {fds:4d}  "
                      f"{n:5d} req  {errors} errors  p99 {p99:7.1f} ms  queue {self.tasks.qsize()}", flush=True)
                next_sample += self.sample_every
            self.tasks.put(at)
        for _ in workers:
            self.tasks.put(None)
        for worker in workers:
            worker.join(timeout=60)
        elapsed = time.monotonic() - start
        rss, threads, fds = proc_figures(pid)
        n, errors, p99 = self._take_window()
        samples.append(Sample(elapsed, rss, threads, fds, n, errors, p99))
        self.report(samples, elapsed, upstream)
        return 0 if not self._errors else 1

    def report(self, samples: list[Sample], elapsed: float, upstream: FakeUpstream) -> None:
        latencies = self._latencies
        total = len(latencies)
        print()
        print("| second | RSS MB | threads | fds | requests | errors | p99 ms |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for s in samples:
            if s.at % 60 < self.sample_every or s is samples[-1] or s is samples[0]:
                print(f"| {s.at:.0f} | {s.rss_mb:.1f} | {s.threads} | {s.fds} | {s.requests} | {s.errors} | "
                      f"{s.p99_ms:.1f} |")
        warm = next((s for s in samples if s.at >= 60), samples[0] if samples else None)
        print()
        print(f"requests: {total} in {elapsed:.0f} s ({total / elapsed:.1f}/s); errors: {sum(self._errors.values())}"
              f" {dict(self._errors) or ''}")
        print(f"latency from scheduled moment: p50 {percentile(latencies, 50):.1f} ms, "
              f"p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
              f"max {max(latencies):.1f} ms")
        if warm is not None and samples:
            print(f"RSS after warm-up ({warm.at:.0f} s): {warm.rss_mb:.1f} MB; at the end: {samples[-1].rss_mb:.1f} MB "
                  f"({samples[-1].rss_mb - warm.rss_mb:+.1f} MB)")
        print(f"upstream calls: finnhub {upstream.calls('finnhub')}, alphavantage {upstream.calls('alphavantage')}")
        print("mix: " + ", ".join(f"{k} {v}" for k, v in sorted(self._count.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (open loop)")
    parser.add_argument("--workers", type=int, default=16, help="client threads, one user each")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    soak = Soak(minutes=args.minutes, rate=args.rate, workers=args.workers, sample=args.sample, seed=args.seed)
    return soak.run()


if __name__ == "__main__":
    raise SystemExit(main())
