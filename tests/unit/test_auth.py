"""Authentication as a spec: logins, JWTs, API tokens, forged and stale credentials, the secret file, no leaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher

from stockcache.auth import (
    SECRET_FILENAME,
    Authenticator,
    Principal,
    hash_token_secret,
    load_or_create_secret,
    open_auth,
    split_api_token,
    token_id_of,
)
from stockcache.errors import ConfigError, Forbidden, InvalidRequest, NotFound, Unauthorized
from stockcache.settings import Settings
from stockcache.store import Store, open_store

from ..conftest import FakeClock

T0 = 1_700_000_000.0
TTL = 3600
SECRET = b"k" * 32
PASSWORD = "correct horse battery staple 7f3a"


class CountingHasher(PasswordHasher):
    """Cheap parameters for fast tests, and a count of verifications (the timing guard)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"time_cost": 1, "memory_cost": 8, "parallelism": 1, **kwargs})
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2's name
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock):
    s = open_store(tmp_path, clock=clock)
    yield s
    s.close()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def auth(store: Store, clock: FakeClock, hasher: CountingHasher) -> Authenticator:
    a = Authenticator(store, secret=SECRET, jwt_ttl=TTL, clock=clock, hasher=hasher)
    a.store.create_user("alice", a.hash_password(PASSWORD), is_admin=True)
    a.store.create_user("bob", a.hash_password("bobs password"))
    return a


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


def _claims(user_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"sub": str(user_id), "name": "alice", "adm": True, "iat": int(T0), "exp": int(T0) + TTL, **extra}


def _bearer(token: str) -> str:
    return f"Bearer {token}"


# -- login -----------------------------------------------------------------------------


def test_auth_login_returns_a_bearer_jwt(auth: Authenticator) -> None:
    answer = auth.login("alice", PASSWORD, "10.0.0.1")
    assert answer["token_type"] == "bearer" and answer["expires_in"] == TTL
    claims = jwt.decode(answer["access_token"], SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["sub"] == "1" and claims["name"] == "alice" and claims["adm"] is True
    assert claims["exp"] - claims["iat"] == TTL and claims["iat"] == int(T0) and claims["jti"]
    principal = auth.authenticate(_bearer(answer["access_token"]))
    assert principal == Principal(user_id=1, username="alice", is_admin=True, via="jwt")


def test_auth_login_name_is_case_insensitive(auth: Authenticator) -> None:
    token = auth.login("ALICE", PASSWORD, None)["access_token"]
    assert auth.authenticate(_bearer(token)).username == "alice"


def test_auth_login_wrong_password_and_unknown_user_give_the_same_error(
    auth: Authenticator, hasher: CountingHasher
) -> None:
    messages = []
    for name, password in [("alice", "wrong"), ("nobody", PASSWORD), ("nobody", "wrong")]:
        before = hasher.verifications
        with pytest.raises(Unauthorized) as info:
            auth.login(name, password, "10.0.0.1")
        # An unknown name still spends one verification: timing must not reveal which names exist.
        assert hasher.verifications == before + 1
        messages.append(info.value.to_dict())
    assert messages[0] == messages[1] == messages[2] == {
        "code": "unauthorized", "message": "Wrong username or password."}


def test_auth_login_upgrades_a_weak_hash(store: Store, clock: FakeClock) -> None:
    weak = CountingHasher(time_cost=1)
    stronger = CountingHasher(time_cost=2)
    store.create_user("carol", weak.hash(PASSWORD))
    auth = Authenticator(store, secret=SECRET, jwt_ttl=TTL, clock=clock, hasher=stronger)
    auth.login("carol", PASSWORD, None)
    found = store.get_user_by_name("carol")
    assert found is not None and "t=2" in found[1]
    assert not stronger.check_needs_rehash(found[1])
    auth.login("carol", PASSWORD, None)  # still logs in with the new hash


def test_auth_login_with_a_corrupt_stored_hash_is_just_unauthorized(store: Store, clock: FakeClock) -> None:
    store.create_user("dave", "not-an-argon2-hash")
    auth = Authenticator(store, secret=SECRET, jwt_ttl=TTL, clock=clock, hasher=CountingHasher())
    with pytest.raises(Unauthorized):
        auth.login("dave", "anything", None)


# -- JWT: expiry, forgery, removed users ------------------------------------------------


def test_auth_jwt_expires_on_the_injected_clock(auth: Authenticator, clock: FakeClock) -> None:
    token = auth.login("alice", PASSWORD, None)["access_token"]
    clock.now = T0 + TTL - 1
    assert auth.authenticate(_bearer(token)).user_id == 1
    clock.now = T0 + TTL
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_jwt_issued_in_the_future_is_refused(auth: Authenticator, clock: FakeClock) -> None:
    token = jwt.encode(_claims(iat=int(T0) + 3600, exp=int(T0) + 7200), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_jwt_with_a_wrong_signature_is_refused(auth: Authenticator) -> None:
    forged = jwt.encode(_claims(), b"x" * 32, algorithm="HS256")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(forged))
    good = auth.login("bob", "bobs password", None)["access_token"]
    head, body, sig = good.split(".")
    # Bob makes himself admin by editing the claims but keeping his signature.
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(sub="1", name="alice", adm=True)
    tampered = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(tampered))


