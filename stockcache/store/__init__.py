"""Users, API tokens, portfolios and watchlists, kept in ``<data_dir>/store.sqlite``.

``open_store(path)`` gives a thread-safe :class:`Store`; :mod:`.validate`
cleans what clients send before it reaches the store.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .rows import ApiToken, Position, User, WatchItem
from .schema import SCHEMA_VERSION
from .sqlite import STORE_FILENAME, Store, iso_utc, open_store, store_path

__all__ = [
    "ApiToken", "Position", "User", "WatchItem", "Store", "open_store", "store_path",
    "first_run_hint", "iso_utc", "SCHEMA_VERSION", "STORE_FILENAME",
]


def first_run_hint(data_dir: Path) -> str:
    """What to print at start-up when there are no users: the exact commands for the first admin."""
    folder = shlex.quote(str(data_dir))
    return (
        "No users yet. Create the first admin (it asks for the password):\n"
        f"  python -m stockcache users add admin --admin --data-dir {folder}\n"
        "or from a script, with the password on standard input:\n"
        f"  python -m stockcache users add admin --admin --data-dir {folder} < password.txt\n"
        "Then log in with POST /api/auth/login, or make an API token:\n"
        f"  python -m stockcache tokens create admin --label laptop --data-dir {folder}"
    )
