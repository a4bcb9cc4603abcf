"""CoinGecko (https://api.coingecko.com/api/v3): crypto pairs such as ``BTC-USD`` and ``ETH-EUR``.

The pair's quote currency is CoinGecko's ``vs_currency``; the coin is named
by CoinGecko's own id (``bitcoin``), never by its ticker, which is not
unique (``BTC`` is also "batcat"). The largest coins' ids are shipped in
:data:`COIN_IDS`; for any other coin the provider asks for its ``listing``
entry first (:meth:`CoinGeckoProvider.needs_listing`): ``/search``, of whose
namesakes the one with the best market-cap rank wins, cached in the
fundamentals tier.

- Quotes come from ``/simple/price`` (many coins and currencies in one call,
  see ``batch``). CoinGecko gives no session figures: ``previous_close`` is
  the price 24 hours ago, derived from ``<cur>_24h_change`` (the field says
  ``24h``, the parameter ``24hr``), ``change`` is against it, and open, high
  and low are null. A stale price's change is null, and so are they then.
- History comes from ``/coins/{id}/market_chart?interval=daily``, in
  milliseconds: a point at 00:00 UTC of day D is the close of day D-1 (the
  market never closes) and the open of day D; the last point is "now", an
  intraday price, and is dropped. High and low are the larger and smaller of
  open and close, and volume is the 24-hour volume at the close (CoinGecko
  gives it in the quote currency; divided by the close, it is in coins):
  CoinGecko's free plans have no daily candles (``/ohlc`` is 4-day candles there).
- Without a key it still answers, on a small budget shared per IP (5 calls a
  minute here): it runs keyless once any other market-data key is set, and
  never in demo mode (no keys at all). A Demo key goes in the
  ``x-cg-demo-api-key`` header; a Pro key only works on ``pro-api.coingecko.com``,
  so the header follows the configured host (``x-cg-pro-api-key`` there).
- Errors: 429 (``{"status": {"error_code": 429, ...}}``, with or without
  ``Retry-After``: unverified, 60 s when absent), 401 bad key (10002), a key
  for the other host (10010/10011), 404 ``{"error": "coin not found"}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

from ...errors import NoData, RateLimited, StockcacheError, SymbolNotFound, UpstreamAuthError, UpstreamError
from ...models import Candle, History, ListingInfo, Quote
from ...settings import (
    AUTO,
    Section,
    Settings,
    auto_or_non_negative_int,
    non_negative_float,
    setting,
    url,
)
from ...symbols import CRYPTO, Listing, listing
from ..guard import Limits
from .base import (
    Clock,
    Provider,
    UpstreamRequest,
    days_param,
    json_object,
    maybe_number,
    number,
    query_param,
    require_dict,
    retry_after_seconds,
    text_or_none,
)

logger = logging.getLogger(__name__)

# The largest coins by market cap (ticker -> CoinGecko id): no lookup needed for them. A ticker
# here is the coin everyone means by it, whatever namesakes /search also lists.
COIN_IDS: Mapping[str, str] = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "USDT": "tether",
    "XRP": "ripple",
    "BNB": "binancecoin",
    "SOL": "solana",
    "USDC": "usd-coin",
    "DOGE": "dogecoin",
    "ADA": "cardano",
    "TRX": "tron",
}

# Pair quote currencies CoinGecko prices in (its vs_currencies); stablecoins (USDT, USDC) are not.
VS_CURRENCIES = frozenset({"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "HKD", "BTC", "ETH"})

# Most coin ids in one /simple/price call. CoinGecko documents no cap that we could verify
# (upstream-apis-2.md has none); 50 ids of up to 60 characters keep the URL under 4 KB,
# well inside the 8 KB that common proxies and CDNs accept, and a 40-pair page is one call.
MAX_IDS = 50

KEYED_PER_MINUTE = 30  # the Demo plan: 30 a minute in older docs and third parties, 100 in the newest
KEYLESS_PER_MINUTE = 5  # keyless: rate-limited per IP, shared with everyone behind it
DEFAULT_429_PAUSE = 60  # Retry-After is not documented; back off a minute

PRO_HOST = "pro-api.coingecko.com"
_DEMO_HEADER, _PRO_HEADER = "x-cg-demo-api-key", "x-cg-pro-api-key"
_SECRET_HEADERS = frozenset({_DEMO_HEADER, _PRO_HEADER})
_COIN_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]|\.(?!\.)){0,99}")
_DAY_MS = 86_400_000

_KINDS = frozenset({"quote", "history", "search", "listing"})


@dataclass(frozen=True)
class CoinGeckoConfig(Section):
    """CoinGecko's settings: ``COINGECKO_API_KEY`` and ``STOCKCACHE_COINGECKO_*``."""

    prefix = "coingecko"
    api_key: str = setting("", env="COINGECKO_API_KEY", secret=True,
                           help="CoinGecko API key (optional; crypto pairs such as BTC-USD). A Demo key is sent "
                                "in x-cg-demo-api-key; for a Pro key set STOCKCACHE_COINGECKO_URL to "
                                "https://pro-api.coingecko.com/api/v3. Without it CoinGecko is used keyless once "
                                "any other market-data key is set.")
    url: str = setting("https://api.coingecko.com/api/v3", env="STOCKCACHE_COINGECKO_URL", parse=url,
                       help="CoinGecko base URL (the Pro host for a Pro key).")
    per_minute: int | str = setting(AUTO, env="STOCKCACHE_COINGECKO_PER_MINUTE", parse=auto_or_non_negative_int,
                                    help=f"CoinGecko calls allowed per minute; 'auto' means {KEYED_PER_MINUTE} "
                                         f"with COINGECKO_API_KEY (Demo plan) and {KEYLESS_PER_MINUTE} without "
                                         "(keyless, shared by everyone on the same IP); 0 means no limit.")
    cost_per_call: float = setting(0.0, env="STOCKCACHE_COINGECKO_COST_PER_CALL", parse=non_negative_float,
                                   help="Price of one CoinGecko call, for the estimated cost in KPIs.")


