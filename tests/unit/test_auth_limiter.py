"""Login limiting: per username and per address, before the password is checked, released after the window."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from stockcache.auth import Authenticator, LoginLimiter
from stockcache.errors import TooManyRequests, Unauthorized
from stockcache.store import open_store

from ..conftest import FakeClock

WINDOW = 15 * 60
PASSWORD = "the right password"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock):
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with open_store(tmp_path, clock=clock) as store:
        a = Authenticator(store, secret=b"s" * 32, jwt_ttl=3600, clock=clock, hasher=hasher)
        store.create_user("alice", a.hash_password(PASSWORD))
        yield a


def _fail(auth: Authenticator, name: str = "alice", address: str | None = "198.51.100.7") -> None:
    with pytest.raises(Unauthorized):
        auth.login(name, "wrong", address)


def test_limiter_blocks_the_sixth_attempt_per_username_even_with_the_right_password(
    auth: Authenticator, clock: FakeClock
) -> None:
    for n in range(5):
        _fail(auth, address=f"198.51.100.{n}")  # spread over addresses: the username limit alone
        clock.now += 1
    with pytest.raises(TooManyRequests) as info:
        auth.login("alice", PASSWORD, "203.0.113.9")
    assert info.value.status == 429
    assert info.value.fields["retry_after"] == WINDOW - 5
    with pytest.raises(TooManyRequests):
        auth.login("ALICE", PASSWORD, None)  # the key is case-insensitive, like the store


def test_limiter_blocks_the_21st_attempt_per_address(auth: Authenticator) -> None:
    for n in range(20):
        _fail(auth, name=f"guess{n}")
    with pytest.raises(TooManyRequests):
        auth.login("alice", PASSWORD, "198.51.100.7")
    assert auth.login("alice", PASSWORD, "198.51.100.8")["access_token"]  # another address is fine


def test_limiter_refuses_before_checking_the_password(tmp_path: Path, clock: FakeClock) -> None:
    class Counting(PasswordHasher):
        calls = 0

        def verify(self, hash, password):  # type: ignore[no-untyped-def]  # noqa: A002
            Counting.calls += 1
            return super().verify(hash, password)

    with open_store(tmp_path, clock=clock) as store:
        auth = Authenticator(store, secret=b"s" * 32, jwt_ttl=60, clock=clock,
                             hasher=Counting(time_cost=1, memory_cost=8, parallelism=1))
        for _ in range(5):
            _fail(auth, name="ghost")
        before = Counting.calls
        with pytest.raises(TooManyRequests):
            auth.login("ghost", "wrong", "198.51.100.7")
        assert Counting.calls == before  # no hash work: no timing signal, no CPU for the attacker


def test_limiter_releases_after_the_window(auth: Authenticator, clock: FakeClock) -> None:
    for _ in range(5):
        _fail(auth)
    with pytest.raises(TooManyRequests):
        auth.login("alice", PASSWORD, "198.51.100.7")
    clock.now += WINDOW - 1
    with pytest.raises(TooManyRequests):
        auth.login("alice", PASSWORD, "198.51.100.7")
    clock.now += 1
    assert auth.login("alice", PASSWORD, "198.51.100.7")["token_type"] == "bearer"


def test_limiter_window_slides(auth: Authenticator, clock: FakeClock) -> None:
    for _ in range(4):
        _fail(auth)
    clock.now += WINDOW - 10
    _fail(auth)  # five in the window
    clock.now += 10  # the first four leave the window
    _fail(auth)
    _fail(auth)


def test_limiter_success_clears_the_usernames_failures(auth: Authenticator) -> None:
    for _ in range(4):
        _fail(auth)
    auth.login("alice", PASSWORD, "198.51.100.7")
    for _ in range(5):
        _fail(auth)
    with pytest.raises(TooManyRequests):
        _fail(auth)


def test_limiter_success_does_not_clear_the_address(auth: Authenticator) -> None:
    # One valid account must not reset an attacker's address count.
    for n in range(19):
        _fail(auth, name=f"guess{n}")
    auth.login("alice", PASSWORD, "198.51.100.7")  # the 20th attempt, a success, not counted
    _fail(auth, name="guess-last")  # the 20th failure
    with pytest.raises(TooManyRequests):
        auth.login("alice", PASSWORD, "198.51.100.7")


def test_limiter_attempts_beyond_the_limit_wait_for_the_verdicts_before_them() -> None:
    # Concurrent guesses cannot all pass the check before any failure is recorded: the third
    # of three with a limit of two waits, and is refused when the two before it failed.
    limiter = LoginLimiter(per_user=2, clock=FakeClock(1_000_000.0))
    limiter.begin("alice", None)
    limiter.begin("alice", None)
    outcome: list[object] = []
    started = threading.Event()

    def third() -> None:
        started.set()
        try:
            limiter.begin("alice", None)
            outcome.append("admitted")
        except TooManyRequests as exc:
            outcome.append(exc)

    thread = threading.Thread(target=third)
    thread.start()
    started.wait(5)
    limiter.failed("alice", None)
    limiter.failed("alice", None)
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], TooManyRequests)
    assert "failed logins" in outcome[0].message


def test_limiter_a_waiting_attempt_goes_ahead_when_one_before_it_succeeds() -> None:
    limiter = LoginLimiter(per_user=2, clock=FakeClock(1_000_000.0))
    limiter.begin("alice", None)
    limiter.begin("alice", None)
    admitted = threading.Event()
    thread = threading.Thread(target=lambda: (limiter.begin("alice", None), admitted.set()))
    thread.start()
    assert not admitted.wait(0.05)  # still waiting: two verdicts are outstanding
    limiter.succeeded("alice", None)
    assert admitted.wait(10)
    thread.join(10)


def test_limiter_a_wait_is_bounded() -> None:
    limiter = LoginLimiter(per_user=1, wait=0.01, clock=FakeClock(1_000_000.0))
    limiter.begin("alice", None)
    with pytest.raises(TooManyRequests) as info:
        limiter.begin("alice", None)  # the first never finishes
    assert info.value.fields["retry_after"] == 1


def test_limiter_memory_is_bounded(clock: FakeClock) -> None:
    limiter = LoginLimiter(max_keys=100, clock=clock)
    for n in range(1000):
        limiter.begin(f"user{n}", f"10.0.{n // 256}.{n % 256}")
        limiter.failed(f"user{n}", f"10.0.{n // 256}.{n % 256}")
    assert len(limiter._users) == 100 and len(limiter._addresses) == 100
    assert not limiter._in_flight  # finished attempts leave nothing behind
    clock.now += WINDOW + 1
    limiter.begin("fresh", "10.9.9.9")  # a new key prunes the expired ones first
    limiter.failed("fresh", "10.9.9.9")
    assert len(limiter._users) == 1


def test_limiter_repr_shows_counts_only() -> None:
    limiter = LoginLimiter(clock=FakeClock(1_000_000.0))
    limiter.begin("secret-looking-name", "192.0.2.1")
    limiter.failed("secret-looking-name", "192.0.2.1")
    assert "secret-looking-name" not in repr(limiter) and "192.0.2.1" not in repr(limiter)
