"""The HTTP layer: Bottle app factory, plugins, routes, and the waitress server."""

from .app import create_app, wsgi_app

__all__ = ["create_app", "wsgi_app"]
