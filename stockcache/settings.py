"""Typed, frozen settings: the only module that reads ``os.environ``.

Each setting is declared once, as a field of :class:`Settings` (or of a
provider's :class:`Section`) made with :func:`setting`: its default, its
environment variable(s), its parser, its help and whether it is a secret. The
settings table (``docs/configuration.md``, ``--help``, the meta-tests) is
derived from those fields, so no default is ever written twice.

Providers declare their own section (key, URL, limits, cost) in their module
(``stockcache.upstream.providers``); a section's values are read with
``settings.section(FinnhubConfig)`` and, flat, as ``finnhub_api_key``
(:meth:`Settings.get`, the constructor). Kinds contribute one route setting
each (``STOCKCACHE_ROUTE_<KIND>``).

Bad values raise :class:`~stockcache.errors.ConfigError` naming the setting;
the command line turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError

TTL_LEVELS = ("quote", "news", "history", "fundamentals", "ai_analysis", "fx")

# -- parsers: text from the environment to a typed value (ValueError with a reason) --------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number of at least 0")
    return value


AUTO = "auto"


def auto_or_non_negative_int(text: str) -> int | str:
    """``auto`` (the provider picks its limit from whether a key is set) or a whole number of at least 0."""
    if text.strip().lower() == AUTO:
        return AUTO
    return non_negative_int(text)


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number greater than 0")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number of at least 0")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError("must be a number greater than 0 and at most 1")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def on_off(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be 'on' or 'off'")


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError("must be one of: " + ", ".join(choices))
        return lowered

    return parse


def url(text: str) -> str:
    text = text.strip()
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return text.rstrip("/") if not text.endswith("?") else text


def redis_url(text: str) -> str:
    text = text.strip()
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return text


def database_url(text: str) -> str:
    text = text.strip()
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return text


def namespace(text: str) -> str:
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-'")
    return text


def text(value: str) -> str:
    return value.strip()


def names(value: str) -> tuple[str, ...]:
    """A comma-separated list of lower-case names (provider routes)."""
    out = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    for name in out:
        if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
            raise ValueError(f"{name!r} is not a provider name")
    return out


def currency_code(value: str) -> str:
    """An ISO 4217 code such as EUR (case folded)."""
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("must be a three-letter ISO 4217 code such as EUR")
    return code


def upper_codes(value: str) -> tuple[str, ...]:
    """A comma-separated list of upper-case codes (MICs, currencies)."""
    out = tuple(dict.fromkeys(part.strip().upper() for part in value.split(",") if part.strip()))
    for code in out:
        if not re.fullmatch(r"[A-Z0-9]{2,8}", code):
            raise ValueError(f"{code!r} is not a code of 2 to 8 letters or digits")
    return out


def mics(value: str) -> tuple[str, ...]:
    """A comma-separated list of ISO 10383 MICs (four letters or digits), upper-cased, in order."""
    out = tuple(dict.fromkeys(part.strip().upper() for part in value.split(",") if part.strip()))
    for code in out:
        if not re.fullmatch(r"[A-Z0-9]{4}", code):
            raise ValueError(f"{code!r} is not a MIC (four letters or digits, such as XETR)")
    return out


def currency(value: str) -> str:
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("must be a three-letter ISO 4217 code such as EUR")
    return code


NOTIFY_KINDS = ("ntfy", "webhook")
# A setting whose environment variable ends so is a family: one variable per entry, the name in
# place of <NAME> (STOCKCACHE_NOTIFY_PHONE=ntfy:https://...).
FAMILY = "<NAME>"


@dataclass(frozen=True)
class NotifyChannel:
    """A place alerts are sent, configured by the operator: ``kind`` ntfy or webhook, and its URL.

    The URL is a secret (an ntfy topic is its own password; a webhook URL often
    holds a token): out of ``repr``, and shown only by :meth:`describe`.
    """

    name: str
    kind: str
    url: str = field(repr=False)

    def describe(self) -> str:
        """``ntfy:https://ntfy.sh/***``: the kind and the host, never the path or query that may hold a token."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]  # never a user:password@
        return f"{self.kind}:{parts.scheme}://{host}/***"


def notify_channel(value: str) -> NotifyChannel:
    """``NAME=kind:url`` (what one STOCKCACHE_NOTIFY_NAME variable says) as a channel."""
    name, _, target = value.partition("=")
    name = name.strip().lower()
    if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
        raise ValueError("the channel name after STOCKCACHE_NOTIFY_ must be 1 to 32 letters, digits or '_'")
    kind, sep, address = target.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in NOTIFY_KINDS:
        raise ValueError("must be ntfy:<url> or webhook:<url>")
    try:
        address = url(address)
    except ValueError:
        raise ValueError(f"must be {kind}:<url> with an http:// or https:// URL") from None
    return NotifyChannel(name, kind, address)


