"""Integration fixtures: the fake upstream on loopback, a real runtime, a real waitress server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.runtime import Runtime
from stockcache.settings import Settings
from stockcache.web.server import Server
from tests.conftest import cheap_hasher

FINNHUB_KEY = "TESTKEY_finnhub_9f8e7d6c"
AV_KEY = "TESTKEY_alphav_1a2b3c4d"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def upstream_settings(tmp_path, upstream: FakeUpstream, **overrides: Any) -> Settings:
    """Settings pointing at the fake upstream with recognisable test keys."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "refresh": False, "port": 0,
        "finnhub_api_key": FINNHUB_KEY, "alphavantage_api_key": AV_KEY,
        "finnhub_url": upstream.finnhub_url, "alphavantage_url": upstream.alphavantage_url,
        "fx_url": upstream.url("frankfurter"), "coingecko_url": upstream.url("coingecko"),
        "openfigi_url": upstream.url("openfigi"),
        "upstream_timeout": 2.0, "alphavantage_per_day": 1000, "alphavantage_per_second": 0,
    }
    values.update(overrides)
    return Settings(**values)


class Api:
    """A tiny HTTP client for the running service."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.session = requests.Session()

    def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        bearer = token if token is not None else self.token
        if bearer:
            headers.setdefault("Authorization", f"Bearer {bearer}")
        return self.session.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def as_user(self, token: str) -> Api:
        return Api(self.base_url, token)


@dataclass
class Live:
    """A running service: its runtime, server, URL and ready-made clients."""

    runtime: Runtime
    server: Server
    url: str
    api: Api

    def add_user(self, name: str, password: str = "correct horse battery", *, admin: bool = False) -> Api:
        """Create a user through the store and return a client logged in as them."""
        self.runtime.store.create_user(name, self.runtime.auth.hash_password(password), is_admin=admin)
        answer = self.api.post("/api/auth/login", json={"username": name, "password": password})
        assert answer.status_code == 200, answer.text
        return self.api.as_user(answer.json()["access_token"])

    def stop(self) -> None:
        self.server.stop()


def start_service(settings: Settings, **runtime_kwargs: Any) -> Live:
    """The service on a loopback port; passwords hashed with cheap argon2 parameters unless ``hasher`` is given."""
    runtime_kwargs.setdefault("hasher", cheap_hasher())
    runtime = Runtime(settings, janitor_interval=None, **runtime_kwargs)
    server = Server(runtime, host="127.0.0.1", port=0)
    server.start_in_thread()
    return Live(runtime, server, server.url, Api(server.url))


@pytest.fixture
def live(tmp_path, upstream) -> Iterator[Live]:
    """The service on a loopback port, backed by the fake upstream."""
    service = start_service(upstream_settings(tmp_path, upstream))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def admin(live: Live) -> Api:
    return live.add_user("root", admin=True)


@pytest.fixture
def alice(live: Live) -> Api:
    return live.add_user("alice")


@pytest.fixture
def bob(live: Live) -> Api:
    return live.add_user("bob")
