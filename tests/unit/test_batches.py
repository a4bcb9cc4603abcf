"""Many symbols in one upstream request: ceil(N / max) calls, per-symbol outcomes, single-flight, units.

A provider defined here takes ``symbols=A,B,C`` (at most three) and answers
each symbol's price or its own error inside one body, as Twelve Data and
CoinGecko do; `responses` stands in for it, and the real read-through path,
router, transport, budgets and a SQLite cache in a temp dir do the rest.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses

from stockcache.errors import SymbolNotFound, UpstreamError
from stockcache.metrics import Metrics
from stockcache.models import ListingInfo, Quote
from stockcache.settings import Section
from stockcache.symbols import Listing
from stockcache.upstream.guard import Budget, Limits
from stockcache.upstream.providers.base import Provider, UpstreamRequest
from stockcache.upstream.providers.finnhub import FinnhubConfig, FinnhubProvider
from tests.unit.conftest import FH, FH_KEY

URL = "https://many.test/v1"
GOOD = {"c": 261.74, "d": 2.29, "dp": 0.8826, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 259.45, "t": 1582641000}


@dataclass(frozen=True)
class ManyConfig(Section):
    prefix = "many"


def _quote(symbol: str, price: float) -> Quote:
    return Quote(symbol=symbol, price=price, change=None, change_percent=None, high=None, low=None, open=None,
                 previous_close=None, timestamp=None, currency="USD")


class ManyProvider(Provider):
    """Quotes for up to three symbols per request; ``{"SYM": {"price": p}}`` or ``{"SYM": {"error": "..."}}``."""

    name = "many"
    label = "Many"
    config = ManyConfig
    kinds = frozenset({"quote", "listing"})
    priority = {"quote": 1}
    batch = {"quote": 3}
    credits = False  # True: one budget unit per symbol
    listing_for: frozenset[str] = frozenset()  # symbols it must look up first

    def units(self, kind: str, count: int) -> int:
        return count if self.credits else 1

    def needs_listing(self, kind: str, listing: Listing) -> bool:
        return kind == "quote" and listing.symbol in self.listing_for

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        if kind == "listing":
            return UpstreamRequest(url=f"{URL}/lookup", params={"symbol": symbol})
        return self.build_batch_request(kind, [symbol], params)

    def build_batch_request(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any]) -> UpstreamRequest:
        query = {"symbols": ",".join(symbols)}
        listings = params.get("listings") or ({symbols[0]: params["listing"]} if "listing" in params else {})
        if listings:
            query["ids"] = ",".join(f"{s}={(info or {}).get('id')}" for s, info in sorted(listings.items()))
        return UpstreamRequest(url=f"{URL}/quote", params=query)

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        if kind == "listing":
            return ListingInfo(symbol=symbol, name=None, currency="USD", id=json.loads(body)["id"])
        value = self.parse_batch(kind, [symbol], params, status, headers, body)[symbol]
        if isinstance(value, Exception):
            raise value
        return value

    def parse_batch(self, kind: str, symbols: Sequence[str], params: Mapping[str, Any], status: int,
                    headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        if status != 200:
            raise UpstreamError(f"many answered HTTP {status}")
        out: dict[str, Any] = {}
        for symbol, item in json.loads(body).items():
            if "error" in item:
                out[symbol] = SymbolNotFound(item["error"], symbol=symbol)
            else:
                out[symbol] = _quote(symbol, item["price"])
        return out


class Upstream:
    """The `responses` callback: prices by symbol, a set of unknown ones, and every call's symbols."""

    def __init__(self, unknown=(), left_out=(), status=200, gate: threading.Event | None = None):
        self.unknown, self.left_out, self.status, self.gate = set(unknown), set(left_out), status, gate
        self.calls: list[list[str]] = []
        self.ids: list[str] = []

    def __call__(self, request):
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        symbols = query["symbols"].split(",")
        self.calls.append(symbols)
        if "ids" in query:
            self.ids.append(query["ids"])
        if self.gate is not None:
            self.gate.wait(10)
        if self.status != 200:
            return self.status, {}, "down"
        body = {s: ({"error": f"{s} is not known"} if s in self.unknown else {"price": 10.0 + len(s)})
                for s in symbols if s not in self.left_out}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)