# -- declaring settings ---------------------------------------------------------------------

_META = "stockcache"


def setting(
    default: Any,
    *,
    env: str | tuple[str, ...],
    help: str,
    parse: Callable[[str], Any] = text,
    flag: str | None = None,
    secret: bool = False,
) -> Any:
    """A settings field: its one default and everything the table shows about it."""
    envs = (env,) if isinstance(env, str) else tuple(env)
    return field(default=default, repr=not secret,
                 metadata={_META: {"env": envs, "help": help, "parse": parse, "flag": flag, "secret": secret}})


@dataclass(frozen=True)
class Row:
    """One row of the settings table, derived from a field."""

    name: str  # the flat name: Settings(name=...), settings.get(name)
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any
    help: str
    flag: str | None = None
    secret: bool = False
    section: str | None = None  # the provider section's prefix, None for core settings


class Section:
    """Base of a provider's settings: a frozen dataclass whose fields are :func:`setting` s.

    ``prefix`` makes the flat names (``finnhub`` + ``api_key`` -> ``finnhub_api_key``).
    Immutable, so thread-safe.
    """

    prefix: ClassVar[str]

    @classmethod
    def rows(cls) -> list[Row]:
        return _rows(cls, cls.prefix)  # type: ignore[arg-type]


def _rows(cls: type, prefix: str | None) -> list[Row]:
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        out.append(Row(f"{prefix}_{f.name}" if prefix else f.name, meta["env"], meta["parse"], default,
                       meta["help"], meta["flag"], meta["secret"], prefix))
    return out


S = TypeVar("S", bound=Section)


def _section_classes() -> tuple[type[Section], ...]:
    # The provider registry declares the sections; imported here, late, because the
    # providers import this module for setting() and Section.
    from .upstream.providers import sections

    return sections()


def _route_rows() -> list[Row]:
    from .kinds import KINDS

    return [
        Row(f"route_{kind.name}", (f"STOCKCACHE_ROUTE_{kind.name.upper()}",), names, (),
            f"Providers asked for {kind.name} data, in order (comma-separated); unset: by keys and coverage.")
        for kind in KINDS.values() if kind.routed
    ]


