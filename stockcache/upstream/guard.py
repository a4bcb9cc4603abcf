"""Per-provider upstream budgets (per second, minute and UTC day) and a circuit breaker.

A budget is checked *before* every upstream call and shared by all threads.
Per-second limits are smoothed with a short wait; a spent minute or day budget
is refused at once with ``RateLimited(retry_after=...)``, so the caller can
answer from stale data or fall back to another provider instead of queueing.

The day budget is shared by every process on one data dir (the server, a
cron'd ``warm``) through the :class:`~stockcache.usage.UsageLedger`: another
process's calls count here within about a second (see ``usage``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import seconds_to_utc_midnight, utc_day
from ..errors import RateLimited
from ..usage import UsageLedger


@dataclass(frozen=True)
class Limits:
    """Calls allowed per window; 0 means no limit for that window."""

    per_second: int = 0
    per_minute: int = 0
    per_day: int = 0


class Budget:
    """Sliding-window budget for one provider. Thread-safe; the lock guards only counters.

    ``acquire()`` reserves one call and returns how long to wait before making
    it (0.0 almost always). Reservations are recorded at the time the call will
    be made, so smoothing never lets a burst through later.
    """

    def __init__(
        self,
        provider: str,
        limits: Limits,
        *,
        ledger: UsageLedger | None = None,
        clock: Callable[[], float] = time.time,
        max_wait: float = 2.0,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self._ledger = ledger
        self._clock = clock
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._second: deque[float] = deque()
        self._minute: deque[float] = deque()
        self._paused_until = 0.0
        self._day = utc_day(clock())
        self._day_calls = 0  # this budget's own calls today; the ledger adds other processes'
        if ledger is not None:
            ledger.start()

    def acquire(self, *, share: float = 1.0, units: int = 1) -> float:
        """Reserve one call costing ``units``; return the seconds to wait first, or raise RateLimited.

        ``share`` < 1 lets a background caller use only part of the minute and
        day budgets, leaving the rest to interactive requests. ``units`` is what
        the provider counts (Twelve Data: a credit per symbol of a batch); the
        minute and day windows count units, the second window counts calls.
        """
        units = max(1, int(units))
        with self._lock:
            now = self._clock()
            self._roll(now)
            if now < self._paused_until:
                raise self._refused(self._paused_until - now, "paused after the provider said 429")
            limits = self.limits
            if limits.per_day and self._day_lost():
                raise self._refused(seconds_to_utc_midnight(now), "daily budget unknown (the usage ledger was "
                                                                  "lost today), so counted as spent")
            if limits.per_day and self._used_today() + units > share_cap(limits.per_day, share):
                raise self._refused(seconds_to_utc_midnight(now), "daily budget spent")
            if limits.per_minute and len(self._minute) + units > share_cap(limits.per_minute, share):
                oldest = self._minute[0] if self._minute else now
                raise self._refused(oldest + 60.0 - now, "per-minute budget spent")
            start = now
            if limits.per_second and len(self._second) >= limits.per_second:
                start = self._second[-limits.per_second] + 1.0
                if start - now > self._max_wait:
                    raise self._refused(start - now, "per-second budget spent")
            self._second.append(start)
            self._minute.extend([start] * units)
            self._day_calls += units
            if self._ledger:
                self._ledger.record(self.provider, units)  # in memory only, so it may stay under our lock
        return max(0.0, start - now)

    def settle(self, reserved: int, spent: int) -> None:
        """A call that reserved ``reserved`` units really cost ``spent`` (a model's reported usage):
        today's count (and the ledger) moves by the difference. The minute window keeps the reservation."""
        delta = int(spent) - int(reserved)
        if not delta:
            return
        with self._lock:
            self._roll(self._clock())
            delta = max(delta, -self._day_calls)
            self._day_calls += delta
            if self._ledger and delta:
                self._ledger.record(self.provider, delta)

    def pause(self, seconds: float) -> None:
        """The provider said 429: make no call to it for ``seconds``."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def remaining(self) -> dict[str, int | None]:
        """Calls left in each window right now (None where there is no limit)."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            limits = self.limits
            return {
                "second": max(0, limits.per_second - len(self._second)) if limits.per_second else None,
                "minute": max(0, limits.per_minute - len(self._minute)) if limits.per_minute else None,
                "day": (0 if self._day_lost() else max(0, limits.per_day - self._used_today()))
                if limits.per_day else None,
            }

    def calls_today(self) -> int:
        """Calls to this provider today by every process sharing the ledger (this budget's alone without one)."""
        with self._lock:
            self._roll(self._clock())
            return self._used_today()

    def _used_today(self) -> int:
        # The ledger's count (every process, as of its last flush, plus this one's
        # since) already includes ours; max() keeps ours if the ledger lags or fails.
        if self._ledger is None:
            return self._day_calls
        return max(self._day_calls, self._ledger.today(self.provider))

    def _day_lost(self) -> bool:
        """Whether today's calls were lost with a corrupt ledger: then the day budget counts as spent."""
        return self._ledger is not None and self._ledger.lost_on(self._day)

    def _roll(self, now: float) -> None:
        while self._second and self._second[0] <= now - 1.0:
            self._second.popleft()
        while self._minute and self._minute[0] <= now - 60.0:
            self._minute.popleft()
        day = utc_day(now)
        if day != self._day:
            self._day, self._day_calls = day, 0

    def _refused(self, retry_after: float, why: str) -> RateLimited:
        seconds = max(1, math.ceil(retry_after))
        return RateLimited(
            f"{self.provider}: {why}; retry in {seconds} s.", retry_after=seconds, provider=self.provider
        )


def share_cap(limit: int, share: float) -> int:
    """The calls a caller limited to ``share`` may make out of ``limit`` (at least 1)."""
    return max(1, int(limit * share)) if share < 1.0 else limit


class CircuitBreaker:
    """Stops calling a provider that keeps failing, then lets one probe through.

    Closed -> open after ``threshold`` consecutive failures; open for
    ``reset_after`` seconds (doubling on each failed probe, up to
    ``max_reset``); then half-open: one call is let through and its outcome
    closes or re-opens the circuit. Thread-safe; calls are never serialised,
    only the state flip is under a lock.

    A failure may name what failed (``key``, the symbol): failures of one key
    count once until a success, so one symbol the provider keeps choking on
    (a malformed body, a hang) cannot switch the provider off for everyone,
    while an outage, which fails every symbol, still opens it. A failure
    without a key (a refused API key, a refused connection) always counts.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 10.0,
        max_reset: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._threshold = threshold
        self._base_reset = reset_after
        self._max_reset = max_reset
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._failed_keys: set[str] = set()  # keys among the current run of failures
        self._open_until = 0.0
        self._reset = reset_after
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._failures < self._threshold:
                return "closed"
            return "open" if self._clock() < self._open_until or self._probing else "half-open"

    def allow(self) -> float | None:
        """None when a call may go ahead; else the seconds until the next probe."""
        with self._lock:
            if self._failures < self._threshold:
                return None
            now = self._clock()
            if now >= self._open_until and not self._probing:
                self._probing = True
                return None
            return max(0.0, self._open_until - now) or self._reset

    def release(self) -> None:
        """A call allowed by :meth:`allow` was not made after all: free the probe slot."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._failed_keys.clear()
            self._reset = self._base_reset
            self._probing = False

    def failure(self, key: str | None = None) -> None:
        """A call failed; ``key`` names what it was for (see the class docstring)."""
        with self._lock:
            probing, self._probing = self._probing, False
            if self._failures < self._threshold and key is not None:
                if key in self._failed_keys:
                    return  # the same symbol again: it says nothing new about the provider
                self._failed_keys.add(key)
            self._failures += 1
            if probing:
                self._reset = min(self._reset * 2, self._max_reset)
            if self._failures >= self._threshold:
                self._open_until = self._clock() + self._reset
