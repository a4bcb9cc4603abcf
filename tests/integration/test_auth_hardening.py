"""JWTs signed with the service's own key but forged, over HTTP against the real service.

A JWT whose ``sub`` is past SQLite's integer range is just an unknown user:
401, never a 500.
"""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from stockcache.auth import SECRET_FILENAME
from tests.integration.conftest import Live

pytestmark = pytest.mark.timeout(120)
PASSWORD = "alice's right password"


@pytest.mark.parametrize("sub", ["9999999999999999999", str(2**63), str(2**63 - 1)])
def test_jwt_with_a_sub_past_any_user_id_is_401(live: Live, sub: str) -> None:
    live.add_user("alice", PASSWORD)
    secret = bytes.fromhex((Path(live.runtime.settings.data_dir) / SECRET_FILENAME).read_text().strip())
    now = int(time.time())
    token = jwt.encode({"sub": sub, "name": "alice", "adm": True, "iat": now, "exp": now + 600}, secret,
                       algorithm="HS256")
    for path in ("/api/me", "/api/portfolio", "/api/quote/AAPL"):
        answer = live.api.get(path, token=token)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
