"""Crash durability: SIGKILL the real service at random moments while clients write; nothing acknowledged is lost.

Run: ``.venv/bin/python -m bench.crash_kill`` (``--rounds 20``, ``--seed``, ``--clients``,
``--data-dir``, ``--keep``). ``tests/integration/test_crash.py`` runs the same code for 3 rounds.

Each round:

1. ``python -m stockcache serve --port 0 --data-dir D`` starts (demo data, no
   keys); readiness is the banner's port, then ``/healthz`` polled with a deadline.
2. Several client threads, one user each, add, change and remove portfolio
   positions and watchlist items, and read quotes and performance (so the
   cache writes too). A client remembers every write it saw acknowledged
   (201/204/200) and the one request, if any, whose answer it never got.
3. After a random number of acknowledged writes (plus a random jitter), the
   process gets SIGKILL: no shutdown hook, no flush.
4. With no process holding the files, every SQLite file in the data dir must
   pass ``PRAGMA integrity_check``.
5. The service restarts; each client reads its portfolio and watchlist back.
   Every acknowledged write must be there (an acknowledged delete must be
   gone); the one unanswered request may have happened or not, and nothing
   else may have changed. ``/healthz`` must say ok: the cache may have lost
   its last moments but reopened cleanly.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "KO",
           "PEP", "DIS", "IBM", "ORCL", "INTC", "AMD", "NFLX", "ADBE"]
BANNER_RE = re.compile(r"stockcache listening on (http://\S+)")
SQLITE_MAGIC = b"SQLite format 3\x00"


# -- the service as a subprocess -------------------------------------------------------------


class ServiceProcess:
    """``python -m stockcache serve`` on a free loopback port, its stderr drained by a thread.

    The environment is the caller's minus every stockcache setting and key (so
    demo data), plus ``env``.
    """

    def __init__(self, data_dir: Path, *, ready_timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("STOCKCACHE_") and k not in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY",
                                                                  "REDIS_URL")}
        clean.update(STOCKCACHE_REFRESH="off", STOCKCACHE_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
        clean.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockcache", "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(data_dir)],
            cwd=ROOT, env=clean, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._url: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_ready(ready_timeout)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            found = BANNER_RE.search(line)
            if found:
                self._url.put(found.group(1))

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        try:
            url = self._url.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError("the service printed no banner:\n" + "\n".join(self.lines[-20:])) from None
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)  # polling a condition with a deadline
        self.kill()
        raise RuntimeError("the service did not become healthy:\n" + "\n".join(self.lines[-20:]))

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM: the graceful stop; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def integrity_problems(data_dir: Path) -> list[str]:
    """``PRAGMA integrity_check`` of every SQLite file in ``data_dir`` (WAL replayed on open)."""
    problems = []
    checked = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        with path.open("rb") as handle:
            if handle.read(16) != SQLITE_MAGIC:
                continue
        checked += 1
        try:
            conn = sqlite3.connect(path)
            try:
                result = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            result = f"cannot open: {exc}"
        if result != "ok":
            problems.append(f"{path.name}: {result[:300]}")
    if checked == 0:
        problems.append("no SQLite file found in the data dir")
    return problems


# -- clients ---------------------------------------------------------------------------------


@dataclass
class Pending:
    """The one request whose answer a client never got: it may or may not have happened."""

    op: str
    position_id: int | None = None
    values: dict[str, Any] | None = None
    symbol: str | None = None


@dataclass
class State:
    """What a client knows for certain about its own data."""

    positions: dict[int, dict[str, Any]] = field(default_factory=dict)
    watch: set[str] = field(default_factory=set)


class Client(threading.Thread):
    """One user writing sequentially; parks when the service dies and resumes after the restart."""

    def __init__(self, crash: CrashRun, name: str, token: str, seed: int) -> None:
        super().__init__(name=f"client-{name}", daemon=True)
        self.crash, self.user, self.token = crash, name, token
        self.rng = random.Random(seed)
        self.state = State()
        self.pending: Pending | None = None
        self.acked = 0
        self.reads = 0
        self.errors: list[str] = []

    # The whole loop: one request at a time, so at most one outcome is ever unknown.
    def run(self) -> None:
        generation = -1
        session = requests.Session()
        while not self.crash.stopping.is_set():
            url, generation = self.crash.wait_for_service(generation)
            if url is None:
                return
            session.close()
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            while not self.crash.stopping.is_set():
                try:
                    self.step(session, url)
                except requests.RequestException:
                    break  # the service died under us: park until the next generation
            self.crash.park()
        session.close()

    def step(self, session: requests.Session, url: str) -> None:
        roll = self.rng.random()
        state = self.state
        if roll < 0.30 or not state.positions:
            values = {"symbol": self.rng.choice(SYMBOLS), "shares": float(self.rng.randint(1, 500)),
                      "cost_basis": round(self.rng.uniform(1, 900), 2)}
            self.pending = Pending("add", values=values)
            answer = session.post(url + "/api/portfolio", json=values, timeout=10)
            self.expect(answer, 201)
            body = answer.json()
            state.positions[body["id"]] = {k: body[k] for k in ("symbol", "shares", "cost_basis")}
        elif roll < 0.50:
            position_id = self.rng.choice(sorted(state.positions))
            values = {"shares": float(self.rng.randint(1, 500)), "cost_basis": round(self.rng.uniform(1, 900), 2)}
            self.pending = Pending("update", position_id=position_id, values=values)
            answer = session.put(f"{url}/api/portfolio/{position_id}", json=values, timeout=10)
            self.expect(answer, 200)
            state.positions[position_id].update(values)
        elif roll < 0.62:
            position_id = self.rng.choice(sorted(state.positions))
            self.pending = Pending("delete", position_id=position_id)
            answer = session.delete(f"{url}/api/portfolio/{position_id}", timeout=10)
            self.expect(answer, 204)
            del state.positions[position_id]
        elif roll < 0.77:
            symbol = self.rng.choice(sorted(set(SYMBOLS) - state.watch) or SYMBOLS)
            self.pending = Pending("watch", symbol=symbol)
            answer = session.post(url + "/api/watchlist", json={"symbol": symbol}, timeout=10)
            self.expect(answer, 201 if symbol not in state.watch else 409)
            state.watch.add(symbol)
        elif roll < 0.87 and state.watch:
            symbol = self.rng.choice(sorted(state.watch))
            self.pending = Pending("unwatch", symbol=symbol)
            answer = session.delete(f"{url}/api/watchlist/{symbol}", timeout=10)
            self.expect(answer, 204)
            state.watch.discard(symbol)
        else:  # reads keep the cache writing too
            path = ("/api/portfolio/performance" if self.rng.random() < 0.5
                    else f"/api/quote/{self.rng.choice(SYMBOLS)}")
            answer = session.get(url + path, timeout=10)
            self.expect(answer, 200)
            self.reads += 1
            return
        self.pending = None
        self.acked += 1
        self.crash.acknowledged()

    def expect(self, answer: requests.Response, status: int) -> None:
        if answer.status_code != status:
            self.errors.append(f"{self.user}: {answer.request.method} {answer.request.path_url} -> "
                               f"{answer.status_code} {answer.text[:200]} (expected {status})")
            raise requests.RequestException("unexpected answer")  # stop this generation's loop

    def verify(self, url: str) -> tuple[list[str], bool]:
        """Compare what the restarted service holds with what was acknowledged; adopt it afterwards.

        Returns the problems and whether the unanswered request turned out to have happened.
        """
        headers = {"Authorization": f"Bearer {self.token}"}
        positions = {p["id"]: {k: p[k] for k in ("symbol", "shares", "cost_basis")}
                     for p in requests.get(url + "/api/portfolio", headers=headers, timeout=10).json()["positions"]}
        watch = {item["symbol"] for item in
                 requests.get(url + "/api/watchlist", headers=headers, timeout=10).json()["items"]}
        problems: list[str] = []
        pending, expected = self.pending, self.state
        happened = False
        for position_id, values in expected.positions.items():
            got = positions.get(position_id)
            if pending and pending.position_id == position_id:
                if pending.op == "delete" and got is None:
                    happened = True
                    continue
                if pending.op == "update" and got == {**values, **(pending.values or {})}:
                    happened = True
                    continue
            if got != values:
                problems.append(f"{self.user}: acknowledged position {position_id} {values} is now {got}")
        extra = set(positions) - set(expected.positions)
        if pending and pending.op == "add" and len(extra) == 1:
            (new_id,) = extra
            if positions[new_id] == pending.values:
                extra, happened = set(), True
        for position_id in sorted(extra):
            problems.append(f"{self.user}: position {position_id} {positions[position_id]} appeared from nowhere")
        maybe = {pending.symbol} if pending and pending.op in ("watch", "unwatch") else set()
        if (watch ^ expected.watch) - maybe:
            problems.append(f"{self.user}: watchlist {sorted(watch)} != acknowledged {sorted(expected.watch)}")
        happened = happened or bool((watch ^ expected.watch) & maybe)
        self.state = State(positions, watch)
        self.pending = None
        return problems, happened


# -- the run -----------------------------------------------------------------------------------


@dataclass
class CrashReport:
    """What a run saw; ``ok`` when nothing acknowledged was lost and every file was sound."""

    rounds: int
    acknowledged: int
    reads: int
    unanswered: int
    unanswered_happened: int
    lost: list[str]
    integrity: list[str]
    other: list[str]
    restart_seconds: list[float]
    files: list[str]

    @property
    def problems(self) -> list[str]:
        return self.lost + self.integrity + self.other

    @property
    def ok(self) -> bool:
        return not self.problems


class CrashRun:
    """Orchestrates clients, kills and restarts. Thread-safe hand-offs through one condition."""

    def __init__(self, data_dir: Path, *, rounds: int, clients: int, seed: int,
                 min_acks: int = 5, max_acks: int = 60, max_jitter: float = 0.05,
                 database_url: str | None = None) -> None:
        self.data_dir, self.rounds, self.seed = data_dir, rounds, seed
        # With a PostgreSQL store the users and their writes live there; the data dir keeps the cache.
        self.database_url = database_url
        self.env = {"STOCKCACHE_DATABASE_URL": database_url} if database_url else {}
        self.rng = random.Random(seed)
        self.min_acks, self.max_acks, self.max_jitter = min_acks, max_acks, max_jitter
        self.n_clients = clients
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._url: str | None = None
        self._generation = 0
        self._parked = 0
        self._acks = 0

    # hand-offs with the clients
    def wait_for_service(self, seen: int) -> tuple[str | None, int]:
        with self._cond:
            self._cond.wait_for(lambda: self.stopping.is_set() or (self._url and self._generation != seen))
            return (None if self.stopping.is_set() else self._url), self._generation

    def park(self) -> None:
        with self._cond:
            self._parked += 1
            self._cond.notify_all()

    def acknowledged(self) -> None:
        with self._cond:
            self._acks += 1
            self._cond.notify_all()

    def _publish(self, url: str | None) -> None:
        with self._cond:
            self._url = url
            self._parked = 0
            self._generation += 1
            self._cond.notify_all()

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=timeout):
                raise RuntimeError(f"timed out waiting for {what}")

    def run(self) -> CrashReport:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tokens = make_users(self.data_dir, self.n_clients, database_url=self.database_url)
        clients = [Client(self, name, token, self.seed * 1000 + i) for i, (name, token) in enumerate(tokens)]
        lost: list[str] = []
        integrity: list[str] = []
        other: list[str] = []
        restarts: list[float] = []
        unanswered = happened = 0
        service = ServiceProcess(self.data_dir, env=self.env)
        for client in clients:
            client.start()
        self._publish(service.url)
        try:
            for round_no in range(1, self.rounds + 1):
                target = self._acks + self.rng.randint(self.min_acks, self.max_acks)
                self._wait(lambda target=target: self._acks >= target or any(c.errors for c in clients), 120,
                           f"{target} acknowledged writes")
                self.stopping.wait(self.rng.uniform(0, self.max_jitter))  # a random moment, not a sync
                service.kill()
                self._wait(lambda: self._parked >= len(clients), 30, "the clients to notice the crash")
                integrity += [f"round {round_no}: {p}" for p in integrity_problems(self.data_dir)]
                started = time.monotonic()
                service = ServiceProcess(self.data_dir, env=self.env)
                restarts.append(time.monotonic() - started)
                health = requests.get(service.url + "/healthz", timeout=5).json()
                if health.get("status") != "ok":
                    other.append(f"round {round_no}: healthz after restart: {health}")
                for client in clients:
                    unanswered += client.pending is not None
                    found, did = client.verify(service.url)
                    happened += did
                    lost += [f"round {round_no}: {p}" for p in found]
                    other += [f"round {round_no}: {p}" for p in client.errors]
                    client.errors.clear()
                if lost or integrity or other:
                    break
                self._publish(service.url)
        finally:
            self.stopping.set()
            with self._cond:
                self._cond.notify_all()
            for client in clients:
                client.join(timeout=15)
            status = service.terminate()
            if status != 0:
                other.append(f"the last graceful stop exited {status}: {service.lines[-5:]}")
        integrity += [f"after the last graceful stop: {p}" for p in integrity_problems(self.data_dir)]
        files = sorted(p.name for p in self.data_dir.iterdir())
        return CrashReport(self.rounds, sum(c.acked for c in clients), sum(c.reads for c in clients), unanswered,
                           happened, lost, integrity, other, restarts, files)


def make_users(data_dir: Path, count: int, *, prefix: str = "writer", admin: bool = False,
               database_url: str | None = None) -> list[tuple[str, str]]:
    """Users with long-lived API tokens, written straight into the store before the first start."""
    from stockcache.auth import open_auth
    from stockcache.settings import Settings
    from stockcache.store import open_configured_store

    settings = Settings(data_dir=data_dir, refresh=False, database_url=database_url or "")
    store = open_configured_store(settings, pool_size=2)
    try:
        auth = open_auth(settings, store)
        out = []
        for i in range(count):
            name = f"{prefix}{i}"
            store.create_user(name, "not-a-password-hash", is_admin=admin)  # token only: no login, no argon2 time
            token, _ = auth.create_api_token(name, "crash test")
            out.append((name, token))
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args(argv)
    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="stockcache-crash-"))
    started = time.monotonic()
    try:
        report = CrashRun(folder, rounds=args.rounds, clients=args.clients, seed=args.seed).run()
    finally:
        if args.data_dir is None and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.monotonic() - started
    restarts = sorted(report.restart_seconds)
    print(f"crash_kill: {report.rounds} SIGKILL rounds, seed {args.seed}, {args.clients} clients, "
          f"{elapsed:.0f} s")
    print("| figure | value |\n| --- | --- |")
    print(f"| acknowledged writes | {report.acknowledged} |")
    print(f"| reads (cache writes) | {report.reads} |")
    print(f"| writes unanswered at a kill | {report.unanswered} ({report.unanswered_happened} had happened) |")
    print(f"| lost or changed acknowledged writes | {len(report.lost)} |")
    print(f"| integrity_check failures | {len(report.integrity)} |")
    if restarts:
        print(f"| restart to healthy, median / max | {restarts[len(restarts) // 2]:.2f} s / {restarts[-1]:.2f} s |")
    print(f"| files | {', '.join(report.files)} |")
    for problem in report.problems:
        print("PROBLEM:", problem)
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
