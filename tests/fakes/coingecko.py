"""A fake CoinGecko public/Demo API v3, as ``upstream-apis-2.md`` section 2 describes it.

Mounted under ``/coingecko``; clients are pointed at ``.../coingecko/api/v3``
(the real ``https://api.coingecko.com/api/v3``). Coins are
``stockcache.upstream.providers.demo.COINS`` (the largest coins plus namesakes that make
a ticker ambiguous); prices come from :class:`DemoMarket`, so a coin agrees
with the demo's ``BTC-USD`` and, through the ECB table, with ``BTC-EUR``.

Kept as unkind as the real API:

- ``/simple/price``: fields named ``usd``, ``usd_24h_change`` (the parameter
  says ``24hr``, the field ``24h``), ``usd_market_cap``, ``usd_24h_vol``,
  ``last_updated_at`` (unix seconds, the minute the price is cached from).
  Unknown ids are left out (``{}`` when none is known); unknown
  ``vs_currencies`` are left out of each coin. The 24 h change is against the
  price 24 hours ago, not a previous close. :meth:`CoinGecko.set_stale` makes
  a coin's change ``null``.
- ``/coins/{id}/market_chart``: ``[[ms, value], ...]`` in **milliseconds**;
  daily points at 00:00 UTC (the point of day D is the price at that instant,
  which is the demo close of D-1), then one last point at "now"; without
  ``interval`` 5-minute points for 1 day, hourly up to 90, daily beyond. More
  than 365 days is refused (error 10012) on the public and Demo plans. Unknown
  id: 404 ``{"error": "coin not found"}``.
- ``/search?query=``: every coin whose id, name or symbol matches, namesakes
  included, in name order, not market-cap order (``market_cap_rank`` may be
  null): a client must choose by rank itself.
- Key in ``x-cg-demo-api-key`` (or ``x_cg_demo_api_key``); a Pro key on this
  host is error 10010. Per-minute limits keyless (5) and with a key (30),
  configurable; past them HTTP 429 with the ``status.error_code`` body (and no
  ``Retry-After`` unless :attr:`CoinGecko.retry_after` is set). Every HTTP 200
  costs a credit (:meth:`CoinGecko.credits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from stockcache.upstream.providers.demo import COINS, COINS_BY_ID, Coin

from .base import Answer, MountedApi, Request, Route, Window, json_answer

RATE_LIMIT = {"status": {"error_code": 429, "error_message": (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API "
    "plans for higher rate limits.")}}
WRONG_HOST = {"status": {"error_code": 10010, "error_message": (
    "If you are using Pro API key, please change your root URL from api.coingecko.com to pro-api.coingecko.com")}}
BAD_KEY = {"error": {"status": {"error_code": 10002, "error_message": (
    "API Key Missing or Invalid. Please check your API key at https://www.coingecko.com/en/developers/dashboard")}}}
TOO_FAR_BACK = (
    "Your request exceeds the allowed time range. Public API users are limited to querying historical data within "
    "the past 365 days. Upgrade to a paid plan to enjoy full historical data access: "
    "https://www.coingecko.com/en/api/pricing. ")
VS_CURRENCIES = ("usd", "eur", "gbp", "jpy", "chf", "cad", "aud", "sek", "nok", "dkk", "pln", "czk", "huf", "hkd",
                 "sgd", "nzd", "krw", "inr", "idr", "myr", "php", "thb", "cny", "brl", "mxn", "zar", "try", "ils",
                 "btc", "eth")


class CoinGecko(MountedApi):
    """The fake CoinGecko. Thread-safe; configure it while it runs."""

    name = "coingecko"
    prefix = "/coingecko"
    base_path = "/api/v3"
    env_var = "STOCKCACHE_COINGECKO_URL"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected_key: str | None = None  # None: any demo key
        self.retry_after: int | None = None
        self._keyless = Window(5, 60.0)
        self._keyed = Window(30, 60.0)
        self._stale: frozenset[str] = frozenset()
        self._credits = 0
        self._rate_limited = 0

    def set_limits(self, *, keyless_per_minute: int | None = 5, keyed_per_minute: int | None = 30) -> None:
        with self._lock:
            self._keyless.limit, self._keyed.limit = keyless_per_minute, keyed_per_minute

    def set_stale(self, ids: list[str] | tuple[str, ...]) -> None:
        """Coins whose ``<cur>_24h_change`` is null (a stale price, as the real API does)."""
        with self._lock:
            self._stale = frozenset(ids)

    def credits(self) -> int:
        """HTTP 200 answers since start or reset (each costs a monthly credit)."""
        with self._lock:
            return self._credits

    def rate_limited(self) -> int:
        with self._lock:
            return self._rate_limited

    def reset(self) -> None:
        with self._lock:
            self._keyless.clear()
            self._keyed.clear()
            self._credits = self._rate_limited = 0

    # -- routing -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Route:
        path = request.path.removeprefix("/api/v3")
        query = request.query
        key_in = ("header" if request.header("x-cg-demo-api-key") else
                  "query" if "x_cg_demo_api_key" in query else None)
        safe = {k: v for k, v in query.items() if k not in ("x_cg_demo_api_key", "x_cg_pro_api_key")}
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["coins"] and len(parts) == 3:
            return Route(f"coins/{parts[2]}", parts[1], key_in, safe)
        endpoint = "/".join(parts)
        symbol = query.get("ids") if endpoint == "simple/price" else None
        return Route(endpoint, symbol, key_in, safe)

    def too_many(self, request: Request, route: Route, retry_after: int | None) -> Answer:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return json_answer(429, RATE_LIMIT, headers)

    def answer(self, request: Request, route: Route) -> Answer:
        if not request.path.startswith("/api/v3/"):
            return json_answer(404, {"error": "Incorrect path. Please check https://www.coingecko.com/api/"})
        if request.header("x-cg-pro-api-key") or "x_cg_pro_api_key" in request.query:
            return json_answer(400, WRONG_HOST)
        key = request.header("x-cg-demo-api-key") or request.query.get("x_cg_demo_api_key")
        now = self.clock()
        with self._lock:
            if key is not None and (not key or (self.expected_key is not None and key != self.expected_key)):
                return json_answer(401, BAD_KEY)
            window = self._keyed if key else self._keyless
            if not window.fits(now):
                self._rate_limited += 1
                retry = self.retry_after
                return self.too_many(request, route, retry)
            window.add(now)
        status, headers, body = self._serve(route, request.query, now)
        if status == 200:
            with self._lock:
                self._credits += 1
        return status, headers, body

    def _serve(self, route: Route, query: Mapping[str, str], now: float) -> Answer:
        endpoint = route.endpoint
        if endpoint == "ping":
            return json_answer(200, {"gecko_says": "(V3) To the Moon!"})
        if endpoint == "simple/price":
            return self._simple_price(query, now)
        if endpoint == "search":
            return json_answer(200, self._search(query.get("query", "")))
        if endpoint == "coins/list":
            return json_answer(200, [{"id": c.id, "symbol": c.symbol.lower(), "name": c.name} for c in self._coins()])
        if endpoint == "coins/market_chart" and route.symbol is not None:
            return self._market_chart(route.symbol, query, now)
        return json_answer(404, {"error": "Incorrect path. Please check https://www.coingecko.com/api/"})

    def _coins(self) -> list[Coin]:
        return [coin for coin in COINS if not self.is_unknown(coin.id)]

    def _coin(self, coin_id: str) -> Coin | None:
        coin = COINS_BY_ID.get(coin_id)
        return None if coin is None or self.is_unknown(coin_id) else coin

    # -- endpoints -----------------------------------------------------------------------------------

    def _simple_price(self, query: Mapping[str, str], now: float) -> Answer:
        if not query.get("vs_currencies"):
            return json_answer(400, {"error": "Missing parameter vs_currencies"})
        if not query.get("ids") and not query.get("symbols") and not query.get("names"):
            return json_answer(400, {"error": "Missing parameter ids"})
        ids = [i.strip().lower() for i in query.get("ids", "").split(",") if i.strip()]
        if not ids and query.get("symbols"):
            wanted = {s.strip().upper() for s in query["symbols"].split(",")}
            ids = [c.id for c in self._coins() if c.symbol in wanted and c.rank is not None and c.rank < 100]
        currencies = [c.strip().lower() for c in query["vs_currencies"].split(",") if c.strip()]
        flags = {name: query.get(name, "false").lower() == "true" for name in (
            "include_market_cap", "include_24hr_vol", "include_24hr_change", "include_last_updated_at")}
        precision = query.get("precision")
        with self._lock:
            stale = self._stale
        out: dict[str, dict[str, Any]] = {}
        for coin_id in ids:
            coin = self._coin(coin_id)
            if coin is None:
                continue
            row: dict[str, Any] = {}
            updated = 0
            for cur in currencies:
                if cur not in VS_CURRENCIES:
                    continue
                q = self.market.coin_quote(coin.id, cur, now)
                price = _precise(q.price, precision)
                row[cur] = price
                if flags["include_market_cap"]:
                    row[f"{cur}_market_cap"] = round(q.price * coin.supply, 4)
                if flags["include_24hr_vol"]:
                    row[f"{cur}_24h_vol"] = round(q.price * coin.supply * 0.03, 4)
                if flags["include_24hr_change"]:
                    before = self.market.coin_quote(coin.id, cur, now - 86400).price
                    row[f"{cur}_24h_change"] = None if coin.id in stale else (q.price - before) / before * 100
                updated = q.timestamp or int(now)
            if flags["include_last_updated_at"]:
                row["last_updated_at"] = updated or int(now // 60 * 60)
            out[coin.id] = row
        return json_answer(200, out)

    def _market_chart(self, coin_id: str, query: Mapping[str, str], now: float) -> Answer:
        coin = self._coin(coin_id)
        if coin is None:
            return json_answer(404, {"error": "coin not found"})
        cur = (query.get("vs_currency") or "").lower()
        if not cur:
            return json_answer(400, {"error": "Missing parameter vs_currency"})
        if cur not in VS_CURRENCIES:
            return json_answer(400, {"error": "invalid vs_currency"})
        raw_days = (query.get("days") or "").lower()
        if raw_days == "max":
            days: float = 10_000.0
        else:
            try:
                days = float(raw_days)
            except ValueError:
                return json_answer(400, {"error": "Missing parameter days"})
        if not days > 0:
            return json_answer(400, {"error": "invalid days"})
        if days > 365:
            stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            return json_answer(401, {"error": {"status": {"timestamp": stamp, "error_code": 10012,
                                                          "error_message": TOO_FAR_BACK}}})
        interval = (query.get("interval") or "").lower()
        if interval not in ("", "daily"):
            return json_answer(401, {"error": {"status": {"error_code": 10005, "error_message": (
                "You may not have access to this endpoint. Please check https://www.coingecko.com/en/api/pricing "
                "to subscribe to a paid plan.")}}})
        points: list[tuple[float, float]] = []
        if interval == "daily" or days > 90:
            today = datetime.fromtimestamp(now, UTC).date()
            count = math.ceil(days)
            for back in range(count - 1, -1, -1):
                day = today - timedelta(days=back)
                close = self.market.coin_candle(coin.id, cur, day - timedelta(days=1)).close
                points.append((datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp(), close))
        else:
            step = 300 if days <= 1 else 3600
            ts = math.floor((now - days * 86400) / step) * step + step
            while ts < now:
                points.append((ts, self.market.coin_quote(coin.id, cur, ts).price))
                ts += step
        if not points or points[-1][0] < now:
            points.append((now, self.market.coin_quote(coin.id, cur, now).price))
        prices = [[int(ts * 1000), price] for ts, price in points]
        return json_answer(200, {
            "prices": prices,
            "market_caps": [[ms, round(price * coin.supply, 2)] for ms, price in prices],
            "total_volumes": [[ms, round(price * coin.supply * 0.03, 2)] for ms, price in prices],
        })

    def _search(self, text: str) -> dict[str, Any]:
        needle = text.strip().lower()
        coins = [c for c in self._coins()
                 if needle and (needle in c.id or needle in c.name.lower() or needle == c.symbol.lower())]
        coins.sort(key=lambda c: c.name.lower())
        return {
            "coins": [{"id": c.id, "name": c.name, "api_symbol": c.id, "symbol": c.symbol,
                       "market_cap_rank": c.rank,
                       "thumb": f"https://coin-images.example.com/{c.id}/thumb.png",
                       "large": f"https://coin-images.example.com/{c.id}/large.png"} for c in coins],
            "exchanges": [], "icos": [], "categories": [], "nfts": [],
        }


def _precise(price: float, precision: str | None) -> float:
    if precision is None or precision == "full":
        return price
    try:
        return round(price, max(0, min(18, int(precision))))
    except ValueError:
        return price
