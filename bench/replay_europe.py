"""The replay's European day (issue 14): EUR portfolios of Xetra, London, Paris, Amsterdam and US listings.

``python -m bench.replay --market europe`` runs it (``bench.replay`` holds the US
day and the parts both share: the fake clock, the in-process upstream, the
portfolio and visit generators). It prints markdown tables comparing, in one
run, the day with the background refresher off and on, on free keys and with
Alpha Vantage's smallest paid plan.

The market: the named listings of ``DemoMarket.listings()`` on those venues
(US shares such as AAPL, SAP.DE, VOD.L and four more pence-priced London
shares, MC.PA, ASML.AS, ...), their ETFs (EUNL.DE, the USD-priced VWRA.L, the
GBP-priced VUSA.L, ISF.L in pence, SPY, ...) and generated listings on each
venue, ranked round-robin over the venues and the ETFs so each has popular and
obscure listings, with Zipf popularity (s = 1.1). Each user holds 5 to 20 of
them (drawn by popularity), with 1 to 200 shares and a cost basis in the
listing's currency, and reads the portfolio in EUR: even users by their stored
``base_currency``, odd ones with ``?currency=EUR``, resolved as the route does.
Visits start uniformly over the union of the sessions (London and Xetra open
at 08:00 UTC, New York closes at 21:00 UTC on Monday 2026-03-02); each loads the
page a few times, about 90 s apart, as on the US day.

Keys and budgets (:data:`PLANS`): Finnhub free, 60 a minute and 30 a second,
US listings only (the fake refuses others with 403, as the real one does);
Alpha Vantage free, 25 a day and 1 a second, or premium, 75 a minute; or both
free plans with Twelve Data's free plan (8 credits a minute and 800 a day, a
credit per symbol) and a CoinGecko Demo key (30 calls a minute), issue 15's
rerun. CoinGecko runs keyless (5 a minute) on the other plans, as the service
does once any key is set. FX rates come from the fake's Frankfurter (ECB
reference rates). The refresher runs with ``STOCKCACHE_REFRESH_HOURS=market``:
each listing in its own venue's session.

With ``crypto`` (``--crypto``), some users also hold the crypto pairs
:data:`CRYPTO_PAIRS`, drawn from a random generator of their own: the stock
portfolios and the visits are the same with and without them.

Every page is checked against the fake's ground truth (``DemoMarket``):

- each position with a price: its currency against ``DemoMarket.currency`` (the
  major unit), its price and day change against ``DemoMarket.quote`` at the
  moment the fake answered the call that priced it. Pence shown as pounds is a
  price 100 times the truth in GBP. A position without a price or without a
  currency is counted apart with its reason: it is honest, not wrong;
- the page's totals against a calculation of our own: the same positions
  priced from ground truth and converted at ``DemoMarket.ecb_latest`` as of the
  moment the fake answered the FX call the page used;
- budget overruns: calls the fake received beyond each provider's budget in
  any sliding window, at the time the budget booked each call; credits for
  Twelve Data (a credit per symbol of a batch, as the fake charges them). The
  fake's own 429s are counted too;
- a crypto pair's day change is its 24-hour change (CoinGecko has no session):
  against ``DemoMarket.quote`` 24 hours before the call.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from bench.fake_upstream import FakeUpstream
from bench.replay import FakeClock, InProcessSession, Market, bench_settings, page_loads, portfolios, quote_reads
from stockcache.cache import open_cache
from stockcache.refresher import Refresher
from stockcache.runtime import build_service
from stockcache.settings import Settings
from stockcache.store import open_store
from stockcache.symbols import CRYPTO, listing
from stockcache.upstream.providers import coingecko, openfigi
from stockcache.upstream.providers.alphavantage_symbols import from_av
from stockcache.upstream.providers.demo import COINS_BY_ID, ETF, DemoMarket, Instrument
from stockcache.venues import BY_MIC, US, Venue
from tests.fakes.twelvedata import BATCH as TWELVEDATA_BATCH
from tests.fakes.twelvedata import CREDITS as TWELVEDATA_CREDITS

DAY = "2026-03-02"  # a Monday: every venue trades, and the ECB publishes at 15:00 UTC, mid-replay
BASE = "EUR"
# The venues of the day, with how many generated listings each gets.
VENUES: tuple[tuple[Venue, int], ...] = (
    (US, 40), (BY_MIC["XETR"], 40), (BY_MIC["XLON"], 30), (BY_MIC["XPAR"], 25), (BY_MIC["XAMS"], 20),
)
ETFS = "ETF"  # one more group of the ranking: the named ETFs of every venue
RANKING = (US.mic, ETFS, "XETR", "XLON", "XPAR", "XAMS")  # round-robin order
# Budgets set explicitly, so a change of defaults cannot change the day. "free": both providers' free
# plans, the brief's day. "premium": Alpha Vantage's smallest paid plan (75 a minute, no daily cap).
_FREE: Mapping[str, Any] = {
    "finnhub_per_minute": 60, "finnhub_per_second": 30, "finnhub_per_day": 0, "finnhub_plan": "free",
    "alphavantage_per_day": 25, "alphavantage_per_second": 1, "alphavantage_per_minute": 0,
    "refresh_hours": "market",
}
PLANS: Mapping[str, Mapping[str, Any]] = {
    "free": _FREE,
    "premium": {**_FREE, "alphavantage_per_day": 0, "alphavantage_per_second": 0, "alphavantage_per_minute": 75},
    # Issue 15: both free plans plus Twelve Data's free plan (Basic: no /profile) and a CoinGecko Demo key.
    "twelvedata": {**_FREE, "twelvedata_api_key": "BENCHKEY_td", "twelvedata_per_minute": 8,
                   "twelvedata_per_day": 800, "twelvedata_plan": "basic",
                   "coingecko_api_key": "BENCHKEY_cg", "coingecko_per_minute": coingecko.KEYED_PER_MINUTE},
}
FX_API = "frankfurter"  # the fake's name for the ECB rates API (stockcache's provider "ecb")
# (fake API, stockcache's settings prefix, the key it needs or None): whose calls are checked against
# which budget. CoinGecko needs none: it runs keyless once another key is set.
BUDGETED = (("finnhub", "finnhub", None), ("alphavantage", "alphavantage", None), (FX_API, "fx", None),
            ("twelvedata", "twelvedata", "twelvedata_api_key"), ("coingecko", "coingecko", None),
            ("openfigi", "openfigi", None))
APIS = ("finnhub", "alphavantage", "twelvedata", "coingecko", FX_API, "openfigi")  # the summary's call columns
# Per-minute limits whose setting is "auto": (with a key, without one), as each provider publishes them.
AUTO_LIMITS = {"coingecko": (coingecko.KEYED_PER_MINUTE, coingecko.KEYLESS_PER_MINUTE),
               "openfigi": (openfigi.KEYED_PER_MINUTE, openfigi.KEYLESS_PER_MINUTE)}
WINDOWS = (("second", 1.0), ("minute", 60.0), ("day", 86400.0))
QUOTE_CALLS = {("finnhub", "quote"), ("alphavantage", "GLOBAL_QUOTE"), ("twelvedata", "quote"),
               ("coingecko", "simple/price")}
CRYPTO_PAIRS = ("BTC-USD", "ETH-EUR")
CRYPTO_SHARE = 0.3  # of users holding each pair
CRYPTO_NAME = "Crypto (24/7)"
MONEY_TOLERANCE = 0.01  # EUR: the answer rounds to 4 decimals, ours adds up unrounded figures


def venue_name(symbol: str) -> str:
    where = listing(symbol)
    if where.asset == CRYPTO:
        return CRYPTO_NAME
    return where.venue.name if where.venue is not None else "other"


def european_market(zipf_s: float, rng: random.Random) -> Market:
    """Named and generated listings, ranked round-robin over the venues and the ETFs, Zipf-weighted."""
    demo = DemoMarket()
    venues = [venue for venue, _ in VENUES]
    groups: dict[str, list[str]] = {name: [] for name in RANKING}
    for symbol in demo.listings():
        inst = demo.instrument(symbol)
        if inst.venue is not None and inst.venue in venues:
            groups[ETFS if inst.asset == ETF else inst.venue.mic].append(symbol)
    for name in RANKING[:1] + RANKING[2:]:
        rng.shuffle(groups[name])
    # ETFs in a fixed order, UCITS funds first: EU retail investors may not buy US-domiciled ETFs (PRIIPs).
    groups[ETFS].sort(key=lambda symbol: (listing(symbol).is_us, demo.listings().index(symbol)))
    for venue, generated in VENUES:
        # Never ZZZZ*, the fake's unknown symbols: "U001X" in the US, "E001.DE", "E001.L", ... elsewhere.
        groups[venue.mic] += [f"U{i:03d}X" if venue is US else f"E{i:03d}{venue.suffix}" for i in range(generated)]
    queues = [groups[name] for name in RANKING]
    symbols: list[str] = []
    while any(queues):
        symbols += [queue.pop(0) for queue in queues if queue]
    return Market(symbols, [1.0 / (rank ** zipf_s) for rank in range(1, len(symbols) + 1)])


def session_span(day: str) -> tuple[float, float]:
    """(first open, last close) of the day's venues, as unix times."""
    when = date.fromisoformat(day)
    opens = [datetime.combine(when, venue.opens, tzinfo=venue.zone).timestamp() for venue, _ in VENUES]
    closes = [datetime.combine(when, venue.closes, tzinfo=venue.zone).timestamp() for venue, _ in VENUES]
    return min(opens), max(closes)