@pytest.mark.parametrize("signature", [b"", b"anything"])
def test_auth_jwt_alg_none_is_refused(auth: Authenticator, signature: bytes) -> None:
    for alg in ("none", "None", "NONE"):
        token = _hand_made({"alg": alg, "typ": "JWT"}, _claims(), signature)
        with pytest.raises(Unauthorized):
            auth.authenticate(_bearer(token))


def test_auth_jwt_other_algorithms_are_refused_even_when_signed_with_our_secret(auth: Authenticator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that 32 bytes is short for HS512: that is the point
        hs512 = jwt.encode(_claims(), SECRET, algorithm="HS512")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(hs512))
    # Key confusion: labelled RS256 but HMAC-signed with the secret as if it were a public key.
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(_claims()).encode())
    sig = hmac.new(SECRET, head.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(head + "." + _b64(sig)))


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_auth_jwt_missing_a_required_claim_is_refused(auth: Authenticator, missing: str) -> None:
    claims = _claims()
    del claims[missing]
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(jwt.encode(claims, SECRET, algorithm="HS256")))


@pytest.mark.parametrize(
    "change",
    [{"sub": "abc"}, {"sub": "0"}, {"sub": "١"}, {"sub": "999"}, {"name": "bob"}, {"exp": "later"},
     {"exp": True}, {"iat": None}],
)
def test_auth_jwt_with_odd_claims_is_refused(auth: Authenticator, change: dict[str, Any]) -> None:
    token = jwt.encode({**_claims(), **change}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_jwt_of_a_removed_user_is_refused_even_when_unexpired(auth: Authenticator) -> None:
    token = auth.login("bob", "bobs password", None)["access_token"]
    assert auth.store.delete_user("bob")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))
    # A new "bob" gets a new id: the old token still names the old one.
    auth.store.create_user("bob", auth.hash_password("x"))
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_admin_rights_come_from_the_store_not_the_token(auth: Authenticator) -> None:
    bob = auth.store.get_user_by_name("bob")
    assert bob is not None
    token = jwt.encode({**_claims(bob[0].id), "name": "bob", "adm": True}, SECRET, algorithm="HS256")
    principal = auth.authenticate(_bearer(token))
    assert principal.is_admin is False
    with pytest.raises(Forbidden):
        principal.require_admin()


def test_auth_principal_require_admin(auth: Authenticator) -> None:
    admin = auth.authenticate(_bearer(auth.login("alice", PASSWORD, None)["access_token"]))
    user = auth.authenticate(_bearer(auth.login("bob", "bobs password", None)["access_token"]))
    assert admin.require_admin() is admin
    with pytest.raises(Forbidden):
        user.require_admin()


