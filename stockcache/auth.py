"""Passwords, JWT access tokens and long-lived API tokens. Knows nothing of Bottle.

- Passwords are hashed with argon2id (argon2-cffi). A login for an unknown
  name still spends one verification, against a dummy hash, so response time
  does not tell which names exist.
- Access tokens are HS256 JWTs signed with 32 random bytes kept in
  ``<data_dir>/jwt.secret`` (0600). Decoding pins the algorithm, requires
  ``exp``/``iat``/``sub``, checks expiry against the injected clock, and looks
  the user up, so a removed user's token is dead at once and admin rights
  come from the store, not from the token.
- API tokens are ``sc_<id>_<secret>``: an 8-character public id and 32 random
  bytes. Only SHA-256 of the secret is stored: a high-entropy secret cannot be
  guessed offline, so a slow hash would only slow every request down.
- :class:`LoginLimiter` refuses a login before the password is checked once a
  username or an address has failed too often, so brute force gets no signal.
- At most ``max_logins`` logins are in progress at once (waiting for an argon2
  slot included); one more is refused at once with 429 and Retry-After. A
  login holds its HTTP thread while it waits, so without this a flood of
  logins (right or wrong) would hold every thread and starve other routes.

Secrets (passwords, tokens, the JWT key) are never logged, never put into an
error message and never shown by ``repr``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import (
    CacheError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    StockcacheError,
    StorageFull,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from .settings import Settings
from .store import ApiToken, Store, User, validate
from .store.shared import LoginCheck

logger = logging.getLogger(__name__)

SECRET_FILENAME = "jwt.secret"
SECRET_BYTES = 32
JWT_ALGORITHM = "HS256"
TOKEN_PREFIX = "sc_"
TOKEN_ID_LENGTH = 8
MAX_TOKEN_LENGTH = 4096  # longer bearer values are refused before any parsing
VERIFIED_LIFETIME = 60.0  # seconds a verified bearer value is reused while the store is unchanged
VERIFIED_MAX = 4096  # verified bearer values remembered
MAX_USER_ID = 2**63 - 1  # SQLite's integer range: a larger sub cannot be a user (and would overflow)
RESERVED_THREADS = 2  # waitress threads logins may never take: other routes keep them

MARKET_SCOPE = "market"  # store.TOKEN_SCOPES: market data only, the one token a URL may carry (issue 18)

_INVALID = "Invalid or expired credentials."
_JWT_IN_URL = ("A login token (JWT) is never accepted in a URL, where proxies, logs and browser histories keep "
               "it: send it as 'Authorization: Bearer <token>', or put a market-scoped API token "
               "('tokens create NAME --scope market') in ?token=.")
_FULL_IN_URL = ("This API token has full scope, so it is not accepted in a URL, where proxies, logs and browser "
                "histories keep it: send it as 'Authorization: Bearer <token>', or put a market-scoped API "
                "token ('tokens create NAME --scope market') in ?token=.")
_WRONG_LOGIN = "Wrong username or password."
_TOKEN_ID_RE = re.compile(r"[A-Za-z0-9_-]{8}")
_SUB_RE = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind a valid JWT (``via="jwt"``) or API token (``via="api_token"``)."""

    user_id: int
    username: str
    is_admin: bool
    via: str
    scope: str = "full"  # an API token's scope (store.TOKEN_SCOPES); a JWT is always "full"

    def require_admin(self) -> Principal:
        """Return self when an admin; Forbidden otherwise."""
        if not self.is_admin:
            raise Forbidden("This needs an admin.")
        return self


# -- the JWT secret ----------------------------------------------------------------------