@dataclass(frozen=True, init=False)
class Settings:
    """Every knob of stockcache, validated once at start-up. Immutable, so thread-safe.

    Build it with :meth:`from_env`; tests build it with keyword arguments, which
    may name provider settings flat (``finnhub_api_key="..."``). Secrets are left
    out of ``repr`` so a logged Settings never leaks a key.
    """

    host: str = setting("127.0.0.1", env="STOCKCACHE_HOST", flag="--host",
                        help="Address to listen on; 0.0.0.0 to accept connections from other machines.")
    port: int = setting(8080, env="STOCKCACHE_PORT", parse=port, flag="--port", help="TCP port to listen on.")
    data_dir: Path = setting(Path("data"), env="STOCKCACHE_DATA_DIR", parse=Path, flag="--data-dir",
                             help="Folder for the cache, the store, usage counters and the JWT secret.")
    threads: int = setting(8, env="STOCKCACHE_THREADS", parse=positive_int, flag="--threads",
                           help="waitress worker threads answering HTTP requests.")
    connection_limit: int = setting(1000, env="STOCKCACHE_CONNECTION_LIMIT", parse=positive_int,
                                    help="Most open client connections; idle keep-alive clients must not lock "
                                         "others out.")
    trusted_proxy: str = setting("", env="STOCKCACHE_TRUSTED_PROXY",
                                 help="Address of a reverse proxy whose X-Forwarded-For is believed (login "
                                      "limits per client).")
    channel_timeout: int = setting(30, env="STOCKCACHE_CHANNEL_TIMEOUT", parse=positive_int,
                                   help="Seconds an idle or slow client connection is kept open.")
    max_request_body: int = setting(1_048_576, env="STOCKCACHE_MAX_REQUEST_BODY", parse=positive_int,
                                    help="Largest request body in bytes; larger bodies get 413.")
    upstream_timeout: float = setting(10.0, env="STOCKCACHE_UPSTREAM_TIMEOUT", parse=positive_float,
                                      help="Seconds one upstream request may take before its item fails with "
                                           "upstream_timeout.")
    ttl_quote: int = setting(300, env="STOCKCACHE_TTL_QUOTE", parse=non_negative_int,
                             help="Seconds a quote stays fresh.")
    ttl_news: int = setting(1800, env="STOCKCACHE_TTL_NEWS", parse=non_negative_int,
                            help="Seconds news stays fresh.")
    ttl_history: int = setting(3600, env="STOCKCACHE_TTL_HISTORY", parse=non_negative_int,
                               help="Seconds daily price history stays fresh.")
    ttl_fundamentals: int = setting(86400, env="STOCKCACHE_TTL_FUNDAMENTALS", parse=non_negative_int,
                                    help="Seconds company profiles, metrics, searches and lookups stay fresh.")
    ttl_ai_analysis: int = setting(604800, env="STOCKCACHE_TTL_AI_ANALYSIS", parse=non_negative_int,
                                   help="Seconds an AI analysis stays fresh.")
    ttl_fx: int = setting(3600, env="STOCKCACHE_TTL_FX", parse=non_negative_int,
                          help="Seconds an FX rate table stays fresh.")
    stale_grace: int = setting(86400, env="STOCKCACHE_STALE_GRACE", parse=non_negative_int,
                               help="Seconds an entry is kept past its TTL, to be served flagged stale when the "
                                    "upstream fails.")
    negative_ttl: int = setting(600, env="STOCKCACHE_NEGATIVE_TTL", parse=non_negative_int,
                                help="Seconds an upstream 'not found' is remembered, so unknown symbols do not "
                                     "spend quota.")
    refusal_ttl: int = setting(86400, env="STOCKCACHE_REFUSAL_TTL", parse=non_negative_int,
                               help="Seconds a provider's refusal of one symbol (not in its plan) is remembered, "
                                    "so it is not asked again.")
    base_currency: str = setting("USD", env="STOCKCACHE_BASE_CURRENCY", parse=currency_code,
                                 help="Currency of portfolio totals for users who have not chosen their own "
                                      "(PUT /api/me {\"base_currency\": \"EUR\"}).")
    preferred_exchanges: tuple[str, ...] = setting(
        ("XETR", "XNYS", "XNAS", "XLON", "XPAR", "XAMS"), env="STOCKCACHE_PREFERRED_EXCHANGES", parse=mics,
        help="MICs in order of preference: a position or watch item added by ISIN is the ISIN's listing on the "
             "first of these it has (else its first listing).")
    redis_url: str = setting("", env=("REDIS_URL", "STOCKCACHE_REDIS_URL"), parse=redis_url, secret=True,
                             help="Optional Redis URL for a cache tier shared by several instances; unset means "
                                  "no Redis.")
    database_url: str = setting("", env="STOCKCACHE_DATABASE_URL", parse=database_url, secret=True,
                                help="Optional PostgreSQL URL for a user store shared by several instances "
                                     "(users, tokens, portfolios, watchlists, the JWT key); unset means SQLite "
                                     "in the data folder.")
    redis_namespace: str = setting("stockcache", env="STOCKCACHE_REDIS_NAMESPACE", parse=namespace,
                                   help="Prefix of every Redis key (NAMESPACE:cache:..., :budget:, :lock:); "
                                        "instances that share a cache use the same one.")
    workers: int = setting(32, env="STOCKCACHE_WORKERS", parse=positive_int,
                           help="Concurrent upstream requests per provider (its threads and pooled HTTP "
                                "connections); a provider that hangs holds only its own.")
    max_batch: int = setting(100, env="STOCKCACHE_MAX_BATCH", parse=positive_int,
                             help="Most symbols in one batch request.")
    memory_max_items: int = setting(10_000, env="STOCKCACHE_MEMORY_MAX_ITEMS", parse=positive_int,
                                    help="Most entries in the in-memory LRU tier.")
    refresh: bool = setting(True, env="STOCKCACHE_REFRESH", parse=on_off,
                            help="Background refresh of symbols held in portfolios and watchlists: on or off.")
    refresh_hours: str = setting("market", env="STOCKCACHE_REFRESH_HOURS", parse=choice("market", "always"),
                                 help="When the refresher runs: 'market' (each listing's own trading session) "
                                      "or 'always'.")
    refresh_budget_share: float = setting(0.5, env="STOCKCACHE_REFRESH_BUDGET_SHARE", parse=fraction,
                                          help="Share of each provider's budget the background refresher may "
                                               "use.")
    refresh_lead: int = setting(60, env="STOCKCACHE_REFRESH_LEAD", parse=positive_int,
                                help="Seconds before a held symbol's quote expires that the refresher fetches it "
                                     "again (at most half the quote TTL).")
    notify: tuple[NotifyChannel, ...] = setting(
        (), env="STOCKCACHE_NOTIFY_" + FAMILY, parse=notify_channel, secret=True,
        help="Alert channels, one variable each: STOCKCACHE_NOTIFY_PHONE=ntfy:https://ntfy.sh/TOPIC or "
             "=webhook:https://...; users pick one by its name (phone), never by URL. Secret: a URL may hold a "
             "token.")
    alert_retries: int = setting(4, env="STOCKCACHE_ALERT_RETRIES", parse=non_negative_int,
                                 help="Retries of an alert delivery that failed, each after twice the wait of the "
                                      "last, before it is recorded as failed.")
    alert_retry_wait: float = setting(2.0, env="STOCKCACHE_ALERT_RETRY_WAIT", parse=positive_float,
                                      help="Seconds before the first retry of a failed alert delivery.")
    jwt_ttl: int = setting(3600, env="STOCKCACHE_JWT_TTL", parse=positive_int,
                           help="Seconds a login token stays valid.")
    log_level: str = setting("info", env="STOCKCACHE_LOG_LEVEL", parse=choice("debug", "info", "warning", "error"),
                             help="Logging level.")
    # Provider sections and per-kind routes, keyed by section prefix / kind; filled by __init__.
    sections: Mapping[str, Section] = field(default_factory=dict, repr=False, compare=True)
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=True)

    def __init__(self, **values: Any) -> None:
        core = {f.name: f for f in dataclasses.fields(self) if _META in f.metadata}
        by_name = _extra_rows()
        sections: dict[str, dict[str, Any]] = {}
        routes: dict[str, tuple[str, ...]] = {}
        given_sections = values.pop("sections", None)
        given_routes = values.pop("routes", None)
        for name, value in values.items():
            if name in core:
                continue
            row = by_name.get(name)
            if row is None:
                raise TypeError(f"Settings got an unknown setting {name!r}")
            if row.section is not None:
                sections.setdefault(row.section, {})[name[len(row.section) + 1:]] = value
            else:
                routes[name.removeprefix("route_")] = tuple(value)
        for name, f in core.items():
            object.__setattr__(self, name, values.get(name, f.default))
        built: dict[str, Section] = dict(given_sections or {})
        for cls in _section_classes():
            if cls.prefix not in built or cls.prefix in sections:
                base = built.get(cls.prefix)
                overrides = sections.get(cls.prefix, {})
                built[cls.prefix] = dataclasses.replace(base, **overrides) if base else cls(**overrides)  # type: ignore[type-var]
        merged_routes = dict(given_routes or {})
        merged_routes.update(routes)
        object.__setattr__(self, "sections", built)
        object.__setattr__(self, "routes", {k: v for k, v in merged_routes.items() if v})
        self._check()

    def _check(self) -> None:
        for name in ("threads", "workers", "max_batch", "memory_max_items", "jwt_ttl"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for level in TTL_LEVELS:
            if getattr(self, f"ttl_{level}") < 0:
                raise ConfigError(f"STOCKCACHE_TTL_{level.upper()} must be at least 0")
        if self.upstream_timeout <= 0:
            raise ConfigError("STOCKCACHE_UPSTREAM_TIMEOUT must be greater than 0")
        names = [channel.name for channel in self.notify]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"STOCKCACHE_NOTIFY_{name.upper()}: the channel {name!r} is configured twice")

    def channel(self, name: str) -> NotifyChannel | None:
        """The alert channel called ``name`` (case-insensitive), or None."""
        return next((c for c in self.notify if c.name == name.lower()), None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``), then apply overrides.

        Overrides are already-typed values (from command line flags or tests);
        ``None`` means "not given" and is ignored.
        """
        environ = os.environ if environ is None else environ
        rows = {row.name: row for row in settings_table()}
        values: dict[str, Any] = {}
        for row in rows.values():
            for var in row.env:
                if var.endswith(FAMILY):
                    members = _family(row, var.removesuffix(FAMILY), environ)
                    if members:
                        values[row.name] = members
                        break
                    continue
                raw = environ.get(var)
                if raw is not None and (raw.strip() or not row.secret):
                    values[row.name] = parse_row(row, raw, source=var)
                    break
        for name, value in overrides.items():
            if name not in rows:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                row = rows[name]
                values[name] = parse_row(row, value, source=row.flag or name) if isinstance(value, str) else value
        return cls(**values)

    # -- reading -----------------------------------------------------------------------------

    def section(self, cls: type[S]) -> S:
        """A provider's settings section (its defaults when not configured)."""
        found = self.sections.get(cls.prefix)
        return found if isinstance(found, cls) else cls()

    def get(self, name: str) -> Any:
        """Any setting by its flat table name (``port``, ``finnhub_api_key``, ``route_quote``)."""
        if name.startswith("route_"):
            return self.routes.get(name.removeprefix("route_"), ())
        for prefix, values in self.sections.items():
            if name.startswith(prefix + "_"):
                return getattr(values, name[len(prefix) + 1:])
        return getattr(self, name)

    @property
    def demo(self) -> bool:
        """True when no market-data provider has a key: the offline demo source serves."""
        from .upstream.providers import demo_mode

        return demo_mode(self)

    @property
    def ttls(self) -> dict[str, int]:
        """TTL in seconds for each level, as the cache wants them."""
        return {level: getattr(self, f"ttl_{level}") for level in TTL_LEVELS}

    def values(self) -> dict[str, Any]:
        """Every setting by flat name (what ``Settings(**values)`` would rebuild)."""
        return {row.name: self.get(row.name) for row in settings_table()}

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests, and the command line)."""
        return Settings(**{**self.values(), **changes})

    def public(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets shown only as set or not set."""
        out: dict[str, Any] = {}
        for row in settings_table():
            value = self.get(row.name)
            if row.secret:
                out[row.name] = "(set)" if value else "(not set)"
            elif isinstance(value, Path):
                out[row.name] = str(value)
            elif isinstance(value, tuple):
                out[row.name] = ",".join(value)
            else:
                out[row.name] = value
        return out


