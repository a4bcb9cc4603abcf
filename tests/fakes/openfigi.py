"""A fake OpenFIGI v3, as ``upstream-apis-2.md`` section 4 describes it.

Mounted under ``/openfigi``; clients are pointed at ``.../openfigi/v3`` (the
real ``https://api.openfigi.com/v3``). The instruments are the named listings of
:class:`DemoMarket` (real ISINs: SAP ``DE0007164600``, Apple ``US0378331005``,
...), so a lookup can be compared with the demo's own listings.

Kept as unkind as the real API:

- ``POST /v3/mapping`` takes an array of jobs and answers an array of the same
  length and order, each exactly one of ``{"data": [...]}``,
  ``{"warning": "No identifier found."}`` or ``{"error": "..."}``, all with
  HTTP 200. An ISIN without a venue filter answers **one row per venue**,
  composite rows (``US``, ``GR``, ``SW``, ``CN``, ``JP``) and venues stockcache
  does not know (``GS`` Stuttgart, ``GM`` Munich...) included, in no useful
  order. ``exchCode`` xor ``micCode`` filters, plus ``currency``,
  ``marketSecDes``, ``securityType``, ``securityType2``.
- Tickers are Bloomberg's, not Yahoo's: ``ERICB`` for ``ERIC-B.ST``, ``700``
  for ``0700.HK``; ``exchCode`` is not a MIC (Xetra is ``GY``, SIX ``SE``).
- More jobs than allowed (10 without a key, 100 with ``X-OPENFIGI-APIKEY``):
  HTTP 413. Past 25 requests a minute without a key (250 with one; both
  configurable): HTTP 429. Malformed JSON or a body that is not an array: 400.
  Those bodies are plain text (unverified).
- ``POST /v3/search`` ``{"query", "exchCode"?, "start"?}`` answers
  ``{"data": [...], "next": "<token>"}`` pages (``{"data": []}`` for nothing).
- ``GET /v3/mapping/values/<key>`` lists the allowed values of a field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from stockcache.upstream.providers.demo import ETF

from .base import Answer, MountedApi, Request, Route, Window, json_answer, text_answer

NO_MATCH = {"warning": "No identifier found."}
BAD_VALUE = "Invalid idValue format."
ID_TYPES = ("ID_ISIN", "TICKER", "BASE_TICKER", "ID_BB_GLOBAL", "COMPOSITE_ID_BB_GLOBAL", "ID_WERTPAPIER",
            "ID_CUSIP")
# MIC -> (venue exchCode, composite code), from OpenFIGI's MIC table (upstream-apis-2.md).
EXCH_CODES: Mapping[str, tuple[str, str]] = {
    "XNYS": ("UN", "US"), "XNGS": ("UW", "US"), "XNMS": ("UQ", "US"), "XNCM": ("UR", "US"), "ARCX": ("UP", "US"),
    "XASE": ("UA", "US"), "XETR": ("GY", "GR"), "XFRA": ("GF", "GR"), "XSTU": ("GS", "GR"), "XMUN": ("GM", "GR"),
    "XBER": ("GB", "GR"), "XDUS": ("GD", "GR"), "XHAM": ("GH", "GR"), "XLON": ("LN", "LN"), "XPAR": ("FP", "FP"),
    "XAMS": ("NA", "NA"), "XBRU": ("BB", "BB"), "XLIS": ("PL", "PL"), "XMIL": ("IM", "IM"), "XSWX": ("SE", "SW"),
    "XSTO": ("SS", "SS"), "XTSE": ("CT", "CN"), "XHKG": ("HK", "HK"), "XTKS": ("JT", "JP"),
}
_US_EXTRA = ("UA", "UB", "UC", "UM", "UP", "UT", "UV")  # other US venues a US share trades on
_GERMAN_EXTRA = ("GS", "GM", "GB", "GD", "GH")  # German regional exchanges
_FIGI_ALPHABET = "BCDFGHJKLMNPQRSTVWXYZ0123456789"  # FIGIs have no vowels


def figi(seed: str) -> str:
    """A well-formed FIGI (``BBG`` + 8 characters + check digit), fixed by ``seed``."""
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    body = "BBG00" + "".join(_FIGI_ALPHABET[b % len(_FIGI_ALPHABET)] for b in digest[:6])
    return body + str(_figi_check(body))


def _figi_check(body: str) -> int:
    total = 0
    for i, ch in enumerate(body):
        value = int(ch) if ch.isdigit() else ord(ch) - ord("A") + 10
        if i % 2:
            value *= 2
        total += sum(int(d) for d in str(value))
    return (10 - total % 10) % 10


def isin_ok(text: str) -> bool:
    """ISO 6166 shape and check digit."""
    if len(text) != 12 or not text[:2].isalpha() or not text.isalnum() or not text[-1].isdigit():
        return False
    digits = "".join(str(int(ch, 36)) for ch in text[:-1].upper()) + text[-1]
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n // 10 + n % 10
    return total % 10 == 0


class OpenFigi(MountedApi):
    """The fake OpenFIGI. Thread-safe; configure it while it runs."""

    name = "openfigi"
    prefix = "/openfigi"
    base_path = "/v3"
    env_var = "STOCKCACHE_OPENFIGI_URL"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected_key: str | None = None  # None: any key
        self.max_jobs_keyless = 10
        self.max_jobs_keyed = 100
        self._keyless = Window(25, 60.0)
        self._keyed = Window(250, 60.0)
        self._jobs = 0

    def set_limits(self, *, keyless_per_minute: int | None = 25, keyed_per_minute: int | None = 250) -> None:
        with self._lock:
            self._keyless.limit, self._keyed.limit = keyless_per_minute, keyed_per_minute

    def jobs(self) -> int:
        """Mapping jobs answered since start or reset."""
        with self._lock:
            return self._jobs

    def reset(self) -> None:
        with self._lock:
            self._keyless.clear()
            self._keyed.clear()
            self._jobs = 0

    # -- the instrument table ------------------------------------------------------------------------

    def rows(self, isin: str) -> list[dict[str, Any]]:
        """Every row OpenFIGI holds for ``isin``: one per venue, composites included."""
        symbols = [s for s in self.market.listings_by_isin(isin) if not self.is_unknown(s)]
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for symbol in symbols:
            inst = self.market.instrument(symbol)
            mic = inst.mic or "XNYS"
            if mic == "XNYS":
                mic = "XNGS" if inst.exchange.startswith("NASDAQ") else "ARCX" if "ARCA" in inst.exchange else "XNYS"
            venue, composite = EXCH_CODES[mic]
            codes = [composite, venue]
            if composite == "US":
                codes += _US_EXTRA
            if composite == "GR" and venue == "GY":
                codes += _GERMAN_EXTRA
            ticker = _bloomberg_ticker(inst.symbol, inst.venue.suffix if inst.venue else "")
            for code in codes:
                if code in seen:
                    continue
                seen.add(code)
                rows.append(self._row(inst, ticker, code, composite, isin))
        rows.sort(key=lambda row: hashlib.blake2b(f"{isin}{row['exchCode']}".encode(), digest_size=2).digest())
        return rows

    @staticmethod
    def _row(inst: Any, ticker: str, code: str, composite: str, isin: str) -> dict[str, Any]:
        etf = inst.asset == ETF
        return {
            "figi": figi(f"{isin}:{code}"), "name": inst.name.upper(), "ticker": ticker, "exchCode": code,
            "compositeFIGI": figi(f"{isin}:{composite}"), "securityType": "ETP" if etf else "Common Stock",
            "marketSector": "Equity", "shareClassFIGI": figi(f"{isin}:share"),
            "securityType2": "Mutual Fund" if etf else "Common Stock", "securityDescription": ticker,
        }

    def _all_rows(self) -> list[dict[str, Any]]:
        isins = sorted({i for s in self.market.listings() if (i := self.market.isin(s))})
        return [row for isin in isins for row in self.rows(isin)]

    # -- routing -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Route:
        path = request.path.removeprefix("/v3").strip("/")
        key_in = "header" if request.header("X-OPENFIGI-APIKEY") else None
        params: dict[str, str] = {}
        symbol = None
        if path in ("mapping", "search"):
            try:
                body = request.json()
            except ValueError:
                body = None
            if isinstance(body, list):
                params["jobs"] = str(len(body))
                first = body[0] if body and isinstance(body[0], dict) else {}
                symbol = str(first.get("idValue")) if first.get("idValue") else None
            elif isinstance(body, dict):
                symbol = str(body.get("query") or "") or None
        return Route(path if not path.startswith("mapping/values") else "mapping/values", symbol, key_in, params)

    def too_many(self, request: Request, route: Route, retry_after: int | None) -> Answer:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return text_answer(429, "Too Many Requests", headers)

    def answer(self, request: Request, route: Route) -> Answer:
        path = request.path.removeprefix("/v3").strip("/")
        key = request.header("X-OPENFIGI-APIKEY")
        now = self.clock()
        with self._lock:
            if key is not None and self.expected_key is not None and key != self.expected_key:
                return text_answer(401, "Invalid API key.")
            window = self._keyed if key else self._keyless
            if not window.fits(now):
                return self.too_many(request, route, window.retry_after(now))
            window.add(now)
            most = self.max_jobs_keyed if key else self.max_jobs_keyless
        if path.startswith("mapping/values/") and request.method == "GET":
            return self._values(path.removeprefix("mapping/values/"))
        if path not in ("mapping", "search", "filter"):
            return text_answer(404, "Not Found")
        if request.method != "POST":
            return text_answer(405, "Method Not Allowed")
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return text_answer(400, "Request body must be valid JSON.")
        if path == "mapping":
            if not isinstance(body, list):
                return text_answer(400, "Request body must be a JSON array.")
            if len(body) > most:
                return text_answer(413, f"Too many mapping jobs. The maximum is {most} jobs per request.")
            answers = [self._map(job) for job in body]
            with self._lock:
                self._jobs += len(body)
            return json_answer(200, answers)
        if not isinstance(body, dict):
            return text_answer(400, "Request body must be a JSON object.")
        return self._search(body)

    def _values(self, key: str) -> Answer:
        values = {"idType": list(ID_TYPES),
                  "exchCode": sorted({code for pair in EXCH_CODES.values() for code in pair} | set(_US_EXTRA)),
                  "micCode": sorted(EXCH_CODES),
                  "marketSecDes": ["Comdty", "Corp", "Curncy", "Equity", "Govt", "Index", "M-Mkt", "Mtge", "Muni",
                                   "Pfd"]}.get(key)
        if values is None:
            return text_answer(400, f"Invalid key: {key}")
        return json_answer(200, {"values": values})

    def _map(self, job: Any) -> dict[str, Any]:
        if not isinstance(job, dict) or "idType" not in job or "idValue" not in job:
            return {"error": "Invalid job: idType and idValue are required."}
        id_type, value = job["idType"], job["idValue"]
        if id_type not in ID_TYPES:
            return {"error": "Invalid idType."}
        if not isinstance(value, str) or not value:
            return {"error": "Invalid idValue."}
        if job.get("exchCode") is not None and job.get("micCode") is not None:
            return {"error": "Only one of exchCode or micCode may be given."}
        if id_type == "ID_ISIN":
            if not isin_ok(value):
                return {"error": BAD_VALUE}
            rows = self.rows(value)
        elif id_type in ("TICKER", "BASE_TICKER"):
            rows = [row for row in self._all_rows() if row["ticker"] == value.upper()]
        elif id_type in ("ID_BB_GLOBAL", "COMPOSITE_ID_BB_GLOBAL"):
            field = "figi" if id_type == "ID_BB_GLOBAL" else "compositeFIGI"
            rows = [row for row in self._all_rows() if row[field] == value]
        else:
            rows = []
        rows = _filtered(rows, job)
        return {"data": rows} if rows else dict(NO_MATCH)

    def _search(self, body: Mapping[str, Any]) -> Answer:
        needle = str(body.get("query") or "").upper()
        rows = [row for row in self._all_rows() if needle and (needle in row["name"] or needle == row["ticker"])]
        rows = _filtered(rows, body)
        try:
            start = int(body.get("start") or 0)
        except (TypeError, ValueError):
            return text_answer(400, "Invalid start.")
        page = rows[start:start + 10]
        answer: dict[str, Any] = {"data": page}
        if start + 10 < len(rows):
            answer["next"] = str(start + 10)
        return json_answer(200, answer)


def _filtered(rows: list[dict[str, Any]], job: Mapping[str, Any]) -> list[dict[str, Any]]:
    mic = job.get("micCode")
    code = job.get("exchCode")
    if mic is not None:
        pair = EXCH_CODES.get(str(mic))
        code = pair[0] if pair else "?"
    out = []
    for row in rows:
        if code is not None and row["exchCode"] != code:
            continue
        if job.get("marketSecDes") is not None and row["marketSector"] != job["marketSecDes"]:
            continue
        if job.get("securityType") is not None and row["securityType"] != job["securityType"]:
            continue
        if job.get("securityType2") is not None and row["securityType2"] != job["securityType2"]:
            continue
        out.append(row)
    return out


def _bloomberg_ticker(symbol: str, suffix: str) -> str:
    """Bloomberg's ticker: no venue suffix, no share-class dash, no leading zeros in Hong Kong."""
    ticker = symbol[: -len(suffix)] if suffix else symbol
    if suffix == ".HK":
        ticker = ticker.lstrip("0")
    return ticker.replace("-", "").replace(".", "/")
