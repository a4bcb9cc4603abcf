"""The shared tier: entries in Redis, for several stockcache instances behind one load balancer.

Only imported when ``REDIS_URL`` is set (``open_cache`` imports it lazily), so
redis-py is needed only by those who use Redis. Values are the same JSON triple
as in SQLite (:mod:`.codec`: ``[value, stored_at, expires_at]``), never pickle, under
``<namespace>:cache:<key>``; Redis expires each key itself at ``expires_at +
grace`` (a relative ``PX``, so the Redis host's clock does not matter), which is
why :meth:`RedisTier.purge` has nothing to do.

A slow or dead Redis must never stall a request: every call has a 0.25 s socket
and connect timeout and at most one immediate retry on a broken pooled
connection, and :class:`RedisLink` fails calls at once for a short, growing
pause after a connection failure, so an outage costs one timeout per pause, not
one per request. Its failures surface as :class:`~stockcache.errors.CacheError`,
which the tiered cache treats as a degraded tier. A background thread PINGs
every :data:`PING_INTERVAL` seconds, so the link's up/down state (what
``/healthz`` reads, with no I/O of its own) follows Redis even when no request
needs it.
"""

from __future__ import annotations

import builtins
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import CacheError
from . import codec
from .base import Entry, Tier, glob_to_regex

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_NAMESPACE = "stockcache"
SOCKET_TIMEOUT = 0.25
PING_INTERVAL = 2.0  # the background PING: a dead (or returned) Redis shows in health within this + 0.25 s
_MGET_CHUNK = 1000  # keys per MGET; several chunks still go in one pipelined round trip
_SCAN_COUNT = 1000
_GLOB_SPECIAL = "*?["
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError)  # Redis unreachable or too slow


