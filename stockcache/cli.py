"""The command line: the only place that wires Settings to the parts.

``python -m stockcache serve|users|tokens|warm|stats`` (see ``--help``).
Bad configuration prints one line naming the setting and exits with status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import ConfigError, StockcacheError
from .settings import Settings, unknown_variables
from .store.rows import TOKEN_SCOPES

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

    config = commands.add_parser("config", help="print every setting (--markdown: the table of docs/configuration.md)")
    config.add_argument("--markdown", action="store_true", help="the settings table in Markdown")
    _global_options(config)
    config.set_defaults(handler=cmd_config)

    venues = commands.add_parser("venues", help="the venues and who serves each (the table of docs/symbols.md)")
    venues.set_defaults(handler=cmd_venues)

    _add_user_commands(commands)
    _add_store_commands(commands)
    _add_data_commands(commands)
    return parser


def _add_store_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = commands.add_parser("store", help="create or upgrade the user store, copy it to PostgreSQL")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    migrate = store_commands.add_parser(
        "migrate", help="create or upgrade the store's schema (SQLite in the data folder, or "
                        "STOCKCACHE_DATABASE_URL); the server also does this when it starts")
    migrate.set_defaults(handler=cmd_store_migrate)
    copy = store_commands.add_parser(
        "copy", help="copy this data folder's SQLite store into an empty PostgreSQL database",
        description="Copies users, password hashes, API tokens, portfolios, watchlists and the JWT key from "
                    "the data folder's store.sqlite into an empty PostgreSQL database (migrated first), in one "
                    "transaction. Refuses a database that already holds users or their data.")
    copy.add_argument("--to", dest="target", metavar="URL",
                      help="postgresql://user:password@host:5432/db (default: STOCKCACHE_DATABASE_URL; the "
                           "environment keeps the password out of the process list)")
    copy.set_defaults(handler=cmd_store_copy)
    for leaf in (migrate, copy):
        _global_options(leaf)


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
    passwd = users_commands.add_parser(
        "passwd", help="set a new password for a user, read from standard input (one line); "
                       "their logins (JWTs) issued before stop working, API tokens stay")
    passwd.add_argument("name")
    passwd.set_defaults(handler=cmd_users_passwd)

    tokens = commands.add_parser("tokens", help="create, list and revoke long-lived API tokens")
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_commands.add_parser(
        "create", help="print a new API token for a user on standard output (shown once)")
    create.add_argument("name", help="the user the token acts as")
    create.add_argument("--label", default="", help="what the token is for, e.g. 'spreadsheet'")
    create.add_argument("--scope", choices=TOKEN_SCOPES, default="full",
                        help="full: acts as the user (the default); market: reads market data only, and may "
                             "be sent as ?token= on GET market-data routes (spreadsheets, Ghostfolio)")
    create.set_defaults(handler=cmd_tokens_create)
    token_list = tokens_commands.add_parser("list", help="list a user's tokens (ids, scopes, labels, last use)")
    token_list.add_argument("name")
    token_list.set_defaults(handler=cmd_tokens_list)
    revoke = tokens_commands.add_parser("revoke", help="revoke a token by its id (or the whole token)")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    revoke.set_defaults(handler=cmd_tokens_revoke)

    for leaf in (add, listing, remove, passwd, create, token_list, revoke):
        _global_options(leaf)


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the flags given on the command line.

    A ``STOCKCACHE_*`` variable that is no setting (a typo) is warned about, one line each.
    """
    for warning in unknown_variables():
        print(f"stockcache: warning: {warning}", file=sys.stderr)
    flags = {name: getattr(args, name, None) for name in ("data_dir", "host", "port", "threads")}
    return Settings.from_env(**flags)


def cmd_config(args: argparse.Namespace) -> int:
    """Every setting with its value from the environment (secrets only as set or not set)."""
    from .settings import markdown_table

    if args.markdown:
        print(markdown_table())
        return 0
    for name, value in load_settings(args).public().items():
        print(f"{name} = {value}")
    return 0


def cmd_venues(args: argparse.Namespace) -> int:
    """The venues stockcache knows and who serves each (the table of docs/symbols.md), as Markdown."""
    from .upstream.providers import venues_markdown

    print(venues_markdown())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)  # a bad setting exits 2 before anything heavy is imported
    from .web.server import serve

    return serve(settings)


