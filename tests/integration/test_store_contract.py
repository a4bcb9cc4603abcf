"""The store's contract, one class run against both engines: SQLite in a temp dir and a real PostgreSQL.

Whatever engine the settings pick, callers see the same behaviour: names are
case-insensitive, ids are never reused, one user never sees another's rows,
constraint violations are our errors, a write is visible to every other
connection once the call returns, and another writer's revocation moves the
generation when the watcher looks. SQLite-only facts (file modes, pragmas)
are in tests/unit/test_store.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stockcache.errors import Conflict, InvalidRequest, NotFound, StockcacheError
from stockcache.store import SCHEMA_VERSION, Position, Store, WatchItem, open_store
from stockcache.store.postgres import open_postgres_store
from stockcache.store.shared import KpiDay, LoginCheck
from tests.conftest import FakeClock
from tests.postgres_server import pg_url  # noqa: F401 (fixture)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def opener(engine: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a store on the test's one database, as many times as asked (each like another process)."""
    opened: list[Store] = []
    if engine == "sqlite":
        def open_one() -> Store:
            store = open_store(tmp_path / "store.sqlite", clock=clock)
            opened.append(store)
            return store
    else:
        url = request.getfixturevalue("pg_url")

        def open_one() -> Store:
            store = open_postgres_store(url, clock=clock)
            opened.append(store)
            return store
    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


@pytest.fixture
def two_users(store: Store):  # type: ignore[no-untyped-def]
    return store.create_user("alice", "hash-a"), store.create_user("bob", "hash-b")


