"""Shared fixtures: a fake clock, settings pointing at a temp data dir."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher

from stockcache.settings import Settings


class FakeClock:
    """A clock tests advance by hand (``timer=``-style injection, as in cachetools)."""

    def __init__(self, start: float = 1_767_000_000.0) -> None:  # 2025-12-29, a Monday
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        self.set(value)


def cheap_hasher() -> PasswordHasher:
    """argon2id with the smallest parameters: the same algorithm and checks, without 64 MiB and 0.1 s a hash.

    For tests whose subject is not the cost of hashing (login timing and floods keep the real one).
    """
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for a test: its own data dir, no keys (demo), no background refresh."""
    return Settings(data_dir=tmp_path / "data", refresh=False)