def _many(clock, **attrs):
    provider = ManyProvider(ManyConfig(), clock=clock)
    for name, value in attrs.items():
        setattr(provider, name, value)
    return provider


@responses.activate
def test_batch_of_cold_symbols_costs_one_call_per_three(build, clock):
    upstream = Upstream()
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    rt = build([_many(clock)])
    symbols = [f"S{i}" for i in range(7)]
    found, errors = rt.many("quote", symbols)
    assert errors == {} and set(found) == set(symbols)
    assert all(found[s]["price"] == 10.0 + len(s) and found[s]["source"] == "many" for s in symbols)
    assert sorted(len(call) for call in upstream.calls) == [1, 3, 3]  # ceil(7 / 3) requests
    assert sorted(s for call in upstream.calls for s in call) == sorted(symbols)  # each symbol asked once
    assert rt.metrics.get(Metrics.UPSTREAM_CALLS, "many") == 3
    again, _ = rt.many("quote", symbols)
    assert {q["cache"] for q in again.values()} == {"memory"} and len(upstream.calls) == 3


@responses.activate
def test_batch_symbol_failing_inside_the_answer_is_its_own_error_and_walks_on_alone(build, clock):
    upstream = Upstream(unknown={"BAD"}, left_out={"GONE"})
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    rt = build([_many(clock), FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)])
    found, errors = rt.many("quote", ["AAPL", "BAD", "GONE"])
    assert found["AAPL"]["source"] == "many"
    assert isinstance(errors["BAD"], SymbolNotFound) and errors["BAD"].fields["symbol"] == "BAD"  # final
    assert found["GONE"]["source"] == "finnhub"  # left out of the batch answer: the next provider alone
    assert [c.request.params["symbol"] for c in responses.calls if c.request.url.startswith(FH)] == ["GONE"]
    assert rt.router.breakers["many"].state == "closed"


@responses.activate
def test_batch_that_fails_as_a_whole_counts_once_against_the_provider_and_each_symbol_walks_on(build, clock):
    upstream = Upstream(status=500)
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    rt = build([_many(clock), FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)])
    found, errors = rt.many("quote", ["A", "B", "C"])
    assert errors == {} and {q["source"] for q in found.values()} == {"finnhub"}
    assert len(upstream.calls) == 1 and rt.metrics.get(Metrics.UPSTREAM_ERRORS, "many") == 1


@responses.activate
def test_batch_joins_a_symbol_already_in_flight_instead_of_asking_for_it_again(build, clock):
    gate = threading.Event()
    upstream = Upstream(gate=gate)
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    rt = build([_many(clock)])
    first: dict[str, Any] = {}
    single = threading.Thread(target=lambda: first.update(rt.many("quote", ["AAPL"])[0]))
    single.start()
    while not upstream.calls:  # the single request is on the wire, held by the gate
        threading.Event().wait(0.001)
    batch: dict[str, Any] = {}
    joined = rt.metrics.get(Metrics.COALESCED)
    many = threading.Thread(target=lambda: batch.update(rt.many("quote", ["AAPL", "MSFT", "NVDA"])[0]))
    many.start()
    while len(upstream.calls) < 2:
        threading.Event().wait(0.001)
    gate.set()
    single.join()
    many.join()
    assert upstream.calls == [["AAPL"], ["MSFT", "NVDA"]]
    assert rt.metrics.get(Metrics.COALESCED) == joined + 1
    assert first["AAPL"]["price"] == batch["AAPL"]["price"] and set(batch) == {"AAPL", "MSFT", "NVDA"}


