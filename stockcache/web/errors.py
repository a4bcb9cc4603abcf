"""The one place that turns errors into HTTP responses: JSON, the right status, never a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any

import bottle

from ..errors import StockcacheError

log = logging.getLogger(__name__)

# Bottle's own HTTP errors (router 404/405, body too large) mapped to our stable codes.
_BOTTLE_CODES = {
    400: ("invalid_request", "The request is not valid."),
    401: ("unauthorized", "A valid access token is required."),
    403: ("forbidden", "Not allowed."),
    404: ("not_found", "No such route."),
    405: ("method_not_allowed", "Method not allowed on this route."),
    413: ("payload_too_large", "The request body is too large."),
    500: ("internal", "Internal error."),
}


def error_body(error: StockcacheError) -> str:
    return json.dumps({"error": error.to_dict()})


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
    code, message = _BOTTLE_CODES.get(res.status_code, ("http_error", "HTTP error."))
    error: dict[str, Any] = {"code": code, "message": message}
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    return json.dumps({"error": error})