def budgets(settings: Settings) -> list[tuple[str, str, float, int]]:
    """(fake API, window name, seconds, calls allowed) of every budget the settings set, for the APIs in use."""
    values = settings.values()
    for prefix, (keyed, keyless) in AUTO_LIMITS.items():  # "auto": the published limit with a key or without
        if values.get(f"{prefix}_per_minute") == "auto":
            values[f"{prefix}_per_minute"] = keyed if values.get(f"{prefix}_api_key") else keyless
    return [(api, name, seconds, int(values[f"{prefix}_per_{name}"])) for api, prefix, key in BUDGETED
            if key is None or values.get(key) for name, seconds in WINDOWS if values.get(f"{prefix}_per_{name}")]


def units(api: str, endpoint: str, params: Mapping[str, str]) -> int:
    """What one call costs in the provider's own count: Twelve Data charges credits per symbol."""
    if api != "twelvedata":
        return 1
    symbols = len([s for s in params.get("symbol", "").split(",") if s.strip()]) if endpoint in TWELVEDATA_BATCH else 1
    return TWELVEDATA_CREDITS.get(endpoint, 1) * max(symbols, 1)


class RecordingSession(InProcessSession):
    """The in-process session, also keeping each call's parameters, status and body (``answers[i]`` is
    ``sent[i]``'s), so ground truth can tell which symbols an answer priced. Single-threaded use."""

    def __init__(self, fake: FakeUpstream, clock: Any) -> None:
        super().__init__(fake, clock)
        self.answers: list[tuple[dict[str, str], int, bytes]] = []

    def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, delay: float = 0.0, **kwargs: Any) -> Any:
        response = super().request(method, url, params=params, headers=headers, delay=delay, **kwargs)
        self.answers.append((dict(params or {}), response.status_code, response.content))
        return response


