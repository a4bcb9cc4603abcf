"""Cached market reads answered without Bottle's per-request machinery, from JSON encoded once per entry.

Why: cached quotes are what apps ask for most (a portfolio page per holding, a
spreadsheet per cell, Home Assistant every minute), and for one quote Bottle's
request and response objects, router, hooks, plugin wrappers and header lists
cost about as much as the rest of the answer; for a warm batch of 100, building
and encoding 100 answer dicts did (issue 12's throughput and batch targets).

So :class:`FastReads`, in front of the Bottle app, answers

- ``GET`` of a rule in :data:`FAST_ROUTES` (``/api/quote/<symbol>``,
  ``/api/profile/<symbol>``) whose fresh entry in the memory tier holds data, and
- ``POST /api/batch-quotes`` (:data:`BATCH_ROUTE`) whose every symbol has one,

sent with an ``Authorization`` header and no query string. Each cached value's
answer, up to its ``age``, is encoded to JSON once and kept beside the value it
came from (:class:`_Encoded`); a read appends ``age`` and ``stale``. The server
asks :meth:`FastReads.answer_request` on its I/O thread first
(``web.server._IoThreadAnswers``), so such a read never waits for a worker
thread; there the token must be one verified before, as nothing may wait on
the store.

Everything else goes to Bottle, which answers as it always did: a miss, a
remembered error, a symbol that does not normalise, a token that does not
verify, a body that is not exactly ``{"tickers": [...]}`` of valid symbols,
``?token=``, HEAD. So this path never renders an error and decides nothing the
routes do not; it only skips work for the answers it can give. They are byte
for byte the routes' answers, status and headers included
(``tests/integration/test_fastpath.py`` compares them).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import bottle

from ..auth import Authenticator
from ..cache import Entry
from ..errors import StockcacheError
from ..readthrough import ReadThrough, render
from ..symbols import normalize_symbol, normalize_symbols
from .plugins import CACHE_SOURCE, encode_json

# Route rule -> the kind its handler reads with ``service.get_<kind>(symbol)``, i.e.
# ``readthrough.one(kind, normalize_symbol(symbol))``; only such routes may be listed.
FAST_ROUTES = {
    "/api/quote/<symbol>": "quote",
    "/api/profile/<symbol>": "profile",
}
# Its handler answers ``service.fetch_multiple_quotes(body["tickers"])``.
BATCH_ROUTE = "/api/batch-quotes"

# What a fast answer is: its body and the Bottle route it stands for (the access log names its rule).
Answer = tuple[bytes, bottle.Route]
# The environ key under which the server hands FastReads an answer made on its I/O thread.
ANSWERED = "stockcache.answered"

# The largest request body read on the I/O thread: a batch of max_batch symbols is a few KB,
# and parsing more there would hold up every other connection (the workers parse it instead).
IO_THREAD_BODY = 16 * 1024

# The answer's fields after the data's, in render()'s order; data holding one of them is left to the route.
_TRAILING = frozenset({"source", "cache", "fetched_at", "age", "stale"})


class _Encoded:
    """Each cache key's answer as JSON up to ``"age"``, for the value object it was made from. Thread-safe.

    ``render(value, tier, now)`` encoded is ``head + age + b',"stale":false}'``:
    everything but the age is fixed by the value, so it is encoded once per
    value instead of on every read. Bounded like the read-through's memory of
    checked values: when full it is emptied and refilled as reads come.
    """

    def __init__(self, max_items: int) -> None:
        # key -> (value, tier, head, '"SUBJECT":' + head, fetched_at); head None: not encodable this way.
        self._heads: dict[str, tuple[Any, str, bytes | None, bytes, float]] = {}
        self._max = max(1, max_items)

    def _known(self, key: str, entry: Entry) -> tuple[Any, str, bytes | None, bytes, float]:
        value = entry.value
        known = self._heads.get(key)
        if known is None or known[0] is not value or known[1] != entry.tier:
            head = _head(value, entry.tier)
            subject = key.partition(":")[2]  # plain ASCII, as every symbol: no escapes needed
            known = (value, entry.tier, head, b'"%s":%s' % (subject.encode(), head or b""), value["fetched_at"])
            if len(self._heads) >= self._max:
                self._heads.clear()
            self._heads[key] = known
        return known

    def answer(self, key: str, entry: Entry, now: float) -> bytes | None:
        """The answer's JSON, or None when this value cannot be encoded this way (the route then answers)."""
        _, _, head, _, fetched_at = self._known(key, entry)
        if head is None:
            return None
        age = int(now - fetched_at)
        return b"%s%d%s" % (head, age if age > 0 else 0, _TAIL)

    def members(self, hits: list[tuple[str, Entry]], now: float) -> bytes | None:
        """``"SUBJECT":answer`` for each hit, comma-separated (a batch's object members), or None.

        One loop with the memory lookups inlined: a warm batch runs it for every item.
        """
        heads = self._heads
        parts = []
        for key, entry in hits:
            known = heads.get(key)
            if known is None or known[0] is not entry.value or known[1] != entry.tier:
                known = self._known(key, entry)
            if known[2] is None:
                return None
            age = int(now - known[4])
            parts.append(b"%s%d%s" % (known[3], age if age > 0 else 0, _TAIL))
        return b",".join(parts)


_TAIL = b',"stale":false}'


def _head(value: Any, tier: str) -> bytes | None:
    """``render(value, tier, ...)`` as JSON, cut just before the age's digits."""
    if not isinstance(value.get("data"), dict) or not _TRAILING.isdisjoint(value["data"]):
        return None
    try:
        whole = encode_json(render(value, tier, value["fetched_at"], stale=False))
    except ValueError:  # NaN or an infinity: let the route answer (and log) it
        return None
    end = b',"age":0,"stale":false}'
    if not whole.endswith(end):
        return None
    return whole[: -len(end)] + b',"age":'


