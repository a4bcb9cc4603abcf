"""The background refresher in the real service: a symbol added over HTTP is refreshed at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.metrics import Metrics
from stockcache.refresher import IDLE_WAIT
from stockcache.store import open_store
from tests.integration.conftest import start_service, upstream_settings

pytestmark = pytest.mark.timeout(60)

PROMPT = 5.0  # far below IDLE_WAIT (60 s), and below any due time the first round leaves


def eventually(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


def test_refresher_fetches_a_symbol_added_to_a_watchlist_without_waiting_for_its_idle_look(
    tmp_path, upstream: FakeUpstream
) -> None:
    settings = upstream_settings(tmp_path, upstream, refresh=True, refresh_hours="always")
    settings.data_dir.mkdir(parents=True)
    with open_store(settings.data_dir) as store:
        alice = store.create_user("alice", "unused-hash")
        store.add_watch(alice.id, "MSFT")  # so the first round has work, and then sleeps
    live = start_service(settings)
    try:
        metrics = live.runtime.metrics
        # The first round refreshed MSFT; the refresher now sleeps until MSFT is due again (minutes).
        assert eventually(lambda: metrics.get(Metrics.REFRESHED, "quote") >= 1, within=PROMPT)
        assert upstream.calls("finnhub", "quote", "MSFT") == 1
        api = live.api.as_user(live.runtime.auth.issue_jwt(alice.id, alice.username, False))
        # Added by this process without reading it (the API's add verifies, so it fetches by itself).
        live.runtime.store.add_watch(alice.id, "NVDA")
        started = time.monotonic()
        assert eventually(lambda: upstream.calls("finnhub", "quote", "NVDA") >= 1, within=PROMPT)
        assert time.monotonic() - started < IDLE_WAIT
        assert eventually(lambda: metrics.get(Metrics.REFRESHED, "quote") >= 2, within=PROMPT)
        # Fetched by the refresher (nobody read it) and cached: a read now is a hit.
        answer = api.get("/api/quote/NVDA").json()
        assert answer["cache"] == "memory" and upstream.calls("finnhub", "quote", "NVDA") == 1
    finally:
        live.stop()
