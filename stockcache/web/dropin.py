"""Drop-in routes: each registered provider's own API, mounted outside ApiPlugin.

A provider that offers a drop-in API declares it (``Provider.dropin``, see
``upstream/providers/dropin.py``); here it becomes a Bottle route. Its callers
authenticate the provider's way (a stockcache token where the provider's key
was), and its answers and errors are the provider's own shapes, so ApiPlugin
(a bearer header, our error shape) is skipped. Whether an answer came from the
cache, and whether it is stale, is in ``X-Stockcache-*`` headers: the
providers' bodies have no room for it. Tokens never reach a log line (the
access log writes the route rule only) or a body.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

import bottle

from ..runtime import Runtime
from ..upstream.providers import provider_classes
from ..upstream.providers.dropin import DropIn, DropInRequest
from .plugins import ApiPlugin, note_cache_source

log = logging.getLogger(__name__)


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add every registered provider's drop-in routes to ``app`` (outside ApiPlugin)."""
    for cls in provider_classes():
        if cls.dropin is None:
            continue
        handler = cls.dropin(runtime.service, runtime.auth.authenticate_token, runtime.clock)
        app.route(handler.route, handler.methods, functools.partial(_serve, handler), skip=[ApiPlugin])


def _serve(handler: DropIn, **route_args: Any) -> bottle.HTTPResponse:
    request = DropInRequest(bottle.request.method, route_args.get("path", ""), _query(),
                            bottle.request.environ.get)
    try:
        answer = handler.handle(request)
    except Exception:  # handle() answers every error itself; this is the last line of defence
        log.exception("unexpected error in a drop-in request")
        return _respond(500, {"error": "Internal error."}, {})
    return _respond(answer.status, answer.body, {**answer.headers, **_cache_headers(answer.source)})


def _query() -> dict[str, str]:
    """The query string as a dict of text (the last value of a repeated name wins; undecodable bytes are "")."""
    query = bottle.request.query
    return {name: query.getunicode(name) or "" for name in query.keys()}


def _cache_headers(answer: Mapping[str, Any] | None) -> dict[str, str]:
    """Where the data came from, in headers: the provider's body shape has no room for it."""
    if not answer or "cache" not in answer:
        return {}
    note_cache_source(answer)
    return {"X-Stockcache-Cache": str(answer["cache"]), "X-Stockcache-Source": str(answer.get("source")),
            "X-Stockcache-Age": str(answer.get("age", 0)),
            "X-Stockcache-Stale": "true" if answer.get("stale") else "false"}


def _respond(status: int, body: Any, headers: Mapping[str, str]) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        body=json.dumps(body, allow_nan=False), status=status,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **headers},
    )
