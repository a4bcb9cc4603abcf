"""The fake CoinGecko over real HTTP: 24h field names, millisecond history, ambiguous search, keys and limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 1, 3, 15, 17, 42, tzinfo=UTC).timestamp()  # a Saturday: crypto trades
KEY = "TESTKEY_coingecko_2b3c4d"
RATE_LIMIT = {"status": {"error_code": 429, "error_message": (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API "
    "plans for higher rate limits.")}}


@pytest.fixture
def fake(clock):
    clock.set(NOW)
    with FakeUpstream(clock=clock) as server:
        server.api("coingecko").set_limits(keyless_per_minute=None, keyed_per_minute=None)
        yield server


@pytest.fixture
def cg(fake):
    return fake.api("coingecko")


@pytest.fixture
def get(fake):
    session = requests.Session()

    def get(path: str, *, headers: dict[str, str] | None = None, **params: str) -> requests.Response:
        return session.get(fake.url("coingecko") + path, params=params, headers=headers or {}, timeout=10)

    yield get
    session.close()


def test_coingecko_simple_price_names_its_fields_24h_and_prices_like_the_demo(get):
    body = get("/simple/price", ids="bitcoin,ethereum", vs_currencies="usd,eur", include_24hr_change="true",
               include_last_updated_at="true").json()
    assert set(body) == {"bitcoin", "ethereum"}
    assert set(body["bitcoin"]) == {"usd", "usd_24h_change", "eur", "eur_24h_change", "last_updated_at"}
    market = DemoMarket(marked=False)
    for coin, symbol in (("bitcoin", "BTC"), ("ethereum", "ETH")):
        for cur in ("usd", "eur"):
            now, day_ago = market.quote(f"{symbol}-{cur.upper()}", NOW), market.quote(f"{symbol}-{cur.upper()}",
                                                                                       NOW - 86400)
            assert body[coin][cur] == now.price
            # Against the price 24 hours ago, not against a previous close.
            assert body[coin][f"{cur}_24h_change"] == pytest.approx((now.price - day_ago.price) / day_ago.price * 100)
    stamp = body["bitcoin"]["last_updated_at"]
    assert isinstance(stamp, int) and NOW - 60 < stamp <= NOW
    plain = get("/simple/price", ids="bitcoin", vs_currencies="usd").json()
    assert plain == {"bitcoin": {"usd": body["bitcoin"]["usd"]}}
    extra = get("/simple/price", ids="solana", vs_currencies="usd", include_market_cap="true",
                include_24hr_vol="true").json()["solana"]
    assert set(extra) == {"usd", "usd_market_cap", "usd_24h_vol"}


def test_coingecko_unknown_ids_and_currencies_are_left_out(get, cg):
    assert get("/simple/price", ids="bitcoin,not-a-coin", vs_currencies="usd,xyz").json() == {
        "bitcoin": {"usd": DemoMarket(marked=False).quote("BTC-USD", NOW).price}}
    assert get("/simple/price", ids="not-a-coin,nor-this", vs_currencies="usd").json() == {}
    cg.set_stale(["bitcoin"])
    stale = get("/simple/price", ids="bitcoin", vs_currencies="usd", include_24hr_change="true").json()
    assert stale["bitcoin"]["usd_24h_change"] is None
    assert get("/simple/price", ids="bitcoin").status_code == 400


def test_coingecko_market_chart_is_milliseconds_daily_at_midnight_then_now(get):
    body = get("/coins/bitcoin/market_chart", vs_currency="usd", days="30", interval="daily").json()
    assert set(body) == {"prices", "market_caps", "total_volumes"}
    prices = body["prices"]
    assert len(prices) == 31 and all(isinstance(ms, int) and ms > 10**12 for ms, _ in prices)
    stamps = [ms / 1000 for ms, _ in prices]
    assert all(ts % 86400 == 0 for ts in stamps[:-1]) and stamps[-1] == NOW  # the last point is intraday "now"
    assert [b - a for a, b in zip(stamps[:-2], stamps[1:-1])] == [86400.0] * 29
    market = DemoMarket(marked=False)
    for ms, price in prices[:-1]:
        day = datetime.fromtimestamp(ms / 1000, UTC).date()
        assert price == market.candle("BTC-USD", day - timedelta(days=1)).close  # 00:00 is the day before's close
    assert prices[-1][1] == market.quote("BTC-USD", NOW).price
    assert date.fromtimestamp(stamps[-2]) <= datetime.fromtimestamp(NOW, UTC).date()


def test_coingecko_market_chart_granularity_range_limit_and_unknown_coin(get):
    hourly = get("/coins/ethereum/market_chart", vs_currency="eur", days="2").json()["prices"]
    assert [b[0] - a[0] for a, b in zip(hourly[:-2], hourly[1:-1])] == [3_600_000] * (len(hourly) - 2)
    five_minutes = get("/coins/ethereum/market_chart", vs_currency="eur", days="1").json()["prices"]
    assert five_minutes[1][0] - five_minutes[0][0] == 300_000 and len(five_minutes) > 280
    too_far = get("/coins/bitcoin/market_chart", vs_currency="usd", days="366", interval="daily")
    assert too_far.status_code == 401 and too_far.json()["error"]["status"]["error_code"] == 10012
    assert "past 365 days" in too_far.json()["error"]["status"]["error_message"]
    missing = get("/coins/not-a-coin/market_chart", vs_currency="usd", days="1")
    assert (missing.status_code, missing.json()) == (404, {"error": "coin not found"})


def test_coingecko_search_returns_every_namesake_and_not_best_first(get):
    coins = get("/search", query="btc").json()["coins"]
    assert [c["symbol"] for c in coins] == ["BTC", "BTC"]
    assert coins[0]["id"] == "batcat"  # a client must pick by rank itself
    best = min(coins, key=lambda c: c["market_cap_rank"] or 10**9)
    assert best["id"] == "bitcoin" and best["market_cap_rank"] == 1
    sol = {c["id"]: c["market_cap_rank"] for c in get("/search", query="SOL").json()["coins"]}
    assert sol == {"solana": 6, "wrapped-solana": 1450}
    eth = get("/search", query="eth").json()["coins"]
    namesakes = [c for c in eth if c["symbol"] == "ETH"]
    assert {c["id"] for c in namesakes} == {"ethereum", "ethereum-wormhole"}
    assert None in {c["market_cap_rank"] for c in namesakes}
    assert "tether" in {c["id"] for c in eth}  # names match by substring too
    body = get("/search", query="nothing-like-it").json()
    assert body["coins"] == [] and set(body) >= {"exchanges", "categories", "nfts"}
    assert set(coins[0]) == {"id", "name", "api_symbol", "symbol", "market_cap_rank", "thumb", "large"}


def test_coingecko_keys_demo_header_or_query_pro_key_refused(fake, get, cg):
    cg.expected_key = KEY
    assert get("/ping", headers={"x-cg-demo-api-key": KEY}).json() == {"gecko_says": "(V3) To the Moon!"}
    assert get("/ping", x_cg_demo_api_key=KEY).status_code == 200
    assert [c.key_in for c in fake.call_log()] == ["header", "query"]
    assert all(KEY not in str(c.params) for c in fake.call_log())
    bad = get("/ping", headers={"x-cg-demo-api-key": "wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["status"]["error_code"] == 10002
    pro = get("/ping", headers={"x-cg-pro-api-key": KEY})
    assert pro.status_code == 400 and pro.json()["status"]["error_code"] == 10010
    assert get("/ping").status_code == 200  # keyless still works, on its own small budget


def test_coingecko_per_minute_limits_keyless_and_with_a_key(get, cg, clock):
    cg.set_limits(keyless_per_minute=5, keyed_per_minute=30)
    for _ in range(5):
        assert get("/ping").status_code == 200
    limited = get("/ping")
    assert (limited.status_code, limited.json()) == (429, RATE_LIMIT) and "Retry-After" not in limited.headers
    assert get("/ping", headers={"x-cg-demo-api-key": KEY}).status_code == 200  # a key has its own budget
    clock.advance(61)
    assert get("/ping").status_code == 200
    assert cg.credits() == 7 and cg.rate_limited() == 1  # only HTTP 200s cost a credit
    cg.retry_after = 30
    for _ in range(5):
        get("/ping")
    assert get("/ping").headers["Retry-After"] == "30"
