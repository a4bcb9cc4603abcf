"""Users, API tokens, portfolios, watchlists and alerts: one :class:`Store` interface, two engines.

Without ``STOCKCACHE_DATABASE_URL`` the store is SQLite in
``<data_dir>/store.sqlite`` (:func:`open_store`); with it, PostgreSQL shared
by every instance (:mod:`.postgres`, imported only then, like redis-py for
``REDIS_URL``). :func:`open_configured_store` picks by the settings;
:mod:`.validate` cleans what clients send before it reaches the store.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..settings import Settings
from .base import WATCH_INTERVAL, iso_utc
from .interface import Store
from .rows import ALERT_CONDITIONS, TOKEN_SCOPES, Alert, AlertDelivery, ApiToken, Position, User, WatchItem
from .schema import SCHEMA_VERSION
from .sqlite import STORE_FILENAME, SqliteStore, store_path
from .sqlite import open_sqlite_store as open_store

__all__ = [
    "ApiToken", "Position", "User", "WatchItem", "Store", "SqliteStore", "open_store", "open_configured_store",
    "store_path", "command_prefix", "first_run_hint", "iso_utc", "SCHEMA_VERSION", "STORE_FILENAME",
    "WATCH_INTERVAL", "TOKEN_SCOPES", "Alert", "AlertDelivery", "ALERT_CONDITIONS",
]


def open_configured_store(settings: Settings, *, clock: Callable[[], float] = time.time,
                          pool_size: int | None = None) -> Store:
    """The store the settings name: PostgreSQL at ``database_url`` when set, else SQLite in the data folder.

    Both are migrated before this returns. ``pool_size`` bounds PostgreSQL
    connections (default: the server's threads plus a few for the background
    threads).
    """
    if settings.database_url:
        from .postgres import open_postgres_store

        size = pool_size or settings.threads + 4
        return open_postgres_store(settings.database_url, clock=clock, max_size=size)
    return open_store(store_path(settings.data_dir), clock=clock)


def command_prefix() -> str:
    """How to run this stockcache's command line, pasteable as is from any folder.

    The absolute path of the ``stockcache`` script installed next to the interpreter running
    now (the project's .venv when started by scripts/run): a relative path would only work
    from one folder, and ``python -m stockcache`` would pick up any ``stockcache/`` folder in
    the current directory (a clone's own) instead of the installed package.
    """
    python = Path(sys.executable).absolute()
    script = python.parent / "stockcache"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(str(python))} -P -m stockcache"


def first_run_hint(data_dir: Path) -> str:
    """What to print at start-up when there are no users: the exact commands for the first admin."""
    folder = shlex.quote(str(Path(data_dir).resolve()))
    cmd = command_prefix()
    return (
        "No users yet. Create the first admin (it asks for the password twice):\n"
        f"  {cmd} users add admin --admin --data-dir {folder}\n"
        "or from a script, with the password on standard input:\n"
        f"  {cmd} users add admin --admin --data-dir {folder} < password.txt\n"
        "Then log in with POST /api/auth/login, or make an API token:\n"
        f"  {cmd} tokens create admin --label laptop --data-dir {folder}"
    )