class FastReads:
    """WSGI app in front of the Bottle app: cached reads here (module docstring), the rest there.

    :meth:`answer_request` lets the server answer such a read on its I/O thread,
    before any worker thread sees it. Thread-safe: per-request state stays in the
    request's environ (or waitress's request).
    """

    def __init__(self, app: bottle.Bottle, readthrough: ReadThrough, auth: Authenticator, *,
                 max_body: int, max_batch: int, max_items: int) -> None:
        self._app = app
        self._readthrough = readthrough
        self._auth = auth
        self._max_body = max_body
        self._max_batch = max_batch
        self._encoded = _Encoded(max_items)
        # "/api/quote" -> (kind, the Bottle route, so the access log and metrics name its rule).
        self._by_prefix: dict[str, tuple[str, bottle.Route]] = {}
        self._batch_route: bottle.Route | None = None
        for route in app.routes:
            if not route.config.get("market"):
                continue
            kind = FAST_ROUTES.get(route.rule)
            if kind is not None and route.method == "GET":
                self._by_prefix[route.rule.rsplit("/", 1)[0]] = (kind, route)
            elif route.rule == BATCH_ROUTE and route.method == "POST":
                self._batch_route = route
        if len(self._by_prefix) != len(FAST_ROUTES) or self._batch_route is None:
            raise RuntimeError("every fast route must be a market route of the app")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ready = environ.pop(ANSWERED, None)  # answered on the server's I/O thread already
        if ready is None and not environ.get("QUERY_STRING") and environ.get("HTTP_AUTHORIZATION"):
            ready = self.answer(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                environ["HTTP_AUTHORIZATION"], environ.get("CONTENT_TYPE"),
                                environ.get("CONTENT_LENGTH"), functools.partial(_environ_body, environ),
                                verified=self._verified)
        if ready is None:
            return self._app(environ, start_response)
        body, route = ready
        environ["bottle.route"] = route
        environ[CACHE_SOURCE] = "memory"
        start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def answer_request(self, method: str, path: str, query: str, headers: Mapping[str, str],
                       body: Any) -> Answer | None:
        """:meth:`answer` for a request as waitress parsed it, with no I/O at all: the token must be
        one verified before (``Authenticator.known``). ``body`` is its file, left where it was."""
        authorization = headers.get("AUTHORIZATION")
        if query or not authorization:
            return None
        return self.answer(method, path, authorization, headers.get("CONTENT_TYPE"), headers.get("CONTENT_LENGTH"),
                           functools.partial(_file_body, body), verified=self._known, max_body=IO_THREAD_BODY)

    def answer(self, method: str, path: str, authorization: str, content_type: str | None,
               content_length: str | None, read_body: Callable[[int], bytes],
               verified: Callable[[str], bool], max_body: int | None = None) -> Answer | None:
        """The body and route of a cached read's answer, or None to let the route answer.

        ``max_body`` caps the request bodies looked at (default: the service's limit).
        """
        if method == "GET":
            prefix, _, raw = path.rpartition("/")
            target = self._by_prefix.get(prefix)
            if target is None:
                return None
            body = self._one(target[0], raw, authorization, verified)
            return None if body is None else (body, target[1])
        if method == "POST" and path == BATCH_ROUTE and self._batch_route is not None:
            limit = self._max_body if max_body is None else min(max_body, self._max_body)
            body = self._batch(authorization, content_type, content_length, read_body, verified, limit)
            return None if body is None else (body, self._batch_route)
        return None

    def _verified(self, authorization: str) -> bool:
        try:
            self._auth.authenticate(authorization)  # any scope reads market data
        except Exception:  # noqa: BLE001 - the route decides and renders every failure
            return False
        return True

    def _known(self, authorization: str) -> bool:
        return self._auth.known(authorization) is not None

    def _one(self, kind: str, raw: str, authorization: str, verified: Callable[[str], bool]) -> bytes | None:
        try:
            symbol = normalize_symbol(raw)
        except StockcacheError:
            return None
        if not verified(authorization):
            return None
        hit = self._readthrough.cached(kind, symbol)
        if hit is None:
            return None
        return self._encoded.answer(hit[0], hit[1], self._readthrough.clock())

    def _batch(self, authorization: str, content_type: str | None, content_length: str | None,
               read_body: Callable[[int], bytes], verified: Callable[[str], bool], max_body: int) -> bytes | None:
        """A warm batch's body, or None; the request body stays readable for the route either way."""
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return None
        try:
            length = int(content_length or "")
        except ValueError:
            return None
        if not 0 < length <= max_body:
            return None
        try:  # as the route's json_body reads it: UTF-8, and no NaN or Infinity
            body = json.loads(read_body(length).decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        if not isinstance(body, dict) or len(body) != 1 or not isinstance(body.get("tickers"), list):
            return None
        try:
            symbols, invalid = normalize_symbols(body["tickers"], max_batch=self._max_batch)
        except StockcacheError:  # empty, or too many
            return None
        if invalid or not verified(authorization):
            return None
        hits = self._readthrough.cached_many("quote", symbols)
        if hits is None:
            return None
        members = self._encoded.members(hits, self._readthrough.clock())
        return None if members is None else b'{"quotes":{%s},"errors":{}}' % members


def _environ_body(environ: dict[str, Any], length: int) -> bytes:
    """The body, read once; ``wsgi.input`` is replaced by a copy for the route."""
    raw: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw


def _file_body(body: Any, length: int) -> bytes:
    """The body from waitress's buffer file, which is left at the place it was read from."""
    where = body.tell()
    try:
        return bytes(body.read(length))
    finally:
        body.seek(where)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")
