"""Reusing verified bearer values: no I/O per request, never past a change to the store, nor past a JWT's expiry.

Writes through the same Store void the remembered answers at once; other
processes' commits when the store's watcher next looks (``check_for_changes``,
every ``WATCH_INTERVAL`` seconds in a server). The watcher is called by hand
here, so nothing waits on time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from stockcache.auth import VERIFIED_LIFETIME, Authenticator
from stockcache.errors import Unauthorized
from stockcache.store import SqliteStore, Store, open_store
from tests.conftest import FakeClock

SECRET = b"s" * 32


class CountingStore(SqliteStore):
    """The real store, counting the lookups authentication makes and every query or transaction."""

    lookups = 0
    connections_used = 0

    def _rows(self, sql, params=()):  # type: ignore[no-untyped-def]
        self.connections_used += 1
        return super()._rows(sql, params)

    def _tx(self, operation):  # type: ignore[no-untyped-def]
        self.connections_used += 1
        return super()._tx(operation)

    def find_api_token(self, token_id: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().find_api_token(token_id)

    def get_user(self, user_id: int):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().get_user(user_id)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[CountingStore]:
    s = CountingStore(tmp_path / "store.sqlite", clock=clock).open()
    yield s
    s.close()


@pytest.fixture
def other_process(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """A second store on the same file: its own connections, as the command line in another process has."""
    s = open_store(tmp_path / "store.sqlite", clock=clock)
    yield s
    s.close()


@pytest.fixture
def auth(store: CountingStore, clock: FakeClock) -> Authenticator:
    a = Authenticator(store, secret=SECRET, jwt_ttl=3600, clock=clock,
                      hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    store.create_user("bob", a.hash_password("bobs password"))
    store.create_user("carol", a.hash_password("carols password"))
    return a


def _jwt(auth: Authenticator, name: str = "bob") -> str:
    return auth.login(name, f"{name}s password", None)["access_token"]


def test_auth_verified_token_reused_without_a_lookup_until_the_store_changes(
        auth: Authenticator, store: CountingStore, clock: FakeClock) -> None:
    token, _ = auth.create_api_token("bob")
    jwt = _jwt(auth)
    for _ in range(3):
        assert auth.authenticate_token(token).username == "bob"
        assert auth.authenticate_token(jwt).username == "bob"
    # First use of each writes nothing more than the API token's last_used_at, which voids both once.
    assert store.lookups <= 4
    before = store.lookups
    carol = store.get_user_by_name("carol")
    assert carol is not None
    before = store.lookups
    store.add_watch(carol[0].id, "MSFT")  # any write, even about someone else
    auth.authenticate_token(token)
    auth.authenticate_token(jwt)
    assert store.lookups == before + 2
    clock.advance(VERIFIED_LIFETIME)
    auth.authenticate_token(token)
    assert store.lookups == before + 3


def test_auth_verified_token_costs_no_store_call_per_request(auth: Authenticator, store: CountingStore) -> None:
    token, _ = auth.create_api_token("bob")
    jwt = _jwt(auth)
    auth.authenticate_token(token)
    auth.authenticate_token(jwt)
    before = store.connections_used
    for _ in range(100):
        auth.authenticate_token(token)
        auth.authenticate_token(jwt)
    assert store.connections_used == before


def test_auth_revocation_in_another_process_is_refused_once_the_watcher_looks(
        auth: Authenticator, store: CountingStore, other_process: Store) -> None:
    token, record = auth.create_api_token("bob")
    auth.authenticate_token(token)
    assert other_process.revoke_api_token(record.id)
    assert store.check_for_changes() is True
    with pytest.raises(Unauthorized):
        auth.authenticate_token(token)


def test_auth_user_removed_in_another_process_is_refused_once_the_watcher_looks(
        auth: Authenticator, store: CountingStore, other_process: Store) -> None:
    jwt = _jwt(auth)
    token, _ = auth.create_api_token("bob")
    for bearer in (jwt, token, jwt, token):
        auth.authenticate_token(bearer)
    assert other_process.delete_user("bob")
    assert store.check_for_changes() is True
    for bearer in (jwt, token):
        with pytest.raises(Unauthorized):
            auth.authenticate_token(bearer)


def test_auth_store_watcher_ignores_its_own_quiet(store: CountingStore) -> None:
    assert store.check_for_changes() is False
    assert store.check_for_changes() is False


def test_auth_token_use_is_written_off_the_request_path(
        auth: Authenticator, store: CountingStore, clock: FakeClock) -> None:
    token, record = auth.create_api_token("bob")
    user = store.get_user_by_name("bob")
    assert user is not None
    auth.authenticate_token(token)
    assert store.list_api_tokens(user[0].id)[0].last_used_at is None
    generation = store.generation()
    assert store.flush_token_uses() == 1
    assert store.generation() == generation  # a last-use time does not void verified tokens
    assert store.list_api_tokens(user[0].id)[0].last_used_at is not None


def test_auth_revocation_on_the_same_thread_is_refused_at_once(auth: Authenticator) -> None:
    # Through this process's own store: no watcher needed.
    token, record = auth.create_api_token("bob")
    auth.authenticate_token(token)
    auth.authenticate_token(token)
    assert auth.revoke_api_token(record.id)
    with pytest.raises(Unauthorized):
        auth.authenticate_token(token)


def test_auth_revocation_on_another_thread_is_refused_at_once(auth: Authenticator) -> None:
    token, record = auth.create_api_token("bob")
    auth.authenticate_token(token)
    auth.authenticate_token(token)
    revoker = threading.Thread(target=auth.revoke_api_token, args=(record.id,))
    revoker.start()
    revoker.join()
    with pytest.raises(Unauthorized):
        auth.authenticate_token(token)


def test_auth_reused_jwt_still_expires_on_time(auth: Authenticator, clock: FakeClock) -> None:
    jwt = _jwt(auth)
    clock.advance(3600 - 1)
    assert auth.authenticate_token(jwt).username == "bob"
    clock.advance(1)
    with pytest.raises(Unauthorized):
        auth.authenticate_token(jwt)


def test_auth_failures_are_not_remembered(auth: Authenticator, store: CountingStore) -> None:
    token, _ = auth.create_api_token("bob")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            auth.authenticate_token(wrong)
    assert auth.authenticate_token(token).username == "bob"
