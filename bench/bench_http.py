"""HTTP load test of stockcache beside a bare Bottle+waitress app, in one run; plus RSS and start-up time.

Run: ``.venv/bin/python -m bench.bench_http`` (``--duration`` seconds per run, ``--rounds``,
``--connections``, ``--wrk-threads``). ``--baseline DIR`` also runs the stockcache checked out in
DIR (e.g. ``git worktree add /tmp/old 80b2ff3``) in the same rounds, so old and new code are
compared side by side. Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Prints markdown
tables; results go in docs/benchmarks.md with this command.

Both servers run as subprocesses on loopback ports: stockcache via ``run.py``
on the demo source with its default settings (8 waitress threads, access log
at info to a file), and :mod:`bench.bare_app` with the same thread count,
answering the very JSON stockcache answered. Measured:

- a cached quote (``GET /api/quote/AAPL`` with an API token) at 1, 8 and 32
  keep-alive connections: requests/s and p50/p95/p99, bare app then stockcache
  at each level;
- a warm batch of 100 quotes (``POST /api/batch-quotes``) against one cached
  quote, one connection each;
- RSS right after start-up, and after 10 000 quotes were cached (warmed through
  the batch route);
- start-up: process start to the first 200 from ``/healthz``, median of 5, on
  a fresh data dir and on a restart.

wrk runs one thread by default (the machine has 2 cores; a second wrk thread
takes CPU from the server under test), and ``--wrk-threads 1,2`` measures
both. Each cell is ``--rounds`` runs that alternate between the servers, and
the medians are reported, so a burst of load from elsewhere on the machine
hits every side. Beside requests/s, each
run records the server process's CPU time per request (from /proc), a figure
less sensitive to other load than throughput, and its voluntary context
switches per request (summed over its threads): each is a thread put to sleep
on the GIL, a lock or I/O, the cost that grows with connections when every
request changes threads.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockcache.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password 1234"
BATCH = [f"Q{i:04d}" for i in range(100)]
FILL = [f"Q{i:04d}" for i in range(10_000)]

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Load:
    """Requests/s, latency percentiles in ms and the server's CPU time per request in µs."""

    rps: float
    p50: float
    p95: float
    p99: float
    cpu_us: float = 0.0
    switches: float = 0.0  # the server's voluntary context switches per request, all threads


def median_load(loads: list[Load]) -> Load:
    """The median of each figure over rounds (the rounds interleave the servers, so load spikes hit both)."""
    return Load(*(statistics.median(getattr(load, name) for load in loads)
                  for name in ("rps", "p50", "p95", "p99", "cpu_us", "switches")))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of a process's live threads so far: each is a thread that
    went to sleep (on the GIL, a lock or I/O) and had to be woken."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


KEYS = ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "TWELVEDATA_API_KEY", "COINGECKO_API_KEY", "OPENFIGI_API_KEY",
        "OPENAI_API_KEY", "REDIS_URL")


def service_env(code: Path = ROOT) -> dict[str, str]:
    """The caller's environment without any stockcache or provider setting (defaults, demo source),
    importing stockcache from the checkout ``code``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCACHE_") and k not in KEYS}
    env["PYTHONPATH"] = str(code)
    return env


def cli(data_dir: Path, *args: str, stdin: str = "", code: Path = ROOT) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stockcache", *args, "--data-dir", str(data_dir)], input=stdin,
        capture_output=True, text=True, cwd=code, env=service_env(code), check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"stockcache {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def request(port: int, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_ready(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll /healthz until it answers 200 (a start-up time measurement, so a tight poll)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"no 200 from /healthz on port {port} in time")


@contextmanager
def serving(argv: list[str], port: int, log: Path, code: Path = ROOT) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start a server subprocess; yield it and its start-up time (process start to first 200)."""
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=code, env=service_env(code), stdout=out, stderr=out)
    try:
        wait_ready(port, process, time.monotonic() + 30)
        yield process, time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_argv(port: int, data_dir: Path, code: Path = ROOT) -> list[str]:
    return [sys.executable, str(code / "run.py"), "--port", str(port), "--data-dir", str(data_dir)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wrk(url: str, connections: int, duration: int, scripts: Path, token: str | None = None,
        body: Any = None, pid: int | None = None, threads: int = 1) -> Load:
    lua = WRK_DONE
    if body is not None:
        lua = (f"wrk.method = \"POST\"\nwrk.body = {json.dumps(json.dumps(body))}\n"
               "wrk.headers[\"Content-Type\"] = \"application/json\"\n") + lua
    script = scripts / f"wrk_{abs(hash(lua))}.lua"
    script.write_text(lua)
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(script)]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    switches_before = voluntary_switches(pid) if pid else 0
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    switches = voluntary_switches(pid) - switches_before if pid else 0
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    result = json.loads(line[len("WRKJSON "):])
    if result["non_2xx"] or result["socket_errors"] or not result["requests"]:
        raise SystemExit(f"wrk against {url} saw errors: {result}")
    return Load(result["requests"] / (result["duration_us"] / 1e6), result["p50_us"] / 1000,
                result["p95_us"] / 1000, result["p99_us"] / 1000, cpu / result["requests"] * 1e6,
                switches / result["requests"])


