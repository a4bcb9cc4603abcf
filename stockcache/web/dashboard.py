"""The dashboard page: ``GET /`` and ``GET /static/<name>``, plain files shipped inside the package.

There is no build step and nothing is fetched from elsewhere at run time: the
HTML, CSS and JavaScript in ``stockcache/static/`` are read once, when the app
is built, through :mod:`importlib.resources` (so they are found in a wheel as
in a checkout) and served from memory. Serving from a fixed table means a
request can only ever name a file that shipped; there is no path on disk to
traverse. The page talks to the JSON API with a bearer token it keeps in
``sessionStorage``: no cookie, so no CSRF surface.

HTML and static answers carry their own Content-Security-Policy (no inline
script or style, everything from this origin); the access log middleware adds
nosniff, X-Frame-Options and Referrer-Policy.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import bottle

from ..errors import NotFound
from ..runtime import Runtime

log = logging.getLogger(__name__)

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class StaticFile:
    """One shipped file, held in memory with its content type and a content hash for ETag."""

    body: bytes
    content_type: str
    etag: str


def load_static(package: str = "stockcache", folder: str = "static") -> dict[str, StaticFile]:
    """Every file under ``package/folder``, keyed by its path relative to that folder ("js/app.js")."""
    files: dict[str, StaticFile] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif child.is_file() and not child.name.startswith("."):
                suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
                body = child.read_bytes()
                files[name] = StaticFile(body, CONTENT_TYPES.get(suffix.lower(), "application/octet-stream"),
                                         '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    root = resources.files(package).joinpath(folder)
    if root.is_dir():
        walk(root, "")
    if "index.html" not in files:
        log.warning("dashboard: %s/%s/index.html is missing; GET / will answer 404", package, folder)
    return files


def install(app: bottle.Bottle, runtime: Runtime) -> None:
    """Add ``GET /`` and ``GET /static/<name>`` to ``app``. The file table is read-only: thread-safe."""
    files = load_static()

    def serve(name: str) -> bottle.HTTPResponse:
        found = files.get(name)
        if found is None:
            raise NotFound("No such file.")
        headers = {
            "Content-Type": found.content_type,
            "Content-Security-Policy": PAGE_CSP,
            "Cross-Origin-Opener-Policy": "same-origin",
            # Revalidate every time (cheap: a 304 by ETag), so an upgrade is never mixed with old files.
            "Cache-Control": "no-cache",
            "ETag": found.etag,
        }
        if found.etag in _etags(bottle.request.environ.get("HTTP_IF_NONE_MATCH")):
            return bottle.HTTPResponse(status=304, headers=headers)
        return bottle.HTTPResponse(body=found.body, status=200, headers=headers)

    @app.get("/", auth="public")
    def index() -> bottle.HTTPResponse:
        return serve("index.html")

    @app.get("/static/<name:path>", auth="public")
    def static(name: str) -> bottle.HTTPResponse:
        return serve(name)


def _etags(header: str | None) -> set[str]:
    """The entity tags of an ``If-None-Match`` value as WSGI passes it (latin-1 text).

    Read from the environ, not with ``get_header()``, which decodes as UTF-8 and
    raises (a 500) on other bytes. Our tags are ASCII: a value that is not is ignored.
    """
    if not header or not header.isascii():
        return set()
    return {part.strip().removeprefix("W/") for part in header.split(",")}
