"""``GET /api/kpis?days=N`` (admin): the KPI history, one row per UTC day, newest first."""

from __future__ import annotations

from typing import Any

import bottle

from ..errors import InvalidRequest
from ..kpis import MAX_DAYS
from ..runtime import Runtime
from .plugins import query_int

DEFAULT_DAYS = 7


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add the KPI route to ``app``."""

    @app.get("/api/kpis", auth="admin")
    def kpis() -> dict[str, Any]:
        days = query_int("days", DEFAULT_DAYS)
        if not 1 <= days <= MAX_DAYS:
            raise InvalidRequest(f"days must be from 1 to {MAX_DAYS}.", field="days")
        return {"days": runtime.kpis.days(days)}