def load_or_create_secret(path: Path) -> bytes:
    """The JWT signing key from ``path``, created (32 random bytes, 0600) on first start.

    Created atomically: the bytes go to a temporary file opened with
    ``O_CREAT|O_EXCL`` and mode 0600, which is then hard-linked to ``path``.
    ``link`` fails if ``path`` exists, so two processes starting together agree
    on one key, and nobody can ever read a half-written file.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_secret(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            logger.warning("%s was readable by others (mode %o); tightened to 0600", path, mode)
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read as a JWT secret ({type(exc).__name__}); "
                          "delete it to make a new one (everyone will have to log in again)") from None
    if len(key) < SECRET_BYTES:
        raise ConfigError(f"{path} holds fewer than {SECRET_BYTES} bytes; delete it to make a new one")
    return key


def _create_secret(path: Path) -> None:
    data = (secrets.token_bytes(SECRET_BYTES).hex() + "\n").encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race; its key is the key
    except OSError:
        # A filesystem without hard links (FAT on a USB stick): exclusive create instead.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    else:
        logger.info("created a new JWT secret in %s", path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# -- API tokens --------------------------------------------------------------------------


def hash_token_secret(secret: str) -> str:
    """SHA-256 hex of an API token's secret part: what the store keeps."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_api_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of ``sc_<id>_<secret>``, or None when it is not shaped like one.

    Split by position, not by ``_``: url-safe ids and secrets may contain ``_``.
    """
    head = len(TOKEN_PREFIX) + TOKEN_ID_LENGTH
    if not token.startswith(TOKEN_PREFIX) or len(token) < head + 2 or token[head] != "_":
        return None
    token_id, secret = token[len(TOKEN_PREFIX):head], token[head + 1:]
    if not _TOKEN_ID_RE.fullmatch(token_id):
        return None
    return token_id, secret


def token_id_of(text: str) -> str:
    """The public id from an id or a whole token (``tokens revoke`` accepts either)."""
    parts = split_api_token(text.strip())
    return parts[0] if parts else text.strip()


# -- login limiting ----------------------------------------------------------------------


class LoginLimiter:
    """Counts failed logins per username and per client address, in memory.

    At most ``per_user`` failures per username and ``per_address`` per address
    within ``window`` seconds; beyond that :meth:`begin` raises TooManyRequests
    before the password is looked at. Only failures count: a right password
    never uses up the limit. So that concurrent guesses cannot slip past it,
    attempts in flight hold a place too: an attempt that would take the last
    places left (failures plus attempts in flight reach the limit) waits, up
    to ``wait`` seconds, for the verdicts of those before it, and is then
    refused if they failed. A success clears the username's failures (not
    the address's: one good account must not reset an attacker's address).

    Memory is bounded: each key keeps at most its limit of timestamps, and at
    most ``max_keys`` keys are tracked per kind (the stalest are dropped).
    Thread-safe: one lock (with a condition for the waiting), held for
    dictionary work only.
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 15 * 60,
        max_keys: int = 10_000,
        wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.max_keys = max_keys
        self.wait = wait
        self._clock = clock
        self._lock = threading.Condition(threading.Lock())
        self._users: OrderedDict[str, deque[float]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()
        self._in_flight: dict[tuple[int, str], int] = {}  # (0 user / 1 address, key) -> attempts

    def __repr__(self) -> str:
        return f"<LoginLimiter users={len(self._users)} addresses={len(self._addresses)}>"

    @staticmethod
    def _user_key(username: str) -> str:
        return username.casefold()  # the store's names are case-insensitive

    def _recent(self, table: OrderedDict[str, deque[float]], key: str, now: float) -> deque[float] | None:
        marks = table.get(key)
        if marks is None:
            return None
        while marks and marks[0] <= now - self.window:
            marks.popleft()
        if not marks:
            del table[key]
            return None
        return marks

    def _retry_after(self, marks: deque[float], now: float) -> int:
        return max(1, math.ceil(marks[0] + self.window - now))

    def _mark(self, table: OrderedDict[str, deque[float]], key: str, limit: int, now: float) -> None:
        marks = table.get(key)
        if marks is None:
            if len(table) >= self.max_keys:
                self._prune(table, now)
            marks = table[key] = deque(maxlen=limit)
        marks.append(now)
        table.move_to_end(key)

    def _prune(self, table: OrderedDict[str, deque[float]], now: float) -> None:
        for key in [k for k, marks in table.items() if not marks or marks[-1] <= now - self.window]:
            del table[key]
        while len(table) >= self.max_keys:
            table.popitem(last=False)  # least recently failed

    def _checks(self, username: str, address: str | None) -> list[tuple[int, OrderedDict[str, deque[float]], str, int]]:
        checks = [(0, self._users, self._user_key(username), self.per_user)]
        if address:
            checks.append((1, self._addresses, address, self.per_address))
        return checks

    def begin(self, username: str, address: str | None) -> str | None:
        """Admit one attempt (finish it with :meth:`succeeded` or :meth:`failed`) or raise TooManyRequests.

        Returns the attempt's handle for the verdict methods (None here: an
        attempt in memory is known by its username and address).
        """
        checks = self._checks(username, address)
        deadline = time.monotonic() + self.wait  # real time: it bounds a wait for other threads
        with self._lock:
            while True:
                now = self._clock()
                crowded = False
                for kind, table, key, limit in checks:
                    marks = self._recent(table, key, now)
                    failures = len(marks) if marks is not None else 0
                    if marks is not None and failures >= limit:
                        seconds = self._retry_after(marks, now)
                        raise TooManyRequests(
                            f"Too many failed logins; try again in {seconds} seconds.", retry_after=seconds
                        )
                    crowded = crowded or failures + self._in_flight.get((kind, key), 0) >= limit
                if not crowded:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TooManyRequests("Too many logins for this account at once; try again in 1 second.",
                                          retry_after=1)
                self._lock.wait(left)
            for kind, _, key, _ in checks:
                self._in_flight[(kind, key)] = self._in_flight.get((kind, key), 0) + 1
        return None

    def succeeded(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        """The attempt was right: forget the username's failures."""
        self._finish(username, address, failed=False)

    def failed(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        """The attempt was wrong: count it against the username and the address."""
        self._finish(username, address, failed=True)

    def abandoned(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        """The attempt ended without a verdict (an error): it counts for nothing."""
        self._finish(username, address, failed=None)

    def _finish(self, username: str, address: str | None, *, failed: bool | None) -> None:
        checks = self._checks(username, address)
        with self._lock:
            now = self._clock()
            for kind, table, key, limit in checks:
                left = self._in_flight.get((kind, key), 0) - 1
                if left > 0:
                    self._in_flight[(kind, key)] = left
                else:
                    self._in_flight.pop((kind, key), None)
                if failed:
                    self._mark(table, key, limit, now)
            if failed is False:
                self._users.pop(checks[0][2], None)
            self._lock.notify_all()


class LoginCounter(Protocol):
    """Login-attempt bookkeeping every instance shares: the store (:mod:`stockcache.store.shared`) or Redis."""

    def login_reserve(self, checks: Sequence[LoginCheck], attempt: str, *, now: float, window: float,
                      pending_ttl: float) -> tuple[str, int]: ...

    def login_settle(self, checks: Sequence[LoginCheck], attempt: str, *, outcome: str, now: float) -> None: ...


class SharedLoginLimiter:
    """:class:`LoginLimiter`'s rules and interface, counted where every instance sees them.

    With several instances behind a load balancer, each one's own limiter would
    let an attacker try ``per_user`` passwords on each. Here each attempt holds
    a place in a shared :class:`LoginCounter` before its password is checked
    (one atomic step, so concurrent attempts on different instances cannot
    share the last place), and its verdict is recorded there. An attempt that
    finds the places taken by attempts still in progress waits for their
    verdicts, polling, up to ``wait`` seconds. A place whose instance died
    before the verdict is dropped after ``pending_ttl``.

    If the counter is unreachable (Redis down) the attempt is counted by this
    instance's own ``local`` limiter instead, as budgets fall back; a store
    that is down fails the login anyway (the password cannot be checked).
    Thread-safe. Times are wall-clock (``clock``): instances compare them.
    """

    POLL = 0.1  # seconds between looks while attempts in progress hold the places

    def __init__(
        self,
        counter: LoginCounter,
        *,
        local: LoginLimiter | None = None,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 15 * 60,
        wait: float = 10.0,
        pending_ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counter = counter
        self.local = local or LoginLimiter(per_user=per_user, per_address=per_address, window=window, wait=wait,
                                           clock=clock)
        self.per_user, self.per_address, self.window = per_user, per_address, window
        self.wait, self.pending_ttl = wait, pending_ttl
        self._clock = clock

    def __repr__(self) -> str:
        return f"<SharedLoginLimiter counter={type(self.counter).__name__}>"

    def _checks(self, username: str, address: str | None) -> list[LoginCheck]:
        checks = [LoginCheck("user", username.casefold(), self.per_user)]
        if address:
            checks.append(LoginCheck("address", address, self.per_address))
        return checks

    def begin(self, username: str, address: str | None) -> str | None:
        """Hold a place for one attempt, or raise TooManyRequests; the attempt's handle for the verdict."""
        checks = self._checks(username, address)
        attempt = secrets.token_hex(8)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                verdict, seconds = self.counter.login_reserve(checks, attempt, now=self._clock(), window=self.window,
                                                              pending_ttl=self.pending_ttl)
            except CacheError:
                logger.warning("login limits: the shared counter is unreachable; counting on this instance only")
                self.local.begin(username, address)
                return None
            if verdict == "ok":
                return attempt
            if verdict == "refused":
                raise TooManyRequests(f"Too many failed logins; try again in {seconds} seconds.", retry_after=seconds)
            if time.monotonic() >= deadline:
                raise TooManyRequests("Too many logins for this account at once; try again in 1 second.",
                                      retry_after=1)
            # Another process holds the places: nothing here can be waited on, so look again shortly.
            time.sleep(self.POLL)

    def _settle(self, username: str, address: str | None, attempt: str | None, outcome: str) -> None:
        if attempt is None:  # counted locally (the shared counter was down at begin)
            {"failed": self.local.failed, "succeeded": self.local.succeeded,
             "abandoned": self.local.abandoned}[outcome](username, address)
            return
        try:
            self.counter.login_settle(self._checks(username, address), attempt, outcome=outcome, now=self._clock())
        except StockcacheError as exc:
            # The place expires after pending_ttl; a lost failure is one guess more, never a lock-out.
            logger.warning("login limits: could not record a login's verdict: %s", exc.message)

    def succeeded(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        self._settle(username, address, attempt, "succeeded")

    def failed(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        self._settle(username, address, attempt, "failed")

    def abandoned(self, username: str, address: str | None, *, attempt: str | None = None) -> None:
        self._settle(username, address, attempt, "abandoned")


# -- the authenticator -------------------------------------------------------------------


class Authenticator:
    """Logs users in, issues JWTs and API tokens, and turns a bearer value into a Principal.

    Thread-safe: the store is, the limiter is, verified bearer values are kept
    per thread, and the rest is immutable. At most ``max_concurrent_hashes``
    argon2 computations run at once (each takes 64 MiB with the default
    parameters), so a burst of logins cannot exhaust a small box's memory, and
    at most ``max_logins`` logins wait for them (:func:`open_auth` leaves
    ``RESERVED_THREADS`` of the server's threads to other routes).
    """

    def __init__(
        self,
        store: Store,
        *,
        secret: bytes,
        jwt_ttl: int,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        limiter: LoginLimiter | SharedLoginLimiter | None = None,
        max_concurrent_hashes: int = 2,
        max_logins: int = 6,
    ) -> None:
        if len(secret) < SECRET_BYTES:
            raise ConfigError(f"the JWT secret must be at least {SECRET_BYTES} bytes")
        self.store = store
        self._secret = secret
        self.jwt_ttl = int(jwt_ttl)
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self.limiter = limiter or LoginLimiter(clock=clock)
        self._hash_slots = threading.BoundedSemaphore(max_concurrent_hashes)
        self.max_logins = max(1, max_logins)
        self._login_slots = threading.BoundedSemaphore(self.max_logins)
        self._dummy_hash: str | None = None
        # sha256(bearer) -> (principal, store generation, reuse until, API token id or None, valid until).
        # One dict for every thread: get and set are atomic, and a race only costs a re-verification.
        self._verified: dict[bytes, tuple[Principal, int, float, str | None, float]] = {}

    def __repr__(self) -> str:
        return f"<Authenticator store={self.store!r} jwt_ttl={self.jwt_ttl}>"

    # -- passwords ---------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        """An argon2id hash of a new password."""
        with self._hash_slots:
            return self._hasher.hash(password)

    def _verify(self, password_hash: str, password: str) -> bool:
        with self._hash_slots:
            try:
                return bool(self._hasher.verify(password_hash, password))
            except (VerificationError, InvalidHashError):
                return False

    def _dummy(self) -> str:
        # Made lazily (not at start-up, which must stay fast) with the same
        # parameters as real hashes, so a miss costs what a wrong password costs.
        if self._dummy_hash is None:
            self._dummy_hash = self.hash_password(secrets.token_urlsafe(16))
        return self._dummy_hash

    def login(self, username: str, password: str, address: str | None) -> dict[str, Any]:
        """A JWT for the right password; Unauthorized (same message for any failure) or TooManyRequests."""
        if not self._login_slots.acquire(blocking=False):
            raise TooManyRequests("Too many logins at once; try again in 1 second.", retry_after=1)
        try:
            attempt = self.limiter.begin(username, address)
            try:
                user = self._check_password(username, password)
            except BaseException:
                self.limiter.abandoned(username, address, attempt=attempt)  # no verdict: it counts for nothing
                raise
            if user is None:
                self.limiter.failed(username, address, attempt=attempt)
                logger.info("login failed for %r from %s", username[:64], address or "?")
                raise Unauthorized(_WRONG_LOGIN)
            self.limiter.succeeded(username, address, attempt=attempt)
            logger.info("login of %r from %s", user.username, address or "?")
            return self._access(user)
        finally:
            self._login_slots.release()

    def change_password(self, principal: Principal, current: str, new: str, address: str | None) -> dict[str, Any]:
        """A user's own new password (``PUT /api/me/password``); a fresh JWT, since the caller's is now dead.

        The current password is checked exactly as a login checks it, through
        the same limits (a stolen session cannot guess it faster than a login
        could). Every JWT the user had is refused from now on. API tokens stay:
        they are revoked one by one (``tokens revoke``).
        """
        new = validate.password(new, field="new")
        if not self._login_slots.acquire(blocking=False):
            raise TooManyRequests("Too many logins at once; try again in 1 second.", retry_after=1)
        try:
            name = principal.username
            attempt = self.limiter.begin(name, address)
            try:
                user = self._check_password(name, current)
            except BaseException:
                self.limiter.abandoned(name, address, attempt=attempt)
                raise
            if user is None or user.id != principal.user_id:
                self.limiter.failed(name, address, attempt=attempt)
                logger.info("password change for %r from %s refused: wrong current password", name, address or "?")
                raise Forbidden("The current password is wrong.", field="current")
            self.limiter.succeeded(name, address, attempt=attempt)
        finally:
            self._login_slots.release()
        changed = self.store.change_password(user.id, self.hash_password(new))
        if changed is None:  # removed meanwhile
            raise Unauthorized(_INVALID)
        logger.info("password of %r changed from %s", changed.username, address or "?")
        return self._access(changed)

    def _check_password(self, username: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None, in the time a wrong password takes."""
        dummy = self._dummy()  # before the lookup, so even the first login's timing is the same for all
        found = self.store.get_user_by_name(username)
        if found is None:
            self._verify(dummy, password)  # spend the same time as a wrong password
            return None
        user, password_hash = found
        if not self._verify(password_hash, password):
            return None
        if self._needs_rehash(password_hash):
            try:
                self.store.set_password(user.id, self.hash_password(password))
                logger.info("upgraded the password hash of %r", user.username)
            except StorageFull:  # an upgrade can wait; the login need not
                logger.warning("could not upgrade the password hash of %r: the disk is full", user.username)
        return user

    def _needs_rehash(self, password_hash: str) -> bool:
        try:
            return bool(self._hasher.check_needs_rehash(password_hash))
        except (InvalidHashError, ValueError):
            return True

    # -- JWT -----------------------------------------------------------------------------

    def issue_jwt(self, user_id: int, username: str, is_admin: bool, *, password_version: int = 0) -> str:
        """An HS256 access token valid for ``jwt_ttl`` seconds from the injected clock's now.

        ``pwv`` is the user's password version: a new password moves it on, and
        every token issued under an older one is refused from then on (by this
        process at once, by others within the store watcher's interval).
        """
        now = int(self._clock())
        claims = {
            "sub": str(user_id), "name": username, "adm": bool(is_admin), "pwv": int(password_version),
            "iat": now, "exp": now + self.jwt_ttl, "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def _access(self, user: User) -> dict[str, Any]:
        """The login answer for ``user``: a JWT under their current password version."""
        token = self.issue_jwt(user.id, user.username, user.is_admin, password_version=user.password_version)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.jwt_ttl}

    def _principal_from_jwt(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's expiry time."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[JWT_ALGORITHM],
                # exp and iat are checked below against the injected clock, not the wall clock.
                options={"require": ["exp", "iat", "sub"], "verify_exp": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError, binascii.Error):
            raise Unauthorized(_INVALID) from None
        now = self._clock()
        exp, iat, sub = claims.get("exp"), claims.get("iat"), claims.get("sub")
        if (
            not _is_number(exp) or not _is_number(iat) or now >= exp or iat > now + 60
            or not isinstance(sub, str) or not _SUB_RE.fullmatch(sub) or int(sub) > MAX_USER_ID
        ):
            raise Unauthorized(_INVALID)
        user = self.store.get_user(int(sub))
        # The name check is a second guard: ids are never reused, names may be. A token without
        # pwv predates password versions: it was issued under version 0.
        pwv = claims.get("pwv", 0)
        if (user is None or claims.get("name") != user.username
                or not isinstance(pwv, int) or isinstance(pwv, bool) or pwv != user.password_version):
            raise Unauthorized(_INVALID)
        return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin, via="jwt"), float(exp)

    # -- API tokens ----------------------------------------------------------------------

    def create_api_token(self, username: str, label: str = "", *, scope: str = "full") -> tuple[str, ApiToken]:
        """A new ``sc_...`` token for ``username`` (shown once; only its hash is kept). NotFound for no user.

        ``scope`` is one of ``store.TOKEN_SCOPES``: ``market`` reads market data only.
        """
        label = validate.label(label)
        found = self.store.get_user_by_name(username)
        if found is None:
            raise NotFound("No such user.")
        user = found[0]
        for _ in range(5):  # 48 random bits per id: a clash is rare, and then we draw again
            token_id = secrets.token_urlsafe(6)
            secret = secrets.token_urlsafe(SECRET_BYTES)
            try:
                record = self.store.create_api_token(user.id, token_id, hash_token_secret(secret), label,
                                                     scope=scope)
            except Conflict:
                continue
            logger.info("created API token %s (%s scope) for %r", token_id, record.scope, user.username)
            return f"{TOKEN_PREFIX}{token_id}_{secret}", record
        raise RuntimeError("could not draw a free token id")  # pragma: no cover

    def revoke_api_token(self, token_id: str) -> bool:
        """Revoke by id or whole token; False when unknown or already revoked."""
        token_id = token_id_of(token_id)
        revoked = self.store.revoke_api_token(token_id)
        if revoked:
            logger.info("revoked API token %s", token_id)
        return revoked

    def _principal_from_api_token(self, token: str) -> Principal:
        parts = split_api_token(token)
        if parts is None:
            raise Unauthorized(_INVALID)
        token_id, secret = parts
        found = self.store.find_api_token(token_id)
        if found is None:
            raise Unauthorized(_INVALID)
        record, token_hash, owner = found
        if not hmac.compare_digest(token_hash, hash_token_secret(secret)) or record.revoked:
            raise Unauthorized(_INVALID)
        self.store.note_token_use(token_id)
        return Principal(user_id=owner.id, username=owner.username, is_admin=owner.is_admin, via="api_token",
                         scope=record.scope)

    # -- bearer values -------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """The Principal for an ``Authorization`` header value ``Bearer <JWT or sc_ token>``.

        Every failure is Unauthorized with one generic message that never echoes the value.
        """
        token = _bearer(authorization)
        if token is None:
            raise Unauthorized("Authentication required: send Authorization: Bearer <token>.")
        return self.authenticate_token(token)

    def authenticate_query_token(self, token: str) -> Principal:
        """The Principal for a token sent in a URL (``?token=``): a market-scoped API token only.

        A URL ends up in proxy logs, browser histories and spreadsheets, so only
        a token that can do no more than read market data may travel in one. A
        JWT is refused unverified; a full-scope API token after verifying, so
        the message can say what to do instead (it never echoes the value).
        """
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise Unauthorized(_JWT_IN_URL)
        principal = self.authenticate_token(token)
        if principal.scope != MARKET_SCOPE:
            raise Unauthorized(_FULL_IN_URL)
        return principal

    def authenticate_token(self, token: str) -> Principal:
        """The Principal for a bare token (a JWT or an API token), e.g. from a query parameter.

        Verifying costs a store query (a JWT also an HMAC and a JSON decode), a
        large share of serving a cached quote, and the request path must do no
        I/O. So verified bearer values are remembered, by their SHA-256, with
        the store's :meth:`~stockcache.store.Store.generation` at the time: an
        answer is reused only while the generation is unchanged. Writes through
        this process (a revocation through the API) change it at once; other
        processes' commits (the command line) within the store watcher's
        interval (``store.WATCH_INTERVAL``, 0.25 s). An answer is reused for at
        most ``VERIFIED_LIFETIME`` seconds and never past a JWT's expiry.
        Failures are never remembered.

        While the store cannot be reached (a shared database down), a value
        verified before is still accepted, up to its JWT's expiry, with the
        same generation: nothing can have been revoked through a store nobody
        can write to, and market data keeps serving its known clients. A value
        never verified gets the store's 503 ``store_unavailable``.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized(_INVALID)
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        version = self.store.generation()  # read before verifying: a write after it voids the entry
        now = self._clock()
        hit = self._verified.get(key)
        remembered = self._reuse(hit, version, now)
        if remembered is not None:
            return remembered
        return self._verify_token(token, key, version, now, hit)

    def known(self, authorization: str | None) -> Principal | None:
        """:meth:`authenticate` answered from the verified values alone: the Principal, or None
        where that would take a store query or fail. Never raises, never does I/O.

        For work on the server's I/O thread (``web.server``), which must not wait on
        the store; a None sends the request to a worker thread and the full check.
        """
        token = _bearer(authorization)
        if token is None or len(token) > MAX_TOKEN_LENGTH:
            return None
        hit = self._verified.get(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())
        return self._reuse(hit, self.store.generation(), self._clock())

    def _reuse(self, hit: Any, version: int, now: float) -> Principal | None:
        """A verified value's Principal while the store's generation is ``version`` and it has not
        expired (noting the API token's use); else None."""
        if hit is None or hit[1] != version or not now < hit[2]:
            return None
        if hit[3] is not None:
            self.store.note_token_use(hit[3])
        return hit[0]

    def _verify_token(self, token: str, key: bytes, version: int, now: float, hit: Any) -> Principal:
        """The store's (and for a JWT the signature's) answer for a token not verified since ``version``."""
        token_id: str | None = None
        try:
            if token.startswith(TOKEN_PREFIX):
                principal, until = self._principal_from_api_token(token), math.inf
                token_id = split_api_token(token)[0]  # type: ignore[index]  # valid: it just verified
            else:
                principal, until = self._principal_from_jwt(token)
        except StoreUnavailable:
            if hit is not None and hit[1] == version and now < hit[4]:
                return hit[0]
            raise
        verified = self._verified
        if len(verified) >= VERIFIED_MAX:
            verified.clear()
        verified[key] = (principal, version, min(now + VERIFIED_LIFETIME, until), token_id, until)
        return principal


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None for anything else."""
    if not authorization or not isinstance(authorization, str):
        return None
    scheme, _, value = authorization.strip().partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hash_password(password: str, *, hasher: PasswordHasher | None = None) -> str:
    """An argon2id hash, for callers without an Authenticator (the command line)."""
    return (hasher or PasswordHasher()).hash(password)


JWT_SECRET_NAME = "jwt"


def load_or_create_shared_secret(store: Store) -> bytes:
    """The JWT signing key of a shared store, generated by the first instance that asks (32 random bytes).

    So a JWT issued by one instance is accepted by all of them. Never logged.
    """
    text = store.secret(JWT_SECRET_NAME, lambda: secrets.token_bytes(SECRET_BYTES).hex())
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("the store's JWT secret is not hex; delete its row in 'secrets' to make a new one") from None
    if len(key) < SECRET_BYTES:
        raise ConfigError(f"the store's JWT secret holds fewer than {SECRET_BYTES} bytes")
    return key


def open_auth(settings: Settings, store: Store, *, clock: Callable[[], float] = time.time,
              login_counter: LoginCounter | None = None, hasher: PasswordHasher | None = None) -> Authenticator:
    """An Authenticator over ``store``.

    The JWT key is the shared store's when the store is shared, else
    ``jwt.secret`` in ``settings.data_dir``. With a ``login_counter`` (Redis,
    or the shared store) login limits count every instance's attempts.
    """
    if store.shared:
        secret = load_or_create_shared_secret(store)
    else:
        secret = load_or_create_secret(Path(settings.data_dir) / SECRET_FILENAME)
    limiter = SharedLoginLimiter(login_counter, clock=clock) if login_counter is not None else None
    return Authenticator(store, secret=secret, jwt_ttl=settings.jwt_ttl, clock=clock, hasher=hasher,
                         limiter=limiter, max_logins=settings.threads - RESERVED_THREADS)