class CoinGeckoProvider(Provider):
    """CoinGecko adapter. Stateless after construction, so thread-safe."""

    name = "coingecko"
    label = "CoinGecko"
    config = CoinGeckoConfig
    kinds = _KINDS
    # The crypto source; only crypto pairs are covered, so its rank matters only among those
    # who cover them too. Search is a coin search: the last resort behind the stock providers.
    priority = {"quote": 10, "history": 10, "search": 90}
    # Many pairs per /simple/price call; budgets count calls, as CoinGecko does (the base's units()).
    batch = {"quote": MAX_IDS}
    # Its key leaves demo mode: whoever sets it asked for real crypto prices, and demo prices would
    # pass for them; stocks then say which key would serve them (symbol_not_covered). Keyless, it
    # never does: with no keys at all nothing leaves the machine.
    keyed = True

    def __init__(self, config: CoinGeckoConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        self._config = config
        self._base_url = config.url.rstrip("/")
        self._key_header = _PRO_HEADER if urlsplit(self._base_url).hostname == PRO_HOST else _DEMO_HEADER

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        """With its own key (which leaves demo mode) or keyless once any other market-data key is set."""
        return real

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock) -> Provider:
        provider = cls(settings.section(CoinGeckoConfig), clock=clock)
        logger.info("%s", provider.startup_note())  # start-up says whether it runs keyless
        return provider

    def startup_note(self) -> str:
        """What start-up says of this source: keyless or keyed, and its budget."""
        per_minute = self.limits().per_minute
        budget = f"{per_minute} calls/minute" if per_minute else "no call limit"
        if not self._api_key:
            return f"{self.label}: keyless (no COINGECKO_API_KEY; {budget}, shared per IP)"
        plan = "Pro" if self._key_header == _PRO_HEADER else "Demo"
        return f"{self.label}: with a {plan} key ({budget})"

    def limits(self) -> Limits:
        per_minute = self._config.per_minute
        if per_minute == AUTO:
            per_minute = KEYED_PER_MINUTE if self._api_key else KEYLESS_PER_MINUTE
        return Limits(0, int(per_minute), 0)

    def covers(self, kind: str, listing: Listing | None) -> bool:
        return kind in self.kinds and self.could_cover(kind, listing)

    @classmethod
    def could_cover(cls, kind: str, listing: Listing | None) -> bool:
        """Crypto pairs whose quote currency CoinGecko prices in; search texts."""
        if kind not in _KINDS:
            return False
        if listing is None:
            return kind == "search"
        return kind != "search" and listing.asset == CRYPTO and listing.quote in VS_CURRENCIES

    def needs_listing(self, kind: str, listing: Listing) -> bool:
        """A coin outside :data:`COIN_IDS` needs its id from its ``listing`` entry (``/search``) first."""
        return kind in ("quote", "history") and listing.base not in COIN_IDS

    # -- requests -----------------------------------------------------------------------

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The CoinGecko request for ``kind``; UpstreamError when a coin's id is not known yet."""
        self._check_kind(kind)
        if kind == "search":
            return self._request("/search", {"query": query_param(params, symbol)})
        target = listing(symbol)
        if kind == "listing":
            return self._request("/search", {"query": target.base})
        coin = self._require_id(target, params.get("listing"))
        vs = self._vs(target)
        if kind == "history":
            # One day more than asked: the first point is only the open of the first bar.
            days = days_param(kind, params)
            return self._request(f"/coins/{url_quote(coin, safe='')}/market_chart",
                                 {"vs_currency": vs, "days": str(days + 1), "interval": "daily"})
        return self._request("/simple/price", _price_query([coin], [vs]))

    def build_batch_request(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any]) -> UpstreamRequest:
        """``/simple/price?ids=a,b&vs_currencies=usd,eur``: every pair in one call (each coin in every currency
        asked, which costs nothing more). Symbols whose id is not known are left out (see :meth:`parse_batch`)."""
        self._check_batch(kind, symbols)
        entries = params.get("listings") or {}
        ids: dict[str, None] = {}
        currencies: dict[str, None] = {}
        for symbol in symbols:
            target = listing(symbol)
            coin = self._coin_id(target, entries.get(symbol))
            if coin is not None:
                ids[coin] = None
                currencies[self._vs(target)] = None
        if not ids:
            self._fail(UpstreamError, "coingecko: no coin id is known for any symbol of this batch")
        return self._request("/simple/price", _price_query(list(ids), sorted(currencies)))

    def _request(self, path: str, query: dict[str, str]) -> UpstreamRequest:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers[self._key_header] = self._api_key
        return UpstreamRequest(url=self._base_url + path, params=query, headers=headers, secret=_SECRET_HEADERS)

    def _check_batch(self, kind: str, symbols: Sequence[str]) -> None:
        if kind not in self.batch:
            raise ValueError(f"{self.name} takes one symbol per {kind} request")
        if not 1 <= len(symbols) <= self.batch[kind]:
            raise ValueError(f"{self.name} takes 1 to {self.batch[kind]} symbols per {kind} request")

    @staticmethod
    def _vs(target: Listing) -> str:
        if target.quote not in VS_CURRENCIES:
            raise ValueError(f"coingecko does not price in {target.quote}")  # covers() keeps these away
        return str(target.quote).lower()

    def _coin_id(self, target: Listing, entry: Any) -> str | None:
        """The coin's id: from the shipped table, else from its listing entry (a ``ListingInfo`` dict)."""
        known = COIN_IDS.get(target.base)
        if known is not None:
            return known
        coin = entry.get("id") if isinstance(entry, Mapping) else None
        if isinstance(coin, str) and _COIN_ID_RE.fullmatch(coin):
            return coin
        return None

    def _require_id(self, target: Listing, entry: Any) -> str:
        coin = self._coin_id(target, entry)
        if coin is None:
            # No call is made: the read-through path passes None when the listing lookup failed.
            self._fail(UpstreamError, f"coingecko needs the coin id of {target.symbol} from its listing "
                                      "lookup, which gave none", symbol=target.symbol)
        return coin

    # -- answers ------------------------------------------------------------------------

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        """A CoinGecko response as our model, or our error."""
        self._check_kind(kind)
        data = self._answer(kind, symbol, status, headers, body)
        return self._run_parser(kind, symbol, params, data)

    def parse_batch(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any], status: int,
                    headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        """Each pair's quote, or its own error: an id missing from the answer is that symbol's
        :class:`SymbolNotFound` (CoinGecko leaves unknown ids out), an odd row that symbol's UpstreamError."""
        self._check_batch(kind, symbols)
        data = self._answer(kind, None, status, headers, body)
        if not isinstance(data, dict):
            self._fail(UpstreamError, "coingecko sent an unexpected quote body: not an object")
        entries = params.get("listings") or {}
        out: dict[str, Any] = {}
        for symbol in symbols:
            target = listing(symbol)
            coin = self._coin_id(target, entries.get(symbol))
            try:
                if coin is None:
                    self._fail(UpstreamError, f"coingecko needs the coin id of {symbol} from its listing "
                                              "lookup, which gave none", symbol=symbol)
                out[symbol] = self._priced(symbol, coin, data)
            except StockcacheError as exc:
                out[symbol] = exc
        return out

    def _answer(self, kind: str, symbol: str | None, status: int, headers: Mapping[str, str], body: bytes) -> Any:
        """The JSON of a successful answer; our error for any other (an error body with HTTP 200 too)."""
        if not 200 <= status < 300:
            self._http_error(kind, symbol, status, headers, body)
        data = self._json(body)
        if isinstance(data, dict) and (_error_code(data) is not None or set(data) == {"error"}):
            self._http_error(kind, symbol, status, headers, body)
        return data

    def _http_error(self, kind: str, symbol: str | None, status: int, headers: Mapping[str, str],
                    body: bytes) -> NoReturn:
        """Classify by CoinGecko's own ``error_code`` where the body has one, else by HTTP status."""
        try:
            data: Any = json_object(body)
        except ValueError:
            data = None
        code = _error_code(data) if isinstance(data, dict) else None
        text = _error_text(data) if isinstance(data, dict) else ""
        shown = f": {text[:160]}" if text else ""
        if status == 429 or code == 429:
            retry = retry_after_seconds(headers, self._clock())
            self._fail(RateLimited, f"coingecko rate limit reached{shown}",
                       retry_after=DEFAULT_429_PAUSE if retry is None else retry)
        if status >= 500 or status == 408:
            self._fail(UpstreamError, f"coingecko answered HTTP {status}{shown}")
        if code in (10010, 10011):
            self._fail(UpstreamAuthError, "coingecko refused the key for this host (a Demo key works on "
                                          "api.coingecko.com, a Pro key on pro-api.coingecko.com: set "
                                          f"STOCKCACHE_COINGECKO_URL to match){shown}")
        if code == 10012:  # history further back than the plan allows: this request, not the key
            self._fail(UpstreamError, f"coingecko refused this time range{shown}")
        if code == 10002 or (status == 401 and code is None):
            self._fail(UpstreamAuthError, f"coingecko refused the API key{shown}")
        if code == 10005:
            self._fail(UpstreamAuthError, f"coingecko plan does not include this data{shown}")
        if status in (401, 403):  # 403: blocked (its CDN's firewall, error 1020)
            self._fail(UpstreamAuthError, f"coingecko refused the request (HTTP {status}){shown}")
        if status == 404 and kind == "history" and symbol is not None and "not found" in text.lower():
            self._fail(SymbolNotFound, f"coingecko knows no coin for {symbol}", symbol=symbol)
        self._fail(UpstreamError, f"coingecko answered HTTP {status}{shown}")

    # Parsers, one per kind; TypeError/ValueError/KeyError mean a wrong shape.

    def _parse_quote(self, symbol: str, params: Mapping[str, Any], data: Any) -> Quote:
        require_dict(data)
        coin = self._require_id(listing(symbol), params.get("listing"))
        return self._priced(symbol, coin, data)

    def _priced(self, symbol: str, coin: str, data: Mapping[str, Any]) -> Quote:
        """``symbol``'s quote from a /simple/price body; raises our errors (wrong shapes as UpstreamError)."""
        row = data.get(coin)
        if row is None:
            self._fail(SymbolNotFound, f"coingecko knows no coin {coin} (for {symbol})", symbol=symbol)
        try:
            return _quote(symbol, listing(symbol), row)
        except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
            self._fail(UpstreamError, f"coingecko sent an unexpected quote body for {symbol}: {str(exc)[:120]}",
                       symbol=symbol)
        except _NoPrice:
            self._fail(NoData, f"coingecko has no {listing(symbol).quote} price for {coin}", symbol=symbol)

    def _parse_history(self, symbol: str, params: Mapping[str, Any], data: Any) -> History:
        require_dict(data)
        prices, volumes = data["prices"], data.get("total_volumes") or []
        if not isinstance(prices, list) or not isinstance(volumes, list):
            raise TypeError("prices or total_volumes is not a list")
        daily = _daily(prices)
        volume_on = _daily(volumes)
        candles = []
        for day, close in daily.items():
            open_ = daily.get(day - 1)
            if open_ is None:
                continue  # the first point, or after a gap: no open for this bar
            # The point of 00:00 on ``day`` closes the day before.
            candles.append(Candle(date=_utc_date((day - 1) * _DAY_MS), open=open_, high=max(open_, close),
                                  low=min(open_, close), close=close,
                                  volume=int(volume_on.get(day, 0.0) / close)))
        if not candles:
            self._fail(NoData, f"coingecko has no daily prices for {symbol}", symbol=symbol)
        target = listing(symbol)
        return History(symbol=symbol, candles=tuple(candles[-days_param("history", params):]),
                       currency=str(target.quote))

    def _parse_search(self, symbol: str, params: Mapping[str, Any], data: Any) -> list[dict[str, str]]:
        """Coins as pairs in US dollars (``BTC-USD``), best market-cap rank first; of namesakes only the best,
        which is the coin such a pair names here."""
        out: dict[str, dict[str, str]] = {}
        for coin in _ranked(_coins(data)):
            pair = f"{coin['symbol'].upper()}-USD"
            if pair in out or not coin["symbol"].isascii() or listing(pair).asset != CRYPTO:
                continue
            out[pair] = {"symbol": pair, "name": text_or_none(coin.get("name")) or "", "type": "Crypto"}
        if not out:
            # The coin search is the last resort behind the stock providers: "no coin matches" is no
            # data, so it never hides their failure behind an empty 200.
            self._fail(NoData, f"coingecko knows no coin matching {symbol}", symbol=symbol)
        return list(out.values())

    def _parse_listing(self, symbol: str, params: Mapping[str, Any], data: Any) -> ListingInfo:
        """The coin a pair's ticker names: of every coin with that ticker, the best market-cap rank."""
        target = listing(symbol)
        matches = _ranked(c for c in _coins(data) if c["symbol"].upper() == target.base)
        if not matches:
            self._fail(SymbolNotFound, f"coingecko knows no coin {target.base}", symbol=symbol)
        best = matches[0]
        if not isinstance(best["id"], str) or not _COIN_ID_RE.fullmatch(best["id"]):
            raise ValueError("a coin id that is not one")
        return ListingInfo(symbol=symbol, name=text_or_none(best.get("name")), currency=target.quote,
                           type="Crypto", id=best["id"])


