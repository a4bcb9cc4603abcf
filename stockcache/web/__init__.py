"""The HTTP face of stockcache: the Bottle app, its plugins and routes, and the waitress server."""

from .app import create_app

__all__ = ["create_app"]
