"""The user store's cost: one instance on the SQLite store against one on a PostgreSQL store, in one run.

Run: ``.venv/bin/python -m bench.bench_store`` (``--duration`` seconds per wrk run, ``--rounds``,
``--connections``, ``--posts`` per round). Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and
Debian's postgresql (the test suite's ``tests/postgres_server.py`` starts it: a temp dir, a
loopback port, fsync on as in production). Prints markdown tables; results go in
docs/benchmarks.md with this command.

Two servers run as subprocesses (``run.py``, demo source, default settings): one with the
SQLite store in its data dir, one with ``STOCKCACHE_DATABASE_URL`` pointing at the local
PostgreSQL. Measured:

- authenticated cached-quote throughput (``GET /api/quote/AAPL`` with an API token,
  keep-alive connections, wrk): the hot path, which touches neither store (the token is
  verified once and remembered, the quote is in memory), so the two should be within a
  few per cent;
- ``POST /api/portfolio`` latency, one client on one keep-alive connection, each POST
  followed by an untimed DELETE so the portfolio stays small: a write committed durably
  by each store (SQLite WAL with synchronous=FULL; PostgreSQL synchronous_commit=on).

The machine is shared and has 2 cores, so every round runs both servers one after the
other, alternating which goes first, in short runs, and the medians over rounds are reported
with the PostgreSQL/SQLite ratio of each figure. Load from elsewhere swings a single run's
throughput by tens of per cent, so the throughput comparison that counts is the median of the
per-round ratios (each round's two runs are seconds apart, so they share the machine's mood);
the server's CPU time per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_http import ROOT, Load, free_port, median_load, service_env, wait_ready, wrk
from tests.postgres_server import PostgresServer

PASSWORD = "bench password 1234"


@dataclass
class Instance:
    """One server under test: its store, data dir, port, token and process."""

    name: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    token: str = ""
    pid: int = 0
    loads: list[Load] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)  # ms

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run([sys.executable, "-m", "stockcache", *args, "--data-dir", str(self.data_dir)],
                              input=stdin, capture_output=True, text=True, cwd=ROOT,
                              env={**service_env(), **self.env}, check=False)
        if done.returncode != 0:
            raise SystemExit(f"stockcache {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()


@contextmanager
def serving(instance: Instance, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    instance.port = free_port()
    argv = [sys.executable, str(ROOT / "run.py"), "--port", str(instance.port), "--data-dir", str(instance.data_dir)]
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env={**service_env(), **instance.env}, stdout=out, stderr=out)
    try:
        wait_ready(instance.port, process, time.monotonic() + 30)
        instance.pid = process.pid
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed_posts(instance: Instance, count: int) -> list[float]:
    """``count`` POST /api/portfolio on one keep-alive connection, each undone by an untimed DELETE; ms each."""
    conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=30)
    headers = {"Authorization": f"Bearer {instance.token}", "Content-Type": "application/json"}
    body = json.dumps({"symbol": "AAPL", "shares": 3, "cost_basis": 150.25}).encode()
    out = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("POST", "/api/portfolio", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            out.append((time.perf_counter() - started) * 1000)
            if response.status != 201:
                raise SystemExit(f"{instance.name}: POST /api/portfolio answered {response.status}: {answer[:200]!r}")
            conn.request("DELETE", f"/api/portfolio/{json.loads(answer)['id']}", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 204:
                raise SystemExit(f"{instance.name}: DELETE answered {response.status}")
    finally:
        conn.close()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_store", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=21, help="rounds, each running both servers")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections for the quote load")
    parser.add_argument("--posts", type=int, default=100, help="timed POST /api/portfolio per server per round")
    parser.add_argument("--control", action="store_true",
                        help="an A/A run: both servers on SQLite, to see how far apart two equal servers measure")
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="stockcache-bench-store-"))
        postgres = PostgresServer(durable=True).start()
        stack.callback(postgres.destroy)
        url = postgres.create_database("bench")
        second = ({} if args.control else {"STOCKCACHE_DATABASE_URL": url})
        instances = [Instance("SQLite store", root / "sqlite"),
                     Instance("SQLite store (control)" if args.control else "PostgreSQL store", root / "postgres",
                              env=second)]
        for instance in instances:
            instance.cli("users", "add", "bench", stdin=PASSWORD + "\n")
            instance.token = instance.cli("tokens", "create", "bench", "--label", "bench")
        log = root / "servers.log"
        for instance in instances:
            stack.enter_context(serving(instance, log))
            conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=30)
            conn.request("GET", "/api/quote/AAPL", headers={"Authorization": f"Bearer {instance.token}"})
            if conn.getresponse().status != 200:
                raise SystemExit(f"{instance.name}: the first quote failed")
            conn.close()
            timed_posts(instance, 20)  # warm-up: connections, pages, the pool
        for round_no in range(args.rounds):
            order = instances if round_no % 2 == 0 else instances[::-1]
            for instance in order:
                instance.loads.append(wrk(f"http://127.0.0.1:{instance.port}/api/quote/AAPL", args.connections,
                                          args.duration, root, token=instance.token, pid=instance.pid))
            for instance in order:
                instance.posts += timed_posts(instance, args.posts)
            print(f"round {round_no + 1}/{args.rounds}: " + ", ".join(
                f"{i.name} {i.loads[-1].rps:,.0f} req/s" for i in order), file=sys.stderr)

    sqlite, pg = instances
    quote = {i.name: median_load(i.loads) for i in instances}
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, PostgreSQL on loopback (fsync on); "
          f"{args.rounds} rounds alternating the servers; quotes: wrk, {args.connections} connections, "
          f"{args.duration} s per run, medians; POST /api/portfolio: {args.posts} per server per round, "
          "one connection.\n")
    print("| store | cached quote req/s | p50 ms | p99 ms | server CPU µs/req | POST /api/portfolio p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for instance in instances:
        load = quote[instance.name]
        print(f"| {instance.name} | {load.rps:,.0f} | {load.p50:.2f} | {load.p99:.2f} | {load.cpu_us:,.0f} | "
              f"{statistics.median(instance.posts):.2f} | {percentile(instance.posts, 0.99):.2f} |")
    a, b = quote[sqlite.name], quote[pg.name]
    label = f"{pg.name} / {sqlite.name}"
    print(f"| {label} | {b.rps / a.rps:.3f}x | {b.p50 / a.p50:.2f}x | {b.p99 / a.p99:.2f}x | "
          f"{b.cpu_us / a.cpu_us:.2f}x | {statistics.median(pg.posts) / statistics.median(sqlite.posts):.2f}x | "
          f"{percentile(pg.posts, 0.99) / percentile(sqlite.posts, 0.99):.2f}x |")
    per_round = [y.rps / x.rps for x, y in zip(sqlite.loads, pg.loads, strict=True)]
    cpu_round = [y.cpu_us / x.cpu_us for x, y in zip(sqlite.loads, pg.loads, strict=True) if x.cpu_us]
    print(f"\nThroughput, {label}, median of the per-round ratios: {statistics.median(per_round):.3f} "
          f"(rounds from {min(per_round):.2f} to {max(per_round):.2f}); CPU per request, the same: "
          f"{statistics.median(cpu_round):.3f}.")


if __name__ == "__main__":
    main()