@dataclass
class Checks:
    """What the pages answered, against ground truth."""

    rows: int = 0  # positions shown, over every page load
    right: int = 0  # priced, currency and price as the ground truth says
    right_from_minor: int = 0  # of those, listings the provider prices in a minor unit (pence: VOD.L, ...)
    wrong_currency: int = 0
    pence_as_pounds: int = 0
    wrong_price: int = 0  # any other price or day change that is not the ground truth's
    currency_null: Counter[str] = field(default_factory=Counter)  # priced, currency unknown: by reason
    no_price: Counter[str] = field(default_factory=Counter)  # by reason
    stale: int = 0
    # (venue, in its session) -> counts of "fresh" / "not fresh" and of each verdict.
    by_venue: dict[tuple[str, bool], Counter[str]] = field(default_factory=dict)
    pages: int = 0
    totals_right: int = 0
    complete_pages: int = 0
    fx_date_wrong: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, symbol: str, now: float, *what: str) -> None:
        venue = listing(symbol).venue
        counts = self.by_venue.setdefault((venue_name(symbol), venue is None or venue.is_open(now)), Counter())
        counts.update(what)

    def example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def wrong(self) -> int:
        return self.wrong_currency + self.pence_as_pounds + self.wrong_price


class GroundTruth:
    """When the fake last answered each symbol's quote and each base currency's rates, read off the calls.

    The fake has no faults here, and the budgets keep it within its limits (its 429s are counted
    apart), so every call it answered with HTTP 200 carried data, and the cache holds the newest
    answer. A batch (Twelve Data, CoinGecko) prices the symbols its body answers, not a failed one.
    Single-threaded, like the simulation.
    """

    def __init__(self, session: RecordingSession) -> None:
        self._session = session
        self._seen = 0
        self.quote_at: dict[str, float] = {}
        self.fx_at: dict[str, float] = {}

    def catch_up(self) -> None:
        sent = self._session.sent
        for call, (params, status, body) in zip(sent[self._seen:], self._session.answers[self._seen:], strict=True):
            if status != 200:
                continue
            if (call.provider, call.endpoint) in QUOTE_CALLS:
                for symbol in priced(call.provider, params, body):
                    self.quote_at[symbol] = call.asked
            elif call.provider == FX_API and call.endpoint == "latest" and call.symbol:
                self.fx_at[call.symbol] = call.asked
        self._seen = len(sent)