def startup_times(root: Path, data_dir: Path, runs: int) -> tuple[list[float], list[float]]:
    """(fresh data dir, restart on ``data_dir``) start-up times in seconds."""
    fresh, restart = [], []
    for i in range(runs):
        port = free_port()
        with serving(service_argv(port, root / f"fresh{i}"), port, root / "startup.log") as (_, took):
            fresh.append(took)
        port = free_port()
        with serving(service_argv(port, data_dir), port, root / "startup.log") as (_, took):
            restart.append(took)
    return fresh, restart


def fill(port: int, token: str, symbols: list[str]) -> None:
    for start in range(0, len(symbols), 100):
        status, answer = request(port, "POST", "/api/batch-quotes", token, {"tickers": symbols[start:start + 100]})
        if status != 200 or answer["errors"]:
            raise SystemExit(f"warming failed: {status} {str(answer)[:200]}")


@dataclass
class Variant:
    """One stockcache under test: its code, data dir, port, tokens and, while serving, its process."""

    name: str
    code: Path
    data_dir: Path
    port: int = 0
    token: str = ""
    admin: str = ""
    pid: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def prepare(variant: Variant) -> None:
    """Users and API tokens made by the variant's own command line."""
    cli(variant.data_dir, "users", "add", "bench", stdin=PASSWORD + "\n", code=variant.code)
    cli(variant.data_dir, "users", "add", "benchadmin", "--admin", stdin=PASSWORD + "\n", code=variant.code)
    variant.token = cli(variant.data_dir, "tokens", "create", "bench", "--label", "bench", code=variant.code)
    variant.admin = cli(variant.data_dir, "tokens", "create", "benchadmin", "--label", "bench", code=variant.code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_http", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="wrk runs per cell, interleaving the servers (medians reported)")
    parser.add_argument("--connections", default="1,8,32", help="connection counts, comma-separated")
    parser.add_argument("--wrk-threads", default="1", help="wrk thread counts, comma-separated (e.g. 1,2)")
    parser.add_argument("--startups", type=int, default=5, help="start-ups to time (median reported)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of other stockcache code to measure beside this one")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    levels = [int(c) for c in args.connections.split(",")]
    wrk_threads = [int(t) for t in args.wrk_threads.split(",")]
    threads = Settings().threads
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench_http_"))
    variants = [Variant("stockcache", ROOT, root / "data")]
    if args.baseline is not None:
        variants.insert(0, Variant("baseline", args.baseline.resolve(), root / "baseline-data"))
    labels = {"baseline": f"baseline ({_commit(args.baseline)})" if args.baseline else "",
              "stockcache": f"stockcache ({_commit(ROOT)})"}
    try:
        for variant in variants:
            prepare(variant)
        fresh, restart = startup_times(root, variants[-1].data_dir, args.startups)

        with ExitStack() as stack:
            for variant in variants:
                variant.port = free_port()
                process, _ = stack.enter_context(serving(
                    service_argv(variant.port, variant.data_dir, variant.code), variant.port,
                    root / f"{variant.name}.log", variant.code))
                variant.pid = process.pid
            rss_idle = rss_mb(variants[-1].pid)
            quote: Any = None
            for variant in variants:
                status, quote = request(variant.port, "GET", "/api/quote/AAPL", variant.token)
                if status != 200:
                    raise SystemExit(f"{variant.name}: quote failed: {status} {quote}")
                fill(variant.port, variant.token, BATCH)
            (root / "quote.json").write_text(json.dumps(quote))
            bare_port = free_port()
            bare_argv = [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port),
                         "--threads", str(threads), "--quote", str(root / "quote.json")]
            bare_process, _ = stack.enter_context(serving(bare_argv, bare_port, root / "bare.log"))
            bare_url = f"http://127.0.0.1:{bare_port}/api/quote/AAPL"
            wrk(bare_url, 8, 2, root)  # warm-up, untimed
            for variant in variants:
                wrk(variant.url("/api/quote/AAPL"), 8, 2, root, variant.token)
            loads: list[tuple[int, int, Load, list[Load]]] = []
            for t in wrk_threads:
                for c in levels:
                    bares: list[Load] = []
                    ours: list[list[Load]] = [[] for _ in variants]
                    for _ in range(args.rounds):
                        bares.append(wrk(bare_url, c, args.duration, root, pid=bare_process.pid, threads=t))
                        for i, variant in enumerate(variants):
                            ours[i].append(wrk(variant.url("/api/quote/AAPL"), c, args.duration, root,
                                               variant.token, pid=variant.pid, threads=t))
                    loads.append((t, c, median_load(bares), [median_load(runs) for runs in ours]))
            singles: list[list[Load]] = [[] for _ in variants]
            batches: list[list[Load]] = [[] for _ in variants]
            for _ in range(args.rounds):
                for i, variant in enumerate(variants):
                    singles[i].append(wrk(variant.url("/api/quote/AAPL"), 1, args.duration, root, variant.token,
                                          pid=variant.pid))
                    batches[i].append(wrk(variant.url("/api/batch-quotes"), 1, args.duration, root, variant.token,
                                          {"tickers": BATCH}, pid=variant.pid))
            ours_now = variants[-1]
            rss_loaded = rss_mb(ours_now.pid)
            fill(ours_now.port, ours_now.token, FILL)
            rss_full = rss_mb(ours_now.pid)
            status, stats = request(ours_now.port, "GET", "/api/cache/stats", ours_now.admin)
            cached = stats["memory"]["size"] if status == 200 else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print(f"{args.rounds} rounds x {args.duration} s per cell (servers interleaved, medians); "
          f"waitress threads={threads} for every app; " + "; ".join(labels[v.name] for v in variants) + "\n")
    names = [labels[v.name] for v in variants]
    print("| wrk threads | connections | bare req/s | " + " | ".join(f"{n} req/s" for n in names)
          + " | " + " | ".join(f"{n} / bare" for n in names)
          + " | bare p50 / p99 ms (p99/p50) | " + " | ".join(f"{n} p50 / p99 ms (p99/p50)" for n in names)
          + " | server CPU per request, bare / " + " / ".join(v.name for v in variants)
          + " | voluntary context switches per request, bare / " + " / ".join(v.name for v in variants) + " |")
    print("|" + "---:|" * (3 + 3 * len(variants) + 3))
    for t, c, bare, ours in loads:
        print(f"| {t} | {c} | {bare.rps:,.0f} | " + " | ".join(f"{o.rps:,.0f}" for o in ours)
              + " | " + " | ".join(f"{o.rps / bare.rps:.2f}" for o in ours)
              + f" | {bare.p50:.2f} / {bare.p99:.2f} ({bare.p99 / bare.p50:.1f}x) | "
              + " | ".join(f"{o.p50:.2f} / {o.p99:.2f} ({o.p99 / o.p50:.1f}x)" for o in ours)
              + f" | {bare.cpu_us:.0f} / " + " / ".join(f"{o.cpu_us:.0f}" for o in ours) + " µs"
              + f" | {bare.switches:.1f} / " + " / ".join(f"{o.switches:.1f}" for o in ours) + " |")
    print("\n| one connection | code | req/s | p50 / p95 / p99 ms | p50 / one cached quote | server CPU per request |")
    print("|---|---|---:|---:|---:|---:|")
    for i, variant in enumerate(variants):
        single, batch = median_load(singles[i]), median_load(batches[i])
        for name, load in (("GET /api/quote/AAPL (cached)", single),
                           ("POST /api/batch-quotes, 100 warm", batch)):
            print(f"| {name} | {labels[variant.name]} | {load.rps:,.0f} | {load.p50:.2f} / {load.p95:.2f} / "
                  f"{load.p99:.2f} | {load.p50 / single.p50:.2f}x | {load.cpu_us:.0f} µs |")
    print("\n| measure (this code) | value |")
    print("|---|---:|")
    print(f"| RSS after start-up (idle) | {rss_idle:.1f} MB |")
    print(f"| RSS after the load tests | {rss_loaded:.1f} MB |")
    print(f"| RSS with {cached if cached is not None else '?'} cached quotes in memory | {rss_full:.1f} MB |")
    print(f"| start-up to first /healthz 200, fresh data dir (median of {len(fresh)}) "
          f"| {statistics.median(fresh) * 1000:.0f} ms (min {min(fresh) * 1000:.0f}, "
          f"max {max(fresh) * 1000:.0f}) |")
    print(f"| start-up to first /healthz 200, restart (median of {len(restart)}) "
          f"| {statistics.median(restart) * 1000:.0f} ms (min {min(restart) * 1000:.0f}, "
          f"max {max(restart) * 1000:.0f}) |")


def _commit(code: Path | None) -> str:
    if code is None:
        return "?"
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "?") + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()
