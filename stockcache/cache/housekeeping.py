"""Housekeeping off the request path: purge what is past its grace in bounded steps, then flush.

Expired entries are kept for ``grace`` (stale-if-error), so something has to
remove them after that or the SQLite file only grows. Each step removes at
most ``limit`` entries per tier, so a backlog never turns into one long
delete that request-path writes queue behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_STEPS = 10  # purge steps per round, while a backlog lasts
STEP_PAUSE = 0.05  # seconds between steps, so queued writes get their turn


def housekeep(
    purge: Callable[[int], int], flush: Callable[[], None], limit: int, *,
    pause: Callable[[float], bool] = lambda seconds: False,
) -> int:
    """One round: up to :data:`MAX_STEPS` purge steps of ``limit`` while each finds a full step, then a flush.

    ``pause(seconds)`` waits between steps and returns True to stop early (the
    janitor's stop event). Returns how many entries were removed.
    """
    removed = 0
    for _ in range(MAX_STEPS):
        step = purge(limit)
        removed += step
        if step < limit or pause(STEP_PAUSE):
            break
    flush()
    return removed


class Janitor:
    """A daemon thread that calls ``work()`` every ``interval`` seconds until :meth:`stop`. Thread-safe."""

    def __init__(self, work: Callable[[], object], *, name: str = "stockcache-cache-janitor") -> None:
        self._work = work
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, interval: float) -> None:
        """Start the thread (once; never after :meth:`stop`)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, args=(interval,), name=self._name, daemon=True)
        self._thread.start()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if stopped; True if stopped."""
        return self._stop.wait(seconds)

    def is_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and wait for its current round (at most ``timeout``). Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._work()
            except Exception:  # the janitor must outlive any surprise
                log.exception("cache janitor round failed")
