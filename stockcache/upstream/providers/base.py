"""What every data provider is: its settings, its coverage, and pure request building and parsing.

A provider is one module (or package) in this folder plus one line in the
registry (``__init__.py``). The module holds everything about that provider:

- its settings section (key, URL, limits, cost per call, plan): a :class:`Section`
  subclass named in ``Provider.config``;
- which kinds it serves and which markets it covers on the configured plan
  (``kinds``, :meth:`Provider.covers`), and where it stands in each kind's
  default route (``priority``);
- how to build a request and parse an answer (never any I/O: the router sends
  the :class:`UpstreamRequest` through the transport and hands status, headers
  and body back to :meth:`Provider.parse`), or, for a local source, how to
  produce the data (:meth:`Provider.produce`);
- optionally a drop-in API (:class:`DropIn`): the provider's own HTTP API,
  answered from stockcache's cache for scripts written against it.

Keeping I/O out makes every provider a pure function of its input, tested with
recorded payloads and a fake clock. Parsed models are checked by the router
against the kind's sanity check (``kinds.Kind.check``), once for every provider.

Shapes returned by ``parse``/``produce`` per kind:

=========  ==========================================================
quote      ``models.Quote``
profile    ``models.Profile`` (market cap and shares in units)
history    ``models.History`` (oldest first, at most ``days`` bars)
news       ``models.News`` (newest first; no articles is an empty News)
metric     ``{"symbol": str, "metrics": {name: float}}`` with names from
           :data:`METRIC_NAMES`; only the metrics the provider gave
search     ``[{"symbol": str, "name": str, "type": str}, ...]``
listing    ``models.ListingInfo`` (the currency as the provider reports it)
fx         ``models.FxRates`` (subject: the base currency)
=========  ==========================================================

Every answer names the symbol as the user wrote it (``SAP.DE``), whatever the
provider was sent (:meth:`Provider.symbol_for`). Quotes and histories carry
the currency in its major unit when the provider's answer says it (pence
converted with ``currency.in_major``); when it does not, the read-through path
completes it from the venue or from this provider's ``listing`` answer.
No data of a kind for a known symbol (Finnhub's ``{}`` profile) is
:class:`~stockcache.errors.NoData`: the next provider is asked.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ...clock import seconds_to_utc_midnight as _to_midnight
from ...errors import InvalidRequest, StockcacheError, UpstreamError
from ...kinds import KINDS
from ...settings import Section, Settings
from ...symbols import Listing
from ..guard import Limits

if TYPE_CHECKING:
    from .dropin import DropIn

# Normalised metric names (values are plain floats):
# 52_week_high, 52_week_low: price; beta; market_cap: units of currency;
# pe_ratio: trailing twelve months; eps: trailing twelve months, per share;
# dividend_yield: percent (0.44 means 0.44 %), whatever the provider sends.
METRIC_NAMES = ("52_week_high", "52_week_low", "beta", "market_cap", "pe_ratio", "eps", "dividend_yield")

MAX_HISTORY_DAYS = 100
MAX_NEWS_DAYS = 365
DEFAULT_HISTORY_DAYS = 30
DEFAULT_NEWS_DAYS = 7

MASK = "***"
# Parameter and header names whose values are secrets, whatever the provider (lower case).
SECRET_NAMES = frozenset({"token", "apikey", "api_key", "key", "authorization"})
# Secrets can hide in text we did not write: URLs in exception texts, and the
# Alpha Vantage daily-cap message ("We have detected your API key as KEY and ...").
_SECRET_QUERY_RE = re.compile(r"(?i)\b(token|apikey|api_key|[a-z_]*api_key)=[^&\s\"'<>]+")
_SECRET_HEADER_RE = re.compile(r"(?i)((?:x-[a-z-]*(?:token|api-?key))['\"]?\s*[:=]\s*['\"]?)[^\s\"',}]+")
_KEY_AS_RE = re.compile(r"(?i)(api key as )\S+?(?=[\s.,;]*(?:\s|$))")

Clock = Callable[[], float]


@dataclass(frozen=True)
class UpstreamRequest:
    """One HTTP request for the router to send; its repr masks secrets so it can be logged.

    ``secret`` names the extra parameters or headers of this provider that hold
    a key (besides :data:`SECRET_NAMES`). ``json`` is a POST body. ``units``,
    when not 0, is what the call reserves of the provider's budget (a model
    call: its estimated tokens), instead of :meth:`Provider.units`.
    """

    url: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    json: Any = None
    secret: frozenset[str] = frozenset()
    units: int = 0

    def _mask(self, mapping: Mapping[str, str]) -> dict[str, str]:
        hidden = SECRET_NAMES | {name.lower() for name in self.secret}
        return {k: (MASK if k.lower() in hidden else v) for k, v in mapping.items()}

    def __repr__(self) -> str:
        return (
            f"UpstreamRequest(method={self.method!r}, url={self.url!r}, "
            f"params={self._mask(self.params)!r}, headers={self._mask(self.headers)!r})"
        )

    __str__ = __repr__

    def safe_url(self) -> str:
        """The URL with its non-secret query, for logs and metrics (keys masked)."""
        if not self.params:
            return self.url
        query = "&".join(f"{k}={v}" for k, v in self._mask(self.params).items())
        return f"{self.url}?{query}"


def redact_secrets(text: str, *keys: str) -> str:
    """Remove the given keys, and anything shaped like a key parameter, from ``text``."""
    for key in keys:
        if key:
            text = text.replace(key, MASK)
    text = _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _SECRET_HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
    return _KEY_AS_RE.sub(lambda m: m.group(1) + MASK, text)


class Provider(ABC):
    """A source of market data. Stateless after construction, so thread-safe.

    Class attributes every provider sets:

    - ``name``: its ``"source"`` in answers, metric labels, route settings;
    - ``label``: how people write it ("Alpha Vantage"), for messages;
    - ``config``: its settings section;
    - ``kinds``: what it can serve at all (an instance may narrow it by plan);
    - ``priority``: kind -> rank in the default route (lower first; a kind not
      listed is served only when named in ``STOCKCACHE_ROUTE_<KIND>``);
    - ``keyed``: whether its key makes stockcache leave demo mode (market data
      providers with a key; keyless helpers such as FX rates do not).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    config: ClassVar[type[Section]]
    kinds: frozenset[str] = frozenset()
    supports: ClassVar[frozenset[str]] = frozenset()  # every kind its code handles (default: ``kinds``)
    priority: ClassVar[Mapping[str, int]] = {}
    keyed: ClassVar[bool] = True
    local: ClassVar[bool] = False
    # kind -> other kinds one answer to it also holds (parsed from the same body and cached too).
    companions: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # kind -> most symbols one request may carry (Twelve Data's symbol=A,B,C); absent: one per request.
    batch: ClassVar[Mapping[str, int]] = {}
    dropin: ClassVar[type[DropIn] | None] = None
    # What its budget counts: "call" (a credit per symbol is still calls), or "token" (a model API).
    unit: ClassVar[str] = "call"
    # Kinds a local source serves only where no other configured provider serves them (the demo's
    # analyses stand in for a model API that is not configured, even beside real market data).
    fallback_kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Section, *, clock: Clock) -> None:
        self.settings = config
        self._api_key: str = getattr(config, "api_key", "") or ""
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def key_env(cls) -> str | None:
        """The environment variable of this provider's key, for messages that say what to set."""
        for row in cls.config.rows():
            if row.name == f"{cls.config.prefix}_api_key":
                return row.env[0]
        return None

    @classmethod
    def has_key(cls, settings: Settings) -> bool:
        return bool(getattr(settings.section(cls.config), "api_key", ""))

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        """Whether the settings turn this provider on; ``real`` is False in demo mode (no keys at all).

        By default a provider runs when its key is set.
        """
        return cls.has_key(settings)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock) -> Provider:
        return cls(settings.section(cls.config), clock=clock)

    def limits(self) -> Limits:
        """Its budget, from its settings section (``per_second``/``per_minute``/``per_day``, 0 = none)."""
        section = self.settings
        return Limits(getattr(section, "per_second", 0), getattr(section, "per_minute", 0),
                      getattr(section, "per_day", 0))

    def cost_per_call(self) -> float:
        """Price of one budget unit (a call; a model API's token), for the estimated cost in KPIs."""
        return self.unit_cost(self.settings)

    @classmethod
    def unit_cost(cls, section: Section) -> float:
        """Price of one budget unit by the settings ``section`` (default: its ``cost_per_call``)."""
        return float(getattr(section, "cost_per_call", 0.0))

    def covers(self, kind: str, listing: Listing | None) -> bool:
        """Whether this provider, on its configured plan, serves ``kind`` for ``listing``.

        ``listing`` is None for subjects that are not symbols (a search text).
        The router asks only providers that cover a subject.
        """
        return kind in self.kinds

    @classmethod
    def could_cover(cls, kind: str, listing: Listing | None) -> bool:
        """Whether some plan of this provider serves ``kind`` for ``listing``: for "set this key" hints."""
        return kind in (cls.supports or cls.kinds)

    @classmethod
    def plan_for(cls, kind: str, listing: Listing | None) -> str | None:
        """The plan that serves ``kind`` for ``listing`` ("" for every plan, None for none), for docs/symbols.md."""
        return "" if cls.could_cover(kind, listing) else None

    def coverage_note(self, kind: str, listing: Listing | None) -> str:
        """Who said no, for ``symbol_not_covered`` messages: "Finnhub's free plan"."""
        return self.label

    def upgrade_hint(self, kind: str, listing: Listing | None) -> str | None:
        """What setting would make this provider cover ``listing`` ("STOCKCACHE_FINNHUB_PLAN=paid"), if any."""
        return None

    @classmethod
    def symbol_for(cls, listing: Listing) -> str:
        """The symbol as this provider writes it (Alpha Vantage ``SAP.DEX`` for ``SAP.DE``)."""
        return listing.symbol

    # -- requests and answers ---------------------------------------------------------

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The request that fetches ``kind`` for ``symbol``; raises our errors for bad params."""
        raise NotImplementedError(f"{self.name} is local; use produce()")

    def parse(
        self,
        kind: str,
        symbol: str,
        params: Mapping[str, Any],
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Any:
        """Turn one response into our model, or raise our error (already redacted)."""
        raise NotImplementedError(f"{self.name} is local; use produce()")

    # -- many symbols in one request (kinds in ``batch``) --------------------------------

    def build_batch_request(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any]) -> UpstreamRequest:
        """One request for 2 to ``batch[kind]`` symbols of ``kind`` (the router never sends one alone this way)."""
        raise NotImplementedError(f"{self.name} takes one symbol per {kind} request")

    def parse_batch(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any], status: int,
                    headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        """Each symbol's model, or its own StockcacheError, by symbol as asked.

        An error raised here is every symbol's (a bad key, a throttled call, an
        unreadable body); a symbol missing from the answer is that symbol's
        ``UpstreamError``. Each model is checked like a single answer.
        """
        raise NotImplementedError(f"{self.name} takes one symbol per {kind} request")

    def units(self, kind: str, count: int) -> int:
        """Budget units one request for ``count`` symbols spends: one call, unless the provider counts
        otherwise (Twelve Data: a credit per symbol). Budgets and limits are in these units."""
        return 1

    def variant(self, kind: str) -> str:
        """What tells this provider's answers of ``kind`` from others' in a cache key (an analysis's
        model: ``analysis:AAPL:p1:llm-gpt-4o-mini``); letters, digits, ``.``, ``_`` and ``-`` only."""
        return self.name

    def spent(self, kind: str, request: UpstreamRequest, status: int, body: bytes) -> int | None:
        """Budget units the answered call really cost, when the answer says (a model's ``usage``);
        None keeps what the request reserved. The router settles the budget to it."""
        return None

    def needs_listing(self, kind: str, listing: Listing) -> bool:
        """Whether this provider must know its own ``listing`` entry (``models.ListingInfo``: its id for the
        symbol, the currency it reports) before it can build a request for ``kind``.

        When True, the read-through path looks that entry up first (kind ``listing`` from this same
        provider, cached in the fundamentals tier) and passes it as ``params["listing"]`` (a dict, or
        None when the lookup did not finish in time), or for a batch ``params["listings"]`` by symbol.
        A lookup that failed is this provider's answer and no request is built (its "not found" ends
        the route). CoinGecko needs it for a coin not in its shipped table (``/search`` gives the coin id).
        """
        return False

    def produce(self, kind: str, symbol: str, params: Mapping[str, Any]) -> Any:
        """The model without any I/O; only local providers (demo) can."""
        raise NotImplementedError(f"{self.name} needs the network; use build_request and parse")

    def redact(self, text: str) -> str:
        """``text`` without this provider's key (and without anything that looks like a key)."""
        return redact_secrets(text, self._api_key)

    # Helpers shared by the concrete providers.

    def _fail(self, cls: type[StockcacheError], message: str, **fields: Any) -> NoReturn:
        """Raise ``cls`` with a redacted message; parse errors never chain the raw body."""
        raise cls(self.redact(message), **fields) from None

    def _check_kind(self, kind: str) -> None:
        """ValueError for a kind this provider's code does not handle at all (a programming error)."""
        if kind not in KINDS or kind not in (self.supports or self.kinds):
            raise ValueError(f"{self.name} does not handle {kind!r}")

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.lstrip()[:1]
            what = "an HTML page" if text == b"<" else "a body that is not JSON"
            self._fail(UpstreamError, f"{self.name} sent {what}")

    def _run_parser(self, kind: str, symbol: str, params: Mapping[str, Any], data: Any) -> Any:
        """Call ``self._parse_<kind>``; a wrong shape is UpstreamError."""
        try:
            return getattr(self, f"_parse_{kind}")(symbol, params, data)
        # ArithmeticError: 1e308 in millions overflows, and so does a timestamp past year 9999.
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            self._fail(UpstreamError, f"{self.name} sent an unexpected {kind} body: {what[:120]}")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def retry_after_seconds(headers: Mapping[str, str], now: float) -> int | None:
    """``Retry-After`` as whole seconds (delta or HTTP date), or None if absent or unreadable."""
    raw = header(headers, "Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0, math.ceil(seconds))


def seconds_to_utc_midnight(now: float) -> int:
    """Whole seconds until the next UTC day starts, when daily quotas reset (at least 1): a Retry-After."""
    return max(1, math.ceil(_to_midnight(now)))


def days_param(kind: str, params: Mapping[str, Any]) -> int:
    """The validated ``days`` of a history or news request (defaults: 30 and 7)."""
    if kind == "history":
        default, most = DEFAULT_HISTORY_DAYS, MAX_HISTORY_DAYS
    else:
        default, most = DEFAULT_NEWS_DAYS, MAX_NEWS_DAYS
    days = params.get("days", default)
    if isinstance(days, str) and days.strip().isdigit():
        days = int(days)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= most:
        raise InvalidRequest(f"days must be a whole number from 1 to {most}", field="days")
    return days


def query_param(params: Mapping[str, Any], symbol: str) -> str:
    """The validated search text: ``params["q"]``, else the symbol."""
    q = params.get("q", symbol)
    if not isinstance(q, str) or not q.strip() or len(q) > 100:
        raise InvalidRequest("q must be 1 to 100 characters of search text")
    return q.strip()


def maybe_number(value: Any, *, strings: bool = True) -> float | None:
    """A JSON number, or a numeric string when ``strings`` (Alpha Vantage), as float.

    None, "" and Alpha Vantage's "None"/"-" give None; other junk raises
    TypeError/ValueError, which the parsers turn into UpstreamError.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("boolean where a number was expected")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str) and strings:
        text = value.strip().rstrip("%")
        if text in ("", "None", "-", "null", "N/A"):
            return None
        result = float(text)
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(result):
        raise ValueError("number is not finite")
    return result


def number(value: Any, *, strings: bool = True) -> float:
    """Like :func:`maybe_number`, but the value must be there."""
    result = maybe_number(value, strings=strings)
    if result is None:
        raise ValueError("a required number is missing")
    return result


def json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object, or ValueError."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def require_dict(value: Any) -> None:
    """TypeError unless ``value`` is a JSON object (parsers turn it into UpstreamError)."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")


def search_results(
    data: Any, list_key: str, symbol_key: str, name_key: str, type_key: str
) -> list[dict[str, str]]:
    """A symbol search body as ``[{"symbol", "name", "type"}]``; TypeError when malformed.

    Finnhub and Alpha Vantage differ only in the field names; ``data[list_key]``
    holds the matches.
    """
    require_dict(data)
    matches = data[list_key]
    if not isinstance(matches, list):
        raise TypeError(f"{list_key} is not a list")
    out = []
    for item in matches:
        require_dict(item)
        if not isinstance(item[symbol_key], str):
            raise TypeError("symbol is not a string")
        out.append(
            {
                "symbol": item[symbol_key],
                "name": text_or_none(item.get(name_key)) or "",
                "type": text_or_none(item.get(type_key)) or "",
            }
        )
    return out


def text_or_none(value: Any) -> str | None:
    """A JSON string, with "" and null as None; TypeError for anything else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value