@responses.activate
def test_batch_budget_counts_what_the_provider_counts(build, clock):
    upstream = Upstream()
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    provider = _many(clock, credits=True)
    budgets = {"many": Budget("many", Limits(per_minute=5), clock=clock),
               "finnhub": Budget("finnhub", Limits(), clock=clock)}
    rt = build([provider, FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)], budgets=budgets)
    found, errors = rt.many("quote", ["A", "B", "C", "D", "E", "F"])
    assert errors == {} and len(found) == 6
    # Two requests of three symbols would cost 6 credits of 5: the first goes, the second is cut to
    # the two credits left, and its third symbol, refused by the budget alone before any call, is
    # answered by the next provider. (The two requests go out together, in either order.)
    assert sorted(upstream.calls) == [["A", "B", "C"], ["D", "E"]]
    assert sorted(s for s, q in found.items() if q["source"] == "finnhub") == ["F"]
    assert budgets["many"].remaining()["minute"] == 0


@responses.activate
def test_batch_the_budget_cannot_pay_two_of_asks_each_symbol_alone(build, clock):
    upstream = Upstream()
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    budgets = {"many": Budget("many", Limits(per_minute=5), clock=clock),
               "finnhub": Budget("finnhub", Limits(), clock=clock)}
    rt = build([_many(clock, credits=True), FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)],
               budgets=budgets)
    rt.many("quote", ["A", "B", "C", "D"])  # 3 + 1 credits: one credit of the minute is left
    found, errors = rt.many("quote", ["E", "F", "G"])
    assert errors == {} and len(found) == 3
    # The last credit pays for one symbol asked alone; the other two are refused one by one.
    assert upstream.calls[2:] == [["E"]] and found["E"]["source"] == "many"
    assert sorted(s for s, q in found.items() if q["source"] == "finnhub") == ["F", "G"]
    assert budgets["many"].remaining()["minute"] == 0


@responses.activate
def test_batch_is_never_larger_than_the_budget_can_ever_pay_for(build, clock):
    upstream = Upstream()
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    # Two credits a minute: a request for three symbols could never be paid for, so it is never sent.
    rt = build([_many(clock, credits=True)], budgets={"many": Budget("many", Limits(per_minute=2), clock=clock)})
    found, errors = rt.many("quote", ["A", "B", "C"])
    assert upstream.calls == [["A", "B"]] and set(found) == {"A", "B"}
    assert errors["C"].code == "rate_limited"  # the third credit of the minute, alone
    # Counted in calls, the same budget sends all three in one request.
    rt = build([_many(clock)], budgets={"many": Budget("many", Limits(per_minute=2), clock=clock)})
    assert len(rt.many("quote", ["D", "E", "F"])[0]) == 3 and upstream.calls[1:] == [["D", "E", "F"]]


@responses.activate
def test_batch_provider_that_needs_its_listing_first_gets_it_once_and_cached(build, clock):
    upstream = Upstream()
    responses.add_callback(responses.GET, f"{URL}/quote", callback=upstream)
    responses.add(responses.GET, f"{URL}/lookup", json={"id": "coin-42"})
    rt = build([_many(clock, listing_for=frozenset({"NEWCOIN"}))])
    found, errors = rt.many("quote", ["AAPL", "NEWCOIN", "MSFT"])
    assert errors == {} and len(found) == 3
    assert upstream.ids == ["NEWCOIN=coin-42"]  # the listing's id went along, for its symbol only
    lookups = [c for c in responses.calls if c.request.url.startswith(f"{URL}/lookup")]
    assert len(lookups) == 1
    clock.advance(400)  # quotes expired, the listing (fundamentals tier) did not
    rt.many("quote", ["NEWCOIN"])
    assert len([c for c in responses.calls if c.request.url.startswith(f"{URL}/lookup")]) == 1
    assert upstream.ids[-1] == "NEWCOIN=coin-42"
