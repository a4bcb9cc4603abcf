"""Users: names (case-insensitive), password hashes and the password version JWTs are checked against."""

from __future__ import annotations

from ..errors import Conflict
from . import validate
from .base import AUTH, Row, StoreBase, Violation
from .rows import User

_COLUMNS = "id, username, is_admin, created_at, password_version"


def user_from(row: Row) -> User:
    return User(id=int(row["id"]), username=row["username"], is_admin=bool(row["is_admin"]),
                created_at=row["created_at"], password_version=int(row["password_version"]))


class UserQueries(StoreBase):
    """Users in the store's ``users`` table (its tokens, positions and watch items go with it)."""

    def create_user(self, username: str, password_hash: str, *, is_admin: bool = False) -> User:
        """A new user; Conflict when the name is taken (names compare case-insensitively)."""
        username = validate.username(username)
        now = self._now()
        try:
            with self._tx("create user") as tx:
                rows = tx.rows(
                    "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)"
                    " RETURNING id",
                    (username, password_hash, int(bool(is_admin)), now),
                )
        except Violation as exc:
            raise Conflict(f"A user named {username!r} already exists.") from exc
        self._bump()
        return User(id=int(rows[0]["id"]), username=username, is_admin=bool(is_admin), created_at=now)

    def get_user(self, user_id: int) -> User | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return user_from(rows[0]) if rows else None

    def get_user_by_name(self, name: str) -> tuple[User, str] | None:
        """The user and their password hash (for verification only)."""
        rows = self._rows(f"SELECT {_COLUMNS}, password_hash FROM users WHERE lower(username) = lower(?)", (name,))
        return (user_from(rows[0]), rows[0]["password_hash"]) if rows else None

    def list_users(self) -> list[User]:
        return [user_from(r) for r in self._rows(f"SELECT {_COLUMNS} FROM users ORDER BY id")]

    def count_users(self) -> int:
        rows = self._rows("SELECT count(*) AS n FROM users")
        return int(rows[0]["n"]) if rows else 0

    def delete_user(self, username: str) -> bool:
        """Remove a user with their tokens, positions and watch items (ON DELETE CASCADE)."""
        with self._tx("delete user") as tx:
            removed = tx.count("DELETE FROM users WHERE lower(username) = lower(?)", (username,)) > 0
            if removed:
                self._moved(tx, AUTH)
        self._bump()
        return removed

    def set_password(self, user_id: int, password_hash: str) -> bool:
        """Replace a user's hash with one of the same password (a rehash with stronger parameters).

        Sessions stay valid; :meth:`change_password` is for a new password.
        """
        with self._tx("rehash password") as tx:
            return tx.count("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)) > 0

    def base_currency(self, user_id: int) -> str | None:
        """The user's base currency for portfolio totals, or None for the server's default."""
        rows = self._rows("SELECT base_currency FROM users WHERE id = ?", (user_id,))
        return rows[0]["base_currency"] if rows else None

    def set_base_currency(self, user_id: int, code: str | None) -> bool:
        """Set (or with None, clear) the user's base currency; False when there is no such user."""
        with self._tx("set base currency") as tx:
            return tx.count("UPDATE users SET base_currency = ? WHERE id = ?", (code, user_id)) > 0

    def change_password(self, user_id: int, password_hash: str) -> User | None:
        """A new password: the hash replaced and the password version moved on, so every JWT issued before is dead.

        The user as it is now, or None when there is no such user.
        """
        with self._tx("change password") as tx:
            rows = tx.rows(
                "UPDATE users SET password_hash = ?, password_version = password_version + 1 WHERE id = ?"
                f" RETURNING {_COLUMNS}",
                (password_hash, user_id),
            )
            if rows:
                self._moved(tx, AUTH)
        self._bump()
        return user_from(rows[0]) if rows else None
