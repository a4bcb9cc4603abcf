"""Typed, frozen settings: the only module that reads ``os.environ``.

Every setting is one row of ``SETTINGS`` (name, environment variable, command
line flag, type, default, help), in the spirit of datasette's settings table:
the README table and ``--help`` are generated from it, and a meta-test keeps
the contract's variables and this table in step.

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
from typing import Any

from .errors import ConfigError

TTL_LEVELS = ("quote", "news", "history", "fundamentals", "ai_analysis")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number of at least 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number of at least 0")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError("must be a number greater than 0 and at most 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def _on_off(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be 'on' or 'off'")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError("must be one of: " + ", ".join(choices))
        return lowered

    return parse


def _url(text: str) -> str:
    text = text.strip()
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return text.rstrip("/") if not text.endswith("?") else text


def _redis_url(text: str) -> str:
    text = text.strip()
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return text


def _database_url(text: str) -> str:
    text = text.strip()
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return text


def _redis_namespace(text: str) -> str:
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-'")
    return text


def _text(text: str) -> str:
    return text.strip()


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any
    help: str
    flag: str | None = None
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("host", ("STOCKCACHE_HOST",), _text, "127.0.0.1",
            "Address to listen on; 0.0.0.0 to accept connections from other machines.", "--host"),
    Setting("port", ("STOCKCACHE_PORT",), _port, 8080, "TCP port to listen on.", "--port"),
    Setting("data_dir", ("STOCKCACHE_DATA_DIR",), Path, Path("data"),
            "Folder for the cache, the store, usage counters and the JWT secret.", "--data-dir"),
    Setting("threads", ("STOCKCACHE_THREADS",), _positive_int, 8,
            "waitress worker threads answering HTTP requests.", "--threads"),
    Setting("connection_limit", ("STOCKCACHE_CONNECTION_LIMIT",), _positive_int, 1000,
            "Most open client connections; idle keep-alive clients must not lock others out."),
    Setting("trusted_proxy", ("STOCKCACHE_TRUSTED_PROXY",), _text, "",
            "Address of a reverse proxy whose X-Forwarded-For is believed (login limits per client)."),
    Setting("channel_timeout", ("STOCKCACHE_CHANNEL_TIMEOUT",), _positive_int, 30,
            "Seconds an idle or slow client connection is kept open."),
    Setting("max_request_body", ("STOCKCACHE_MAX_REQUEST_BODY",), _positive_int, 1_048_576,
            "Largest request body in bytes; larger bodies get 413."),
    Setting("finnhub_api_key", ("FINNHUB_API_KEY",), _text, "",
            "Finnhub API key; without any key the offline demo source serves.", secret=True),
    Setting("alphavantage_api_key", ("ALPHAVANTAGE_API_KEY",), _text, "",
            "Alpha Vantage API key (history, and fallback for quotes and profiles).", secret=True),
    Setting("finnhub_url", ("STOCKCACHE_FINNHUB_URL",), _url, "https://finnhub.io/api/v1",
            "Finnhub base URL (point it at a fake upstream for tests)."),
    Setting("alphavantage_url", ("STOCKCACHE_ALPHAVANTAGE_URL",), _url,
            "https://www.alphavantage.co/query", "Alpha Vantage query URL."),
    Setting("finnhub_per_minute", ("STOCKCACHE_FINNHUB_PER_MINUTE",), _non_negative_int, 60,
            "Finnhub calls allowed per minute (free plan: 60); 0 means no limit."),
    Setting("finnhub_per_second", ("STOCKCACHE_FINNHUB_PER_SECOND",), _non_negative_int, 30,
            "Finnhub calls allowed per second (every plan: 30); 0 means no limit."),
    Setting("finnhub_per_day", ("STOCKCACHE_FINNHUB_PER_DAY",), _non_negative_int, 0,
            "Finnhub calls allowed per UTC day; 0 means no limit."),
    Setting("alphavantage_per_day", ("STOCKCACHE_ALPHAVANTAGE_PER_DAY",), _non_negative_int, 25,
            "Alpha Vantage calls allowed per UTC day (free plan: 25); 0 means no limit."),
    Setting("alphavantage_per_second", ("STOCKCACHE_ALPHAVANTAGE_PER_SECOND",), _non_negative_int, 1,
            "Alpha Vantage calls allowed per second (free plan: about 1); 0 means no limit."),
    Setting("alphavantage_per_minute", ("STOCKCACHE_ALPHAVANTAGE_PER_MINUTE",), _non_negative_int, 0,
            "Alpha Vantage calls allowed per minute; 0 means no limit."),
    Setting("upstream_timeout", ("STOCKCACHE_UPSTREAM_TIMEOUT",), _positive_float, 10.0,
            "Seconds one upstream request may take before its item fails with upstream_timeout."),
    Setting("ttl_quote", ("STOCKCACHE_TTL_QUOTE",), _non_negative_int, 300, "Seconds a quote stays fresh."),
    Setting("ttl_news", ("STOCKCACHE_TTL_NEWS",), _non_negative_int, 1800, "Seconds news stays fresh."),
    Setting("ttl_history", ("STOCKCACHE_TTL_HISTORY",), _non_negative_int, 3600,
            "Seconds daily price history stays fresh."),
    Setting("ttl_fundamentals", ("STOCKCACHE_TTL_FUNDAMENTALS",), _non_negative_int, 86400,
            "Seconds company profiles and metrics stay fresh."),
    Setting("ttl_ai_analysis", ("STOCKCACHE_TTL_AI_ANALYSIS",), _non_negative_int, 604800,
            "Seconds an AI analysis stays fresh."),
    Setting("stale_grace", ("STOCKCACHE_STALE_GRACE",), _non_negative_int, 86400,
            "Seconds an entry is kept past its TTL, to be served flagged stale when the upstream fails."),
    Setting("negative_ttl", ("STOCKCACHE_NEGATIVE_TTL",), _non_negative_int, 600,
            "Seconds an upstream 'not found' is remembered, so unknown symbols do not spend quota."),
    Setting("refusal_ttl", ("STOCKCACHE_REFUSAL_TTL",), _non_negative_int, 86400,
            "Seconds a provider's refusal of one symbol (a listing outside its plan) is remembered, so the "
            "next provider is asked instead; 0 forgets at once."),
    Setting("redis_url", ("REDIS_URL", "STOCKCACHE_REDIS_URL"), _redis_url, "",
            "Optional Redis URL for a cache tier shared by several instances; unset means no Redis.",
            secret=True),
    Setting("database_url", ("STOCKCACHE_DATABASE_URL",), _database_url, "",
            "Optional PostgreSQL URL for a user store shared by several instances (users, tokens, portfolios, "
            "watchlists, the JWT key); unset means SQLite in the data folder.", secret=True),
    Setting("redis_namespace", ("STOCKCACHE_REDIS_NAMESPACE",), _redis_namespace, "stockcache",
            "Prefix of every Redis key (NAMESPACE:cache:..., :budget:, :lock:); instances that share "
            "a cache use the same one."),
    Setting("workers", ("STOCKCACHE_WORKERS",), _positive_int, 32,
            "Concurrent upstream requests per provider (its threads and pooled HTTP connections); a provider "
            "that hangs holds only its own."),
    Setting("max_batch", ("STOCKCACHE_MAX_BATCH",), _positive_int, 100, "Most symbols in one batch request."),
    Setting("memory_max_items", ("STOCKCACHE_MEMORY_MAX_ITEMS",), _positive_int, 10_000,
            "Most entries in the in-memory LRU tier."),
    Setting("refresh", ("STOCKCACHE_REFRESH",), _on_off, True,
            "Background refresh of symbols held in portfolios and watchlists: on or off."),
    Setting("refresh_hours", ("STOCKCACHE_REFRESH_HOURS",), _choice("market", "always"), "market",
            "When the refresher runs: 'market' (US regular session) or 'always'."),
    Setting("refresh_budget_share", ("STOCKCACHE_REFRESH_BUDGET_SHARE",), _fraction, 0.5,
            "Share of each provider's budget the background refresher may use."),
    Setting("refresh_lead", ("STOCKCACHE_REFRESH_LEAD",), _positive_int, 60,
            "Seconds before a held symbol's quote expires that the refresher fetches it again "
            "(at most half the quote TTL)."),
    Setting("jwt_ttl", ("STOCKCACHE_JWT_TTL",), _positive_int, 3600, "Seconds a login token stays valid."),
    Setting("finnhub_cost_per_call", ("STOCKCACHE_FINNHUB_COST_PER_CALL",), _non_negative_float, 0.0,
            "Price of one Finnhub call, for the estimated cost in KPIs."),
    Setting("alphavantage_cost_per_call", ("STOCKCACHE_ALPHAVANTAGE_COST_PER_CALL",), _non_negative_float,
            0.0, "Price of one Alpha Vantage call, for the estimated cost in KPIs."),
    Setting("log_level", ("STOCKCACHE_LOG_LEVEL",), _choice("debug", "info", "warning", "error"), "info",
            "Logging level."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Every knob of stockcache, validated once at start-up. Immutable, so thread-safe.

    Build it with :meth:`from_env`; tests build it with keyword overrides.
    Secrets are left out of ``repr`` so a logged Settings never leaks a key.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    threads: int = 8
    connection_limit: int = 1000
    trusted_proxy: str = ""
    channel_timeout: int = 30
    max_request_body: int = 1_048_576
    finnhub_api_key: str = field(default="", repr=False)
    alphavantage_api_key: str = field(default="", repr=False)
    finnhub_url: str = "https://finnhub.io/api/v1"
    alphavantage_url: str = "https://www.alphavantage.co/query"
    finnhub_per_minute: int = 60
    finnhub_per_second: int = 30
    finnhub_per_day: int = 0
    alphavantage_per_day: int = 25
    alphavantage_per_second: int = 1
    alphavantage_per_minute: int = 0
    upstream_timeout: float = 10.0
    ttl_quote: int = 300
    ttl_news: int = 1800
    ttl_history: int = 3600
    ttl_fundamentals: int = 86400
    ttl_ai_analysis: int = 604800
    stale_grace: int = 86400
    negative_ttl: int = 600
    refusal_ttl: int = 86400
    redis_url: str = field(default="", repr=False)
    database_url: str = field(default="", repr=False)
    redis_namespace: str = "stockcache"
    workers: int = 32
    max_batch: int = 100
    memory_max_items: int = 10_000
    refresh: bool = True
    refresh_hours: str = "market"
    refresh_budget_share: float = 0.5
    refresh_lead: int = 60
    jwt_ttl: int = 3600
    finnhub_cost_per_call: float = 0.0
    alphavantage_cost_per_call: float = 0.0
    log_level: str = "info"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``), then apply overrides.

        Overrides are already-typed values (from command line flags or tests);
        ``None`` means "not given" and is ignored.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            for var in setting.env:
                raw = environ.get(var)
                if raw is not None and (raw.strip() or not setting.secret):
                    values[setting.name] = parse_setting(setting.name, raw, source=var)
                    break
        for name, value in overrides.items():
            if name not in _BY_NAME:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = (
                    parse_setting(name, value, source=_BY_NAME[name].flag or name)
                    if isinstance(value, str) else value
                )
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("threads", "workers", "max_batch", "memory_max_items", "jwt_ttl"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for level in TTL_LEVELS:
            if getattr(self, f"ttl_{level}") < 0:
                raise ConfigError(f"STOCKCACHE_TTL_{level.upper()} must be at least 0")
        if self.upstream_timeout <= 0:
            raise ConfigError("STOCKCACHE_UPSTREAM_TIMEOUT must be greater than 0")

    @property
    def ttls(self) -> dict[str, int]:
        """TTL in seconds for each level, as the cache wants them."""
        return {level: getattr(self, f"ttl_{level}") for level in TTL_LEVELS}

    @property
    def demo(self) -> bool:
        """True when no provider key is set: the offline demo source serves."""
        return not (self.finnhub_api_key or self.alphavantage_api_key)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests, and the command line)."""
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets shown only as set or not set."""
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret:
                out[setting.name] = "(set)" if value else "(not set)"
            else:
                out[setting.name] = str(value) if isinstance(value, Path) else value
        return out


def parse_setting(name: str, raw: str, *, source: str | None = None) -> Any:
    """Parse one raw value, raising ConfigError that names the setting (never a secret's value)."""
    setting = _BY_NAME[name]
    label = source or setting.env[0]
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        if reason.startswith(("invalid literal", "could not convert")):
            reason = "must be a number"
        shown = "" if setting.secret else f" (got {raw!r})"
        raise ConfigError(f"{label}: {reason}{shown}") from None


ENV_PREFIX = "STOCKCACHE_"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per ``STOCKCACHE_*`` variable that is no setting, naming the closest known one.

    A misspelled variable (``STOCKCACHE_PROT``) is otherwise ignored without a
    word, and the service starts with the default. Only names are shown, never
    values: a misspelled secret is still a secret.
    """
    environ = os.environ if environ is None else environ
    known = sorted({var for setting in SETTINGS for var in setting.env if var.startswith(ENV_PREFIX)})
    lines = []
    for name in sorted(var for var in environ if var.startswith(ENV_PREFIX) and var not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the settings"
        lines.append(f"{name} is not a stockcache setting and is ignored; {hint}")
    return lines


def setting_table() -> list[Setting]:
    """The settings table, for --help texts and the README."""
    return list(SETTINGS)
