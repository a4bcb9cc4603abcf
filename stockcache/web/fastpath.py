"""Cached single-item market reads answered without Bottle's per-request machinery.

Why: a cached quote is what apps ask for most (a portfolio page per holding, a
spreadsheet per cell, Home Assistant every minute), and Bottle's request and
response objects, router, hooks, plugin wrappers and header lists cost about
as much as the rest of the answer (issue 12's throughput target). So a
``GET`` of a route listed in :data:`FAST_ROUTES`, sent with an
``Authorization`` header and no query string, whose fresh entry holds data in
the memory tier, is answered here from :meth:`ReadThrough.cached`.

Everything else goes to Bottle, which answers as it always did: a miss, a
remembered error, a symbol that does not normalise, a token that does not
verify, ``?token=``, HEAD. So this path never renders an error and never
decides anything the routes do not; it only skips work for the one answer it
can give. Its answers are byte for byte those of the routes, status and
headers included (``tests/test_fastpath.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import bottle

from ..auth import Authenticator
from ..readthrough import ReadThrough
from ..symbols import normalize_symbol
from .plugins import CACHE_SOURCE, encode_json

# Route rule -> the kind its handler reads with ``service.get_<kind>(symbol)``, i.e.
# ``readthrough.one(kind, normalize_symbol(symbol))``; only such routes may be listed.
FAST_ROUTES = {
    "/api/quote/<symbol>": "quote",
    "/api/profile/<symbol>": "profile",
}


class FastReads:
    """WSGI app in front of the Bottle app: cached reads of :data:`FAST_ROUTES` here, the rest there.

    Thread-safe: it holds no per-request state.
    """

    def __init__(self, app: bottle.Bottle, readthrough: ReadThrough, auth: Authenticator) -> None:
        self._app = app
        self._readthrough = readthrough
        self._auth = auth
        # "/api/quote" -> (kind, the Bottle route, so the access log and metrics name its rule).
        self._by_prefix: dict[str, tuple[str, bottle.Route]] = {}
        for route in app.routes:
            kind = FAST_ROUTES.get(route.rule)
            if kind is not None and route.method == "GET" and route.config.get("market"):
                self._by_prefix[route.rule.rsplit("/", 1)[0]] = (kind, route)
        if len(self._by_prefix) != len(FAST_ROUTES):
            raise RuntimeError("every FAST_ROUTES rule must be a GET market route of the app")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            prefix, _, raw = environ.get("PATH_INFO", "").rpartition("/")
            target = self._by_prefix.get(prefix)
            if target is not None:
                body = self._answer(environ, target[0], raw)
                if body is not None:
                    environ["bottle.route"] = target[1]
                    environ[CACHE_SOURCE] = "memory"
                    start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                              ("Content-Length", str(len(body)))])
                    return [body]
        return self._app(environ, start_response)

    def _answer(self, environ: dict[str, Any], kind: str, raw: str) -> bytes | None:
        """The answer's body, or None to let the route answer (it then sees what went wrong itself)."""
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        try:
            symbol = normalize_symbol(raw)
            self._auth.authenticate(header)  # any scope reads market data
            answer = self._readthrough.cached(kind, symbol)
            return None if answer is None else encode_json(answer)
        except Exception:  # noqa: BLE001 - the route decides and renders every failure, this path none
            return None