class _NoPrice(Exception):
    """A coin's row without a price in the currency asked."""


def _price_query(ids: list[str], currencies: list[str]) -> dict[str, str]:
    return {"ids": ",".join(ids), "vs_currencies": ",".join(currencies), "include_24hr_change": "true",
            "include_last_updated_at": "true"}


def _quote(symbol: str, target: Listing, row: Any) -> Quote:
    """One coin's row of /simple/price in the pair's currency; previous close from the 24 h change."""
    require_dict(row)
    vs = str(target.quote).lower()
    raw = row.get(vs)
    if raw is None:
        raise _NoPrice
    price = number(raw, strings=False)
    percent = maybe_number(row.get(f"{vs}_24h_change"), strings=False)
    previous = change = None
    if percent is not None:
        if percent <= -100:
            raise ValueError("a 24 h change of -100 % or less")
        previous = _significant(price / (1 + percent / 100))
        change = _significant(price - previous)
        percent = round(percent, 4)
    updated = maybe_number(row.get("last_updated_at"), strings=False)
    return Quote(symbol=symbol, price=price, change=change, change_percent=percent, high=None, low=None,
                 open=None, previous_close=previous, timestamp=int(updated) if updated else None,
                 currency=target.quote)


def _significant(value: float) -> float:
    """``value`` to 12 significant digits: the division's noise goes, a SHIB price keeps its digits."""
    return float(f"{value:.12g}")


