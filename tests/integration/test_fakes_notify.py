"""The notification receiver over real HTTP: ntfy and webhook deliveries recorded, failures on demand, waits."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.fakes.notify import NotifyReceiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def receiver():
    with NotifyReceiver() as server:
        yield server


def ntfy(receiver: NotifyReceiver, text: str = "AAPL above 250", topic: str = "stock-alerts") -> requests.Response:
    headers = {"Title": "AAPL crossed 250", "Priority": "high", "Tags": "chart_with_upwards_trend,AAPL"}
    return requests.post(f"{receiver.url}/{topic}", data=text.encode(), timeout=10, headers=headers)


def test_notify_records_an_ntfy_delivery_with_its_headers(receiver):
    answer = ntfy(receiver)
    assert answer.status_code == 200
    message = answer.json()
    assert (message["event"], message["topic"], message["message"], message["title"]) == (
        "message", "stock-alerts", "AAPL above 250", "AAPL crossed 250")
    assert message["tags"] == ["chart_with_upwards_trend", "AAPL"]
    [delivery] = receiver.wait_for(1)
    assert (delivery.path, delivery.topic, delivery.text, delivery.answered) == (
        "/stock-alerts", "stock-alerts", "AAPL above 250", 200)
    assert delivery.header("title") == "AAPL crossed 250" and delivery.header("Priority") == "high"
    assert delivery.header("Tags") == "chart_with_upwards_trend,AAPL"


def test_notify_records_a_json_webhook(receiver):
    answer = requests.post(receiver.url + "/hooks/alerts", json={"symbol": "SAP.DE", "price": 231.5}, timeout=10)
    assert answer.status_code == 204
    [delivery] = receiver.wait_for(1)
    assert delivery.json == {"symbol": "SAP.DE", "price": 231.5} and delivery.path == "/hooks/alerts"
    assert delivery.header("Content-Type") == "application/json"


def test_notify_fails_the_next_deliveries_on_demand(receiver):
    receiver.fail_next(2)
    assert [ntfy(receiver).status_code for _ in range(3)] == [500, 500, 200]
    assert [d.answered for d in receiver.deliveries()] == [500, 500, 200]
    assert len(receiver.wait_for(1)) == 1  # successful ones only, by default
    receiver.fail_next(1, mode="reset")
    with pytest.raises(requests.ConnectionError):
        ntfy(receiver)
    assert receiver.deliveries()[-1].answered == 0
    assert ntfy(receiver).status_code == 200
    with pytest.raises(ValueError):
        receiver.fail_next(1, mode="sideways")


def test_notify_wait_for_wakes_on_the_nth_delivery_and_times_out_otherwise(receiver):
    senders = [threading.Thread(target=ntfy, args=(receiver, f"message {i}")) for i in range(8)]
    for sender in senders:
        sender.start()
    got = receiver.wait_for(8, timeout=10)
    assert sorted(d.text for d in got) == sorted(f"message {i}" for i in range(8))
    for sender in senders:
        sender.join()
    started = time.monotonic()
    with pytest.raises(AssertionError, match="9 deliveries, got 8"):
        receiver.wait_for(9, timeout=0.2)
    assert time.monotonic() - started < 5
    receiver.clear()
    assert receiver.deliveries() == []


def test_notify_refuses_get(receiver):
    assert requests.get(receiver.url + "/stock-alerts", timeout=10).status_code == 405
    assert receiver.deliveries() == []
