"""The price alert routes (issue 18): each user's alerts and the history of their deliveries.

Alerts belong to the user behind the token; a market-data token (scope
``market``) cannot read or change them (403). Channels are the operator's
(``STOCKCACHE_NOTIFY_<NAME>``): users name one, never give an address.
"""

from __future__ import annotations

from typing import Any

import bottle

from ..errors import InvalidRequest, NotFound, StockcacheError
from ..runtime import Runtime
from ..store import validate
from .plugins import json_body, principal, query_int
from .routes import _is_row_id

MAX_ALERTS = 100  # per user: a size bound, like the watchlist's
HISTORY_DEFAULT, HISTORY_MAX = 50, 200


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add the /api/alerts routes to ``app``."""
    service, store, settings = runtime.service, runtime.store, runtime.settings
    channels = [channel.name for channel in settings.notify]

    @app.get("/api/alerts")
    def list_alerts() -> dict[str, Any]:
        return {"alerts": [a.to_dict() for a in store.list_alerts(principal().user_id)], "channels": channels}

    @app.post("/api/alerts")
    def add_alert() -> Any:
        user_id = principal().user_id
        fields = validate.alert_input(json_body(settings.max_request_body), channels)
        if len(store.list_alerts(user_id)) >= MAX_ALERTS:
            raise InvalidRequest(f"A user keeps at most {MAX_ALERTS} alerts; delete one first.")
        service.verify_symbol(fields["symbol"])  # 404 for a symbol nobody knows, before it is kept
        alert = store.add_alert(user_id, **fields)
        try:  # the quote just read is as fresh as the next one: check the new alert against it now
            quote = service.get_quote(alert.symbol)
        except StockcacheError:
            quote = None
        if quote is not None and not quote.get("stale"):
            runtime.alerts.quote_arrived("quote", alert.symbol, quote)
        bottle.response.status = 201
        return alert.to_dict()

    @app.delete("/api/alerts/<alert_id:int>")
    def delete_alert(alert_id: int) -> Any:
        if not _is_row_id(alert_id) or not store.delete_alert(principal().user_id, alert_id):
            raise NotFound("No such alert.")
        return bottle.HTTPResponse(status=204)

    @app.get("/api/alerts/history")
    def history() -> dict[str, Any]:
        limit = query_int("limit", HISTORY_DEFAULT)
        if not 1 <= limit <= HISTORY_MAX:
            raise InvalidRequest(f"limit must be from 1 to {HISTORY_MAX}.", field="limit")
        return {"deliveries": [d.to_dict() for d in store.alert_history(principal().user_id, limit)]}
