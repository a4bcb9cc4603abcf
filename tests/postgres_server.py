"""A real PostgreSQL server for tests: Debian's initdb and pg_ctl, a temp dir, a free loopback port.

``./scripts/test`` installs Debian's postgresql when it is missing. Without it
these helpers raise, so the PostgreSQL tests fail loudly instead of being
skipped. PostgreSQL refuses to run as root, so when the tests do, the server
runs as an unprivileged user (``postgres`` when Debian's package made it,
else ``nobody``) through ``runuser``/``setpriv``; its folder is handed to
that user. Clients log in over TCP with a password (scram-sha-256), so the
URL carries a secret the code under test must never show.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

START_TIMEOUT = 30.0
USER = "stockcache"
PASSWORD = "pg-Secret-Pw-7d1e"  # recognisable: tests assert it never shows up


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL's initdb not found (/usr/lib/postgresql/*/bin); ./scripts/test installs it "
                       "(apt-get install postgresql). The PostgreSQL tests never skip.")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_as() -> str | None:
    """The user to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


class PostgresServer:
    """One PostgreSQL cluster; ``start()``, ``stop()`` (fast shutdown), ``kill()`` (SIGKILL), ``start()`` again.

    ``durable=False`` (the tests' default) turns fsync off: only the OS could lose
    what it wrote, and no test crashes the OS. The benchmark keeps it on.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stockcache-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.durable = durable
        self.user = _run_as()
        self._initialised = False
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.dir, 0o700)

    def _command(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user, "--", *args]
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", *args]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        if not self._initialised:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-instructions")
            pwfile.unlink()
            self._initialised = True
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=200"
                   " -c shared_buffers=32MB")
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(int(START_TIMEOUT)), "start", timeout=START_TIMEOUT + 10)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # pg_ctl -w waited already; this checks TCP and the password too
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, nothing committed is lost."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster, as a crash would (committed data survives: recovery replays the WAL)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 9)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)

    def destroy(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> PostgresServer:
    """One server for the whole test run, started on first use and removed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            server = PostgresServer().start()
            atexit.register(server.destroy)
            _shared = server
        return _shared


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the shared server, dropped after the test."""
    server = shared_server()
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, which it may stop, kill and start again."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()
