"""Price alerts and their delivery history (issue 18), shared by every instance on the store.

The alert's ``armed`` flag is its state: firing clears it and re-arming sets
it, each a conditional UPDATE, so of two instances (or a restart) seeing the
same crossing exactly one fires it. Firing writes the pending delivery in the
same transaction. Every query about a user's alerts is scoped by that user's
id; :meth:`AlertQueries.alerts_for_symbol` (all users) is for the evaluator.
"""

from __future__ import annotations

import math

from ..errors import InvalidRequest, NotFound
from .base import HOLDINGS, Row, StoreBase, Violation, iso_utc
from .rows import ALERT_CONDITIONS, DELIVERY_STATUSES, Alert, AlertDelivery

HISTORY_KEPT = 200  # deliveries kept per user; older ones are dropped as new ones are written

_ALERT_COLUMNS = "id, user_id, symbol, condition, value, channel, note, armed, last_fired_at, created_at"
_DELIVERY_COLUMNS = ("id, alert_id, user_id, symbol, condition, value, channel, price, fired_at, status, attempts,"
                     " error, finished_at")


def alert_from(row: Row) -> Alert:
    return Alert(id=int(row["id"]), user_id=int(row["user_id"]), symbol=row["symbol"], condition=row["condition"],
                 value=float(row["value"]), channel=row["channel"], note=row["note"], armed=bool(row["armed"]),
                 last_fired_at=row["last_fired_at"], created_at=row["created_at"])


def delivery_from(row: Row) -> AlertDelivery:
    return AlertDelivery(
        id=int(row["id"]), alert_id=None if row["alert_id"] is None else int(row["alert_id"]),
        user_id=int(row["user_id"]), symbol=row["symbol"], condition=row["condition"], value=float(row["value"]),
        channel=row["channel"], price=None if row["price"] is None else float(row["price"]),
        fired_at=row["fired_at"], status=row["status"], attempts=int(row["attempts"]), error=row["error"],
        finished_at=row["finished_at"])


class AlertQueries(StoreBase):
    """Alerts in ``alerts``, deliveries in ``alert_deliveries``; a new alert tells the holdings listeners."""

    def list_alerts(self, user_id: int) -> list[Alert]:
        rows = self._rows(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE user_id = ? ORDER BY id", (user_id,))
        return [alert_from(r) for r in rows]

    def add_alert(self, user_id: int, symbol: str, condition: str, value: float, channel: str,
                  note: str = "") -> Alert:
        """A new armed alert (values already cleaned by :func:`validate.alert_input`)."""
        if condition not in ALERT_CONDITIONS:
            raise InvalidRequest(f"condition is one of: {', '.join(ALERT_CONDITIONS)}.", field="condition")
        if not math.isfinite(value):
            raise InvalidRequest("value must be a finite number.", field="value")
        now = self._now()
        try:
            with self._tx("add alert") as tx:
                rows = tx.rows(
                    """INSERT INTO alerts (user_id, symbol, condition, value, channel, note, armed, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, 1, ?) RETURNING id""",
                    (user_id, symbol, condition, float(value), channel, note, now),
                )
                self._moved(tx, HOLDINGS)  # a new symbol for the refresher to keep fresh
        except Violation as exc:
            if exc.kind == "foreign_key":
                raise NotFound("No such user.") from exc
            raise InvalidRequest("That alert cannot be stored.") from exc
        self._tell_holdings_listeners()
        return Alert(id=int(rows[0]["id"]), user_id=user_id, symbol=symbol, condition=condition,
                     value=float(value), channel=channel, note=note, armed=True, last_fired_at=None, created_at=now)

    def delete_alert(self, user_id: int, alert_id: int) -> bool:
        with self._tx("delete alert") as tx:
            return tx.count("DELETE FROM alerts WHERE id = ? AND user_id = ?", (alert_id, user_id)) > 0

    def alerts_for_symbol(self, symbol: str) -> list[Alert]:
        """Every user's alerts on ``symbol``: what a fresh quote of it is checked against."""
        rows = self._rows(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE symbol = ? ORDER BY id", (symbol,))
        return [alert_from(r) for r in rows]

    def alert_symbol_counts(self) -> dict[str, int]:
        """How many users have an alert on each symbol: kept fresh by the refresher like held symbols."""
        rows = self._rows("SELECT symbol, COUNT(DISTINCT user_id) AS users FROM alerts GROUP BY symbol")
        return {r["symbol"]: int(r["users"]) for r in rows}

    def fire_alert(self, alert_id: int, *, observed: float | None, at: float) -> AlertDelivery | None:
        """Disarm an armed alert and record its pending delivery, in one transaction.

        None when the alert is gone or already fired (by this process before a
        restart, or by another instance): the caller must not notify then.
        """
        fired_at = iso_utc(at)
        with self._tx("fire alert") as tx:
            rows = tx.rows(
                """UPDATE alerts SET armed = 0, last_fired_at = ? WHERE id = ? AND armed = 1
                   RETURNING user_id, symbol, condition, value, channel""",
                (fired_at, alert_id),
            )
            if not rows:
                return None
            a = rows[0]
            made = tx.rows(
                f"""INSERT INTO alert_deliveries
                        (alert_id, user_id, symbol, condition, value, channel, price, fired_at, status, attempts)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0) RETURNING {_DELIVERY_COLUMNS}""",
                (alert_id, a["user_id"], a["symbol"], a["condition"], a["value"], a["channel"], observed, fired_at),
            )
            tx.count(
                """DELETE FROM alert_deliveries WHERE user_id = ? AND id NOT IN
                   (SELECT id FROM alert_deliveries WHERE user_id = ? ORDER BY id DESC LIMIT ?)""",
                (a["user_id"], a["user_id"], HISTORY_KEPT),
            )
        return delivery_from(made[0])

    def rearm_alert(self, alert_id: int) -> bool:
        """Arm a fired alert again (its condition was seen false); False when it was armed already or is gone."""
        with self._tx("re-arm alert") as tx:
            return tx.count("UPDATE alerts SET armed = 1 WHERE id = ? AND armed = 0", (alert_id,)) > 0

    def finish_delivery(self, delivery_id: int, *, status: str, attempts: int, error: str | None = None) -> None:
        """Record a delivery's outcome so far (``pending`` while retries remain)."""
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}")
        finished = None if status == "pending" else self._now()
        with self._tx("record delivery") as tx:
            tx.count("UPDATE alert_deliveries SET status = ?, attempts = ?, error = ?, finished_at = ? WHERE id = ?",
                     (status, attempts, error, finished, delivery_id))

    def alert_history(self, user_id: int, limit: int = 50) -> list[AlertDelivery]:
        """The user's last ``limit`` deliveries, newest first."""
        rows = self._rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries WHERE user_id = ? ORDER BY id DESC LIMIT ?",
            (user_id, limit),
        )
        return [delivery_from(r) for r in rows]