# -- malformed headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", " ", "Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "Token abc", "bearer-abc", "Bearer not.a.jwt",
     "Bearer a.b", "Bearer ....", "Bearer sc_", "Bearer sc_short", "Bearer sc_abcdefgh_", "Bearer sc_abcdefgh-x",
     "Bearer sc_ab$defgh_secret", "Bearer " + "x" * 5000, "Bearer \u00e9\u00e9.\u00e9.\u00e9", "Bearer \x00"],
)
def test_auth_malformed_headers_are_unauthorized(auth: Authenticator, header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(header)
    if header and len(header) > 7:
        assert header[7:] not in info.value.message  # never echoes the value


def test_auth_bearer_scheme_is_case_insensitive_and_bare_tokens_work(auth: Authenticator) -> None:
    token = auth.login("alice", PASSWORD, None)["access_token"]
    assert auth.authenticate(f"bearer   {token}  ").username == "alice"
    assert auth.authenticate_token(token).username == "alice"
    api_token, _ = auth.create_api_token("bob", "query")
    assert auth.authenticate_token(api_token).username == "bob"


# -- API tokens ------------------------------------------------------------------------


def test_auth_api_token_authenticates_as_its_owner(auth: Authenticator) -> None:
    token, record = auth.create_api_token("bob", "spreadsheet")
    assert token.startswith(f"sc_{record.id}_") and len(record.id) == 8
    assert split_api_token(token) == (record.id, token[12:])
    assert record.label == "spreadsheet" and record.revoked_at is None
    principal = auth.authenticate(_bearer(token))
    assert principal == Principal(user_id=2, username="bob", is_admin=False, via="api_token")


def test_auth_api_token_only_its_hash_is_stored(auth: Authenticator) -> None:
    token, record = auth.create_api_token("bob", "")
    secret = token[12:]
    found = auth.store.find_api_token(record.id)
    assert found is not None and found[1] == hash_token_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in auth.store.path.read_bytes()
    wal = Path(str(auth.store.path) + "-wal")
    if wal.exists():
        assert secret.encode() not in wal.read_bytes()


def test_auth_api_token_with_a_wrong_secret_is_refused(auth: Authenticator) -> None:
    token, _ = auth.create_api_token("bob", "")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(_bearer(wrong))
    assert wrong not in str(info.value)


def test_auth_revoked_api_token_is_refused(auth: Authenticator) -> None:
    token, record = auth.create_api_token("bob", "")
    assert auth.revoke_api_token(record.id) is True
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))
    assert auth.revoke_api_token(record.id) is False


def test_auth_revoke_accepts_the_whole_token(auth: Authenticator) -> None:
    token, record = auth.create_api_token("bob", "")
    assert token_id_of(token) == record.id and token_id_of(f" {record.id} ") == record.id
    assert auth.revoke_api_token(token) is True
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_api_token_of_a_removed_user_is_refused(auth: Authenticator) -> None:
    token, _ = auth.create_api_token("bob", "")
    auth.store.delete_user("bob")
    with pytest.raises(Unauthorized):
        auth.authenticate(_bearer(token))


def test_auth_api_token_last_used_is_written_at_most_once_a_minute(auth: Authenticator, clock: FakeClock) -> None:
    token, record = auth.create_api_token("bob", "")

    def last_used() -> str | None:
        found = auth.store.find_api_token(record.id)
        assert found is not None
        return found[0].last_used_at

    # Uses are noted in memory and written by the store's watcher (flush_token_uses), never by the request.
    auth.authenticate(_bearer(token))
    assert last_used() is None
    auth.store.flush_token_uses()
    assert last_used() == "2023-11-14T22:13:20Z"
    clock.now += 30
    auth.authenticate(_bearer(token))
    auth.store.flush_token_uses()
    assert last_used() == "2023-11-14T22:13:20Z"
    clock.now += 30
    auth.authenticate(_bearer(token))
    auth.store.flush_token_uses()
    assert last_used() == "2023-11-14T22:14:20Z"