def _family(row: Row, prefix: str, environ: Mapping[str, str]) -> tuple[Any, ...]:
    """Every ``PREFIX<NAME>`` variable of a family setting, each parsed from ``NAME=value``, by name."""
    return tuple(parse_row(row, f"{var[len(prefix):]}={environ[var]}", source=var)
                 for var in sorted(environ) if var.startswith(prefix) and len(var) > len(prefix)
                 and environ[var].strip())


def _extra_rows() -> dict[str, Row]:
    rows = [row for cls in _section_classes() for row in cls.rows()] + _route_rows()
    return {row.name: row for row in rows}


def settings_table() -> list[Row]:
    """Every setting: the core ones, each provider's section, then the route per kind."""
    return _rows(Settings, None) + [row for cls in _section_classes() for row in cls.rows()] + _route_rows()


def parse_row(row: Row, raw: str, *, source: str | None = None) -> Any:
    """Parse one raw value, raising ConfigError that names the setting (never a secret's value)."""
    label = source or row.env[0]
    try:
        return row.parse(raw)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        if reason.startswith(("invalid literal", "could not convert")):
            reason = "must be a number"
        shown = "" if row.secret else f" (got {raw!r})"
        raise ConfigError(f"{label}: {reason}{shown}") from None


def parse_setting(name: str, raw: str, *, source: str | None = None) -> Any:
    """Parse one raw value of the setting called ``name`` (see :func:`parse_row`)."""
    rows = {row.name: row for row in settings_table()}
    return parse_row(rows[name], raw, source=source)