class TestStoreContract:
    # -- opening ---------------------------------------------------------------------------

    def test_store_open_migrates_to_the_current_version_once(self, opener: Opener) -> None:
        first = opener()
        assert first.schema_version() == SCHEMA_VERSION
        user = first.create_user("alice", "h")
        again = opener()  # migrations already applied: nothing changes
        assert again.schema_version() == SCHEMA_VERSION
        assert again.get_user(user.id) == user
        assert first.integrity_check() == "ok"

    def test_store_instances_starting_at_once_do_not_race(self, opener: Opener) -> None:
        stores: list[Store] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def open_one() -> None:
            try:
                start.wait()
                stores.append(opener())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(stores) == 4
        assert {s.schema_version() for s in stores} == {SCHEMA_VERSION}

    def test_store_closed_refuses_calls(self, opener: Opener) -> None:
        store = opener()
        store.close()
        with pytest.raises(StockcacheError):
            store.list_users()

    # -- users -----------------------------------------------------------------------------

    def test_store_create_user_and_look_it_up(self, store: Store) -> None:
        user = store.create_user("Alice", "the-hash", is_admin=True)
        assert user.username == "Alice" and user.is_admin and user.created_at == "2023-11-14T22:13:20Z"
        assert user.password_version == 0
        assert store.get_user(user.id) == user
        assert store.get_user_by_name("alice") == (user, "the-hash")  # names are case-insensitive
        assert store.get_user_by_name("ALICE") == (user, "the-hash")
        assert store.list_users() == [user] and store.count_users() == 1
        assert "the-hash" not in repr(user)

    def test_store_duplicate_user_is_conflict_whatever_the_case(self, store: Store) -> None:
        store.create_user("alice", "h")
        with pytest.raises(Conflict):
            store.create_user("ALICE", "h")
        with pytest.raises(InvalidRequest):
            store.create_user("no spaces", "h")

    def test_store_unknown_user_is_none(self, store: Store) -> None:
        assert store.get_user(99) is None
        assert store.get_user(2**63 - 1) is None
        assert store.get_user_by_name("nobody") is None
        assert store.delete_user("nobody") is False
        assert store.change_password(99, "h") is None

    def test_store_deleted_user_id_is_never_reused(self, store: Store) -> None:
        first = store.create_user("alice", "h")
        assert store.delete_user("ALICE")  # case-insensitive here too
        again = store.create_user("alice", "h")
        assert again.id != first.id and store.get_user(first.id) is None

    def test_store_rehash_keeps_the_password_version_and_a_change_moves_it(self, store: Store) -> None:
        user = store.create_user("alice", "old")
        assert store.set_password(user.id, "rehashed")
        assert store.get_user_by_name("alice") == (user, "rehashed")
        assert store.set_password(999, "x") is False
        changed = store.change_password(user.id, "new")
        assert changed is not None and changed.password_version == user.password_version + 1
        assert store.get_user_by_name("alice") == (changed, "new")

    def test_store_delete_user_cascades_to_everything_they_own(self, store: Store, two_users) -> None:
        alice, bob = two_users
        store.add_position(alice.id, "AAPL", 1, 1)
        store.add_watch(alice.id, "MSFT")
        store.create_api_token(alice.id, "tokenid1", "hash", "laptop")
        store.add_position(bob.id, "TSLA", 1, 1)
        assert store.delete_user("alice")
        assert store.list_positions(alice.id) == [] and store.list_watchlist(alice.id) == []
        assert store.find_api_token("tokenid1") is None
        assert store.held_symbols() == {"TSLA"}
        assert store.integrity_check() == "ok"

    # -- API tokens ------------------------------------------------------------------------

    def test_store_api_token_lifecycle(self, store: Store, clock: FakeClock, two_users) -> None:
        alice, bob = two_users
        token = store.create_api_token(alice.id, "abcdefgh", "sha", "sheet")
        assert token.revoked_at is None and token.last_used_at is None and not token.revoked
        assert token.scope == "full"
        found = store.find_api_token("abcdefgh")
        assert found is not None and found[0] == token and found[1] == "sha" and found[2].username == "alice"
        assert store.list_api_tokens(alice.id) == [token] and store.list_api_tokens(bob.id) == []
        clock.advance(10)
        assert store.revoke_api_token("abcdefgh") is True
        assert store.revoke_api_token("abcdefgh") is False
        assert store.revoke_api_token("missing!") is False
        found = store.find_api_token("abcdefgh")
        assert found is not None and found[0].revoked_at == "2023-11-14T22:13:30Z"

    def test_store_api_token_scope_is_kept(self, store: Store, two_users) -> None:
        alice, _ = two_users
        market = store.create_api_token(alice.id, "mmmmmmmm", "sha", "sheet", scope="market")
        found = store.find_api_token("mmmmmmmm")
        assert market.scope == "market" and found is not None and found[0].scope == "market"
        with pytest.raises(InvalidRequest):
            store.create_api_token(alice.id, "zzzzzzzz", "sha", "", scope="admin")

    def test_store_api_token_id_clash_is_conflict_and_unknown_user_not_found(self, store: Store, two_users) -> None:
        alice, _ = two_users
        store.create_api_token(alice.id, "abcdefgh", "sha", "")
        with pytest.raises(Conflict):
            store.create_api_token(alice.id, "abcdefgh", "sha2", "")
        with pytest.raises(NotFound):
            store.create_api_token(999, "zzzzzzzz", "sha", "")

    def test_store_touch_api_token_writes_at_most_once_a_minute(self, store: Store, clock: FakeClock,
                                                                two_users) -> None:
        alice, _ = two_users
        store.create_api_token(alice.id, "abcdefgh", "sha", "")
        assert store.touch_api_token("abcdefgh") is True
        clock.advance(59)
        assert store.touch_api_token("abcdefgh") is False
        clock.advance(1)
        assert store.touch_api_token("abcdefgh") is True
        found = store.find_api_token("abcdefgh")
        assert found is not None and found[0].last_used_at == "2023-11-14T22:14:20Z"

    # -- positions and watchlists ----------------------------------------------------------

    def test_store_positions_crud(self, store: Store, two_users) -> None:
        alice, _ = two_users
        p = store.add_position(alice.id, "AAPL", 10, 150.5)
        assert p == Position(id=p.id, symbol="AAPL", shares=10.0, cost_basis=150.5)
        assert store.list_positions(alice.id) == [p]
        changed = store.update_position(alice.id, p.id, shares=12)
        assert changed == Position(id=p.id, symbol="AAPL", shares=12.0, cost_basis=150.5)
        assert changed is not None and isinstance(changed.shares, float)
        changed = store.update_position(alice.id, p.id, symbol="MSFT", cost_basis=0)
        assert changed == Position(id=p.id, symbol="MSFT", shares=12.0, cost_basis=0.0)
        assert store.update_position(alice.id, p.id) == changed
        assert store.delete_position(alice.id, p.id) is True
        assert store.delete_position(alice.id, p.id) is False
        assert store.list_positions(alice.id) == []

    def test_store_holdings_added_by_isin_keep_it_until_the_symbol_changes(self, store: Store, two_users) -> None:
        alice, _ = two_users
        p = store.add_position(alice.id, "SAP.DE", 2, 100, isin="DE0007164600")
        assert p.isin == "DE0007164600" and store.list_positions(alice.id) == [p]
        assert store.update_position(alice.id, p.id, shares=3) == Position(p.id, "SAP.DE", 3.0, 100.0, "DE0007164600")
        moved = store.update_position(alice.id, p.id, symbol="SAP.F")
        assert moved == Position(p.id, "SAP.F", 3.0, 100.0, None)  # another listing: the ISIN no longer says it
        item = store.add_watch(alice.id, "AAPL", isin="US0378331005")
        store.add_watch(alice.id, "MSFT")
        assert [(w.symbol, w.isin) for w in store.list_watchlist(alice.id)] == [("AAPL", "US0378331005"),
                                                                                 ("MSFT", None)]
        assert item.isin == "US0378331005"

    def test_store_user_cannot_read_or_touch_another_users_position(self, store: Store, two_users) -> None:
        alice, bob = two_users
        p = store.add_position(alice.id, "AAPL", 10, 150)
        assert store.list_positions(bob.id) == []
        assert store.update_position(bob.id, p.id, shares=1) is None
        assert store.delete_position(bob.id, p.id) is False
        assert store.update_position(bob.id, 10_000, shares=1) is None
        assert store.list_positions(alice.id) == [p]

    def test_store_position_ids_are_not_reused(self, store: Store, two_users) -> None:
        alice, _ = two_users
        first = store.add_position(alice.id, "AAPL", 1, 1)
        store.delete_position(alice.id, first.id)
        assert store.add_position(alice.id, "AAPL", 1, 1).id != first.id

    def test_store_position_for_missing_user_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.add_position(12345, "AAPL", 1, 1)

    @pytest.mark.parametrize(("shares", "cost"), [
        (0, 1), (-1, 1), (1, -0.01), (math.nan, 1), (1, math.nan), (math.inf, 1), (1, math.inf)])
    def test_store_refuses_bad_numbers(self, store: Store, two_users, shares: float, cost: float) -> None:
        alice, _ = two_users
        with pytest.raises(InvalidRequest):
            store.add_position(alice.id, "AAPL", shares, cost)
        p = store.add_position(alice.id, "AAPL", 1, 1)
        with pytest.raises(InvalidRequest):
            store.update_position(alice.id, p.id, shares=shares, cost_basis=cost)
        assert store.list_positions(alice.id) == [p]

    def test_store_watchlist_in_the_order_added(self, store: Store, clock: FakeClock, two_users) -> None:
        alice, bob = two_users
        item = store.add_watch(alice.id, "AAPL")
        assert item == WatchItem(symbol="AAPL", added_at="2023-11-14T22:13:20Z")
        store.add_watch(alice.id, "ZZZ")  # the same second: insertion order decides
        clock.advance(5)
        store.add_watch(alice.id, "MSFT")
        assert [w.symbol for w in store.list_watchlist(alice.id)] == ["AAPL", "ZZZ", "MSFT"]
        with pytest.raises(Conflict) as info:
            store.add_watch(alice.id, "AAPL")
        assert info.value.fields["symbol"] == "AAPL"
        assert store.list_watchlist(bob.id) == [] and store.remove_watch(bob.id, "AAPL") is False
        store.add_watch(bob.id, "AAPL")  # no conflict for another user
        assert store.remove_watch(alice.id, "AAPL") is True and store.remove_watch(alice.id, "AAPL") is False
        with pytest.raises(NotFound):
            store.add_watch(12345, "AAPL")

    def test_store_held_symbol_counts_count_each_user_once(self, store: Store, two_users) -> None:
        alice, bob = two_users
        carol = store.create_user("carol", "hash-c")
        assert store.held_symbol_counts() == {} and store.held_symbols() == set()
        store.add_position(alice.id, "AAPL", 1, 1)
        store.add_position(alice.id, "AAPL", 2, 3)
        store.add_watch(alice.id, "AAPL")
        store.add_watch(bob.id, "AAPL")
        store.add_position(bob.id, "MSFT", 1, 1)
        store.add_watch(carol.id, "AAPL")
        store.add_watch(carol.id, "NVDA")
        assert store.held_symbol_counts() == {"AAPL": 3, "MSFT": 1, "NVDA": 1}
        assert store.held_symbols() == {"AAPL", "MSFT", "NVDA"}
        assert store.delete_user("carol") and store.remove_watch(bob.id, "AAPL")
        assert store.held_symbol_counts() == {"AAPL": 1, "MSFT": 1}

    # -- other writers, the watcher, durability --------------------------------------------

    def test_store_write_is_visible_to_another_connection_when_the_call_returns(self, opener: Opener) -> None:
        writer, reader = opener(), opener()
        user = writer.create_user("alice", "h")
        p = writer.add_position(user.id, "AAPL", 3, 4)
        assert reader.list_positions(user.id) == [p]

    def test_store_another_writers_revocation_moves_the_generation(self, opener: Opener, two_users) -> None:
        here, elsewhere = opener(), opener()
        alice, _ = two_users
        here.create_api_token(alice.id, "abcdefgh", "sha", "")
        assert here.check_for_changes() in (True, False)  # settle this store's own writes
        assert here.check_for_changes() is False  # nobody else wrote
        generation = here.generation()
        assert elsewhere.revoke_api_token("abcdefgh")
        assert here.generation() == generation  # no I/O between looks
        assert here.check_for_changes() is True
        assert here.generation() != generation
        generation = here.generation()
        assert elsewhere.change_password(alice.id, "new") is not None
        here.watch_step()
        assert here.generation() != generation

    def test_store_token_uses_are_written_by_the_watcher_without_voiding_anything(
            self, opener: Opener, two_users) -> None:
        here, elsewhere = opener(), opener()
        alice, _ = two_users
        here.create_api_token(alice.id, "abcdefgh", "sha", "")
        here.watch_step()
        elsewhere.watch_step()
        here.note_token_use("abcdefgh")
        generation = elsewhere.generation()
        here.watch_step()  # writes the use
        found = elsewhere.find_api_token("abcdefgh")
        assert found is not None and found[0].last_used_at == "2023-11-14T22:13:20Z"
        elsewhere.watch_step()
        assert elsewhere.generation() == generation

    def test_store_another_writers_new_holding_wakes_the_listeners(self, opener: Opener, two_users) -> None:
        here, elsewhere = opener(), opener()
        alice, _ = two_users
        here.watch_step()
        heard: list[int] = []
        here.add_holdings_listener(lambda: heard.append(1))
        elsewhere.add_watch(alice.id, "NVDA")
        assert heard == []
        here.watch_step()
        assert heard == [1]
        here.add_position(alice.id, "AAPL", 1, 1)  # this store's own: at once
        assert heard == [1, 1]

    def test_store_is_usable_from_many_threads_at_once(self, store: Store) -> None:
        users = [store.create_user(f"user{i}", "h") for i in range(6)]
        errors: list[BaseException] = []

        def work(user_id: int) -> None:
            try:
                for n in range(10):
                    p = store.add_position(user_id, f"S{n}", n + 1, n)
                    store.update_position(user_id, p.id, shares=n + 2)
                    store.list_positions(user_id)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(u.id,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [len(store.list_positions(u.id)) for u in users] == [10] * 6
        assert store.integrity_check() == "ok"

    # -- alerts ----------------------------------------------------------------------------

    def test_store_alerts_are_per_user_and_deleted_with_their_user(self, store: Store, two_users) -> None:
        alice, bob = two_users
        mine = store.add_alert(alice.id, "AAPL", "above", 250.5, "phone", "sell some")
        theirs = store.add_alert(bob.id, "AAPL", "change_percent_below", -3, "team")
        assert mine.armed and mine.last_fired_at is None and mine.created_at == "2023-11-14T22:13:20Z"
        assert store.list_alerts(alice.id) == [mine]
        assert mine.to_dict() == {"id": mine.id, "symbol": "AAPL", "condition": "above", "value": 250.5,
                                  "channel": "phone", "note": "sell some", "armed": True, "last_fired_at": None}
        assert [a.id for a in store.alerts_for_symbol("AAPL")] == [mine.id, theirs.id]
        assert store.alert_symbol_counts() == {"AAPL": 2}
        assert store.delete_alert(bob.id, mine.id) is False  # another user's id is like a missing one
        assert store.delete_alert(alice.id, mine.id) is True
        assert store.list_alerts(alice.id) == []
        store.delete_user("bob")
        assert store.alerts_for_symbol("AAPL") == [] and store.alert_symbol_counts() == {}
        with pytest.raises(NotFound):
            store.add_alert(bob.id, "AAPL", "above", 1, "phone")
        with pytest.raises(InvalidRequest):
            store.add_alert(alice.id, "AAPL", "sideways", 1, "phone")
        with pytest.raises(InvalidRequest):
            store.add_alert(alice.id, "AAPL", "above", math.nan, "phone")

    def test_store_alert_fires_once_per_crossing_across_instances(self, opener: Opener, two_users,
                                                                 clock: FakeClock) -> None:
        here, elsewhere = opener(), opener()
        alice, _ = two_users
        alert = here.add_alert(alice.id, "MSFT", "below", 300, "phone")
        fired = here.fire_alert(alert.id, observed=299.5, at=clock())
        assert fired is not None and fired.status == "pending" and fired.attempts == 0
        assert (fired.alert_id, fired.symbol, fired.condition, fired.value, fired.channel, fired.price) == (
            alert.id, "MSFT", "below", 300.0, "phone", 299.5)
        assert elsewhere.fire_alert(alert.id, observed=299.0, at=clock()) is None  # fired already: no second one
        seen = elsewhere.list_alerts(alice.id)[0]
        assert not seen.armed and seen.last_fired_at == "2023-11-14T22:13:20Z"
        assert elsewhere.rearm_alert(alert.id) is True
        assert here.rearm_alert(alert.id) is False  # armed already
        clock.advance(60)
        again = here.fire_alert(alert.id, observed=298.0, at=clock())
        assert again is not None and again.id != fired.id
        assert here.list_alerts(alice.id)[0].last_fired_at == "2023-11-14T22:14:20Z"

    def test_store_alert_history_is_newest_first_outlives_the_alert_and_stays_private(
            self, store: Store, two_users, clock: FakeClock) -> None:
        alice, bob = two_users
        alert = store.add_alert(alice.id, "NVDA", "above", 100, "phone")
        first = store.fire_alert(alert.id, observed=101, at=clock())
        assert first is not None
        store.finish_delivery(first.id, status="failed", attempts=3, error="HTTP 500")
        store.rearm_alert(alert.id)
        second = store.fire_alert(alert.id, observed=102, at=clock())
        assert second is not None
        store.finish_delivery(second.id, status="delivered", attempts=1)
        history = store.alert_history(alice.id)
        assert [(d.id, d.status, d.attempts, d.error) for d in history] == [
            (second.id, "delivered", 1, None), (first.id, "failed", 3, "HTTP 500")]
        assert history[0].finished_at == "2023-11-14T22:13:20Z"
        assert store.alert_history(bob.id) == []
        assert store.alert_history(alice.id, limit=1) == history[:1]
        store.delete_alert(alice.id, alert.id)
        kept = store.alert_history(alice.id)
        assert [d.id for d in kept] == [second.id, first.id] and {d.alert_id for d in kept} == {None}

    def test_store_new_alert_moves_the_holdings_counter_for_other_instances(self, opener: Opener,
                                                                            two_users) -> None:
        here, elsewhere = opener(), opener()
        alice, _ = two_users
        here.watch_step()
        heard: list[int] = []
        here.add_holdings_listener(lambda: heard.append(1))
        elsewhere.add_alert(alice.id, "TSLA", "above", 1, "phone")
        here.watch_step()
        assert heard == [1]

    # -- shared state ----------------------------------------------------------------------

    def test_store_secret_is_made_once_and_the_first_one_wins(self, opener: Opener) -> None:
        a, b = opener(), opener()
        first = a.secret("jwt", lambda: "aa" * 32)
        assert b.secret("jwt", lambda: "bb" * 32) == first == "aa" * 32

    def test_store_login_attempts_are_limited_across_instances(self, opener: Opener, clock: FakeClock) -> None:
        a, b = opener(), opener()
        checks = [LoginCheck("user", "alice", 3), LoginCheck("address", "10.0.0.1", 10)]
        now = clock()
        for n, store in enumerate((a, b, a)):
            assert store.login_reserve(checks, f"try{n}", now=now, window=900, pending_ttl=30) == ("ok", 0)
            store.login_settle(checks, f"try{n}", outcome="failed", now=now)
        verdict, retry = b.login_reserve(checks, "try3", now=now + 100, window=900, pending_ttl=30)
        assert verdict == "refused" and retry == 800
        assert a.login_reserve(checks, "later", now=now + 901, window=900, pending_ttl=30) == ("ok", 0)

    def test_store_login_attempts_in_progress_hold_places(self, opener: Opener, clock: FakeClock) -> None:
        a, b = opener(), opener()
        checks = [LoginCheck("user", "bob", 2)]
        now = clock()
        assert a.login_reserve(checks, "one", now=now, window=900, pending_ttl=30) == ("ok", 0)
        assert b.login_reserve(checks, "two", now=now, window=900, pending_ttl=30) == ("ok", 0)
        assert a.login_reserve(checks, "three", now=now, window=900, pending_ttl=30) == ("crowded", 0)
        a.login_settle(checks, "one", outcome="abandoned", now=now)
        assert b.login_reserve(checks, "three", now=now, window=900, pending_ttl=30) == ("ok", 0)
        # A place left pending by an instance that died is dropped after pending_ttl.
        assert a.login_reserve(checks, "four", now=now + 31, window=900, pending_ttl=30) == ("ok", 0)

    def test_store_login_success_clears_the_users_failures_only(self, store: Store, clock: FakeClock) -> None:
        user = LoginCheck("user", "carol", 2)
        address = LoginCheck("address", "10.0.0.2", 2)
        now = clock()
        assert store.login_reserve([user, address], "bad", now=now, window=900, pending_ttl=30)[0] == "ok"
        store.login_settle([user, address], "bad", outcome="failed", now=now)
        assert store.login_reserve([user, address], "good", now=now, window=900, pending_ttl=30)[0] == "ok"
        store.login_settle([user, address], "good", outcome="succeeded", now=now)
        other = LoginCheck("user", "dave", 2)
        assert store.login_reserve([other, address], "x", now=now, window=900, pending_ttl=30)[0] == "ok"
        store.login_settle([other, address], "x", outcome="failed", now=now)
        assert store.login_reserve([user, address], "y", now=now, window=900, pending_ttl=30)[0] == "refused"
        assert store.login_reserve([user], "z", now=now, window=900, pending_ttl=30)[0] == "ok"

    def test_store_kpi_days_are_published_per_instance_and_idempotently(self, opener: Opener) -> None:
        a, b = opener(), opener()
        day = KpiDay("2023-11-14", 10, 6, 2, [1, 2, 3], 0.5, {"finnhub": 2})
        a.publish_kpi_days("inst-a", [day])
        a.publish_kpi_days("inst-a", [day._replace(requests=12)])  # a later, larger total replaces
        b.publish_kpi_days("inst-b", [KpiDay("2023-11-14", 5, 1, 1, [0, 1, 0], 0.25, {"finnhub": 1})])
        rows = b.kpi_days_published("2023-11-01", "2023-11-30")
        assert [(instance, d.requests) for instance, d in rows] == [("inst-a", 12), ("inst-b", 5)]
        assert rows[0][1].latency == [1, 2, 3] and rows[0][1].upstream_calls == {"finnhub": 2}
        assert b.kpi_days_published("2023-12-01", "2023-12-31") == []