def priced(api: str, params: Mapping[str, str], body: bytes) -> list[str]:
    """The symbols (ours) whose quote an HTTP 200 answer of ``api`` carried."""
    if api == "finnhub":
        return [params["symbol"]] if params.get("symbol") else []
    if api == "alphavantage":
        return [from_av(params["symbol"])] if params.get("symbol") else []
    data = json.loads(body)
    if api == "coingecko":  # {"bitcoin": {"usd": ..., "eur": ...}}: a pair per coin and currency answered
        return [f"{COINS_BY_ID[coin].symbol}-{cur.upper()}" for coin, row in data.items() if coin in COINS_BY_ID
                for cur in params.get("vs_currencies", "").split(",") if isinstance(row, dict) and row.get(cur)]
    # Twelve Data: one symbol answers flat, several an object keyed by each as sent; an error is its own.
    sent = [s.strip() for s in params.get("symbol", "").split(",") if s.strip()]
    if len(sent) == 1:
        answered = {sent[0]: data}
    else:
        by_sent = {key.upper(): value for key, value in data.items()}
        answered = {s: by_sent.get(s.upper()) for s in sent}
    shared = params.get("mic_code")
    out = []
    for text, value in answered.items():
        if not isinstance(value, dict) or value.get("status") == "error":
            continue
        base, _, mic = text.partition(":")
        mic = mic or shared or ""
        out.append(f"{base}{BY_MIC[mic].suffix}" if mic else base)
    return out