def _daily(points: list[Any]) -> dict[int, float]:
    """``[[ms, value], ...]`` -> {UTC day number: value} of the daily points, oldest first.

    The latest point is "now" unless it falls on 00:00 UTC, and is dropped;
    the others are the day's point at 00:00, read to the nearest day so a
    timestamp a little off midnight still dates its bar. Of two points on one
    day the first is kept.
    """
    parsed: list[tuple[int, Any]] = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise TypeError("a point is not [ms, value]")
        stamp = number(point[0], strings=False)
        if stamp != int(stamp):
            raise ValueError("a timestamp is not whole milliseconds")
        parsed.append((int(stamp), point[1]))
    parsed.sort(key=lambda item: item[0])
    if parsed and parsed[-1][0] % _DAY_MS != 0:
        parsed.pop()  # intraday
    out: dict[int, float] = {}
    for ms, value in parsed:
        out.setdefault(round(ms / _DAY_MS), number(value, strings=False))
    return out


def _utc_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _coins(data: Any) -> list[dict[str, Any]]:
    require_dict(data)
    coins = data["coins"]
    if not isinstance(coins, list):
        raise TypeError("coins is not a list")
    for coin in coins:
        require_dict(coin)
        if not isinstance(coin["id"], str) or not isinstance(coin["symbol"], str):
            raise TypeError("a coin's id or symbol is not a string")
        rank = coin.get("market_cap_rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
            raise TypeError("market_cap_rank is not a whole number")
    return coins


def _ranked(coins: Any) -> list[dict[str, Any]]:
    """Best market-cap rank first; coins without a rank (the long tail) last, in the order given."""
    return sorted(coins, key=lambda c: (c.get("market_cap_rank") is None, c.get("market_cap_rank") or 0))


def _error_code(data: dict[str, Any]) -> int | None:
    """CoinGecko's ``error_code`` from ``{"status": {...}}`` or ``{"error": {"status": {...}}}``."""
    status = data.get("status")
    error = data.get("error")
    if not isinstance(status, dict) and isinstance(error, dict):
        status = error.get("status")
    code = status.get("error_code") if isinstance(status, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _error_text(data: dict[str, Any]) -> str:
    """The human text of any of CoinGecko's error shapes, or ""."""
    error = data.get("error")
    if isinstance(error, str):
        return error
    status = data.get("status")
    if not isinstance(status, dict) and isinstance(error, dict):
        status = error.get("status")
    message = status.get("error_message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else ""