class _Refused(Exception):
    """A command-line refusal: one line on stderr, exit status 1 (2 for unusable input)."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _fail(message: str, status: int = 1) -> int:
    print(f"stockcache: {_one_line(message)}", file=sys.stderr)
    return status


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
    # Bytes, decoded strictly here: a text stream would turn bad bytes into surrogates
    # (or raise, depending on the locale) somewhere deeper.
    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.readline() if stream is not None else sys.stdin.readline().encode("utf-8", "surrogateescape")
    try:
        return str(raw.decode("utf-8")).rstrip("\r\n")
    except UnicodeDecodeError:
        raise _Refused("the password on standard input is not valid UTF-8 text", status=2) from None


def _with_store(args: argparse.Namespace, work: Callable[[Settings, Store], int]) -> int:
    from .store import open_configured_store

    settings = load_settings(args)
    store = open_configured_store(settings, pool_size=2)
    try:
        return work(settings, store)
    except _Refused as exc:
        return _fail(str(exc), exc.status)
    except StockcacheError as exc:
        return _fail(exc.message)
    finally:
        store.close()


def _new_password() -> str:
    """A new password from standard input, checked as the API checks it (at least 8 characters)."""
    from .store import validate

    password = _read_password()
    if not password:
        raise _Refused("the password is empty (give it on standard input, one line)")
    return validate.password(password)


def cmd_users_add(args: argparse.Namespace) -> int:
    from .auth import hash_password
    from .store import validate

    # Name and password are checked before the store is opened (or created): a refused
    # command leaves the data folder as it was.
    try:
        name = validate.username(args.name)
        password = _new_password()
    except _Refused as exc:
        return _fail(str(exc), exc.status)
    except StockcacheError as exc:
        return _fail(exc.message)

    def work(settings: Settings, store: Store) -> int:
        user = store.create_user(name, hash_password(password), is_admin=args.admin)
        role = "admin" if user.is_admin else "user"
        print(f"Added {role} {user.username!r} to {store.describe()}.", file=sys.stderr)
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


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from .auth import hash_password

    try:
        password = _new_password()
    except _Refused as exc:
        return _fail(str(exc), exc.status)
    except StockcacheError as exc:
        return _fail(exc.message)

    def work(settings: Settings, store: Store) -> int:
        found = store.get_user_by_name(args.name)
        if found is None:
            raise _Refused(f"no such user: {args.name!r}")
        changed = store.change_password(found[0].id, hash_password(password))
        if changed is None:
            raise _Refused(f"no such user: {args.name!r}")
        print(f"Changed the password of {changed.username!r}; their logins from before no longer work "
              "(API tokens do: revoke them with 'tokens revoke').", file=sys.stderr)
        return 0

    return _with_store(args, work)


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from .auth import open_auth
    from .store import command_prefix

    def work(settings: Settings, store: Store) -> int:
        token, record = open_auth(settings, store).create_api_token(args.name, args.label, scope=args.scope)
        print(token)
        how = "Send it as 'Authorization: Bearer <token>'"
        if record.scope == "market":
            how += ", or as ?token=<token> on GET market-data routes; it reads market data only"
        print(
            f"API token {record.id} ({record.scope} scope) for {args.name!r}: shown once, only its hash is "
            f"kept. {how}; revoke with: {command_prefix()} tokens revoke "
            f"{record.id} --data-dir {shlex.quote(str(settings.data_dir.resolve()))}",
            file=sys.stderr,
        )
        return 0

    return _with_store(args, work)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    def work(settings: Settings, store: Store) -> int:
        found = store.get_user_by_name(args.name)
        if found is None:
            raise _Refused(f"no such user: {args.name!r}")
        rows = [("ID", "SCOPE", "LABEL", "CREATED", "LAST USED", "REVOKED")]
        rows += [(t.id, t.scope, t.label, t.created_at, t.last_used_at or "-", t.revoked_at or "-")
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


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from .store import open_configured_store

    settings = load_settings(args)
    store = open_configured_store(settings, pool_size=2)
    try:
        before, after = store.migrated_from, store.schema_version()
    finally:
        store.close()
    done = (f"migrated from schema version {before} to {after}" if before != after
            else f"already at schema version {after}")
    print(f"The store {store.describe()} is {done}.", file=sys.stderr)
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    from .auth import SECRET_FILENAME
    from .settings import parse_setting
    from .store import store_path
    from .store.copy import copy_store
    from .store.postgres import open_postgres_store
    from .store.sqlite import SqliteStore

    settings = load_settings(args)
    target_url = parse_setting("database_url", args.target, source="--to") if args.target else settings.database_url
    if not target_url:
        return _fail("store copy needs a target: --to postgresql://... or STOCKCACHE_DATABASE_URL", 2)
    path = store_path(settings.data_dir)
    if not path.exists():
        return _fail(f"no store to copy: {path} does not exist")
    secret_file = settings.data_dir / SECRET_FILENAME
    secret = bytes.fromhex(secret_file.read_text(encoding="ascii").strip()) if secret_file.exists() else None
    source = SqliteStore(path).open()
    try:
        target = open_postgres_store(target_url, max_size=2)
        try:
            report = copy_store(source, target, jwt_secret=secret)
        except StockcacheError as exc:
            return _fail(f"nothing copied: {exc.message}")
        finally:
            target.close()
    finally:
        source.close()
    print(report.sentence(str(path), target.describe()), file=sys.stderr)
    return 0


# -- warm and stats -------------------------------------------------------------

WARM_KINDS = ("quote", "profile", "history", "analysis")
STATS_DESCRIPTION = (
    "Cache and upstream statistics as a table (--json for JSON). stats runs in its own process, so it "
    "reads what the server saves in the data folder: a snapshot of /api/cache/stats written every "
    "minute and at shutdown (kpis.sqlite), today's upstream calls per provider (usage.sqlite, counted "
    "by every process) and the KPI history. It works with the server running or stopped and needs no "
    "token; the server figures are at most a minute old (their time is shown)."
)


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in WARM_KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"kinds are a comma-separated list of {', '.join(WARM_KINDS)}")
    return kinds


def _add_data_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    warm = commands.add_parser(
        "warm", help="fill the cache for some symbols now, with a progress bar",
        description="Fetch what is not fresh in the cache for each SYMBOL, through the same budgets as "
                    "the server (the cache and usage files are shared with a running server). Prints a "
                    "summary and every failed item; exit status 1 if any item failed.")
    warm.add_argument("symbols", nargs="+", metavar="SYMBOL")
    warm.add_argument("--kinds", type=_kinds, default=("quote",),
                      help="comma-separated kinds of data: quote, profile, history, analysis (default: "
                           "quote); analysis spends model tokens from STOCKCACHE_LLM_TOKENS_PER_DAY")
    warm.add_argument("--quiet", action="store_true", help="no progress bar")
    warm.set_defaults(handler=cmd_warm)
    stats = commands.add_parser("stats", help="cache and upstream statistics as a table (--json for JSON)",
                                description=STATS_DESCRIPTION)
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    stats.add_argument("--days", type=int, default=7, help="days of KPI history to show (1..366, default 7)")
    stats.set_defaults(handler=cmd_stats)
    for leaf in (warm, stats):
        _global_options(leaf)


def cmd_warm(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .runtime import build_service
    from .symbols import normalize_symbol

    settings = load_settings(args)
    try:
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in args.symbols))
    except StockcacheError as exc:
        return _fail(f"{exc.message} (got {exc.fields.get('symbol', '')!r})")
    kinds: tuple[str, ...] = args.kinds
    service = build_service(settings)
    started = time.monotonic()
    outcome: dict[str, str | StockcacheError] = {}
    tokens_before = service.stats()["llm_tokens"] if "analysis" in kinds else None
    if tokens_before is not None and not args.quiet:
        print(_token_line("Analyses by", tokens_before, "before warming"), file=sys.stderr)
    try:
        step = max(1, min(settings.workers, settings.max_batch))  # small batches keep the bar moving
        with tqdm(total=len(symbols) * len(kinds), unit="item", desc="warming", file=sys.stderr,
                  disable=args.quiet) as bar:
            for kind in kinds:
                for start in range(0, len(symbols), step):
                    chunk = symbols[start:start + step]
                    outcome.update(service.warm(chunk, kinds=(kind,)))
                    bar.update(len(chunk))
        tokens_after = service.stats()["llm_tokens"] if tokens_before is not None else None
    finally:
        service.close()
    failed = {key: value for key, value in outcome.items() if isinstance(value, StockcacheError)}
    rows: list[tuple[str, ...]] = [("KIND", "FETCHED", "ALREADY FRESH", "FAILED")]
    for kind in kinds:
        # Each item is counted once, in one column: the columns add up to the symbols asked.
        mine = [value for key, value in outcome.items() if key.startswith(kind + ":")]
        rows.append((kind, str(mine.count("fetched")), str(mine.count("fresh")),
                     str(sum(isinstance(v, StockcacheError) for v in mine))))
    total = len(symbols) * len(kinds)
    what = f"{len(symbols)} symbol{'s' if len(symbols) > 1 else ''} x {len(kinds)} kind{'s' if len(kinds) > 1 else ''}"
    print(f"Warmed {total - len(failed)} of {total} items ({what}) in {time.monotonic() - started:.1f} s; "
          f"source: {', '.join(service.source_names)}.")
    if tokens_after is not None:
        print(_token_line("Analyses by", tokens_after, "after warming"))
    _print_table(rows)
    if failed:
        print("\nFailed:")
        failures: list[tuple[str, ...]] = [("ITEM", "ERROR", "MESSAGE")]
        failures += [(key, error.code, error.message) for key, error in sorted(failed.items())]
        _print_table(failures)
        return 1
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json
    import time

    from .clock import iso_utc
    from .kpis import KPI_FILE, KpiStore, costs_from, kpi_days, token_providers
    from .upstream.providers import provider_classes
    from .usage import UsageLedger, utc_day

    settings = load_settings(args)
    if not 1 <= args.days <= 366:
        return _fail("--days must be from 1 to 366")
    data_dir = settings.data_dir
    kpi_path, usage_path = data_dir / KPI_FILE, data_dir / "usage.sqlite"
    # Only read what exists: stats must not create files in a data folder, nor set a corrupt one
    # aside (the server does that when it starts).
    store = KpiStore(kpi_path, set_aside=False) if kpi_path.exists() else None
    try:
        ledger = UsageLedger(usage_path, set_aside=False) if usage_path.exists() else None
    except BaseException:
        if store is not None:
            store.close()
        raise
    now = time.time()
    try:
        snapshot = store.snapshot() if store is not None else None
        providers = [cls.name for cls in provider_classes() if cls.keyed and cls.has_key(settings)]
        kpis = kpi_days(store, ledger, now=now, days=args.days, costs=costs_from(settings), providers=providers,
                        token_providers=token_providers())
        today = ledger.days(1).get(utc_day(now), {}) if ledger is not None else {}
    finally:
        if store is not None:
            store.close()
        if ledger is not None:
            ledger.close()
    from .store.urls import mask_url

    report = {
        "data_dir": str(data_dir),
        "store": mask_url(settings.database_url) if settings.database_url else str(data_dir / "store.sqlite"),
        "saved_at": iso_utc(snapshot[0]) if snapshot else None,
        "saved_seconds_ago": int(now - snapshot[0]) if snapshot else None,
        "server": snapshot[1] if snapshot else None,
        "calls_today": today,
        "kpis": kpis,
    }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_stats(report)
    return 0


def _token_line(lead: str, tokens: dict, when: str) -> str:  # type: ignore[type-arg]
    """What analyses cost: "Analyses by llm (gpt-4o-mini): 1200 model tokens spent here, 5400 today of 200000"."""
    who = f"{tokens.get('source')} ({tokens.get('model')})"
    if tokens.get("per_day") is None and not tokens.get("today"):
        return f"{lead} {who}: no model tokens are counted ({when})."
    limit = f" of {tokens['per_day']}, {tokens['left']} left" if tokens.get("per_day") else " (no daily limit)"
    return (f"{lead} {who}: {tokens.get('spent', 0)} model tokens spent by this command, "
            f"{tokens.get('today', 0)} today{limit} ({when}).")


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_stats(report: dict) -> None:  # type: ignore[type-arg]
    server = report["server"]
    print(f"stockcache statistics for {report['data_dir']} (user store: {report['store']})")
    if server is None:
        print("\nNo server figures yet: a running server saves them every minute and when it stops.")
    else:
        print(f"Server figures saved at {report['saved_at']} ({report['saved_seconds_ago']} s ago).\n")
        rows: list[tuple[str, ...]] = [("TIER", "ENTRIES", "HITS", "MISSES")]
        for tier in ("memory", "redis", "sqlite"):
            figures = server.get(tier)
            if isinstance(figures, dict):
                rows.append((tier, _cell(figures.get("size")), _cell(figures.get("hits")),
                             _cell(figures.get("misses"))))
        _print_table(rows)
        reads = server.get("reads") or {}
        print(f"\nItems asked for: {reads.get('hits', 0)} from the cache, {reads.get('misses', 0)} from "
              f"upstream (hit rate {_cell(reads.get('hit_rate'), 4)}); coalesced {server.get('coalesced', 0)}, "
              f"stale answers {server.get('stale_served', 0)}.\n")
        rows = [("KIND", "MEMORY", "SQLITE", "MISSES", "HIT RATE")]
        for kind, figures in sorted((reads.get("by_kind") or {}).items()):
            rows.append((kind, _cell(figures.get("memory", 0)), _cell(figures.get("sqlite", 0)),
                         _cell(figures.get("misses")), _cell(figures.get("hit_rate"), 4)))
        if len(rows) > 1:
            _print_table(rows)
            print()
        rows = [("PROVIDER", "CALLS", "ERRORS", "RATE LIMITED", "LEFT THIS MINUTE", "LEFT TODAY", "CIRCUIT")]
        for name, figures in sorted((server.get("upstream") or {}).items()):
            left = figures.get("budget_left") or {}
            rows.append((name, _cell(figures.get("calls")), _cell(figures.get("errors")),
                         _cell(figures.get("rate_limited")), _cell(left.get("minute")), _cell(left.get("day")),
                         _cell(figures.get("circuit"))))
        _print_table(rows)
        refresher = server.get("refresher") or {}

        def counts(name: str) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted((refresher.get(name) or {}).items())) or "0"

        state = f"on ({refresher.get('hours')} hours)" if refresher.get("enabled") else "off"
        print(f"\nRefresher: {state}; {refresher.get('runs', 0)} runs; refreshed {counts('refreshed')}; "
              f"failed {counts('failed')}; skipped for budget {counts('skipped_budget')}.\n")
        rows = [("ROUTE", "REQUESTS", "P50 MS", "P95 MS", "P99 MS")]
        for route, figures in sorted((server.get("latency") or {}).items()):
            rows.append((route, _cell(figures.get("count")), _cell(figures.get("p50_ms")),
                         _cell(figures.get("p95_ms")), _cell(figures.get("p99_ms"))))
        if len(rows) > 1:
            _print_table(rows)
    calls = ", ".join(f"{name} {n}" for name, n in sorted(report["calls_today"].items())) or "none"
    print(f"\nUpstream calls today (UTC, every process): {calls}.\n")
    rows = [("DATE", "REQUESTS", "HIT RATE", "CALLS SAVED", "UPSTREAM CALLS", "P50 MS", "P95 MS", "P99 MS",
             "COST")]
    for day in report["kpis"]:
        upstream = " ".join(f"{k}={v}" for k, v in sorted(day["upstream_calls"].items())) or "-"
        rows.append((day["date"], _cell(day["requests"]), _cell(day["hit_rate"], 4), _cell(day["calls_saved"]),
                     upstream, _cell(day["p50_ms"]), _cell(day["p95_ms"]), _cell(day["p99_ms"]),
                     _cell(day["estimated_cost"], 4)))
    if len(rows) > 1:
        _print_table(rows)
    else:
        print("No KPI history yet.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"stockcache: configuration error: {_one_line(exc.message)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `stockcache stats | head`: the reader left, which is fine
        sys.stderr.close()
        return 0
    except (StockcacheError, OSError) as exc:
        # Whatever else stops a command from starting (a cache file it cannot open, a folder it
        # cannot read) is one line too, not a traceback.
        message = exc.message if isinstance(exc, StockcacheError) else str(exc)
        print(f"stockcache: {_one_line(message)}", file=sys.stderr)
        return 2
