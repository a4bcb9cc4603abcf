"""The background refresher: keeps every symbol held in a portfolio or watchlist fresh.

A quote is fetched again ``lead`` seconds before its cache entry expires, so a
user opening their portfolio finds it in memory instead of waiting for the
upstream. Profiles and history are refreshed on their own, longer tiers: when
their entry has expired (a day for profiles, the history TTL for history).

Every refresh goes through ``StockService.refresh``: the same fetcher,
single-flight (a refresh and a user's miss for one key share one call) and
budgets, but only ``share`` of each provider's minute and day budget, so
interactive requests always keep the rest. When that share cannot pay for
everything that is due, the symbols held by the most users go first (ties:
the one expiring first), so a short budget keeps the most-read quotes fresh
rather than whichever expired first. A kind whose provider fails or is rate
limited backs off exponentially (capped) before it is tried again.

By default (``STOCKCACHE_REFRESH_HOURS=market``) a listing is refreshed only
during its own venue's regular session, on that venue's trading days
(``venues``: Xetra's hours and holidays for ``SAP.DE``, New York's for
``AAPL``); crypto pairs trade all the time. Outside a session its quote does
not move, so nothing is spent on it. Time and the wait are
injected: tests call :meth:`Refresher.run_once` with a fake clock and never
start the thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import seconds_to_utc_midnight
from .errors import RateLimited, SymbolNotCovered, SymbolNotFound, SymbolRefused
from .kinds import KINDS as REGISTRY
from .kinds import REFRESH_AHEAD, REFRESH_NEVER
from .metrics import Metrics
from .service import StockService
from .symbols import listing
from .upstream.guard import share_cap

log = logging.getLogger(__name__)

# Kinds the refresher keeps fresh (those whose refresh policy is not "never"), in priority order:
# quotes first when the budget is short.
KINDS = tuple(name for name, kind in REGISTRY.items() if kind.refresh != REFRESH_NEVER)
IDLE_WAIT = 60.0  # nothing due: look again after this long (this process's store changes wake it sooner)
MIN_WAIT = 1.0  # never loop faster than this, whatever is due or however often it is woken
MAX_WAIT = 300.0  # a long wait is cut into pieces so clock changes are noticed
BATCH_WINDOW = 15.0  # entries due within this long are refreshed together, in one batch
BUDGET_WAIT = 5.0  # the refresher's share of a minute budget is spent: look again after this long
BACKOFF_BASE = 15.0
BACKOFF_CAP = 900.0


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0


class Refresher:
    """Refreshes held symbols before they expire, within a share of the budgets.

    Thread-safe: :meth:`start`/:meth:`stop` from any thread; :meth:`run_once`
    is serialised by a lock (the thread, or a test, calls it).

    ``held`` returns the symbols to keep fresh with how many users hold each
    (``Store.held_symbol_counts``); a plain iterable of symbols is accepted
    too and counts every symbol as held once (then expiry alone orders them).
    ``hours`` is ``"market"`` or ``"always"``. ``wait(seconds)`` blocks until
    the next run and returns True when the refresher should stop; the default
    waits on the stop event, and :meth:`wake` (the store calls it when a
    symbol may have become held) ends it early, so a symbol added to a
    watchlist is fetched within about MIN_WAIT instead of IDLE_WAIT.
    """

    def __init__(
        self,
        service: StockService,
        held: Callable[[], Mapping[str, int] | Iterable[str]],
        *,
        hours: str = "market",
        share: float = 0.5,
        lead: float = 60.0,
        kinds: Sequence[str] = KINDS,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if hours not in ("market", "always"):
            raise ValueError("hours must be 'market' or 'always'")
        self._service = service
        self._held = held
        self._hours = hours
        self._share = share
        self._lead = lead
        self._kinds = [kind for kind in kinds if kind in REGISTRY and REGISTRY[kind].refresh != REFRESH_NEVER]
        self._clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._sleep
        self._cond = threading.Condition()
        self._woken = False  # guarded by _cond
        self._metrics: Metrics = service.metrics
        self._run_lock = threading.Lock()
        self._backoff: dict[str, _Backoff] = {kind: _Backoff() for kind in self._kinds}
        # A kind whose budget share is spent waits here, without counting as a failure.
        self._budget_until: dict[str, float] = {kind: 0.0 for kind in self._kinds}
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._loop, name="stockcache-refresher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the held symbols again soon (within MIN_WAIT), not at the end of the current wait.

        Cheap and non-blocking, so the store may call it after every commit that
        can add a held symbol. Wakes during a round take effect after it.
        """
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it; a refresh in progress stops waiting for the upstream at once."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the refresher did not stop within %.0f s", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _sleep(self, seconds: float) -> bool:
        """The default wait: ``seconds``, or less once woken (never under MIN_WAIT); True when stopping."""
        started = time.monotonic()
        with self._cond:
            while not self._stop.is_set():
                elapsed = time.monotonic() - started
                if elapsed >= seconds or (self._woken and elapsed >= MIN_WAIT):
                    self._woken = False
                    return False
                self._cond.wait((min(seconds, MIN_WAIT) if self._woken else seconds) - elapsed)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.run_once()
            except Exception:  # the refresher must outlive any surprise
                log.exception("background refresh failed")
                delay = IDLE_WAIT
            if self._wait(min(max(delay, MIN_WAIT), MAX_WAIT)):
                return

    # -- one round -----------------------------------------------------------------

    def run_once(self) -> float:
        """Refresh whatever is due now; return the seconds until something is due next."""
        with self._run_lock:
            now = self._clock()
            holders = self._holders()
            if not holders:
                return IDLE_WAIT
            next_due = now + IDLE_WAIT
            if self._hours == "market":
                holders, opens_in = in_session(holders, now)
                if not holders:
                    return opens_in
                next_due = min(next_due, now + opens_in)
            self._metrics.inc(Metrics.REFRESH_RUNS)
            for kind in self._kinds:
                if self._stop.is_set():
                    break
                next_due = min(next_due, self._refresh_kind(kind, holders, now))
            return max(MIN_WAIT, next_due - self._clock())

    def _holders(self) -> dict[str, int]:
        """Held symbols with how many users hold each (1 each when ``held`` gives only symbols)."""
        held = self._held()
        if isinstance(held, Mapping):
            return {symbol: int(count) for symbol, count in held.items()}
        return dict.fromkeys(held, 1)

    def _refresh_kind(self, kind: str, holders: dict[str, int], now: float) -> float:
        """Refresh the due symbols of one kind; return when this kind is due next."""
        backoff = self._backoff[kind]
        wait_until = max(backoff.until, self._budget_until[kind])
        if now < wait_until:
            return wait_until
        ttl = self._service.settings.ttls[REGISTRY[kind].ttl_level]
        if ttl <= 0:
            return math.inf  # not cached at all: nothing to keep fresh
        # Quotes are fetched ahead of expiry; profiles and history once they expire.
        # Whatever falls due within the batch window goes along, so rounds stay few.
        lead = min(self._lead, ttl / 2) if REGISTRY[kind].refresh == REFRESH_AHEAD else 0.0
        window = min(BATCH_WINDOW, ttl / 4)
        due, next_due = self._due(kind, holders, now, lead, window)
        if not due:
            return next_due
        room = self._room(kind)
        if room is not None and room < len(due):
            self._metrics.inc(Metrics.REFRESH_SKIPPED, kind, amount=len(due) - room)
            due = due[:room]
            self._budget_until[kind] = now + self._budget_wait(kind)
            next_due = min(next_due, self._budget_until[kind])
        refreshed = failed = limited = 0
        retry_after = 0.0
        step = self._service.settings.max_batch
        for start in range(0, len(due), step):
            if self._stop.is_set():
                break
            found, errors = self._service.refresh(kind, due[start:start + step], share=self._share,
                                                  cancel=self._stop)
            refreshed += len(found)
            for error in errors.values():
                if isinstance(error, SymbolNotFound):
                    refreshed += 1  # the "not found" is cached again: that is a refresh too
                elif isinstance(error, SymbolRefused | SymbolNotCovered):
                    continue  # not served on this plan (no call spent): not a failing kind
                elif isinstance(error, RateLimited):
                    limited += 1
                    retry_after = max(retry_after, float(error.retry_after or 0))
                else:
                    failed += 1
        self._count(kind, refreshed, failed, limited)
        if failed or limited:
            backoff.failures += 1
            delay = min(BACKOFF_BASE * 2 ** (backoff.failures - 1), BACKOFF_CAP)
            backoff.until = self._clock() + max(delay, min(retry_after, BACKOFF_CAP))
            log.info("refreshing %s: %d failed, %d rate limited; backing off for %.0f s",
                     kind, failed, limited, backoff.until - self._clock())
            return backoff.until
        backoff.failures = 0
        # What was just fetched is due again one TTL later.
        return min(next_due, self._clock() + ttl - lead - window)

    def _due(self, kind: str, holders: dict[str, int], now: float, lead: float,
             window: float) -> tuple[list[str], float]:
        """Symbols to refresh now, in priority order, and when to look next.

        An entry is due ``lead`` seconds before it expires; everything due
        within ``window`` from now goes along in this batch. Priority: most
        holders first, then missing, then soonest to expire, so when the
        budget share cuts the list short, what most users read stays fresh.
        """
        # Expiry times are read without counting as reads, so the refresher leaves hit rates alone.
        expiries = self._service.readthrough.expiries(kind, sorted(holders))
        due: list[tuple[int, float, str]] = []
        next_due = math.inf
        for symbol in sorted(holders):
            expires_at = expiries.get(symbol)
            at = -math.inf if expires_at is None else expires_at - lead
            if at <= now + window:
                due.append((-holders[symbol], at, symbol))
            else:
                next_due = min(next_due, at - window)
        due.sort()
        return [symbol for _, _, symbol in due], next_due

    def _room(self, kind: str) -> int | None:
        """Calls the refresher may still make now for ``kind`` (None: no budget applies).

        Read from the route's first provider: the refresher may use ``share`` of
        its minute and day budgets, minus what anyone already used. Keeping to
        this keeps refreshes off the fallback provider's (often tiny) budget.
        """
        route = self._service.route(kind)
        budget = self._service.router.budgets.get(route[0]) if route else None
        if budget is None:
            return None
        left = budget.remaining()
        rooms: list[int] = []
        for window, limit in (("minute", budget.limits.per_minute), ("day", budget.limits.per_day)):
            remaining = left.get(window)
            if limit and remaining is not None:
                rooms.append(max(0, share_cap(limit, self._share) - (limit - remaining)))
        if budget.limits.per_second:
            # The fetcher smooths bursts over ~2 s; more than that would be refused.
            rooms.append(2 * budget.limits.per_second)
        return min(rooms) if rooms else None

    def _budget_wait(self, kind: str) -> float:
        """How long until the refresher's share has room again: to UTC midnight if the day is spent."""
        route = self._service.route(kind)
        budget = self._service.router.budgets.get(route[0]) if route else None
        if budget is not None and budget.limits.per_day:
            left = budget.remaining().get("day")
            used = budget.limits.per_day - (left or 0)
            if used >= share_cap(budget.limits.per_day, self._share):
                return seconds_to_utc_midnight(self._clock())
        return BUDGET_WAIT

    def _count(self, kind: str, refreshed: int, failed: int, limited: int) -> None:
        if refreshed:
            self._metrics.inc(Metrics.REFRESHED, kind, amount=refreshed)
        if failed:
            self._metrics.inc(Metrics.REFRESH_FAILED, kind, amount=failed)
        if limited:
            self._metrics.inc(Metrics.REFRESH_SKIPPED, kind, amount=limited)

    def backoff(self) -> dict[str, float]:
        """Seconds each backed-off kind still waits (for stats and tests)."""
        now = self._clock()
        return {kind: b.until - now for kind, b in self._backoff.items() if b.until > now}


def in_session(holders: Mapping[str, int], now: float) -> tuple[dict[str, int], float]:
    """The held symbols whose venue is in its regular session at ``now``, and the seconds until the
    first of the others opens (inf when none is closed). Crypto and other venue-less pairs never close."""
    open_now: dict[str, int] = {}
    opens_in = math.inf
    for symbol, count in holders.items():
        venue = listing(symbol).venue
        wait = 0.0 if venue is None else venue.seconds_until_open(now)
        if wait <= 0:
            open_now[symbol] = count
        else:
            opens_in = min(opens_in, wait)
    return open_now, opens_in


def from_settings(service: StockService, held: Callable[[], Mapping[str, int] | Iterable[str]], *,
                  clock: Callable[[], float] = time.time) -> Refresher:
    """A refresher configured by the service's settings (hours, budget share, lead)."""
    settings = service.settings
    return Refresher(service, held, hours=settings.refresh_hours, share=settings.refresh_budget_share,
                     lead=settings.refresh_lead, clock=clock)
