"""The one place that turns errors into HTTP responses: JSON, the right status, never a traceback."""

from __future__ import annotations

import json
import logging

import bottle

from ..errors import StockcacheError, for_status

log = logging.getLogger(__name__)

# What Bottle's own errors say, where our class's default message would not fit.
_BOTTLE_MESSAGES = {404: "No such route.", 405: "Method not allowed on this route."}


def error_body(error: StockcacheError) -> bytes:
    """``{"error": {"code", "message", ...}}``: the one error body, for the app and waitress alike."""
    return json.dumps({"error": error.to_dict()}).encode()


def error_response(error: StockcacheError) -> bottle.HTTPResponse:
    """A JSON HTTPResponse for one of our errors (with Retry-After when it has one)."""
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    retry_after = error.fields.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    if error.status == 405 and "allow" in error.fields:
        headers["Allow"] = str(error.fields["allow"])
    return bottle.HTTPResponse(body=error_body(error), status=error.status, headers=headers)


def unexpected(exc: BaseException) -> bottle.HTTPResponse:
    """An exception nobody expected: log it with its traceback, answer 500 with no details."""
    log.error("unexpected error", exc_info=exc)
    return error_response(StockcacheError())


def bottle_error_handler(res: bottle.HTTPError) -> str:
    """Renders bottle's own errors (404 no route, 405, 413, 500 catch-all) as our JSON."""
    if res.exception is not None and res.status_code >= 500:
        log.error("unexpected error", exc_info=res.exception)
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    return error_body(for_status(res.status_code, _BOTTLE_MESSAGES.get(res.status_code))).decode()
