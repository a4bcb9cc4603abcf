"""What every store engine shares: noticing changes without I/O on the request path, and the engine seam.

An engine (:mod:`.sqlite`, :mod:`.postgres`) provides four things: run a
read (:meth:`StoreBase._rows`), run a write transaction (:meth:`StoreBase._tx`,
committed before it returns), read the version counters (:meth:`StoreBase._poll`)
and close. It translates its driver's errors once, there: a unique, foreign
key, check or not-null violation becomes :class:`Violation` (the entity code
knows what each means: a taken name is Conflict, a missing user NotFound), a
full disk StorageFull, an unreachable or busy database StoreUnavailable, the
rest StoreError. The entity modules (:mod:`.users`, :mod:`.tokens`,
:mod:`.holdings`, :mod:`.shared`) are written once against that seam, with SQL
both dialects accept (``?`` placeholders; the PostgreSQL engine converts).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import StockcacheError

logger = logging.getLogger(__name__)

# How often the watcher reads the version counters: the bound on how long a token revoked, a
# password changed or a user removed elsewhere (the command line, another instance) keeps
# working here.
WATCH_INTERVAL = 0.25
TOUCH_INTERVAL = 60.0  # seconds between last_used_at writes for one API token
AUTH, HOLDINGS = "auth", "holdings"  # the store_state counters

Row = Any  # sqlite3.Row or a psycopg dict row: both index by column name


def iso_utc(timestamp: float) -> str:
    """``2024-05-06T12:34:56Z``: fixed width, so text order is time order in SQL."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Violation(Exception):
    """A constraint refused a write; ``kind`` is ``unique``, ``foreign_key``, ``check`` or ``not_null``.

    Internal to the store: the entity code turns it into Conflict, NotFound or InvalidRequest.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Tx(Protocol):
    """One open write transaction."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (``RETURNING``, or a SELECT)."""

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""


