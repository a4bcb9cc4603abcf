"""Accounts (issue 17): a password can be changed, by its user over HTTP or by the operator's CLI, and must be 8+.

Changing a password kills every JWT issued before it: at once in the server
that changed it, within the revocation bound in a server when the command
line (another process) changed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Live
from tests.integration.test_cli_users import PASSWORD, run
from tests.integration.test_revocation_bound import BOUND, _refused_within

OLD = "correct horse battery"
NEW = "a brand new passphrase 42"


def _login(live: Live, name: str, password: str) -> int:
    return live.api.post("/api/auth/login", json={"username": name, "password": password}).status_code


def test_accounts_user_changes_own_password_and_old_jwts_die(live: Live) -> None:
    carol = live.add_user("carol", OLD)
    assert carol.get("/api/portfolio").status_code == 200
    answer = carol.put("/api/me/password", json={"current": OLD, "new": NEW})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert NEW not in answer.text and OLD not in answer.text
    assert carol.get("/api/portfolio").status_code == 401  # the JWT from before the change
    fresh = live.api.as_user(body["access_token"])
    assert fresh.get("/api/me").json()["username"] == "carol"
    assert _login(live, "carol", OLD) == 401
    assert _login(live, "carol", NEW) == 200


def test_accounts_wrong_current_password_is_refused_and_counted(live: Live) -> None:
    dave = live.add_user("dave", OLD)
    for _ in range(5):
        refused = dave.put("/api/me/password", json={"current": "not my password", "new": NEW})
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "forbidden" and "current password" in error["message"]
    limited = dave.put("/api/me/password", json={"current": OLD, "new": NEW})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0  # the login limits apply
    assert dave.get("/api/me").status_code == 200  # nothing changed: the session still works


@pytest.mark.parametrize(("body", "field", "needle"), [
    ({"current": OLD, "new": "short"}, "new", "at least 8 characters"),
    ({"current": OLD, "new": "x" * 1025}, "new", "8 to 1024"),
    ({"current": OLD}, "new", "required"),
    ({"current": OLD, "new": 12345678}, "new", "8 to 1024"),
    ({"new": NEW}, "current", "current"),
    ({"current": OLD, "new": NEW, "admin": True}, "admin", "Unknown field"),
])
def test_accounts_bad_password_change_bodies_are_400_with_a_clear_message(
        live: Live, body: dict[str, object], field: str, needle: str) -> None:
    erin = live.add_user("erin", OLD)
    refused = erin.put("/api/me/password", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request" and error.get("field") == field and needle in error["message"]
    assert OLD not in refused.text
    assert erin.get("/api/me").status_code == 200


def test_accounts_password_change_needs_a_login(live: Live) -> None:
    answer = live.api.put("/api/me/password", json={"current": OLD, "new": NEW})
    assert answer.status_code == 401


def test_accounts_cli_passwd_changes_the_password_and_kills_jwts_within_the_bound(live: Live) -> None:
    frank = live.add_user("frank", OLD)
    assert frank.get("/api/quote/AAPL").status_code == 200
    done = run(live.runtime.settings.data_dir, "users", "passwd", "frank", stdin=NEW + "\n")
    assert done.returncode == 0, done.stderr
    assert NEW not in done.stdout + done.stderr and "frank" in done.stderr
    assert frank.token is not None
    assert _refused_within(live, frank.token, BOUND) <= BOUND
    assert _login(live, "frank", OLD) == 401
    assert _login(live, "frank", NEW) == 200


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_accounts_cli_refuses_a_short_password_with_one_line(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    assert run(data, "users", "add", "grace", stdin=PASSWORD + "\n").returncode == 0
    name = "grace" if command == "passwd" else "heidi"
    done = run(data, "users", command, name, stdin="1234567\n")
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "at least 8 characters" in done.stderr, done.stderr
    assert "1234567" not in done.stderr


def test_accounts_cli_passwd_for_an_unknown_user_is_one_line(tmp_path: Path) -> None:
    assert run(tmp_path, "users", "add", "grace", stdin=PASSWORD + "\n").returncode == 0
    done = run(tmp_path, "users", "passwd", "nobody", stdin=PASSWORD + "\n")
    assert done.returncode == 1 and "no such user" in done.stderr and len(done.stderr.splitlines()) == 1
