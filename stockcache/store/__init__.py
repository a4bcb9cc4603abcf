"""Users, API tokens, portfolios and watchlists, kept in ``<data_dir>/store.sqlite``.

``open_store(path)`` gives a thread-safe :class:`Store`; :mod:`.validate`
cleans what clients send before it reaches the store.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .rows import ApiToken, Position, User, WatchItem
from .schema import SCHEMA_VERSION
from .sqlite import STORE_FILENAME, WATCH_INTERVAL, Store, iso_utc, open_store, store_path

__all__ = [
    "ApiToken", "Position", "User", "WatchItem", "Store", "open_store", "store_path",
    "command_prefix", "first_run_hint", "iso_utc", "SCHEMA_VERSION", "STORE_FILENAME", "WATCH_INTERVAL",
]


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
