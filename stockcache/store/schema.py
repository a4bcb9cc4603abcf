"""The store's schema as an ordered list of migrations.

``PRAGMA user_version`` records how many have been applied. Append a new
migration to change the schema; never edit one that has shipped. Each is a
tuple of single statements (not a script) so they all run inside the one
transaction :func:`migrate` opens: a crash mid-upgrade leaves the old schema.
"""

from __future__ import annotations

import sqlite3

from ..errors import ConfigError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: users, API tokens, portfolios, watchlists.
    (
        # AUTOINCREMENT so a deleted user's id is never handed to a new user:
        # a removed user's still-unexpired JWT names that id and must stay dead.
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            is_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            token_hash TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""",
        "CREATE INDEX api_tokens_user ON api_tokens(user_id)",
        # AUTOINCREMENT: a deleted position's id never comes back as another
        # position, so a client retrying a DELETE cannot remove a new one.
        """CREATE TABLE positions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            symbol TEXT NOT NULL,
            shares REAL NOT NULL CHECK (shares > 0),
            cost_basis REAL NOT NULL CHECK (cost_basis >= 0),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX positions_user ON positions(user_id)",
        """CREATE TABLE watchlist (
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            symbol TEXT NOT NULL,
            added_at TEXT NOT NULL,
            PRIMARY KEY (user_id, symbol)
        )""",
    ),
    # 2: each user's base currency for portfolio totals (NULL: the server's STOCKCACHE_BASE_CURRENCY).
    (
        "ALTER TABLE users ADD COLUMN base_currency TEXT CHECK (base_currency GLOB '[A-Z][A-Z][A-Z]')",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, *, path: object = "store") -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION` in one transaction; return the version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A file from
    a newer stockcache is refused rather than guessed at.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path} has schema version {version}, but this stockcache knows only up to "
                f"{SCHEMA_VERSION}: upgrade stockcache, or point --data-dir elsewhere"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            # Inside the transaction: the version moves only with the tables.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return SCHEMA_VERSION
