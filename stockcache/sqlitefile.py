"""The data folder's rebuildable SQLite files: check one, set it aside when corrupt, create it private.

The cache (``cache.sqlite``), the usage ledger (``usage.sqlite``) and the KPI
history (``kpis.sqlite``) can all start empty without losing anything a user
wrote, so a corrupt one must not stop the service: :func:`open_sound` moves it
to ``<name>.corrupt-<UTC time>`` (with its ``-wal`` and ``-shm``, which would
otherwise be replayed into the new file), logs a warning and opens a fresh
one. The store (users, portfolios) is never set aside: losing it is not a
cache miss, so a bad store stops start-up instead.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from .errors import CacheError

log = logging.getLogger(__name__)

T = TypeVar("T")

_ERRORS = (sqlite3.Error, OSError, OverflowError, RuntimeError)


def open_sound(path: Path, setup: Callable[[Path], T], *, label: str,
               check_seconds: float = 10.0) -> tuple[T, str | None]:
    """``setup(path)`` on a sound file, and the problem of the file set aside first (None if none was).

    An existing file is checked first with plain sqlite3 and a time limit
    (sqlitedict can hang on some corrupt files). ``setup`` creates the file if
    needed and lays out its schema; if it finds the file is not a database the
    file is set aside too and ``setup`` runs once more on a fresh one. A file
    locked by another process is an error (CacheError), never set aside.
    """
    problem = check(path, check_seconds, label=label) if path.exists() else None
    if problem is not None:
        move_aside(path, problem, label=label)
    try:
        return setup(path), problem
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            raise CacheError(f"the {label} {path} is locked by another process") from exc
        if not path.exists() or not _is_not_a_database(exc):
            raise CacheError(f"cannot open the {label} {path}: {exc}") from exc
        problem = str(exc)
        move_aside(path, problem, label=label)
    try:
        return setup(path), problem
    except _ERRORS as exc:
        raise CacheError(f"cannot create the {label} {path}: {exc}") from exc


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_not_a_database(exc: sqlite3.DatabaseError) -> bool:
    """Whether the error says the file's content is bad (not "cannot open", "read-only", "disk full")."""
    if type(exc) is sqlite3.DatabaseError:  # SQLITE_NOTADB, SQLITE_CORRUPT
        return True
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def check(path: Path, check_seconds: float, *, label: str) -> str | None:
    """None if ``path`` is a readable, consistent SQLite database, else the problem."""
    try:
        conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    except _ERRORS as exc:
        return str(exc)
    try:
        deadline = time.monotonic() + check_seconds
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc).lower():
            log.warning("%s %s: quick_check took more than %.0f s; opening it unchecked",
                        label, path, check_seconds)
            return None
        if is_busy(exc):
            raise CacheError(f"the {label} {path} is locked by another process") from exc
        return str(exc)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    if rows != [("ok",)]:
        return "; ".join(str(row[0]) for row in rows[:3]) or "quick_check failed"
    return None


def move_aside(path: Path, problem: str, *, label: str) -> Path:
    """Rename ``path`` (and its -wal/-shm) to ``<name>.corrupt-<UTC time>``; the new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            # A WAL left next to a new file would be replayed into it.
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{target}{suffix}"))
    except OSError as exc:
        raise CacheError(f"the {label} {path} is unusable ({problem}) and cannot be moved aside: {exc}") from exc
    log.warning("%s %s is corrupt or unreadable (%s); moved it to %s and starting empty",
                label[:1].upper() + label[1:], path, problem, target.name)
    return target


def create_private(path: Path) -> None:
    """Create ``path`` readable by its owner only (sqlite3 would use 0644), and tighten -wal/-shm.

    SQLite gives new -wal and -shm files the main file's mode, so they follow.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        side = f"{path}{suffix}"
        if os.path.exists(side):
            os.chmod(side, 0o600)
