"""OpenFIGI v3 (https://api.openfigi.com/v3): which listings an ISIN has, the ``lookup`` kind.

One ``POST /mapping`` job ``{"idType": "ID_ISIN", "idValue": ISIN}`` answers
one element per job, each exactly one of ``{"data": [rows]}``, ``{"warning":
"No identifier found."}`` (an unknown ISIN: not found) or ``{"error": ...}``,
all with HTTP 200; only request-level problems have other statuses (413 too
many jobs, 429 throttled, 400 a malformed body). Without a venue filter an
ISIN answers a row per venue, composites and venues stockcache does not know
included, in no useful order: each row's ``exchCode`` (Bloomberg's exchange
code, not a MIC) is mapped to a venue (``venues.EXCHANGE_CODES``), the others
are dropped, and the listings come out in the order of ``venues.VENUES``.

Tickers are Bloomberg's: ``ERICB`` is ``ERIC-B.ST``, ``700`` is ``0700.HK``,
``BRK/B`` is ``BRK.B`` (:func:`symbol_for_ticker`). The key is optional (header
``X-OPENFIGI-APIKEY``): without one 25 requests a minute, with one 250.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidRequest, RateLimited, SymbolNotFound, UpstreamAuthError, UpstreamError
from ...settings import AUTO, Section, Settings, auto_or_non_negative_int, setting, url
from ...symbols import Listing, normalize_isin, normalize_symbol
from ...venues import US, US_LISTING_ORDER, VENUES, Venue, by_exchange_code
from ..guard import Limits
from .base import Clock, Provider, UpstreamRequest, retry_after_seconds, text_or_none

KEYLESS_PER_MINUTE, KEYED_PER_MINUTE = 25, 250
_KEY_HEADER = "X-OPENFIGI-APIKEY"
_NO_MATCH = "no identifier found"
# A share class Bloomberg writes run together (ERICB) and Yahoo with a dash (ERIC-B), told by the
# name (OpenFIGI's "ERICSSON LM-B SHS") where it can be; see symbol_for_ticker.
_CLASS_IN_NAME = re.compile(r"[- ](?:SER\.? )?([A-D])(?: SHS| SHARES)?$")
_VENUE_ORDER = {venue.mic: index for index, venue in enumerate(VENUES)}


@dataclass(frozen=True)
class OpenFigiConfig(Section):
    """OpenFIGI's settings: ``OPENFIGI_API_KEY`` and ``STOCKCACHE_OPENFIGI_*``."""

    prefix = "openfigi"
    api_key: str = setting("", env="OPENFIGI_API_KEY", secret=True,
                           help="OpenFIGI API key (optional; finds the listings of an ISIN, /api/lookup). It "
                                "raises the limit from 25 to 250 requests a minute; OpenFIGI is used keyless "
                                "whenever any market-data key is set.")
    url: str = setting("https://api.openfigi.com/v3", env="STOCKCACHE_OPENFIGI_URL", parse=url,
                       help="OpenFIGI base URL.")
    per_minute: int | str = setting(AUTO, env="STOCKCACHE_OPENFIGI_PER_MINUTE", parse=auto_or_non_negative_int,
                                    help=f"OpenFIGI requests allowed per minute; 'auto' means {KEYED_PER_MINUTE} "
                                         f"with OPENFIGI_API_KEY and {KEYLESS_PER_MINUTE} without; 0 means no "
                                         "limit.")


