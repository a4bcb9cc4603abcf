"""The usage ledger: counts in memory on the request path, shared between processes through one file."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from stockcache.usage import UsageLedger, utc_day


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_usage_record_touches_no_file_until_a_flush(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    before = _files(tmp_path)
    for _ in range(100):
        ledger.record("alphavantage")
    assert _files(tmp_path) == before
    assert ledger.today("alphavantage") == 100  # counted at once in this process
    ledger.flush()
    assert _files(tmp_path) != before
    ledger.close()


def test_usage_two_processes_see_each_others_calls_after_a_flush(tmp_path, clock):
    server = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    warm = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    server.record("alphavantage", 2)
    warm.record("alphavantage", 3)
    warm.record("finnhub")
    assert (server.today("alphavantage"), warm.today("alphavantage")) == (2, 3)
    warm.flush()
    server.flush()  # writes its own and learns warm's
    assert server.today("alphavantage") == 5 and server.today("finnhub") == 1
    warm.flush()  # nothing to write: still learns the server's
    assert warm.today("alphavantage") == 5
    server.close()
    warm.close()


def test_usage_counts_survive_close_without_an_explicit_flush(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock)
    ledger.record("alphavantage", 4)
    ledger.close()
    reopened = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    assert reopened.today("alphavantage") == 4
    assert reopened.days(7) == {utc_day(clock()): {"alphavantage": 4}}
    reopened.close()


def test_usage_flusher_thread_shares_counts_without_being_asked(tmp_path, clock):
    writer = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=0.02)
    reader = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=0.02)
    reader.start()  # as a Budget does: an idle process must still learn others' calls
    writer.record("finnhub", 7)
    deadline = time.monotonic() + 10
    while reader.today("finnhub") != 7 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition with a deadline; the flushers run on their own
    assert reader.today("finnhub") == 7
    writer.close()
    reader.close()


def test_usage_days_include_calls_not_yet_flushed_and_keep_each_day(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    ledger.record("finnhub", 2)
    first = utc_day(clock())
    clock.advance(86400)
    ledger.record("finnhub")
    assert ledger.today("finnhub") == 1  # a new UTC day starts from zero
    assert ledger.days(7) == {utc_day(clock()): {"finnhub": 1}, first: {"finnhub": 2}}
    ledger.close()


def test_usage_a_slow_flush_neither_blocks_record_nor_loses_or_doubles_counts(tmp_path, clock):
    path = tmp_path / "usage.sqlite"
    ledger = UsageLedger(path, clock=clock, flush_interval=None)
    ledger.record("finnhub", 10)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process mid-write: the flush must wait for it
    flusher = threading.Thread(target=ledger.flush)
    flusher.start()
    for _ in range(1000):
        ledger.record("finnhub")
    assert flusher.is_alive()  # record() never waited for the stuck flush
    assert ledger.today("finnhub") == 1010
    blocker.execute("COMMIT")
    flusher.join()
    ledger.flush()
    assert ledger.today("finnhub") == 1010
    assert blocker.execute("SELECT calls FROM usage").fetchone() == (1010,)
    blocker.close()
    ledger.close()


def test_usage_concurrent_records_and_flushes_count_every_call(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None)
    done = threading.Event()

    def keep_flushing() -> None:
        while not done.is_set():
            ledger.flush()

    def work() -> None:
        for _ in range(500):
            ledger.record("finnhub")

    flusher = threading.Thread(target=keep_flushing)
    flusher.start()
    workers = [threading.Thread(target=work) for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    flusher.join()
    ledger.close()
    assert UsageLedger(tmp_path / "usage.sqlite", clock=clock, flush_interval=None).today("finnhub") == 4000
