"""Store writes when the disk is full: StorageFull (503 storage_full with Retry-After), nothing half-written.

``PRAGMA max_page_count`` set to the file's current size on the writing
connection makes SQLite answer SQLITE_FULL ("database or disk is full") as
soon as a write needs one more page, which is what a full disk answers; the
HTTP path on a real full tmpfs is in ``tests/integration/test_disk_full.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stockcache.errors import StorageFull
from stockcache.store import open_store
from stockcache.web.errors import error_response


def test_store_write_on_a_full_disk_is_storage_full_and_changes_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        user = store.create_user("alice", "hash")
        conn = store._conn()  # this thread's connection: the one the writes below use
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        added = 0
        with pytest.raises(StorageFull) as info:
            for n in range(10_000):  # the last free bytes of the last page fill up first
                store.add_position(user.id, f"S{n}", 1.0, 1.0)
                added += 1
        assert added < 10_000
        error = info.value
        assert error.status == 503 and error.code == "storage_full" and error.fields["retry_after"] > 0
        response = error_response(error)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) == error.fields["retry_after"]
        assert len(store.list_positions(user.id)) == added  # the refused one left nothing
        conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        store.add_position(user.id, "AFTER", 1.0, 1.0)
        assert store.list_positions(user.id)[-1].symbol == "AFTER"