def check_page(answer: Mapping[str, Any], positions: Sequence[Mapping[str, Any]], *, now: float,
               truth: GroundTruth, market: DemoMarket, checks: Checks) -> None:
    """Every position of one performance answer, and its totals, against ground truth."""
    checks.pages += 1
    held = {p["id"]: p for p in positions}
    errors = answer["errors"]
    fx_at = truth.fx_at.get(BASE)
    publication, ecb = market.ecb_latest(fx_at) if fx_at is not None else (None, {})
    if answer.get("fx") is None or publication is None or answer["fx"]["date"] != publication.isoformat():
        checks.fx_date_wrong += 1
    value = cost = day_change = 0.0
    every = True
    for row in answer["positions"]:
        symbol = row["symbol"]
        checks.rows += 1
        checks.stale += bool(row["stale"])
        asked = truth.quote_at.get(symbol)
        # Fresh from the cache (the KPI's hit): priced, not stale, by a call made before this page.
        fresh = row["price"] is not None and not row["stale"] and asked is not None and asked < now
        checks.note(symbol, now, "fresh" if fresh else "not fresh")
        if row["price"] is None:
            checks.no_price[reason(errors.get(symbol))] += 1
            checks.note(symbol, now, "no price")
            every = False
            continue
        if row["currency"] is None:
            checks.currency_null[reason(errors.get(symbol))] += 1
            checks.note(symbol, now, "currency null")
            every = False
            continue
        inst = market.instrument(symbol)
        quote = truth_quote(market, symbol, asked) if asked is not None else None
        shares = held[row["id"]]["shares"]
        verdict = _verdict(row, shares, quote, inst)
        checks.note(symbol, now, verdict)
        if verdict == "right":
            checks.right += 1
            checks.right_from_minor += inst.factor != 1
        else:
            setattr(checks, verdict, getattr(checks, verdict) + 1)
            checks.example(f"{symbol}: {row['price']} {row['currency']}, truth "
                           f"{None if quote is None else quote.price / inst.factor} {inst.major}: {verdict}")
        if row["value_base"] is None:
            every = False
            continue
        if quote is None or (inst.major != BASE and inst.major not in ecb):
            continue  # a wrong answer, counted above: nothing of ours to add up for it
        rate = 1.0 if inst.major == BASE else 1.0 / ecb[inst.major]
        value += shares * quote.price / inst.factor * rate
        cost += shares * held[row["id"]]["cost_basis"] * rate
        day_change += shares * quote.change / inst.factor * rate
    totals = answer["totals"]
    checks.complete_pages += bool(totals["complete"])
    ours = {"value": value, "cost": cost, "day_change": day_change}
    if (totals["currency"] == BASE and totals["complete"] == every
            and all(_close(totals[name], figure) for name, figure in ours.items())):
        checks.totals_right += 1
    else:
        checks.example(f"totals {dict(totals)}, ours {ours}, complete {every}")


def truth_quote(market: DemoMarket, symbol: str, at: float) -> Any:
    """The ground truth's quote at ``at``; a crypto pair's change is over the 24 hours before it."""
    quote = market.quote(symbol, at)
    if listing(symbol).asset != CRYPTO:
        return quote
    return replace(quote, change=quote.price - market.quote(symbol, at - 86400).price)


def _verdict(row: Mapping[str, Any], shares: float, quote: Any, inst: Instrument) -> str:
    """``right``, or which wrong-answer counter of :class:`Checks` a priced position goes to."""
    if row["currency"] != inst.major:
        return "wrong_currency"
    if quote is None:
        return "wrong_price"  # priced, yet the fake never answered a quote for it
    if _close(row["price"], quote.price / inst.factor) and _close(row["day_change"],
                                                                  shares * quote.change / inst.factor):
        return "right"
    if inst.factor != 1 and _close(row["price"], quote.price):
        return "pence_as_pounds"
    return "wrong_price"


def _close(answered: Any, ours: float) -> bool:
    return isinstance(answered, int | float) and math.isclose(answered, ours, rel_tol=1e-6, abs_tol=MONEY_TOLERANCE)


def reason(error: Mapping[str, Any] | None) -> str:
    """A short reason for a position without a price or a currency: its code and the gist of its message."""
    if error is None:
        return "(no error given)"
    message = str(error.get("message", ""))
    gist = next((g for g in ("daily budget spent", "per-minute budget spent", "per-second budget spent",
                             "not covered", "No source says what currency", "No reference rate") if g in message),
                None)
    return f"{error.get('code')}: {gist}" if gist else str(error.get("code"))


def overruns(times: Sequence[float], window: float, limit: int,
             weights: Sequence[int] | None = None) -> tuple[int, int]:
    """(busiest window, units beyond ``limit``): a call's units count beyond the limit when more than
    ``limit`` units, its own included, were booked in the ``window`` seconds ending at it. Units are
    calls (weight 1) unless ``weights`` says what each call cost (Twelve Data's credits)."""
    booked = sorted(zip(times, weights or [1] * len(times), strict=True))
    most = over = start = inside = 0
    for at, weight in booked:
        inside += weight
        while at - booked[start][0] >= window:
            inside -= booked[start][1]
            start += 1
        most = max(most, inside)
        over += min(weight, max(0, inside - limit))
    return most, over


