"""The in-process tier: an LRU bounded by item count, with per-item expiry."""

from __future__ import annotations

import builtins
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base import Entry, Tier, glob_to_regex


class MemoryTier(Tier):
    """LRU of at most ``max_items`` entries, each dropped ``grace`` seconds after it expires.

    Thread-safe: one lock, held only for the dict operation itself. A hit does
    no serialisation and no I/O and returns the stored (frozen) value as is.
    Hits and misses are counted by the tier chain, which knows which reads count.
    """

    name = "memory"
    in_process = True

    def __init__(
        self, max_items: int, *, grace: float = 0.0, clock: Callable[[], float] = time.time
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self.grace = grace
        self._clock = clock
        self._data: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._evictions = 0

    def get(self, key: str) -> Entry | None:
        limit = self._clock() - self.grace
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry.expires_at <= limit:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        limit = self._clock() - self.grace
        found: dict[str, Entry] = {}
        data = self._data
        with self._lock:
            for key in keys:
                entry = data.get(key)
                if entry is None:
                    continue
                if entry.expires_at <= limit:
                    del data[key]
                    continue
                data.move_to_end(key)
                found[key] = entry
        return found

    def set(self, key: str, entry: Entry) -> None:
        if entry.tier != self.name:
            entry = Entry(entry.value, entry.stored_at, entry.expires_at, self.name)
        with self._lock:
            self._store(key, entry)

    def set_many(self, entries: Mapping[str, Entry]) -> None:
        tagged = [
            (key, e if e.tier == self.name else Entry(e.value, e.stored_at, e.expires_at, self.name))
            for key, e in entries.items()
        ]
        with self._lock:
            for key, entry in tagged:
                self._store(key, entry)

    def _store(self, key: str, entry: Entry) -> None:
        data = self._data
        data[key] = entry
        data.move_to_end(key)
        while len(data) > self.max_items:
            data.popitem(last=False)
            self._evictions += 1

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None

    def delete_pattern_keys(self, pattern: str) -> builtins.set[str]:
        match = glob_to_regex(pattern).fullmatch
        with self._lock:
            keys = list(self._data)
        matched = {key for key in keys if match(key)}
        removed: builtins.set[str] = builtins.set()
        with self._lock:
            for key in matched:
                if self._data.pop(key, None) is not None:
                    removed.add(key)
        return removed

    def purge(self, limit: int) -> int:
        # A snapshot scan: O(size) but only copies references under the lock, and
        # it runs off the request path; removals are bounded by ``limit``.
        cutoff = self._clock() - self.grace
        with self._lock:
            items = list(self._data.items())
        doomed = [(key, entry) for key, entry in items if entry.expires_at <= cutoff][:limit]
        removed = 0
        with self._lock:
            for key, entry in doomed:
                if self._data.get(key) is entry:
                    del self._data[key]
                    removed += 1
        return removed

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "size": len(self._data),
                "max_size": self.max_items,
                "evictions": self._evictions,
            }

    def close(self) -> None:
        with self._lock:
            self._data.clear()
