"""Rows the store hands out: frozen dataclasses, never carrying a password or token hash.

Hashes leave the store only as a separate element of a tuple
(``Store.get_user_by_name``, ``Store.find_api_token``), so printing or
logging one of these rows can never leak one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOKEN_SCOPES = ("full", "market")  # market: market data only (issue 18)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    is_admin: bool
    created_at: str  # ISO 8601 UTC
    password_version: int = 0  # moves on with each new password; a JWT issued under an older one is dead


@dataclass(frozen=True)
class ApiToken:
    """A long-lived API token's public part: its short id, owner and history."""

    id: str
    user_id: int
    label: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    scope: str = "full"  # one of TOKEN_SCOPES

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Position:
    id: int
    symbol: str
    shares: float
    cost_basis: float  # price paid per share
    isin: str | None = None  # the ISIN it was added by (its symbol is that ISIN's preferred listing)

    def to_dict(self) -> dict[str, Any]:
        """The contract's shape: ``{"id", "symbol", "shares", "cost_basis", "isin"}``."""
        return {"id": self.id, "symbol": self.symbol, "shares": self.shares, "cost_basis": self.cost_basis,
                "isin": self.isin}


@dataclass(frozen=True)
class WatchItem:
    symbol: str
    added_at: str  # ISO 8601 UTC
    isin: str | None = None  # the ISIN it was added by

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "added_at": self.added_at, "isin": self.isin}


ALERT_CONDITIONS = ("above", "below", "change_percent_above", "change_percent_below")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class Alert:
    """A price alert: it fires once when its condition becomes true, and re-arms once it is false again."""

    id: int
    user_id: int
    symbol: str
    condition: str  # one of ALERT_CONDITIONS
    value: float
    channel: str  # the name of an operator-configured channel (STOCKCACHE_NOTIFY_<NAME>), never a URL
    note: str
    armed: bool
    last_fired_at: str | None  # ISO 8601 UTC
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """The contract's shape (issue 18): the alert without its owner and creation time."""
        return {"id": self.id, "symbol": self.symbol, "condition": self.condition, "value": self.value,
                "channel": self.channel, "note": self.note, "armed": self.armed,
                "last_fired_at": self.last_fired_at}


@dataclass(frozen=True)
class AlertDelivery:
    """One firing of an alert and what became of its notification (``status`` one of DELIVERY_STATUSES)."""

    id: int
    alert_id: int | None  # None once the alert was deleted: the history stays
    user_id: int
    symbol: str
    condition: str
    value: float
    channel: str
    price: float | None  # the figure that crossed: the price, or the change in percent
    fired_at: str
    status: str
    attempts: int
    error: str | None
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "alert_id": self.alert_id, "symbol": self.symbol, "condition": self.condition,
                "value": self.value, "channel": self.channel, "observed": self.price, "fired_at": self.fired_at,
                "status": self.status, "attempts": self.attempts, "error": self.error,
                "finished_at": self.finished_at}
