"""The command line: the only place that wires Settings to the parts.

``python -m stockcache serve|users|tokens|warm|stats`` (see ``--help``).
Bad configuration prints one line naming the setting and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError
from .settings import Settings


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data folder (STOCKCACHE_DATA_DIR, default ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stockcache", description="Self-hosted stock-market data cache.")
    parser.add_argument("--version", action="version", version=f"stockcache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP service on waitress")
    _global_options(serve)
    serve.add_argument("--host", help="address to listen on (STOCKCACHE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="port to listen on (STOCKCACHE_PORT, default 8080)")
    serve.add_argument("--threads", help="waitress threads (STOCKCACHE_THREADS, default 8)")
    serve.set_defaults(handler=cmd_serve)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the flags given on the command line."""
    flags = {name: getattr(args, name, None) for name in ("data_dir", "host", "port", "threads")}
    return Settings.from_env(**flags)


def cmd_serve(args: argparse.Namespace) -> int:
    from .web.server import serve

    return serve(load_settings(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"stockcache: configuration error: {exc.message}", file=sys.stderr)
        return 2