class OpenFigiProvider(Provider):
    """OpenFIGI adapter. Stateless after construction, so thread-safe."""

    name = "openfigi"
    label = "OpenFIGI"
    config = OpenFigiConfig
    kinds = frozenset({"lookup"})
    priority = {"lookup": 10}
    keyed = False  # its key alone never takes stockcache out of demo mode: it serves no prices

    def __init__(self, config: OpenFigiConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        self._config = config
        self._base_url = config.url.rstrip("/")

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        return real  # in demo mode the demo's own listings answer, offline

    def limits(self) -> Limits:
        per_minute = self._config.per_minute
        if per_minute == AUTO:
            per_minute = KEYED_PER_MINUTE if self._api_key else KEYLESS_PER_MINUTE
        return Limits(0, int(per_minute), 0)

    def covers(self, kind: str, listing: Listing | None) -> bool:
        return kind == "lookup"

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """One mapping job for the ISIN ``symbol``, with no venue filter: every listing it has."""
        self._check_kind(kind)
        isin = normalize_isin(symbol)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers[_KEY_HEADER] = self._api_key
        return UpstreamRequest(url=f"{self._base_url}/mapping", params={}, headers=headers, method="POST",
                               json=[{"idType": "ID_ISIN", "idValue": isin}], secret=frozenset({_KEY_HEADER}))

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        self._check_kind(kind)
        if status == 429:
            self._fail(RateLimited, "OpenFIGI rate limit reached",
                       retry_after=retry_after_seconds(headers, self._clock()))
        if status in (401, 403):
            self._fail(UpstreamAuthError, f"OpenFIGI refused the request (HTTP {status}): check OPENFIGI_API_KEY")
        if status == 413:
            self._fail(UpstreamError, "OpenFIGI refused a request with too many jobs (HTTP 413)")
        if not 200 <= status < 300:
            self._fail(UpstreamError, f"OpenFIGI answered HTTP {status}")
        data = self._json(body)
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            self._fail(UpstreamError, "OpenFIGI sent an unexpected mapping body: not one answer for one job")
        job = data[0]
        if "data" not in job:
            self._job_failed(symbol, job)
        return self._run_parser(kind, symbol, params, job["data"])

    def _job_failed(self, isin: str, job: Mapping[str, Any]) -> None:
        """A job's ``warning`` or ``error``: an ISIN OpenFIGI does not know is not found, anything else its fault."""
        warning, error = job.get("warning"), job.get("error")
        text = warning if isinstance(warning, str) else error if isinstance(error, str) else ""
        lowered = text.lower()
        if _NO_MATCH in lowered or "invalid idvalue" in lowered:
            self._fail(SymbolNotFound, f"OpenFIGI knows no listing of {isin}", isin=isin)
        self._fail(UpstreamError, f"OpenFIGI could not map {isin}: {text[:120] or 'no data'}")

    def _parse_lookup(self, isin: str, params: Mapping[str, Any], rows: Any) -> dict[str, Any]:
        if not isinstance(rows, list):
            raise TypeError("data is not a list")
        found: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        for row in rows:
            if not isinstance(row, dict):
                raise TypeError("a row is not an object")
            code, ticker = text_or_none(row.get("exchCode")), text_or_none(row.get("ticker"))
            place = by_exchange_code(code) if code else None
            if place is None or ticker is None:
                continue  # a composite, a venue stockcache does not know, or no ticker
            mic, venue = place
            name = text_or_none(row.get("name"))
            symbol = symbol_for_ticker(ticker, venue, name or "")
            if symbol is None:
                continue
            rank = (_VENUE_ORDER[venue.mic], US_LISTING_ORDER.index(mic) if mic in US_LISTING_ORDER else 0)
            if symbol in found and found[symbol][0] <= rank:
                continue  # one listing per symbol: a US share on NYSE Arca too is still its listing venue's
            item: dict[str, Any] = {"symbol": symbol, "name": name, "exchange": mic,
                                    "figi": text_or_none(row.get("figi"))}
            if not venue.mixed_currency:
                item["currency"] = venue.currency
            found[symbol] = (rank, item)
        listings = [item for _, item in sorted(found.values(), key=lambda pair: (pair[0], pair[1]["symbol"]))]
        return {"isin": isin, "listings": listings}


def symbol_for_ticker(ticker: str, venue: Venue, name: str = "") -> str | None:
    """The symbol stockcache writes for Bloomberg's ``ticker`` on ``venue``, or None when it cannot be one.

    US share classes are ``BRK.B`` (Bloomberg ``BRK/B``), elsewhere a dash (London ``BT/A`` is
    ``BT-A.L``); Hong Kong codes have four digits (``700`` is ``0700.HK``). Stockholm runs the
    class letter into the ticker (``ERICB``): the name's class marker (``-B SHS``) says where it
    starts, else a trailing B after two letters or more is taken as class B (``VOLVB``), the
    common case; a trailing A without a marker is left alone (``ALFA`` is Alfa Laval).
    """
    base = ticker.strip().upper().replace(" ", "")
    if venue is US:
        base = base.replace("/", ".")
    else:
        base = base.replace("/", "-")
    if venue.mic == "XHKG" and base.isdigit():
        base = base.zfill(4)
    if venue.mic == "XSTO" and "-" not in base:
        marked = _CLASS_IN_NAME.search(name.upper())
        letter = marked.group(1) if marked else "B"
        if base.endswith(letter) and len(base) > 2 and (marked or letter == "B"):
            base = f"{base[:-1]}-{letter}"
    try:
        return normalize_symbol(base + venue.suffix)
    except InvalidRequest:
        return None
