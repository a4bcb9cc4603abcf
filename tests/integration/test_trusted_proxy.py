"""Login limits per client address behind a reverse proxy (STOCKCACHE_TRUSTED_PROXY)."""

from __future__ import annotations

from .conftest import start_service, upstream_settings

ADDRESS_LIMIT = 20  # failed logins per address within the window (auth.LoginLimiter)


def _fail_logins(live, count, forwarded_for, first=0):
    """Failed logins, each for another unknown user so only the address limit can apply."""
    statuses = []
    for i in range(first, first + count):
        answer = live.api.post("/api/auth/login", json={"username": f"nobody{i}", "password": "wrong"},
                               headers={"X-Forwarded-For": forwarded_for})
        statuses.append(answer.status_code)
    return statuses


def test_trusted_proxy_limits_logins_per_forwarded_client(tmp_path, upstream):
    live = start_service(upstream_settings(tmp_path, upstream, trusted_proxy="127.0.0.1"))
    try:
        assert _fail_logins(live, ADDRESS_LIMIT, "203.0.113.7") == [401] * ADDRESS_LIMIT
        assert _fail_logins(live, 1, "203.0.113.7", first=ADDRESS_LIMIT) == [429]
        # Another client behind the same proxy is not locked out by the first one's failures.
        assert _fail_logins(live, 1, "198.51.100.9", first=ADDRESS_LIMIT + 1) == [401]
    finally:
        live.stop()


def test_untrusted_forwarded_for_cannot_dodge_the_address_limit(tmp_path, upstream):
    live = start_service(upstream_settings(tmp_path, upstream))
    try:
        statuses = [_fail_logins(live, 1, f"203.0.113.{i}", first=i)[0] for i in range(ADDRESS_LIMIT + 1)]
        assert statuses == [401] * ADDRESS_LIMIT + [429]
    finally:
        live.stop()
