"""What every data provider is: build a request, parse a response, map its errors.

Providers never do network I/O. The fetcher sends the :class:`UpstreamRequest`
with its one pooled session and hands status, headers and body back to
:meth:`Provider.parse`, which returns one of our models or raises one of our
errors (see ``stockcache.errors``). Keeping I/O out makes every provider a pure
function of its input, tested with recorded payloads and a fake clock.

Shapes returned by ``parse``/``produce`` per kind:

=========  ==========================================================
quote      ``models.Quote``
profile    ``models.Profile`` (market cap and shares in units)
history    ``models.History`` (oldest first, at most ``days`` bars)
news       ``models.News`` (newest first; no articles is an empty News)
metric     ``{"symbol": str, "metrics": {name: float}}`` with names from
           :data:`METRIC_NAMES`; only the metrics the provider gave
search     ``[{"symbol": str, "name": str, "type": str}, ...]``
=========  ==========================================================
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..clock import seconds_to_utc_midnight as _to_midnight
from ..errors import InvalidRequest, StockcacheError, UpstreamError
from ..models import check

KINDS = ("quote", "profile", "history", "news", "metric", "search")

# Normalised metric names (values are plain floats):
# 52_week_high, 52_week_low: price; beta; market_cap: units of currency;
# pe_ratio: trailing twelve months; eps: trailing twelve months, per share;
# dividend_yield: percent (0.44 means 0.44 %), whatever the provider sends.
METRIC_NAMES = ("52_week_high", "52_week_low", "beta", "market_cap", "pe_ratio", "eps", "dividend_yield")

MAX_HISTORY_DAYS = 100
MAX_NEWS_DAYS = 365
DEFAULT_HISTORY_DAYS = 30
DEFAULT_NEWS_DAYS = 7

_SECRET_NAMES = frozenset({"token", "apikey", "x-finnhub-token"})
MASK = "***"
# Secrets can hide in text we did not write: URLs in exception texts, and the
# Alpha Vantage daily-cap message ("We have detected your API key as KEY and ...").
_SECRET_QUERY_RE = re.compile(r"(?i)\b(token|apikey|api_key)=[^&\s\"'<>]+")
_SECRET_HEADER_RE = re.compile(r"(?i)(x-finnhub-token['\"]?\s*[:=]\s*['\"]?)[^\s\"',}]+")
_KEY_AS_RE = re.compile(r"(?i)(api key as )\S+?(?=[\s.,;]*(?:\s|$))")

Clock = Callable[[], float]


def _mask(mapping: Mapping[str, str]) -> dict[str, str]:
    return {k: (MASK if k.lower() in _SECRET_NAMES else v) for k, v in mapping.items()}


@dataclass(frozen=True)
class UpstreamRequest:
    """One HTTP request for the fetcher to send; its repr masks keys so it can be logged."""

    url: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"

    def __repr__(self) -> str:
        return (
            f"UpstreamRequest(method={self.method!r}, url={self.url!r}, "
            f"params={_mask(self.params)!r}, headers={_mask(self.headers)!r})"
        )

    __str__ = __repr__

    def safe_url(self) -> str:
        """The URL with its non-secret query, for logs and metrics (keys masked)."""
        if not self.params:
            return self.url
        query = "&".join(f"{k}={v}" for k, v in _mask(self.params).items())
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
    """A source of market data. Stateless after construction, so thread-safe."""

    name: str
    kinds: frozenset[str]
    local: bool = False

    def __init__(self, *, api_key: str = "", clock: Clock) -> None:
        self._api_key = api_key
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The request that fetches ``kind`` for ``symbol``; raises our errors for bad params."""

    @abstractmethod
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
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.lstrip()[:1]
            what = "an HTML page" if text == b"<" else "a body that is not JSON"
            self._fail(UpstreamError, f"{self.name} sent {what}")

    def _run_parser(self, kind: str, symbol: str, params: Mapping[str, Any], data: Any) -> Any:
        """Call ``self._parse_<kind>`` and check its model; a wrong shape or a bad value is UpstreamError."""
        try:
            model = getattr(self, f"_parse_{kind}")(symbol, params, data)
        # ArithmeticError: 1e308 in millions overflows, and so does a timestamp past year 9999.
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            self._fail(UpstreamError, f"{self.name} sent an unexpected {kind} body: {what[:120]}")
        return self._checked(kind, symbol, model)

    def _checked(self, kind: str, symbol: str, model: Any) -> Any:
        """``model`` if it passes ``models.check``; else UpstreamError: the provider's fault, never cached.

        Every provider's output comes through here (parse via ``_run_parser``,
        ``produce`` for local ones), so no parser repeats a bound.
        """
        try:
            check(kind, symbol, model)
        except ValueError as exc:
            self._fail(UpstreamError, f"{self.name} sent an out-of-range {kind}: {str(exc)[:120]}")
        return model


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