def test_auth_api_token_for_an_unknown_user_or_with_a_bad_label(auth: Authenticator) -> None:
    with pytest.raises(NotFound):
        auth.create_api_token("nobody", "")
    with pytest.raises(InvalidRequest):
        auth.create_api_token("bob", "x" * 101)


# -- the secret file -------------------------------------------------------------------


def test_auth_secret_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / SECRET_FILENAME
    key = load_or_create_secret(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == key
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILENAME]  # no temporary files left


def test_auth_secret_with_wide_permissions_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / SECRET_FILENAME
    key = load_or_create_secret(path)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        assert load_or_create_secret(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tightened to 0600" in caplog.text
    assert key.hex() not in caplog.text


@pytest.mark.parametrize("content", [b"", b"zz-not-hex", b"abcd", b"\xff\xfe"])
def test_auth_malformed_secret_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / SECRET_FILENAME
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="delete it"):
        load_or_create_secret(path)


def test_auth_secret_created_by_racing_threads_is_one_key(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILENAME
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        keys.append(load_or_create_secret(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_auth_tokens_stay_valid_across_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    settings = Settings(data_dir=tmp_path, jwt_ttl=TTL)
    with open_store(tmp_path, clock=clock) as store:
        auth = open_auth(settings, store, clock=clock, hasher=CountingHasher())
        store.create_user("alice", auth.hash_password(PASSWORD))
        jwt_token = auth.login("alice", PASSWORD, None)["access_token"]
        api_token, _ = auth.create_api_token("alice", "")
    assert stat.S_IMODE((tmp_path / SECRET_FILENAME).stat().st_mode) == 0o600
    with open_store(tmp_path, clock=clock) as store:
        auth = open_auth(settings, store, clock=clock, hasher=CountingHasher())
        assert auth.authenticate(_bearer(jwt_token)).username == "alice"
        assert auth.authenticate(_bearer(api_token)).username == "alice"


def test_auth_refuses_a_short_secret(store: Store) -> None:
    with pytest.raises(ConfigError):
        Authenticator(store, secret=b"short", jwt_ttl=TTL)


# -- nothing leaks ---------------------------------------------------------------------


def test_auth_secrets_never_appear_in_logs_or_reprs(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Recognisable-Pa55word-9d1e"
    settings = Settings(data_dir=tmp_path, jwt_ttl=TTL)
    seen: list[object] = []
    with open_store(tmp_path, clock=clock) as store:
        auth = open_auth(settings, store, clock=clock, hasher=CountingHasher())
        seen += [auth, store, auth.limiter, settings]
        seen.append(store.create_user("erin", auth.hash_password(password), is_admin=True))
        answer = auth.login("erin", password, "192.0.2.1")
        access = answer["access_token"]
        for wrong in ("erin", "ghost"):
            try:
                auth.login(wrong, password + "x", "192.0.2.1")
            except Unauthorized as exc:
                seen.append(exc)
        api_token, record = auth.create_api_token("erin", "scenario")
        seen += [record, auth.authenticate(_bearer(access)), auth.authenticate(_bearer(api_token))]
        for bad in (api_token + "x", access + "x", api_token[:-2]):
            try:
                auth.authenticate(_bearer(bad))
            except Unauthorized as exc:
                seen.append(exc)
        auth.revoke_api_token(api_token)
        try:
            auth.authenticate(_bearer(api_token))
        except Unauthorized as exc:
            seen.append(exc)
        secret_hex = (tmp_path / SECRET_FILENAME).read_text().strip()
        stored_hash = store.get_user_by_name("erin")[1]  # type: ignore[index]
    secrets_ = [password, api_token, api_token[12:], access, access.split(".")[2], secret_hex, stored_hash]
    logged = caplog.text + "".join(repr(r.args) + str(r.__dict__) for r in caplog.records)
    assert caplog.records  # the scenario did log (logins, token creation)
    shown = [repr(obj) + str(obj) for obj in seen]
    shown += [json.dumps(e.to_dict()) for e in seen if isinstance(e, Unauthorized)]
    for secret in secrets_:
        assert secret not in logged
        for text in shown:
            assert secret not in text
