"""Long-lived API tokens: only a hash of the secret is kept, with the token's scope and history."""

from __future__ import annotations

from ..errors import Conflict, InvalidRequest, NotFound
from .base import AUTH, Row, StoreBase, Violation, iso_utc
from .rows import TOKEN_SCOPES, ApiToken, User


def token_from(row: Row) -> ApiToken:
    return ApiToken(
        id=row["id"], user_id=int(row["user_id"]), label=row["label"], created_at=row["created_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"], scope=row["scope"],
    )


_TOKEN_COLUMNS = "t.id, t.user_id, t.label, t.created_at, t.last_used_at, t.revoked_at, t.scope"


class TokenQueries(StoreBase):
    """API tokens in ``api_tokens``; every query about a user's tokens is scoped by that user's id."""

    def create_api_token(self, user_id: int, token_id: str, token_hash: str, label: str, *,
                         scope: str = "full") -> ApiToken:
        """Record a token's hash; Conflict if the id is taken (the caller draws another), NotFound for no user."""
        if scope not in TOKEN_SCOPES:
            raise InvalidRequest(f"A token's scope is one of: {', '.join(TOKEN_SCOPES)}.", field="scope")
        now = self._now()
        try:
            with self._tx("create token") as tx:
                tx.count(
                    "INSERT INTO api_tokens (id, user_id, token_hash, label, created_at, scope)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (token_id, user_id, token_hash, label, now, scope),
                )
        except Violation as exc:
            if exc.kind == "foreign_key":
                raise NotFound("No such user.") from exc
            raise Conflict("That token id is taken.") from exc
        self._bump()
        return ApiToken(id=token_id, user_id=user_id, label=label, created_at=now, last_used_at=None,
                        revoked_at=None, scope=scope)

    def find_api_token(self, token_id: str) -> tuple[ApiToken, str, User] | None:
        """The token, its hash and its owner, revoked or not; None when unknown."""
        rows = self._rows(
            f"""SELECT {_TOKEN_COLUMNS}, t.token_hash, u.username, u.is_admin, u.created_at AS user_created_at,
                       u.password_version
                FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?""",
            (token_id,),
        )
        if not rows:
            return None
        row = rows[0]
        owner = User(id=int(row["user_id"]), username=row["username"], is_admin=bool(row["is_admin"]),
                     created_at=row["user_created_at"], password_version=int(row["password_version"]))
        return token_from(row), row["token_hash"], owner

    def revoke_api_token(self, token_id: str) -> bool:
        """True when a live token was revoked now; False when unknown or already revoked."""
        with self._tx("revoke token") as tx:
            revoked = tx.count(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (self._now(), token_id)
            ) > 0
            if revoked:
                self._moved(tx, AUTH)
        self._bump()
        return revoked

    def touch_api_token(self, token_id: str, *, min_interval: float = 60.0) -> bool:
        """Set ``last_used_at`` to now unless it was set within ``min_interval`` seconds.

        The condition is in SQL so concurrent requests with one token write at most once.
        """
        now = self._clock()
        with self._tx("touch token") as tx:
            return tx.count(
                """UPDATE api_tokens SET last_used_at = ?
                   WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)""",
                (iso_utc(now), token_id, iso_utc(now - min_interval)),
            ) > 0

    def list_api_tokens(self, user_id: int) -> list[ApiToken]:
        rows = self._rows(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = ? ORDER BY t.created_at, t.id", (user_id,))
        return [token_from(r) for r in rows]