@dataclass
class EuropeOutcome:
    users: int
    plan: str
    refresher: bool
    distinct: Counter[str]  # distinct held symbols by venue
    page_loads: int
    hits: int
    misses: int
    calls: Counter[tuple[str, str]]  # (fake API, endpoint) -> calls
    windows: dict[tuple[str, str], tuple[int, int, int]]  # (API, window) -> (limit, busiest, beyond)
    checks: Checks
    credits: Counter[str] = field(default_factory=Counter)  # fake API -> units it counts (calls; TD credits)
    refused: Counter[str] = field(default_factory=Counter)  # fake API -> its HTTP 429 answers
    crypto: bool = False

    @property
    def label(self) -> str:
        return f"{self.users} users, {self.plan}, refresher {'on' if self.refresher else 'off'}"

    @property
    def hit_rate(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    def api_calls(self, api: str) -> int:
        return sum(n for (name, _), n in self.calls.items() if name == api)

    @property
    def overruns(self) -> int:
        return sum(beyond for _, _, beyond in self.windows.values())


def simulate_europe(users: int, *, refresher: bool, plan: str = "free", day: str = DAY, seed: int = 7,
                    zipf_s: float = 1.1, crypto: bool = False, **setting_overrides: Any) -> EuropeOutcome:
    """One European day for ``users``; the same seed gives the same portfolios and visits (``crypto``
    adds pairs to some portfolios from a generator of its own, leaving the rest as it is)."""
    rng = random.Random(seed)
    crypto_rng = random.Random(f"crypto-{seed}")
    market = european_market(zipf_s, rng)
    held = portfolios(market, users, rng)
    open_at, close_at = session_span(day)
    loads = page_loads(users, open_at, close_at, rng)
    demo = DemoMarket()
    clock = FakeClock(open_at - 3600)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="stockcache-replay-eu-", dir=shm if shm.is_dir() else None) as tmp:
        settings = bench_settings(Path(tmp), **{**PLANS[plan], **setting_overrides})
        fake = FakeUpstream(clock=clock, finnhub_plan="free")
        session = RecordingSession(fake, clock)
        cache = open_cache(settings=settings, clock=clock, janitor_interval=None)
        store = open_store(Path(tmp) / "store.sqlite", clock=clock)
        service = build_service(settings, cache=cache, session=session, clock=clock)
        user_ids: list[int] = []
        for index, symbols in enumerate(held):
            account = store.create_user(f"user{index}", "x")
            user_ids.append(account.id)
            if index % 2 == 0:
                store.set_base_currency(account.id, BASE)
            for symbol in symbols:
                before = demo.quote(symbol, open_at - 86400)
                paid = (before.previous_close or before.price) / demo.currency(symbol)[2]
                store.add_position(account.id, symbol, rng.randint(1, 200), round(paid * rng.uniform(0.6, 1.3), 2))
            for pair in CRYPTO_PAIRS if crypto else ():
                if crypto_rng.random() < CRYPTO_SHARE:
                    before = demo.quote(pair, open_at - 86400)
                    store.add_position(account.id, pair, round(crypto_rng.uniform(0.05, 3.0), 4),
                                       round(before.price * crypto_rng.uniform(0.6, 1.3), 2))
        worker = Refresher(service, store.held_symbol_counts, hours=settings.refresh_hours,
                           share=settings.refresh_budget_share, lead=settings.refresh_lead,
                           clock=clock) if refresher else None

        truth = GroundTruth(session)
        checks = Checks()
        order = itertools.count()
        events: list[tuple[float, int, str, int]] = [(at, next(order), "load", user) for at, user in loads]
        if worker is not None:
            events.append((clock(), next(order), "refresh", -1))
        heapq.heapify(events)
        while events:
            at, _, what, user = heapq.heappop(events)
            if at >= close_at and what == "refresh":
                continue
            clock.set(at)
            if what == "refresh":
                assert worker is not None
                heapq.heappush(events, (at + worker.run_once(), next(order), "refresh", -1))
                truth.catch_up()
                continue
            user_id = user_ids[user]
            # As GET /api/portfolio/performance resolves it: ?currency=, else the user's, else the server's.
            asked = BASE if user % 2 else None
            currency = asked or store.base_currency(user_id) or settings.base_currency
            positions = [p.to_dict() for p in store.list_positions(user_id)]
            answer = service.fetch_portfolio_quotes(positions, currency)
            truth.catch_up()
            check_page(answer, positions, now=at, truth=truth, market=demo, checks=checks)

        hits, misses = quote_reads(service.metrics)
        booked: dict[str, list[float]] = {}
        cost: dict[str, list[int]] = {}
        refused: Counter[str] = Counter()
        for call, (params, status, _) in zip(session.sent, session.answers, strict=True):
            booked.setdefault(call.provider, []).append(call.at)
            cost.setdefault(call.provider, []).append(units(call.provider, call.endpoint, params))
            refused[call.provider] += status == 429
        # The second window counts calls, the minute and day what the provider counts (TD credits).
        windows = {(api, name): (limit, *overruns(booked.get(api, []), seconds, limit,
                                                  None if name == "second" else cost.get(api, [])))
                   for api, name, seconds, limit in budgets(settings)}
        outcome = EuropeOutcome(
            users=users, plan=plan, refresher=refresher,
            distinct=Counter(venue_name(s) for s in store.held_symbols()), page_loads=len(loads),
            hits=hits, misses=misses, calls=Counter((call.provider, call.endpoint) for call in session.sent),
            windows=windows, checks=checks, credits=Counter({api: sum(c) for api, c in cost.items()}),
            refused=+refused, crypto=crypto,
        )
        service.close()
        cache.close()
        store.close()
    return outcome


