"""Price alerts over real HTTP: a real service on waitress, the fake upstream, a real ntfy/webhook receiver.

The fake upstream runs on a clock of its own, so a test moves the market
(the DemoMarket's price on another day) while the service keeps real time.
Quotes are not cached (``ttl_quote=0``), so every read is a fresh quote and
is checked against the alerts. Each test syncs with the alert worker through a
probe: an alert that is always true, on a channel of its own, made by POST
(which checks it against the current quote at once). The worker handles
quotes in order, so once the probe's delivery has arrived every earlier quote
has been checked; no sleep stands in for that.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.fake_upstream import FakeUpstream
from stockcache.auth import TOKEN_PREFIX, hash_token_secret
from stockcache.settings import NotifyChannel
from stockcache.upstream.providers.demo import DemoMarket
from tests.fakes.notify import NotifyReceiver
from tests.integration.conftest import Api, Live, start_service, upstream_settings

SYMBOL = "AAPL"
SECRET_TOPIC = "alerts_tok_5ecret9"  # an ntfy topic is its own password: never shown


class MarketClock:
    """The fake upstream's clock: the test moves it to days on which the price is low or high."""

    def __init__(self) -> None:
        market = DemoMarket(marked=False, unknown=())
        now = time.time()
        prices = {t: market.quote(SYMBOL, t).price for t in (now - day * 86400 for day in range(1, 15))}
        self.low_at = min(prices, key=prices.__getitem__)
        self.high_at = max(prices, key=prices.__getitem__)
        self.low, self.high = prices[self.low_at], prices[self.high_at]
        assert self.low < self.high, "the demo market never moved over two weeks"
        self.threshold = round((self.low + self.high) / 2, 4)
        self.now = self.low_at

    def __call__(self) -> float:
        return self.now

    def go(self, where: str) -> None:
        self.now = self.high_at if where == "high" else self.low_at


@pytest.fixture
def market() -> MarketClock:
    return MarketClock()


@pytest.fixture
def upstream(market: MarketClock) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(clock=market)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def phone() -> Iterator[NotifyReceiver]:
    with NotifyReceiver() as receiver:
        yield receiver


@pytest.fixture
def probe() -> Iterator[NotifyReceiver]:
    with NotifyReceiver() as receiver:
        yield receiver


def channels(phone: NotifyReceiver, probe: NotifyReceiver, **more: str) -> tuple[NotifyChannel, ...]:
    made = [NotifyChannel("phone", "ntfy", f"{phone.url}/{SECRET_TOPIC}"),
            NotifyChannel("hook", "webhook", f"{phone.url}/hooks/stockcache?token={SECRET_TOPIC}"),
            NotifyChannel("probe", "ntfy", f"{probe.url}/probe")]
    made += [NotifyChannel(name, kind_url.split(":", 1)[0], kind_url.split(":", 1)[1])
             for name, kind_url in more.items()]
    return tuple(made)


