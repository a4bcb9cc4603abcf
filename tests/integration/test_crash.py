"""Crash durability, CI-sized: the real service killed with SIGKILL mid-write, three times.

The full run (20+ rounds) is ``python -m bench.crash_kill``; this runs the same
code: every write a client saw acknowledged survives, every SQLite file passes
``PRAGMA integrity_check``, and the service restarts healthy with its cache.
"""

from __future__ import annotations

import pytest

from bench.crash_kill import CrashRun
from stockcache.cache import open_cache
from stockcache.settings import Settings

pytestmark = pytest.mark.timeout(120)


def test_crash_sigkill_loses_no_acknowledged_write_and_corrupts_no_file(tmp_path):
    data_dir = tmp_path / "data"
    report = CrashRun(data_dir, rounds=3, clients=3, seed=11, max_acks=30).run()
    assert report.ok, "\n".join(report.problems)
    assert report.acknowledged >= 3 * 5 and report.reads > 0
    assert len(report.restart_seconds) == 3
    assert {"store.sqlite", "cache.sqlite", "jwt.secret"} <= set(report.files)

    # The cache kept what it had flushed and opens cleanly in another process's shoes.
    cache = open_cache(settings=Settings(data_dir=data_dir, refresh=False), janitor_interval=None)
    try:
        assert cache.get_stats()["sqlite"]["size"] > 0
    finally:
        cache.close()