def _venues(outcomes: Sequence[EuropeOutcome] = ()) -> list[str]:
    """The venues' names, and the crypto pairs' row when any run held them."""
    return [venue.name for venue, _ in VENUES] + ([CRYPTO_NAME] if any(o.crypto for o in outcomes) else [])


def _calls(o: EuropeOutcome, api: str) -> str:
    calls = f"{o.api_calls(api):,}"
    return calls if o.credits.get(api, 0) == o.api_calls(api) else f"{calls} ({o.credits[api]:,})"


def _columns(outcomes: Sequence[EuropeOutcome], first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(o.label for o in outcomes) + " |",
            "| --- |" + " ---: |" * len(outcomes)]


def report(outcomes: Sequence[EuropeOutcome]) -> str:
    """The markdown tables of a European run."""
    settings = {plan: bench_settings(Path("."), **values) for plan, values in PLANS.items()}
    free, td = settings["free"], settings["twelvedata"]
    venues = _venues(outcomes)
    out = [
        f"Finnhub {free.get('finnhub_per_minute')}/min and {free.get('finnhub_per_second')}/s (plan "
        f"{free.get('finnhub_plan')}: US listings only); Alpha Vantage free {free.get('alphavantage_per_day')}/day "
        f"and {free.get('alphavantage_per_second')}/s, premium {settings['premium'].get('alphavantage_per_minute')}"
        f"/min; plan twelvedata: both free plans, Twelve Data {td.get('twelvedata_per_minute')} credits/min and "
        f"{td.get('twelvedata_per_day')}/day (plan {td.get('twelvedata_plan')}), CoinGecko Demo key "
        f"{td.get('coingecko_per_minute')}/min (keyless, {coingecko.KEYLESS_PER_MINUTE}/min, on the other plans); FX "
        f"(Frankfurter) {free.get('fx_per_minute')}/min; quote TTL {free.ttl_quote} s, FX TTL "
        f"{free.ttl_fx} s; refresher share {free.refresh_budget_share}, lead {free.refresh_lead} s, hours "
        f"{free.refresh_hours}; portfolios in {BASE}"
        + (f", some holding {' and '.join(CRYPTO_PAIRS)}" if any(o.crypto for o in outcomes) else "")
        + f"; {DAY}.",
        "",
        "| users | plan | refresher | distinct held (" + " / ".join(venues) + ") | page loads "
        "| positions shown | quote hit rate | calls Finnhub / AV / Twelve Data (credits) / CoinGecko / FX / OpenFIGI "
        "| budget overruns | 429s from the fake | wrong currency "
        "| pence as pounds | other wrong price | priced right (of them in pence) | currency null | no price | stale "
        "| totals right / pages | complete pages |",
        "| ---: | --- | --- | --- |" + " ---: |" * 15,
    ]
    for o in outcomes:
        c = o.checks
        held = " / ".join(str(o.distinct.get(name, 0)) for name in venues)
        out.append(
            f"| {o.users} | {o.plan} | {'on' if o.refresher else 'off'} | {sum(o.distinct.values())} ({held}) "
            f"| {o.page_loads:,} | {c.rows:,} | {o.hit_rate:.2%} | " + " / ".join(_calls(o, api) for api in APIS)
            + f" | {o.overruns} | {sum(o.refused.values())} | {c.wrong_currency} "
            f"| {c.pence_as_pounds} | {c.wrong_price} | {c.right:,} ({c.right_from_minor:,}) | {sum(c.currency_null.values()):,} "
            f"| {sum(c.no_price.values()):,} | {c.stale:,} | {c.totals_right:,} / {c.pages:,} "
            f"| {c.complete_pages:,} |")
    out += ["", "Upstream calls by API and endpoint:", "", *_columns(outcomes, "API endpoint")]
    for api, endpoint in sorted({key for o in outcomes for key in o.calls}):
        out.append(f"| {api} {endpoint} | " + " | ".join(f"{o.calls.get((api, endpoint), 0):,}" for o in outcomes)
                   + " |")
    out += ["", ("Busiest window of each budget: calls booked, credits for Twelve Data's minute and day "
                "(limit; beyond it):"), "",
            *_columns(outcomes, "API, window")]
    for key in sorted({key for o in outcomes for key in o.windows}, key=lambda k: (k[0], WINDOWS.index(
            next(w for w in WINDOWS if w[0] == k[1])))):
        out.append(f"| {key[0]}, {key[1]} | " + " | ".join(
            "-" if key not in o.windows else f"{o.windows[key][1]:,} ({o.windows[key][0]}; {o.windows[key][2]})"
            for o in outcomes) + " |")
    out += ["", "Positions shown, by venue, in and out of the venue's session: fresh from the cache; right / "
            "currency null / no price / wrong:", "", *_columns(outcomes, "venue")]
    for name in venues:
        for in_session in ((True,) if name == CRYPTO_NAME else (True, False)):
            cells = []
            for o in outcomes:
                seen = o.checks.by_venue.get((name, in_session), Counter())
                shown = seen["fresh"] + seen["not fresh"]
                wrong = seen["wrong_currency"] + seen["pence_as_pounds"] + seen["wrong_price"]
                cells.append("-" if not shown else f"{seen['fresh'] / shown:.1%}; {seen['right']:,} / "
                             f"{seen['currency null']:,} / {seen['no price']:,} / {wrong}")
            session = "always trading" if name == CRYPTO_NAME else "in session" if in_session else "closed"
            out.append(f"| {name}, {session} | " + " | ".join(cells) + " |")
    out += ["", "Positions without a price or a currency, by reason (honest answers, not wrong ones):", "",
            *_columns(outcomes, "shown as: reason")]
    reasons = sorted({(kind, why) for o in outcomes for kind, table in (("no price", o.checks.no_price),
                      ("currency null", o.checks.currency_null)) for why in table})
    for kind, why in reasons:
        out.append(f"| {kind}: {why} | " + " | ".join(
            f"{(o.checks.no_price if kind == 'no price' else o.checks.currency_null).get(why, 0):,}"
            for o in outcomes) + " |")
    out += ["", "Pages whose FX date is not the ECB publication the fake answered: "
            + ", ".join(str(o.checks.fx_date_wrong) for o in outcomes) + "."]
    examples = [f"- {o.label}: {e}" for o in outcomes for e in o.checks.examples]
    if examples:
        out += ["", "Wrong answers (the first few of each run):", "", *examples]
    return "\n".join(out)


def run(users: Sequence[int], *, plans: Sequence[str] = tuple(PLANS), seed: int = 7, crypto: bool = False) -> str:
    """The European day for each user count and plan, refresher off and on, as markdown."""
    outcomes = [simulate_europe(n, refresher=refresher, plan=plan, seed=seed, crypto=crypto)
                for n in users for plan in plans for refresher in (False, True)]
    return report(outcomes) + f"\n\nSeed {seed}."