class StoreBase(ABC):
    """The machinery every engine shares. Thread-safe.

    ``generation()`` is what the authenticator's verified-token cache is
    checked against on every request, so it must cost no I/O: it is a number
    in memory, moved by this store's own writes before they return, and by
    the watcher thread when another process's commit moved the ``auth``
    counter. The watcher also writes the API-token uses noted on the request
    path, and calls the holdings listeners when the ``holdings`` counter moved.
    """

    dialect: str = ""
    shared: bool = False  # True when several instances use this store (PostgreSQL)

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._state_lock = threading.Lock()  # guards _generation and the watcher's start
        self._generation = 0
        self._used: dict[str, float] = {}  # API token id -> last use not yet written (see note_token_use)
        self._watcher: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._seen: dict[str, int] | None = None
        self._holdings_listeners: list[Callable[[], None]] = []
        self._healthy = True
        self._last_problem: str | None = None
        self.migrated_from = 0  # the schema version found when opened (``store migrate`` reports it)

    # -- the engine seam ----------------------------------------------------------------

    @abstractmethod
    def _rows(self, sql: str | Mapping[str, str], params: Sequence[Any] = ()) -> list[Row]:
        """Every row of one read (a dialect mapping picks this engine's text)."""

    @abstractmethod
    def _tx(self, operation: str) -> AbstractContextManager[Tx]:
        """A write transaction, committed (durably) when the block ends, rolled back on an exception."""

    @abstractmethod
    def _close_engine(self) -> None:
        """Close every connection."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, safe to log and show: a path, or a URL with its password masked."""

    @abstractmethod
    def schema_version(self) -> int:
        """How many migrations the database has applied."""

    @abstractmethod
    def integrity_check(self) -> str:
        """``"ok"``, or the engine's list of problems."""

    def _pick(self, sql: str | Mapping[str, str]) -> str:
        return sql if isinstance(sql, str) else sql[self.dialect]

    def _now(self) -> str:
        return iso_utc(self._clock())

    def _bump(self) -> None:
        with self._state_lock:
            self._generation += 1

    @staticmethod
    def _moved(tx: Tx, counter: str) -> None:
        """Move a store_state counter; the last statement of its transaction, so the row lock lasts only the commit."""
        tx.count("UPDATE store_state SET version = version + 1 WHERE name = ?", (counter,))

    def _poll(self) -> dict[str, int]:
        """The version counters now (one read)."""
        return {str(r["name"]): int(r["version"]) for r in self._rows("SELECT name, version FROM store_state")}

    # -- noticing changes ---------------------------------------------------------------

    def generation(self) -> int:
        """A number that changes whenever anyone may have made a credential invalid. No I/O.

        For caches of what the store says (the authenticator's verified tokens),
        read on every request. Writes through this Store change it before they
        return; commits by anyone else within the watcher's interval, or at the
        next :meth:`check_for_changes`.
        """
        return self._generation

    def check_for_changes(self) -> bool:
        """One look at the version counters; True if another writer moved one since the last look."""
        seen = self._poll()
        before, self._seen = self._seen, seen
        if before is None:
            return False
        auth = seen.get(AUTH) != before.get(AUTH)
        holdings = seen.get(HOLDINGS) != before.get(HOLDINGS)
        if auth:
            self._bump()
        if holdings:
            self._tell_holdings_listeners()
        return auth or holdings

    def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Start the thread that looks for other writers' commits every ``interval`` seconds (idempotent)."""
        with self._state_lock:
            if self._watcher is not None or self._watch_stop.is_set():
                return
            self._watcher = threading.Thread(target=self._watch_loop, args=(interval,),
                                             name="stockcache-store-watch", daemon=True)
        self._watcher.start()

    def _watch_loop(self, interval: float) -> None:
        while not self._watch_stop.wait(interval):
            self.watch_step()

    def watch_step(self) -> None:
        """What the watcher does each round; public so tests drive it without waiting."""
        try:
            self.check_for_changes()
            self.flush_token_uses()
        except StockcacheError as exc:
            self._set_health(False, exc.message)  # logged where it was translated; the next round tries again
            return
        except Exception:  # the watcher must outlive any surprise
            logger.exception("store watcher step failed")
            return
        self._set_health(True, None)

    def _set_health(self, healthy: bool, problem: str | None) -> None:
        if healthy != self._healthy:
            if healthy:
                logger.warning("the store %s answers again", self.describe())
            else:
                logger.error("the store %s is unavailable: %s", self.describe(), problem)
        self._healthy, self._last_problem = healthy, problem

    def health(self) -> dict[str, Any]:
        """``{"engine", "status": "ok" | "unavailable", "problem"?}`` as the watcher last saw it. No I/O."""
        out: dict[str, Any] = {"engine": self.dialect, "status": "ok" if self._healthy else "unavailable"}
        if not self._healthy and self._last_problem:
            out["problem"] = self._last_problem
        return out

    def add_holdings_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each commit that may add a held symbol (a new or changed position, a watch).

        So the background refresher need not poll. It runs in the writing thread and
        must not block. Commits by other processes call it too, from the watcher
        thread, once it notices them (within ``WATCH_INTERVAL``).
        """
        self._holdings_listeners.append(listener)

    def _tell_holdings_listeners(self) -> None:
        for listener in list(self._holdings_listeners):
            try:
                listener()
            except Exception:
                logger.exception("store %s: a holdings listener failed", self.describe())

    # -- API token uses, written off the request path -----------------------------------

    def note_token_use(self, token_id: str) -> None:
        """Remember that an API token was used now; written by the watcher, never on the request path.

        No lock: one dict store is atomic, and a use noted while a flush swaps
        the dict is at worst a last-use time a minute old.
        """
        self._used[token_id] = self._clock()

    def flush_token_uses(self) -> int:
        """Write the noted token uses (each token at most once a TOUCH_INTERVAL); how many rows changed.

        These writes do not change :meth:`generation`: a last-use time never
        makes a token valid or invalid. A failed flush keeps the uses for the next.
        """
        with self._state_lock:
            used, self._used = self._used, {}
        if not used:
            return 0
        changed = 0
        try:
            with self._tx("token uses") as tx:
                for token_id, at in used.items():
                    changed += tx.count(
                        """UPDATE api_tokens SET last_used_at = ?
                           WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)""",
                        (iso_utc(at), token_id, iso_utc(at - TOUCH_INTERVAL)),
                    )
        except BaseException:
            for token_id, at in used.items():
                self._used.setdefault(token_id, at)
            raise
        return changed

    # -- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Write pending token uses, stop the watcher, close every connection. Later calls raise StoreError."""
        self._watch_stop.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=10)
        try:
            self.flush_token_uses()
        except StockcacheError:
            pass
        self._close_engine()

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
