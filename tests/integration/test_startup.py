"""Starting ``python -m stockcache`` as a person would, on data folders that are not fit to start on.

Every start that cannot go on says why in one line on stderr, naming the
setting, exits with status 2, and leaves the data folder exactly as it found
it (no jwt.secret, no half-made SQLite files, no new folder). Files that can
be rebuilt (the KPI history, the usage ledger) are set aside instead, and the
service starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from stockcache.runtime import Runtime
from stockcache.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKCACHE_") and k not in ("FINNHUB_API_KEY", "ALPHAVANTAGE_API_KEY", "REDIS_URL")}
    env["STOCKCACHE_REFRESH"] = "off"
    env.update(extra)
    return env


def _run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "stockcache", *args], input=stdin, capture_output=True,
                          cwd=ROOT, env=env or _env(), timeout=60)


def _snapshot(top: Path) -> dict[str, tuple[str, int, str]]:
    """Every file and folder under ``top`` with its kind, mode and content hash."""
    out: dict[str, tuple[str, int, str]] = {}
    for path in sorted([top, *top.rglob("*")]) if top.exists() else []:
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            out[str(path.relative_to(top.parent))] = ("dir", stat.S_IMODE(info.st_mode), "")
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(top.parent))] = ("file", stat.S_IMODE(info.st_mode), digest)
    return out


def _one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1, done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in lines[0]
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _populated(data: Path) -> None:
    """What a previous, successful start left in ``data``."""
    Runtime(Settings(data_dir=data, refresh=False), janitor_interval=None, kpi_interval=None).close()


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` made unwritable in a way that binds root too (root ignores file modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, which ignores file modes, and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


# -- starts that must stop, in one line, leaving nothing behind ---------------------------------


def _a_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.write_text("not a folder\n")
    return data


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _corrupt_store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "store.sqlite"
    store.write_bytes(b"this is no SQLite database " * 300)
    store.chmod(0o600)
    return data


@pytest.mark.parametrize(("prepare", "flags", "named"), [
    (_a_file, (), ["STOCKCACHE_DATA_DIR", "--data-dir", "not a folder"]),
    (_missing, ("--host", "999.1.1.1"), ["STOCKCACHE_HOST", "--host", "999.1.1.1"]),
    (_corrupt_store, (), ["store.sqlite", "not a database"]),
], ids=["data-dir-is-a-file", "bad-host", "corrupt-store"])
def test_startup_failure_is_one_line_exit_2_and_changes_nothing(
    tmp_path: Path, prepare: Callable[[Path], Path], flags: tuple[str, ...], named: list[str]
) -> None:
    data = prepare(tmp_path)
    before = _snapshot(data)
    done = _run("serve", "--port", "0", "--data-dir", str(data), *flags)
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("stockcache: ") and all(word in line for word in named), line
    assert _snapshot(data) == before


def test_startup_port_in_use_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("serve", "--port", str(port), "--data-dir", str(data))
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert "STOCKCACHE_PORT" in line and str(port) in line and "in use" in line
    assert not data.exists()


@pytest.mark.parametrize("populated", [False, True], ids=["empty", "from-an-earlier-start"])
def test_startup_read_only_data_dir_is_one_line_exit_2_and_changes_nothing(tmp_path: Path, populated: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if populated:
        _populated(data)
    before = _snapshot(data)
    with _read_only(data):
        done = _run("serve", "--port", "0", "--data-dir", str(data))
        nested = _run("serve", "--port", "0", "--data-dir", str(data / "inner" / "deeper"))
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert "STOCKCACHE_DATA_DIR" in line and "cannot read and write the data folder" in line, line
    assert nested.returncode == 2 and "cannot create the data folder" in _one_line(nested)
    assert _snapshot(data) == before


def test_users_add_with_a_non_utf8_password_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = _run("users", "add", "alice", "--data-dir", str(data), stdin=b"caf\xe9-latin-1-passw0rd\n")
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert "password" in line and "UTF-8" in line and "caf" not in line
    assert not data.exists()


# -- starts that go on -------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(data: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    port = _free_port()
    log = data.parent / "stderr.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "stockcache", "serve", "--port", str(port),
                                    "--data-dir", str(data)], cwd=ROOT, env=env or _env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:  # poll the external process until it answers, with a deadline
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield process, log
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("name", ["kpis.sqlite", "usage.sqlite"])
def test_startup_sets_a_corrupt_kpi_or_usage_file_aside_and_starts(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _populated(data)
    garbage = os.urandom(8192)
    (data / name).write_bytes(garbage)
    with _serving(data) as (_, log):
        pass
    moved = list(data.glob(f"{name}.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    text = log.read_text()
    assert "Traceback" not in text
    warning = [line for line in text.splitlines() if "WARNING" in line and moved[0].name in line]
    assert len(warning) == 1 and "corrupt" in warning[0]
    with contextlib.closing(sqlite3.connect(data / name)) as fresh:
        assert fresh.execute("PRAGMA quick_check").fetchall() == [("ok",)]


def test_startup_warns_of_a_misspelled_variable_naming_the_closest_setting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with _serving(data, _env(STOCKCACHE_PROT="9999", STOCKCACHE_TTL_QOUTE="60")) as (_, log):
        pass
    lines = log.read_text().splitlines()
    port = [line for line in lines if "STOCKCACHE_PROT" in line]
    assert port == ["stockcache: warning: STOCKCACHE_PROT is not a stockcache setting and is ignored; "
                    "did you mean STOCKCACHE_PORT?"]
    ttl = [line for line in lines if "STOCKCACHE_TTL_QOUTE" in line]
    assert len(ttl) == 1 and ttl[0].endswith("did you mean STOCKCACHE_TTL_QUOTE?")
    assert not any("9999" in line or "=60" in line for line in lines)  # names only, never values