def settings_for(tmp_path: Path, upstream: FakeUpstream, phone: NotifyReceiver, probe: NotifyReceiver,
                 **overrides: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {"ttl_quote": 0, "notify": channels(phone, probe), "alert_retry_wait": 0.1}
    values.update(overrides)
    return upstream_settings(tmp_path, upstream, **values)


@pytest.fixture
def live(tmp_path: Path, upstream: FakeUpstream, phone: NotifyReceiver, probe: NotifyReceiver) -> Iterator[Live]:
    service = start_service(settings_for(tmp_path, upstream, phone, probe))
    try:
        yield service
    finally:
        service.stop()


def settle(api: Api, probe: NotifyReceiver, symbol: str = SYMBOL) -> None:
    """Wait until the alert worker has checked every quote read so far (see the module docstring)."""
    seen = len(probe.deliveries(successful=True))
    made = api.post("/api/alerts", json={"symbol": symbol, "condition": "above", "value": -1e9,
                                         "channel": "probe"})
    assert made.status_code == 201, made.text
    probe.wait_for(seen + 1)
    assert api.delete(f"/api/alerts/{made.json()['id']}").status_code == 204


def read_quote(api: Api) -> float:
    answer = api.get(f"/api/quote/{SYMBOL}")
    assert answer.status_code == 200, answer.text
    return float(answer.json()["price"])


def test_alert_fires_once_per_crossing_and_rearms_when_false_again(
        live: Live, market: MarketClock, phone: NotifyReceiver, probe: NotifyReceiver) -> None:
    alice = live.add_user("alice")
    made = alice.post("/api/alerts", json={"symbol": "aapl", "condition": "above", "value": market.threshold,
                                           "channel": "Phone", "note": "time to sell"})
    assert made.status_code == 201, made.text
    alert = made.json()
    assert alert == {"id": alert["id"], "symbol": SYMBOL, "condition": "above", "value": market.threshold,
                     "channel": "phone", "note": "time to sell", "armed": True, "last_fired_at": None}
    assert read_quote(alice) == market.low
    settle(alice, probe)
    assert phone.deliveries() == []  # below the threshold: nothing

    market.go("high")
    for _ in range(3):  # the crossing, then the price staying above it
        assert read_quote(alice) == market.high
    settle(alice, probe)
    [first] = phone.wait_for(1)
    assert first.topic == SECRET_TOPIC
    assert first.header("Title") == f"{SYMBOL} above {market.threshold:g}"
    assert first.header("Priority") == "high" and first.header("Tags") == "chart_with_upwards_trend"
    assert f"{SYMBOL} is at {market.high} USD" in first.text and first.text.endswith("\ntime to sell")
    listed = alice.get("/api/alerts").json()["alerts"]
    assert listed[0]["armed"] is False and listed[0]["last_fired_at"] is not None

    market.go("low")
    read_quote(alice)  # false again: re-armed, silently
    settle(alice, probe)
    assert len(phone.deliveries()) == 1 and alice.get("/api/alerts").json()["alerts"][0]["armed"] is True

    market.go("high")  # the second crossing, met by a background refresh rather than a request
    found, errors = live.runtime.service.refresh("quote", [SYMBOL])
    assert SYMBOL in found and not errors
    settle(alice, probe)
    assert len(phone.wait_for(2)) == 2

    history = alice.get("/api/alerts/history").json()["deliveries"]
    mine = [d for d in history if d["channel"] == "phone"]
    assert [(d["status"], d["attempts"], d["observed"], d["alert_id"]) for d in mine] == [
        ("delivered", 1, market.high, alert["id"])] * 2


def test_alert_fired_before_a_restart_does_not_fire_again(
        tmp_path: Path, upstream: FakeUpstream, market: MarketClock, phone: NotifyReceiver,
        probe: NotifyReceiver) -> None:
    settings = settings_for(tmp_path, upstream, phone, probe)
    first = start_service(settings)
    try:
        alice = first.add_user("alice")
        market.go("high")
        made = alice.post("/api/alerts", json={"symbol": SYMBOL, "condition": "above", "value": market.threshold,
                                               "channel": "phone"})
        assert made.status_code == 201
        phone.wait_for(1)
        settle(alice, probe)
        fired_at = alice.get("/api/alerts").json()["alerts"][0]["last_fired_at"]
    finally:
        first.stop()
    again = start_service(settings)
    try:
        login = again.api.post("/api/auth/login", json={"username": "alice", "password": "correct horse battery"})
        alice = again.api.as_user(login.json()["access_token"])
        assert read_quote(alice) == market.high  # still above: the same crossing
        settle(alice, probe)
        assert len(phone.deliveries()) == 1
        [kept] = alice.get("/api/alerts").json()["alerts"]
        assert kept["armed"] is False and kept["last_fired_at"] == fired_at
    finally:
        again.stop()


def test_alert_delivery_is_retried_with_backoff_when_the_receiver_fails_twice(
        live: Live, market: MarketClock, phone: NotifyReceiver, probe: NotifyReceiver) -> None:
    alice = live.add_user("alice")
    phone.fail_next(1, "500")
    phone.fail_next(1, "reset")
    market.go("high")
    made = alice.post("/api/alerts", json={"symbol": SYMBOL, "condition": "above", "value": market.threshold,
                                           "channel": "hook"})
    assert made.status_code == 201
    [delivered] = phone.wait_for(1)
    tries = phone.deliveries()
    assert [d.answered for d in tries] == [500, 0, 204]
    wait = live.runtime.settings.alert_retry_wait
    assert tries[1].at - tries[0].at >= 0.9 * wait and tries[2].at - tries[1].at >= 0.9 * 2 * wait  # doubling
    body = delivered.json
    assert (body["event"], body["symbol"], body["condition"], body["value"], body["price"]) == (
        "alert", SYMBOL, "above", market.threshold, market.high)
    assert delivered.header("Content-Type") == "application/json"
    settle(alice, probe)  # the outcome is recorded before the worker takes the probe
    [record] = [d for d in alice.get("/api/alerts/history").json()["deliveries"] if d["channel"] == "hook"]
    assert (record["status"], record["attempts"], record["error"]) == ("delivered", 3, None)


def test_alert_delivery_gives_up_after_the_retries_and_says_why(
        tmp_path: Path, upstream: FakeUpstream, market: MarketClock, phone: NotifyReceiver,
        probe: NotifyReceiver) -> None:
    live = start_service(settings_for(tmp_path, upstream, phone, probe, alert_retries=2))
    try:
        alice = live.add_user("alice")
        phone.fail_next(10, "500")
        market.go("high")
        assert alice.post("/api/alerts", json={"symbol": SYMBOL, "condition": "above", "value": market.threshold,
                                               "channel": "phone"}).status_code == 201
        phone.wait_for(3, successful=False)
        settle(alice, probe)
        assert len(phone.deliveries()) == 3  # one try and two retries, no more
        [record] = [d for d in alice.get("/api/alerts/history").json()["deliveries"] if d["channel"] == "phone"]
        assert (record["status"], record["attempts"], record["error"]) == ("failed", 3, "HTTP 500")
        assert record["finished_at"] is not None
    finally:
        live.stop()


def test_alert_user_cannot_name_a_url_or_an_unconfigured_channel(
        live: Live, market: MarketClock, phone: NotifyReceiver, probe: NotifyReceiver) -> None:
    alice = live.add_user("alice")
    with NotifyReceiver() as elsewhere:
        base = {"symbol": SYMBOL, "condition": "above", "value": -1.0}
        for body in ({**base, "channel": elsewhere.url + "/topic"},
                     {**base, "channel": f"ntfy:{elsewhere.url}/topic"},
                     {**base, "channel": "phone", "url": elsewhere.url + "/topic"},
                     {**base, "channel": "email"},
                     {**base, "channel": ["phone"]}):
            refused = alice.post("/api/alerts", json=body)
            assert refused.status_code == 400, body
            error = refused.json()["error"]
            assert error["code"] == "invalid_request" and error["field"] in ("channel", "url")
        assert "phone" in alice.post("/api/alerts", json={**base, "channel": "email"}).json()["error"]["message"]
        read_quote(alice)
        settle(alice, probe)
        assert elsewhere.deliveries() == [] and phone.deliveries() == []
        assert alice.get("/api/alerts").json()["alerts"] == []
    assert alice.get("/api/alerts").json()["channels"] == ["phone", "hook", "probe"]


def test_alert_routes_refuse_bad_values_and_unknown_symbols(live: Live) -> None:
    alice = live.add_user("alice")
    base = {"symbol": SYMBOL, "condition": "above", "value": 1.0, "channel": "phone"}
    for change, field in (({"condition": "sideways"}, "condition"), ({"value": "high"}, "value"),
                          ({"value": True}, "value"), ({"note": "x" * 201}, "note"), ({"symbol": "no way"}, "symbol")):
        answer = alice.post("/api/alerts", json={**base, **change})
        assert answer.status_code == 400 and answer.json()["error"]["field"] == field, (change, answer.text)
    assert alice.post("/api/alerts", json={**base, "symbol": "ZZZZ1"}).json()["error"]["code"] == "symbol_not_found"
    assert alice.delete("/api/alerts/12345").status_code == 404
    assert alice.get("/api/alerts/history?limit=0").status_code == 400


def test_alerts_are_isolated_between_users(live: Live, market: MarketClock, phone: NotifyReceiver,
                                           probe: NotifyReceiver) -> None:
    alice, bob = live.add_user("alice"), live.add_user("bob")
    market.go("high")
    mine = alice.post("/api/alerts", json={"symbol": SYMBOL, "condition": "above", "value": market.threshold,
                                           "channel": "phone"}).json()
    phone.wait_for(1)
    assert bob.get("/api/alerts").json()["alerts"] == []
    assert bob.get("/api/alerts/history").json()["deliveries"] == []
    assert bob.delete(f"/api/alerts/{mine['id']}").status_code == 404  # like a missing one
    assert [a["id"] for a in alice.get("/api/alerts").json()["alerts"]] == [mine["id"]]
    assert [d["alert_id"] for d in alice.get("/api/alerts/history").json()["deliveries"]] == [mine["id"]]


def test_alert_routes_refuse_a_market_token(live: Live) -> None:
    alice = live.add_user("alice")
    user = live.runtime.store.get_user_by_name("alice")
    assert user is not None
    live.runtime.store.create_api_token(user[0].id, "mkttoken", hash_token_secret("s" * 43), "sheet",
                                        scope="market")
    sheet = live.api.as_user(f"{TOKEN_PREFIX}mkttoken_{'s' * 43}")
    assert sheet.get(f"/api/quote/{SYMBOL}").status_code == 200
    for method, path in (("GET", "/api/alerts"), ("POST", "/api/alerts"), ("DELETE", "/api/alerts/1"),
                         ("GET", "/api/alerts/history")):
        answer = sheet.request(method, path, json={})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", (method, path)
    assert alice.get("/api/alerts").status_code == 200


def test_alert_channel_urls_never_leave_the_server(live: Live, market: MarketClock, phone: NotifyReceiver,
                                                   probe: NotifyReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stockcache")
    admin = live.add_user("root", admin=True)
    phone.fail_next(1)
    market.go("high")
    assert admin.post("/api/alerts", json={"symbol": SYMBOL, "condition": "above", "value": market.threshold,
                                           "channel": "hook"}).status_code == 201
    phone.wait_for(1)
    settle(admin, probe)
    shown = [admin.get(path).text for path in ("/api/alerts", "/api/alerts/history", "/api/cache/stats")]
    shown.append(json.dumps(live.runtime._snapshot(), default=str))
    shown.append(repr(live.runtime.settings))
    shown.append(caplog.text)
    for text in shown:
        assert SECRET_TOPIC not in text
    assert live.runtime._snapshot()["alerts"]["channels"]["hook"] == f"webhook:{phone.url}/***"


def test_alert_symbols_are_kept_fresh_by_the_refresher_like_held_ones(live: Live) -> None:
    alice = live.add_user("alice")
    assert alice.post("/api/alerts", json={"symbol": "MSFT", "condition": "below", "value": 1.0,
                                           "channel": "phone"}).status_code == 201
    assert live.runtime._held() == {"MSFT": 1}
    assert alice.post("/api/watchlist", json={"symbol": "MSFT"}).status_code == 201
    assert live.runtime._held() == {"MSFT": 2}


def test_alert_recipe_request_in_the_docs_works_as_shown(live: Live, phone: NotifyReceiver) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text()
    body = json.loads(doc.split("-d '", 1)[1].split("'", 1)[0])
    alice = live.add_user("alice")
    made = alice.post("/api/alerts", json=body)
    assert made.status_code == 201, made.text
    assert {k: made.json()[k] for k in body} == body
    assert 'Title: AAPL above 250' in doc and "Priority: high" in doc  # what the first test sees delivered


def test_alert_symbols_get_price_gauges_on_metrics_quotes(live: Live) -> None:
    alice = live.add_user("alice")
    assert alice.post("/api/alerts", json={"symbol": "NVDA", "condition": "above", "value": 1e6,
                                           "channel": "phone"}).status_code == 201
    user = live.runtime.store.get_user_by_name("alice")
    assert user is not None
    live.runtime.store.create_api_token(user[0].id, "mkttoken", hash_token_secret("s" * 43), "prom",
                                        scope="market")
    gauges = live.api.get("/metrics/quotes", token=f"{TOKEN_PREFIX}mkttoken_{'s' * 43}")
    assert gauges.status_code == 200, gauges.text
    priced = {sample.labels["symbol"] for family in text_string_to_metric_families(gauges.text)
              for sample in family.samples if sample.name == "stockcache_quote_price"}
    assert priced == {"NVDA"}  # alerted, though not held
