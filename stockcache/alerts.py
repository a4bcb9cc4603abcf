"""Price alerts: checked where fresh quotes arrive, delivered by one small worker with bounded retries.

The read-through path calls :meth:`AlertEngine.quote_arrived` for every fresh
quote it stores, whether a background refresh or a user's request fetched it;
there is no polling loop. That call only notes the quote (the latest per
symbol) and wakes the worker, so neither the refresher nor a request ever
waits for the store or a receiver. The worker checks each alert on the
symbol: an armed alert whose condition holds fires (the store disarms it and
records a pending delivery in one transaction, so a restart or another
instance never fires the same crossing again); a fired one whose condition
no longer holds re-arms. A delivery that fails is retried after
``alert_retry_wait`` seconds, then twice as long each time, at most
``alert_retries`` times; its outcome is in the store's history.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import notify
from .errors import StockcacheError
from .settings import Settings
from .store import Alert, AlertDelivery, Store

log = logging.getLogger(__name__)

Sender = Callable[..., None]


def observed(condition: str, quote: Mapping[str, Any]) -> float | None:
    """The figure a condition looks at: the price, or the day's change in percent (None when missing)."""
    value = quote.get("change_percent" if condition.startswith("change_percent") else "price")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def holds(condition: str, figure: float, value: float) -> bool:
    """Whether ``condition`` is true: strictly above or below the alert's value."""
    return figure > value if condition.endswith("above") else figure < value


@dataclass
class _Job:
    delivery: AlertDelivery
    notification: notify.Notification
    attempts: int = 0


class AlertEngine:
    """Evaluates alerts and delivers notifications on its own thread. Thread-safe.

    :meth:`run_pending` does one round (tests call it without the thread).
    """

    def __init__(self, store: Store, settings: Settings, *, clock: Callable[[], float] = time.time,
                 send: Sender = notify.send) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._send = send
        self._cond = threading.Condition()
        self._quotes: dict[str, Mapping[str, Any]] = {}  # symbol -> latest fresh quote not yet checked
        self._retries: list[tuple[float, int, _Job]] = []  # (monotonic due time, seq, job), a heap
        self._seq = itertools.count()
        self._symbols: set[str] = set()  # symbols with an alert, as last read from the store
        self._symbols_stale = True  # read them again before trusting _symbols
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts = {"fired": 0, "rearmed": 0, "delivered": 0, "failed": 0, "retried": 0}

    # -- called from anywhere -------------------------------------------------------------

    def quote_arrived(self, kind: str, symbol: str, data: Mapping[str, Any]) -> None:
        """A fresh quote was stored: note it for the worker. Never blocks on I/O."""
        if kind != "quote":
            return
        with self._cond:
            if not self._symbols_stale and symbol not in self._symbols:
                return  # nobody has an alert on it
            self._quotes[symbol] = data
            self._cond.notify_all()

    def symbols_changed(self) -> None:
        """An alert (or another holding) may have been added: read the alert symbols again before the next check."""
        with self._cond:
            self._symbols_stale = True

    def start(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._loop, name="stockcache-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker after its current step; retries not yet due are left pending in the history."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Channels (kind and host only: a URL may hold a token) and counters since start. No I/O."""
        with self._cond:
            waiting = len(self._quotes)
            retrying = len(self._retries)
            counts = dict(self._counts)
        return {"channels": {c.name: c.describe() for c in self._settings.notify}, "quotes_waiting": waiting,
                "retrying": retrying, **counts}

    # -- the worker -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._quotes and not self._due():
                    wait = self._retries[0][0] - time.monotonic() if self._retries else None
                    self._cond.wait(wait)
                    continue
            try:
                self.run_pending()
            except Exception:  # the worker must outlive any surprise
                log.exception("alert round failed")
                self._stop.wait(1.0)

    def _due(self) -> bool:
        return bool(self._retries) and self._retries[0][0] <= time.monotonic()

    def run_pending(self) -> None:
        """Check the quotes noted since the last round, then retry the deliveries that are due."""
        with self._cond:
            quotes, self._quotes = self._quotes, {}
            stale = self._symbols_stale
            self._symbols_stale = False
        if stale:
            self._reload_symbols()
        for symbol, quote in quotes.items():
            if self._stop.is_set():
                return
            self._check(symbol, quote)
        while not self._stop.is_set():
            with self._cond:
                if not self._due():
                    return
                _, _, job = heapq.heappop(self._retries)
            self._attempt(job)

    def _reload_symbols(self) -> None:
        try:
            symbols = set(self._store.alert_symbol_counts())
        except StockcacheError as exc:
            log.warning("alerts: the store is unavailable (%s); checking every quote meanwhile", exc.message)
            with self._cond:
                self._symbols_stale = True
            return
        with self._cond:
            self._symbols = symbols

    def _check(self, symbol: str, quote: Mapping[str, Any]) -> None:
        try:
            alerts = self._store.alerts_for_symbol(symbol)
        except StockcacheError as exc:  # the next fresh quote checks again: the state is in the store
            log.warning("alerts on %s not checked: %s", symbol, exc.message)
            return
        for alert in alerts:
            figure = observed(alert.condition, quote)
            if figure is None:
                continue
            try:
                if holds(alert.condition, figure, alert.value):
                    if alert.armed:
                        self._fire(alert, figure, quote)
                elif not alert.armed and self._store.rearm_alert(alert.id):
                    self._count("rearmed")
            except StockcacheError as exc:
                log.warning("alert %d on %s not updated: %s", alert.id, symbol, exc.message)

    def _fire(self, alert: Alert, figure: float, quote: Mapping[str, Any]) -> None:
        delivery = self._store.fire_alert(alert.id, observed=figure, at=self._clock())
        if delivery is None:
            return  # fired already (before a restart, or by another instance)
        self._count("fired")
        note = notify.compose(symbol=alert.symbol, condition=alert.condition, value=alert.value, observed=figure,
                              note=alert.note, quote=quote, fired_at=delivery.fired_at, alert_id=alert.id,
                              channel=alert.channel)
        self._attempt(_Job(delivery, note))

    def _attempt(self, job: _Job) -> None:
        delivery = job.delivery
        channel = self._settings.channel(delivery.channel)
        job.attempts += 1
        if channel is None:  # the operator removed it since the alert was made
            self._finish(job, "failed", f"the channel {delivery.channel!r} is not configured")
            return
        try:
            self._send(channel, job.notification)
        except notify.DeliveryFailed as exc:
            if job.attempts > self._settings.alert_retries:
                log.warning("alert delivery %d to channel %s failed %d times (%s); giving up",
                            delivery.id, channel.name, job.attempts, exc.reason)
                self._finish(job, "failed", exc.reason)
                return
            wait = self._settings.alert_retry_wait * 2 ** (job.attempts - 1)
            log.info("alert delivery %d to channel %s failed (%s); retrying in %.1f s",
                     delivery.id, channel.name, exc.reason, wait)
            self._finish(job, "pending", exc.reason)
            self._count("retried")
            with self._cond:
                heapq.heappush(self._retries, (time.monotonic() + wait, next(self._seq), job))
                self._cond.notify_all()
            return
        self._finish(job, "delivered", None)

    def _finish(self, job: _Job, status: str, error: str | None) -> None:
        if status != "pending":
            self._count(status)
        try:
            self._store.finish_delivery(job.delivery.id, status=status, attempts=job.attempts, error=error)
        except StockcacheError as exc:
            log.warning("alert delivery %d: its outcome (%s) was not recorded: %s", job.delivery.id, status,
                        exc.message)

    def _count(self, name: str) -> None:
        with self._cond:
            self._counts[name] += 1
