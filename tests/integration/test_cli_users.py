"""``python -m stockcache users ...`` and ``tokens ...`` run as a person would: subprocesses on a temp data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stockcache.auth import open_auth
from stockcache.errors import Unauthorized
from stockcache.settings import Settings
from stockcache.store import open_store

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Cli-Test-Passw0rd-5e6f"


def run(data_dir: Path | None, *args: str, stdin: str = "", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCACHE_")}
    environ.update(env or {})
    command = [sys.executable, "-m", "stockcache", *args]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=ROOT, env=environ, timeout=60)


def authenticate(data_dir: Path, header: str):  # type: ignore[no-untyped-def]
    with open_store(data_dir) as store:
        return open_auth(Settings(data_dir=data_dir), store).authenticate(header)


def test_cli_users_full_lifecycle(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run(data, "users", "add", "alice", "--admin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr  # never echoed
    assert run(data, "users", "add", "bob", stdin=PASSWORD + "-bob\r\n").returncode == 0

    listed = run(data, "users", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADMIN", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["alice", "yes"], ["bob", "no"]]

    # The password was stored hashed and works for a login (the newline was stripped, \r too).
    with open_store(data) as store:
        auth = open_auth(Settings(data_dir=data), store)
        assert auth.login("alice", PASSWORD, None)["token_type"] == "bearer"
        assert auth.login("bob", PASSWORD + "-bob", None)["token_type"] == "bearer"
    assert PASSWORD.encode() not in (data / "store.sqlite").read_bytes()

    created = run(data, "tokens", "create", "alice", "--label", "spreadsheet")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # the token alone on stdout
    assert token.startswith("sc_") and token not in created.stderr
    token_id = token[3:11]
    assert token_id in created.stderr and "revoke" in created.stderr
    principal = authenticate(data, f"Bearer {token}")
    assert (principal.username, principal.is_admin, principal.via) == ("alice", True, "api_token")

    tokens = run(data, "tokens", "list", "alice")
    assert tokens.returncode == 0 and token_id in tokens.stdout and "spreadsheet" in tokens.stdout
    assert token[12:] not in tokens.stdout

    revoked = run(data, "tokens", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(Unauthorized):
        authenticate(data, f"Bearer {token}")
    again = run(data, "tokens", "revoke", token)  # the whole token is accepted too; now already revoked
    assert again.returncode == 1 and token not in again.stderr

    removed = run(data, "users", "remove", "bob")
    assert removed.returncode == 0, removed.stderr
    assert [line.split()[0] for line in run(data, "users", "list").stdout.splitlines()[1:]] == ["alice"]

    for name in ("store.sqlite", "jwt.secret"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600


def test_cli_tokens_revoke_by_whole_token(tmp_path: Path) -> None:
    assert run(tmp_path, "users", "add", "alice", stdin=PASSWORD + "\n").returncode == 0
    token = run(tmp_path, "tokens", "create", "alice").stdout.strip()
    done = run(tmp_path, "tokens", "revoke", token)
    assert done.returncode == 0 and token not in done.stdout + done.stderr
    with pytest.raises(Unauthorized):
        authenticate(tmp_path, f"Bearer {token}")


def test_cli_honours_the_data_dir_environment_variable(tmp_path: Path) -> None:
    env = {"STOCKCACHE_DATA_DIR": str(tmp_path / "from-env")}
    assert run(None, "users", "add", "carol", stdin=PASSWORD + "\n", env=env).returncode == 0
    assert (tmp_path / "from-env" / "store.sqlite").exists()
    assert "carol" in run(None, "users", "list", env=env).stdout


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("users", "add", "dave"), "", "password is empty"),
        (("users", "add", "dave"), "\n", "password is empty"),
        (("users", "add", "bad name"), PASSWORD + "\n", "username"),
        (("users", "add", "alice"), PASSWORD + "\n", "already exists"),
        (("users", "add", "ALICE"), PASSWORD + "\n", "already exists"),
        (("users", "add", "dave"), "p" * 1025 + "\n", "1024"),
        (("users", "remove", "nobody"), "", "no such user"),
        (("tokens", "create", "nobody"), "", "No such user"),
        (("tokens", "create", "alice", "--label", "x" * 101), "", "label"),
        (("tokens", "list", "nobody"), "", "no such user"),
        (("tokens", "revoke", "zzzzzzzz"), "", "no live token"),
    ],
)
def test_cli_bad_input_exits_non_zero_with_one_line(tmp_path: Path, args: tuple[str, ...], stdin: str,
                                                    needle: str) -> None:
    assert run(tmp_path, "users", "add", "alice", stdin=PASSWORD + "\n").returncode == 0
    done = run(tmp_path, *args, stdin=stdin)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bad_configuration_exits_2(tmp_path: Path) -> None:
    done = run(tmp_path, "users", "list", env={"STOCKCACHE_JWT_TTL": "soon"})
    assert done.returncode == 2 and "STOCKCACHE_JWT_TTL" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_cli_store_from_a_newer_version_exits_2(tmp_path: Path) -> None:
    import sqlite3

    open_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    done = run(tmp_path, "users", "list")
    assert done.returncode == 2 and "schema version 999" in done.stderr
    assert len(done.stderr.splitlines()) == 1
