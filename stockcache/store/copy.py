"""``store copy``: a single box's SQLite store into an empty PostgreSQL database, in one transaction.

Ids are kept (a JWT names its user's id; API tokens and positions refer to
users by id), and each identity sequence is moved past the highest id the
box ever handed out (SQLite's AUTOINCREMENT remembers deleted ones), so no id
comes back. The box's JWT key goes along when the target has none yet, so
sessions survive the move. The target must hold no user, token, position,
watch item or alert: a copy never merges.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Conflict
from .postgres import MIGRATE_LOCK, PostgresStore
from .schema import COPY_TABLES
from .sqlite import SqliteStore

# Tables whose id the target's identity sequence must move past.
_IDENTITY = ("users", "positions", "alerts", "alert_deliveries")
# The source's order; among watch items added in the same second it is SQLite's rowid.
_ORDER = {"users": "id", "api_tokens": "created_at, id", "positions": "id", "watchlist": "added_at, rowid",
          "alerts": "id", "alert_deliveries": "id"}


@dataclass(frozen=True)
class CopyReport:
    """What a copy carried: rows per table, and whether the JWT key went along."""

    rows: dict[str, int]
    jwt_key: bool

    def sentence(self, source: str, target: str) -> str:
        names = {"users": "user", "api_tokens": "API token", "positions": "position", "watchlist": "watchlist item",
                 "alerts": "alert", "alert_deliveries": "alert delivery record"}
        parts = [f"{n} {names.get(t, t)}{'' if n == 1 else 's'}" for t, n in self.rows.items()]
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)
        key = ("; the JWT signing key too, so signed-in sessions stay valid" if self.jwt_key
               else "; the target kept its own JWT signing key, so users log in again")
        return f"Copied {listed} from {source} to {target}{key}."


def copy_store(source: SqliteStore, target: PostgresStore, *, jwt_secret: bytes | None) -> CopyReport:
    """Copy every row of :data:`~.schema.COPY_TABLES`; Conflict (nothing written) if the target is not empty."""
    data = {table: [tuple(row[c] for c in columns) for row in source._rows(
        f"SELECT {', '.join(columns)} FROM {table} ORDER BY {_ORDER[table]}")] for table, columns in COPY_TABLES}
    floors = {table: source.sequence_floor(table) for table in _IDENTITY}
    with target._tx("store copy") as tx:
        tx.rows("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
        held = {table: int(tx.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"]) for table, _ in COPY_TABLES}
        if any(held.values()):
            what = ", ".join(f"{table} {n}" for table, n in held.items() if n)
            raise Conflict(f"the target database already holds a store ({what}); copy only into an empty one")
        for table, columns in COPY_TABLES:
            marks = ", ".join("?" for _ in columns)
            for row in data[table]:
                tx.count(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", row)
        for table in _IDENTITY:
            highest = max([floors[table], *(int(r[0]) for r in data[table])])
            if highest > 0:
                tx.rows(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?)", (highest,))
        copied_key = False
        if jwt_secret is not None:
            copied_key = tx.count("INSERT INTO secrets (name, value, created_at) VALUES ('jwt', ?, ?)"
                                  " ON CONFLICT (name) DO NOTHING", (jwt_secret.hex(), target._now())) > 0
        target._moved(tx, "auth")
        target._moved(tx, "holdings")
    return CopyReport({table: len(rows) for table, rows in data.items()}, copied_key)

