"""Portfolios and watchlists: what each user holds, and what the background refresher keeps warm.

Isolation between users: every query about positions or watch items of a
user is scoped by that user's id, so another user's id behaves exactly like
a missing one.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import Conflict, InvalidRequest, NotFound, StockcacheError
from .base import HOLDINGS, Row, StoreBase, Violation
from .rows import Position, WatchItem

_BAD_NUMBERS = "shares must be greater than 0 and cost_basis at least 0."


def position_from(row: Row) -> Position:
    # float(): UPDATE ... RETURNING hands back whole REAL values as ints in SQLite.
    return Position(id=int(row["id"]), symbol=row["symbol"], shares=float(row["shares"]),
                    cost_basis=float(row["cost_basis"]), isin=row["isin"])


def _position_error(exc: Violation) -> StockcacheError:
    if exc.kind == "foreign_key":
        return NotFound("No such user.")
    # CHECK / NOT NULL: a value validate.position_input would have refused (NaN is stored as NULL).
    return InvalidRequest(_BAD_NUMBERS)


def _finite(*values: float | None) -> None:
    """One rule for both engines, whose constraints differ on NaN (SQLite stores NULL, PostgreSQL sorts it high)."""
    if any(v is not None and not math.isfinite(v) for v in values):
        raise InvalidRequest(_BAD_NUMBERS)


class HoldingQueries(StoreBase):
    """Positions and watch items; a commit that may add a held symbol tells the holdings listeners."""

    def list_positions(self, user_id: int) -> list[Position]:
        rows = self._rows("SELECT id, symbol, shares, cost_basis, isin FROM positions WHERE user_id = ? ORDER BY id",
                          (user_id,))
        return [position_from(r) for r in rows]

    def add_position(self, user_id: int, symbol: str, shares: float, cost_basis: float, *,
                     isin: str | None = None) -> Position:
        """A new position (values already cleaned by :func:`validate.position_input`); ``isin`` if added by one."""
        _finite(shares, cost_basis)
        now = self._now()
        try:
            with self._tx("add position") as tx:
                rows = tx.rows(
                    """INSERT INTO positions (user_id, symbol, shares, cost_basis, created_at, updated_at, isin)
                       VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (user_id, symbol, float(shares), float(cost_basis), now, now, isin),
                )
                self._moved(tx, HOLDINGS)
        except Violation as exc:
            raise _position_error(exc) from exc
        self._bump()
        self._tell_holdings_listeners()
        return Position(id=int(rows[0]["id"]), symbol=symbol, shares=float(shares), cost_basis=float(cost_basis),
                        isin=isin)

    def update_position(
        self,
        user_id: int,
        position_id: int,
        *,
        symbol: str | None = None,
        shares: float | None = None,
        cost_basis: float | None = None,
    ) -> Position | None:
        """Change the given fields of the user's position; None when the user has no such position."""
        _finite(shares, cost_basis)
        changes: dict[str, Any] = {}
        if symbol is not None:
            changes["symbol"] = symbol
            changes["isin"] = None  # another symbol is no longer the listing the ISIN was resolved to
        if shares is not None:
            changes["shares"] = float(shares)
        if cost_basis is not None:
            changes["cost_basis"] = float(cost_basis)
        assignments = ", ".join(f"{name} = ?" for name in changes)  # names from the fixed set above
        sets = (assignments + ", " if assignments else "") + "updated_at = ?"
        try:
            with self._tx("update position") as tx:
                rows = tx.rows(
                    f"""UPDATE positions SET {sets} WHERE id = ? AND user_id = ?
                        RETURNING id, symbol, shares, cost_basis, isin""",
                    (*changes.values(), self._now(), position_id, user_id),
                )
                if rows and symbol is not None:
                    self._moved(tx, HOLDINGS)
        except Violation as exc:
            raise _position_error(exc) from exc
        self._bump()
        if rows:
            self._tell_holdings_listeners()
        return position_from(rows[0]) if rows else None

    def delete_position(self, user_id: int, position_id: int) -> bool:
        with self._tx("delete position") as tx:
            deleted = tx.count("DELETE FROM positions WHERE id = ? AND user_id = ?", (position_id, user_id)) > 0
        self._bump()
        return deleted

    def list_watchlist(self, user_id: int) -> list[WatchItem]:
        rows = self._rows(
            {"sqlite": "SELECT symbol, added_at, isin FROM watchlist WHERE user_id = ? ORDER BY added_at, rowid",
             "postgresql": "SELECT symbol, added_at, isin FROM watchlist WHERE user_id = ? ORDER BY added_at, seq"},
            (user_id,),
        )
        return [WatchItem(symbol=r["symbol"], added_at=r["added_at"], isin=r["isin"]) for r in rows]

    def add_watch(self, user_id: int, symbol: str, *, isin: str | None = None) -> WatchItem:
        """Watch a symbol (``isin`` if added by one); Conflict when the user already watches it."""
        now = self._now()
        try:
            with self._tx("add watch") as tx:
                tx.count("INSERT INTO watchlist (user_id, symbol, added_at, isin) VALUES (?, ?, ?, ?)",
                         (user_id, symbol, now, isin))
                self._moved(tx, HOLDINGS)
        except Violation as exc:
            if exc.kind == "foreign_key":
                raise NotFound("No such user.") from exc
            raise Conflict(f"{symbol} is already on the watchlist.", symbol=symbol) from exc
        self._bump()
        self._tell_holdings_listeners()
        return WatchItem(symbol=symbol, added_at=now, isin=isin)

    def remove_watch(self, user_id: int, symbol: str) -> bool:
        with self._tx("remove watch") as tx:
            removed = tx.count("DELETE FROM watchlist WHERE user_id = ? AND symbol = ?", (user_id, symbol)) > 0
        self._bump()
        return removed

    def held_symbols(self) -> set[str]:
        """Every symbol in any portfolio or watchlist: what the background refresher keeps warm."""
        rows = self._rows("SELECT symbol FROM positions UNION SELECT symbol FROM watchlist")
        return {r["symbol"] for r in rows}

    def held_symbol_counts(self) -> dict[str, int]:
        """How many users hold each symbol (portfolio or watchlist, a user counted once).

        The background refresher's priority: when its budget share cannot keep
        every held symbol fresh, the most-held go first.
        """
        rows = self._rows(
            """SELECT symbol, COUNT(DISTINCT user_id) AS holders
               FROM (SELECT user_id, symbol FROM positions UNION ALL SELECT user_id, symbol FROM watchlist) AS held
               GROUP BY symbol"""
        )
        return {r["symbol"]: int(r["holders"]) for r in rows}
