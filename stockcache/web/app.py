"""The app factory: an explicit Bottle app built from a Runtime (no module-level app, no work at import)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import bottle

from ..metrics import Metrics
from ..runtime import Runtime
from . import dashboard, dropin, exports, openapi, prometheus, routes, routes_alerts, routes_kpis
from .errors import bottle_error_handler
from .plugins import CACHE_SOURCE, ApiPlugin

access_log = logging.getLogger("stockcache.access")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
API_CSP = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
# What AccessLog adds to every answer that does not set its own (the dashboard sets its CSP).
_ALL_OURS = (*SECURITY_HEADERS, API_CSP)
_OURS = frozenset(name.lower() for name, _ in _ALL_OURS)


def create_app(runtime: Runtime) -> bottle.Bottle:
    """Build the Bottle app: plugins, routes, and JSON for bottle's own errors (404, 405, 500)."""
    app = bottle.Bottle(catchall=True)
    app.router.add_filter("int", routes.ascii_int_filter)  # before any route is added
    app.default_error_handler = bottle_error_handler  # type: ignore[method-assign]
    app.install(ApiPlugin(runtime.auth))

    @app.get("/healthz", auth="public")
    def healthz() -> dict[str, Any]:
        return runtime.health()

    @app.get("/openapi.json", auth="public")
    def openapi_json() -> dict[str, Any]:
        return openapi.spec()

    @app.get("/metrics", auth="admin")
    def metrics() -> Any:
        bottle.response.content_type = prometheus.CONTENT_TYPE
        return prometheus.render(runtime)

    dropin.install(app, runtime)
    routes.install(app, runtime)
    routes_kpis.install(app, runtime)
    exports.install(app, runtime)
    routes_alerts.install(app, runtime)
    dashboard.install(app, runtime)
    return app


AccessSink = Callable[[str, str, str, float, str], None]


def log_access(method: str, rule: str, status: str, elapsed_ms: float, cache: str) -> None:
    """The access log line through ``logging`` (the default sink; the server uses a cheaper one)."""
    access_log.info("%s %s %s %.1fms %s", method, rule, status, elapsed_ms, cache)


class AccessLog:
    """WSGI middleware: one log line and one latency sample per request, plus security headers.

    It logs the route's rule (``/api/quote/<symbol>``), never the raw query
    string, which for drop-in clients carries their token. ``sink`` writes the
    line; by default through ``logging``, and in the server through
    ``BackgroundHandler.access``, which formats it on its writer thread instead
    of building a LogRecord on the request thread. Thread-safe.
    """

    def __init__(self, app: bottle.Bottle, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter,
                 sink: AccessSink | None = None):
        self._app = app
        self._metrics = metrics
        self._clock = clock
        self._sink = sink or log_access

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = self._clock()
        seen: dict[str, str] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            for name, _ in headers:
                if name.lower() in _OURS:
                    break
            else:  # the common case: the answer set none of them
                headers.extend(_ALL_OURS)
                return start_response(status, headers, exc_info)
            names = {name.lower() for name, _ in headers}
            headers.extend(h for h in _ALL_OURS if h[0].lower() not in names)
            return start_response(status, headers, exc_info)

        try:
            return self._app(environ, start)
        finally:
            elapsed = self._clock() - started
            route = environ.get("bottle.route")
            rule = route.rule if route is not None else "(no route)"
            status = seen.get("status", "-")
            self._metrics.observe_request(rule, status, elapsed)
            self._sink(environ.get("REQUEST_METHOD", "-"), rule, status, elapsed * 1000,
                       environ.get(CACHE_SOURCE, "-"))
