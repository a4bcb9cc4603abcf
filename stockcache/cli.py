"""The command line: the only place that wires Settings to the parts.

``python -m stockcache serve|users|tokens|warm|stats`` (see ``--help``).
Bad configuration prints one line naming the setting and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import ConfigError, StockcacheError
from .settings import Settings

if TYPE_CHECKING:
    from .store import Store


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

    _add_user_commands(commands)
    return parser


def _add_user_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    users = commands.add_parser("users", help="add, list and remove users")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser(
        "add", help="add a user; the password is read from standard input (one line)")
    add.add_argument("name", help="user name: letters, digits and . _ @ -")
    add.add_argument("--admin", action="store_true", help="may manage the cache and see metrics")
    add.set_defaults(handler=cmd_users_add)
    listing = users_commands.add_parser("list", help="list users")
    listing.set_defaults(handler=cmd_users_list)
    remove = users_commands.add_parser("remove", help="remove a user with their tokens, portfolio and watchlist")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_users_remove)

    tokens = commands.add_parser("tokens", help="create, list and revoke long-lived API tokens")
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_commands.add_parser(
        "create", help="print a new API token for a user on standard output (shown once)")
    create.add_argument("name", help="the user the token acts as")
    create.add_argument("--label", default="", help="what the token is for, e.g. 'spreadsheet'")
    create.set_defaults(handler=cmd_tokens_create)
    token_list = tokens_commands.add_parser("list", help="list a user's tokens (ids, labels, last use)")
    token_list.add_argument("name")
    token_list.set_defaults(handler=cmd_tokens_list)
    revoke = tokens_commands.add_parser("revoke", help="revoke a token by its id (or the whole token)")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    revoke.set_defaults(handler=cmd_tokens_revoke)

    for leaf in (add, listing, remove, create, token_list, revoke):
        _global_options(leaf)


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the flags given on the command line."""
    flags = {name: getattr(args, name, None) for name in ("data_dir", "host", "port", "threads")}
    return Settings.from_env(**flags)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)  # a bad setting exits 2 before anything heavy is imported
    from .web.server import serve

    return serve(settings)


class _Refused(Exception):
    """A command-line refusal: one line on stderr, exit status 1."""


def _fail(message: str) -> int:
    print(f"stockcache: {message}", file=sys.stderr)
    return 1


def _read_password() -> str:
    """One line from standard input, the newline stripped; getpass (no echo) on a terminal."""
    if sys.stdin is None:
        return ""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Password: ")
        if first and getpass.getpass("Again: ") != first:
            raise _Refused("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _with_store(args: argparse.Namespace, work: Callable[[Settings, Store], int]) -> int:
    from .store import open_store, store_path

    settings = load_settings(args)
    store = open_store(store_path(settings.data_dir))
    try:
        return work(settings, store)
    except _Refused as exc:
        return _fail(str(exc))
    except StockcacheError as exc:
        return _fail(exc.message)
    finally:
        store.close()


def cmd_users_add(args: argparse.Namespace) -> int:
    from .auth import hash_password
    from .store import validate

    def work(settings: Settings, store: Store) -> int:
        name = validate.username(args.name)
        password = _read_password()
        if not password:
            raise _Refused("the password is empty (give it on standard input, one line)")
        validate.password(password)
        user = store.create_user(name, hash_password(password), is_admin=args.admin)
        role = "admin" if user.is_admin else "user"
        print(f"Added {role} {user.username!r} to {store.path}.", file=sys.stderr)
        return 0

    return _with_store(args, work)


def cmd_users_list(args: argparse.Namespace) -> int:
    def work(settings: Settings, store: Store) -> int:
        rows = [("NAME", "ADMIN", "CREATED")]
        rows += [(u.username, "yes" if u.is_admin else "no", u.created_at) for u in store.list_users()]
        _print_table(rows)
        return 0

    return _with_store(args, work)


def cmd_users_remove(args: argparse.Namespace) -> int:
    def work(settings: Settings, store: Store) -> int:
        if not store.delete_user(args.name):
            raise _Refused(f"no such user: {args.name!r}")
        print(f"Removed user {args.name!r} with their tokens, portfolio and watchlist.", file=sys.stderr)
        return 0

    return _with_store(args, work)


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from .auth import open_auth

    def work(settings: Settings, store: Store) -> int:
        token, record = open_auth(settings, store).create_api_token(args.name, args.label)
        print(token)
        print(
            f"API token {record.id} for {args.name!r}: shown once, only its hash is kept. "
            f"Send it as 'Authorization: Bearer <token>'; revoke with: "
            f"python -m stockcache tokens revoke {record.id}",
            file=sys.stderr,
        )
        return 0

    return _with_store(args, work)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    def work(settings: Settings, store: Store) -> int:
        found = store.get_user_by_name(args.name)
        if found is None:
            raise _Refused(f"no such user: {args.name!r}")
        rows = [("ID", "LABEL", "CREATED", "LAST USED", "REVOKED")]
        rows += [(t.id, t.label, t.created_at, t.last_used_at or "-", t.revoked_at or "-")
                 for t in store.list_api_tokens(found[0].id)]
        _print_table(rows)
        return 0

    return _with_store(args, work)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from .auth import token_id_of

    def work(settings: Settings, store: Store) -> int:
        token_id = token_id_of(args.token_id)
        if not store.revoke_api_token(token_id):
            # Never echo the argument: it may be a whole token.
            raise _Refused("no live token with that id (unknown, or already revoked)")
        print(f"Revoked API token {token_id}.", file=sys.stderr)
        return 0

    return _with_store(args, work)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"stockcache: configuration error: {exc.message}", file=sys.stderr)
        return 2