ENV_PREFIX = "STOCKCACHE_"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per ``STOCKCACHE_*`` variable that is no setting, naming the closest known one.

    A misspelled variable (``STOCKCACHE_PROT``) is otherwise ignored without a
    word, and the service starts with the default. Only names are shown, never
    values: a misspelled secret is still a secret.
    """
    environ = os.environ if environ is None else environ
    known = sorted({var for row in settings_table() for var in row.env if var.startswith(ENV_PREFIX)})
    families = tuple(var.removesuffix(FAMILY) for var in known if var.endswith(FAMILY))
    lines = []
    for name in sorted(var for var in environ if var.startswith(ENV_PREFIX) and var not in known
                       and not var.startswith(families)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the settings"
        lines.append(f"{name} is not a stockcache setting and is ignored; {hint}")
    return lines


def markdown_table() -> str:
    """The settings table as docs/configuration.md shows it (a test keeps the two equal)."""
    lines = ["| variable | flag | default | what |", "| --- | --- | --- | --- |"]
    for row in settings_table():
        default = row.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "(unset)" if default in ("", ()) or row.secret else str(default)
        variables = ", ".join(f"`{var}`" for var in row.env)
        lines.append(f"| {variables} | {f'`{row.flag}`' if row.flag else ''} | `{shown}` | {row.help} |")
    return "\n".join(lines)
