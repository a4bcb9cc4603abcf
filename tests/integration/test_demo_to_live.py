"""Setting real keys after trying the demo: nothing the demo cached is served as real data (issue 17 trial)."""

from __future__ import annotations

from pathlib import Path

from bench.fake_upstream import FakeUpstream
from stockcache.settings import Settings
from tests.integration.conftest import start_service, upstream_settings


def test_demo_cache_is_dropped_when_the_service_restarts_with_keys(tmp_path: Path, upstream: FakeUpstream) -> None:
    data = tmp_path / "data"
    demo = start_service(Settings(data_dir=data, port=0, refresh=False))
    try:
        assert demo.runtime.settings.demo
        admin = demo.add_user("admin", admin=True)
        assert admin.get("/api/profile/AAPL").json()["source"] == "demo"  # cached for a day
    finally:
        demo.stop()

    live = start_service(upstream_settings(tmp_path, upstream, data_dir=data))
    try:
        admin = live.add_user("admin2", admin=True)
        profile = admin.get("/api/profile/AAPL").json()
        assert profile["source"] == "finnhub" and profile["cache"] == "upstream"
        assert upstream.calls("finnhub", symbol="AAPL") >= 1
    finally:
        live.stop()

    again = start_service(upstream_settings(tmp_path, upstream, data_dir=data))
    try:  # the same mode again: the cache is kept
        admin = again.add_user("admin3", admin=True)
        assert admin.get("/api/profile/AAPL").json()["cache"] == "sqlite"
    finally:
        again.stop()