def _escape_glob(text: str) -> str:
    """Escape text for a Redis MATCH pattern (its glob knows backslash escapes)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisLink:
    """One redis-py client (a connection pool) that fails fast while Redis is unreachable.

    Thread-safe (redis-py's pool is; the up/down state is under a lock). After a
    connection error or timeout, calls raise CacheError at once for
    ``retry_after`` seconds (doubling up to ``max_retry_after``); then one
    caller tries again while the others keep failing fast. The first failure of
    an outage and the recovery are logged once each. Never logs the URL, which
    may carry a password.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        connect_timeout: float = SOCKET_TIMEOUT,
        health_check_interval: int = 10,
        max_connections: int = 64,
        retry_after: float = 0.5,
        max_retry_after: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                health_check_interval=health_check_interval,
                max_connections=max_connections,
                decode_responses=True,
                # Bytes another program stored decode losslessly and then fail as JSON (a miss),
                # and keys round-trip exactly, instead of UnicodeDecodeError escaping redis-py.
                encoding_errors="surrogateescape",
                # One immediate retry, only for a refused or broken connection (a
                # pooled socket left over from before a Redis restart); a timeout
                # is never retried, so one call costs at most one timeout.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        except ValueError:
            raise ValueError("not a valid Redis URL") from None  # the message could echo a password
        kwargs = self.client.connection_pool.connection_kwargs
        self.endpoint = (
            f"unix:{kwargs['path']}" if "path" in kwargs
            else f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        )
        self._monotonic = monotonic
        self._base_pause = retry_after
        self._max_pause = max_retry_after
        self._lock = threading.Lock()
        self._down = False
        self._down_until = 0.0
        self._pause = retry_after
        self._down_since: float | None = None
        self._errors = 0
        self._last_error: str | None = None
        self._answered = False
        self._closed = False
        self._monitor: threading.Thread | None = None
        self._monitor_stop = threading.Event()

    def start_monitor(self, interval: float = PING_INTERVAL) -> None:
        """PING every ``interval`` seconds on a background thread (once; stopped by :meth:`close`)."""
        with self._lock:
            if self._monitor is not None or self._closed:
                return
            self._monitor = threading.Thread(target=self._watch, args=(interval,), name="stockcache-redis-ping",
                                             daemon=True)
        self._monitor.start()

    def _watch(self, interval: float) -> None:
        while not self._monitor_stop.wait(interval):
            self.check()

    def check(self) -> bool:
        """One PING now, ignoring the fail-fast pause, and the up/down state updated; True if Redis answered.

        The monitor thread's call: never on a request's path.
        """
        try:
            self.client.ping()
        except _LINK_ERRORS as exc:
            self._failed(exc)
            return False
        except redis.RedisError:
            pass  # it answered (with an error, such as LOADING): reachable
        self._answered = True
        if self._down:
            self._recovered()
        return True

    def run(self, operation: str, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client)``, with redis-py's errors turned into CacheError (fast while Redis is down)."""
        if self._down:
            self._admit(operation)
        try:
            result = fn(self.client)
        except _LINK_ERRORS as exc:
            self._failed(exc)
            raise CacheError(f"Redis {operation} failed: {type(exc).__name__}") from exc
        except redis.RedisError as exc:
            # Redis answered, so it is up; the command itself failed (OOM, a script error).
            with self._lock:
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {str(exc)[:120]}"
            if self._down:
                self._recovered()
            raise CacheError(f"Redis {operation} failed: {type(exc).__name__}") from exc
        self._answered = True
        if self._down:
            self._recovered()
        return result

    def _admit(self, operation: str) -> None:
        """While down: raise unless the pause is over, then let this one caller try."""
        with self._lock:
            if not self._down:
                return
            now = self._monotonic()
            if now < self._down_until:
                raise CacheError(
                    f"Redis {operation} skipped: Redis is unreachable, next try in "
                    f"{self._down_until - now:.1f} s")
            # This caller probes; everyone else keeps failing fast until it is done.
            self._down_until = now + self._pause

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._errors += 1
            self._last_error = type(exc).__name__
            now = self._monotonic()
            first = not self._down
            if first:
                self._down, self._down_since, self._pause = True, now, self._base_pause
            else:
                self._pause = min(self._pause * 2, self._max_pause)
            self._down_until = now + self._pause
        if first and not self._closed:
            log.warning("Redis at %s is unreachable (%s); going on without it until it answers again",
                        self.endpoint, type(exc).__name__)

    def _recovered(self) -> None:
        with self._lock:
            if not self._down:
                return
            down_for = self._monotonic() - (self._down_since or 0.0)
            self._down, self._down_since, self._pause = False, None, self._base_pause
        log.warning("Redis at %s answers again after %.1f s; using it again", self.endpoint, down_for)

    @property
    def up(self) -> bool:
        """False from a connection failure until a call succeeds again."""
        return not self._down

    def probe(self) -> bool:
        """PING if Redis never answered yet, or is down and its pause is over; True if up.

        Health checks and stats call this, so a Redis that comes back is noticed
        even when no request needs it.
        """
        if self._down or not self._answered:
            try:
                self.run("ping", lambda r: r.ping())
            except CacheError:
                pass
        return not self._down

    def status(self) -> dict[str, Any]:
        """``{"status": "ok"|"down", "errors", "last_error", "down_for"}``; no I/O."""
        with self._lock:
            return {
                "status": "down" if self._down else "ok",
                "errors": self._errors,
                "last_error": self._last_error,
                "down_for": round(self._monotonic() - self._down_since, 1)
                if self._down_since is not None else None,
            }

    def close(self) -> None:
        """Disconnect the pool; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._monitor_stop.set()
        monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join()
        try:
            self.client.close()
        except redis.RedisError:
            pass


class RedisTier(Tier):
    """Entries in Redis under ``<namespace>:cache:``; shared by every instance using the same Redis.

    Thread-safe: redis-py's pool hands each call its own connection, and the
    counters are under a lock. ``get_many``/``set_many`` are one round trip
    each; ``delete_pattern`` uses SCAN (never KEYS). ``stats()["size"]`` counts
    this namespace's keys with SCAN, at most every ``size_interval`` seconds.
    """

    name = "redis"
    # Redis drops each key at expires_at + grace by itself (see purge()).
    expires_natively: ClassVar[bool] = True

    def __init__(
        self,
        url: str | None = None,
        *,
        grace: float,
        clock: Callable[[], float] = time.time,
        namespace: str = DEFAULT_NAMESPACE,
        link: RedisLink | None = None,
        size_interval: float = 5.0,
    ) -> None:
        if (url is None) == (link is None):
            raise TypeError("give a Redis url or a link, not both")
        if not namespace:
            raise ValueError("the Redis namespace must not be empty")
        self._owns_link = link is None
        self.link = link if link is not None else RedisLink(url)  # type: ignore[arg-type]
        if self._owns_link:
            self.link.start_monitor()
        self.grace = grace
        self.namespace = namespace
        self._prefix = f"{namespace}:cache:"
        self._clock = clock
        self._size_interval = size_interval
        self._lock = threading.Lock()
        self._bad_values = 0
        self._size: tuple[float, int] | None = None  # (monotonic time, count)

    # reads ---------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        text = self.link.run("get", lambda r: r.get(self._prefix + key))
        return self._entry(text, self._clock() - self.grace)

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        names = [self._prefix + key for key in wanted]

        def mget(r: redis.Redis) -> list[Any]:
            if len(names) <= _MGET_CHUNK:
                return r.mget(names)
            pipe = r.pipeline(transaction=False)
            for start in range(0, len(names), _MGET_CHUNK):
                pipe.mget(names[start:start + _MGET_CHUNK])
            return [text for part in pipe.execute() for text in part]

        texts = self.link.run("mget", mget)
        cutoff = self._clock() - self.grace
        found: dict[str, Entry] = {}
        for key, text in zip(wanted, texts):
            entry = self._entry(text, cutoff)
            if entry is not None:
                found[key] = entry
        return found

    def _entry(self, text: Any, cutoff: float) -> Entry | None:
        if text is None:
            return None
        try:
            entry = codec.decode(text, self.name)
        except ValueError:
            # Not our JSON triple (another program's key, garbage): a miss, never executed.
            with self._lock:
                self._bad_values += 1
            return None
        # Redis expires by real time; the tier's clock (a fake one in tests) decides too.
        return entry if entry.expires_at > cutoff else None

    # writes --------------------------------------------------------------

    def set(self, key: str, entry: Entry) -> None:
        self.set_many({key: entry})

    def set_many(self, entries: Mapping[str, Entry]) -> None:
        if not entries:
            return
        try:
            rows = [(self._prefix + key, codec.encode(e), e.expires_at) for key, e in entries.items()]
        except ValueError as exc:
            raise CacheError(str(exc)) from exc
        now = self._clock()

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            for name, text, expires_at in rows:
                ms = math.ceil((expires_at + self.grace - now) * 1000)
                if ms > 0:
                    pipe.set(name, text, px=ms)
                else:  # already past its grace: what was there is older still
                    pipe.unlink(name)
            pipe.execute()

        self.link.run("set", write)

    def delete(self, key: str) -> bool:
        return bool(self.link.run("delete", lambda r: r.unlink(self._prefix + key)))

    def delete_pattern_keys(self, pattern: str) -> builtins.set[str]:
        # SCAN narrows by the pattern's literal head; the exact SQLite GLOB rules
        # are then applied here, so every tier removes the same keys.
        head = pattern
        for i, char in enumerate(pattern):
            if char in _GLOB_SPECIAL:
                head = pattern[:i]
                break
        match = _escape_glob(self._prefix + head) + "*"
        fullmatch = glob_to_regex(pattern).fullmatch
        skip = len(self._prefix)

        def remove(r: redis.Redis) -> builtins.set[str]:
            names = [n for n in r.scan_iter(match=match, count=_SCAN_COUNT) if fullmatch(n[skip:])]
            removed: builtins.set[str] = builtins.set()
            for start in range(0, len(names), 500):
                chunk = names[start:start + 500]
                pipe = r.pipeline(transaction=False)
                for name in chunk:
                    pipe.unlink(name)
                removed.update(n[skip:] for n, gone in zip(chunk, pipe.execute()) if gone)
            return removed

        removed = self.link.run("clear_pattern", remove)
        with self._lock:
            self._size = None
        return removed

    def purge(self, limit: int) -> int:
        """Nothing to do: Redis drops each key itself at ``expires_at + grace``."""
        return 0

    # admin ---------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The link's status, kept current by its background PING: no I/O here (``/healthz`` is polled)."""
        return self.link.status()

    def stats(self) -> dict[str, Any]:
        """The link's status, values that were not ours, and the namespace's key count (``size``) while Redis is up.

        While Redis is down (or its pause has not run out) this does no I/O
        beyond one probe, and ``size`` is left out.
        """
        self.link.probe()
        out: dict[str, Any] = {"namespace": self.namespace, **self.link.status()}
        if self.link.up:
            try:
                out["size"] = self._count()
            except CacheError:
                out.update(self.link.status())
        with self._lock:
            out["bad_values"] = self._bad_values
        return out

    def _count(self) -> int:
        now = time.monotonic()
        with self._lock:
            cached = self._size
        if cached is not None and now - cached[0] < self._size_interval:
            return cached[1]
        match = _escape_glob(self._prefix) + "*"
        count = self.link.run(
            "stats", lambda r: sum(1 for _ in r.scan_iter(match=match, count=_SCAN_COUNT)))
        with self._lock:
            self._size = (now, count)
        return count

    def close(self) -> None:
        if self._owns_link:
            self.link.close()

