"""ECB reference rates through Frankfurter (https://api.frankfurter.dev/v1): the ``fx`` kind, no key.

One call, ``latest?from=USD``, gives every rate from one base currency, so
the subject of an ``fx`` entry is the base and one cached entry serves every
pair from it (and, inverted, every pair to it: a portfolio's whole base
currency costs one call). v1 is the ECB-only API; v2 blends other central
banks. On weekends and TARGET holidays the answer is the last publication,
and its ``date`` says which. Unknown currencies are HTTP 404
``{"message": "not found"}``; the service checks codes before asking, so a
422 (bad date, bad pair) is the upstream's fault.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ...errors import CurrencyNotFound, RateLimited, UpstreamError
from ...models import FxRates
from ...settings import Section, Settings, non_negative_int, setting, url
from ...symbols import Listing
from .base import Clock, Provider, UpstreamRequest, json_object, number, require_dict, retry_after_seconds


@dataclass(frozen=True)
class FrankfurterConfig(Section):
    """The FX source's settings: ``STOCKCACHE_FX_*``."""

    prefix = "fx"
    url: str = setting("https://api.frankfurter.dev/v1", env="STOCKCACHE_FX_URL", parse=url,
                       help="Frankfurter base URL for ECB reference rates (no key; used unless in demo mode).")
    per_minute: int = setting(30, env="STOCKCACHE_FX_PER_MINUTE", parse=non_negative_int,
                              help="Frankfurter calls allowed per minute (it has no caps, only abuse limits; "
                                   "one call an hour per base currency is the usual need); 0 means no limit.")


class FrankfurterProvider(Provider):
    """Frankfurter adapter. Stateless after construction, so thread-safe."""

    name = "ecb"
    label = "ECB reference rates (Frankfurter)"
    config = FrankfurterConfig
    kinds = frozenset({"fx"})
    priority = {"fx": 10}
    keyed = False  # no key: it never takes stockcache out of demo mode

    def __init__(self, config: FrankfurterConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        self._base_url = config.url.rstrip("/")

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        return real  # in demo mode the demo's own rate table serves, offline

    def covers(self, kind: str, listing: Listing | None) -> bool:
        return kind == "fx"

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """``latest?from=BASE``: every rate from ``symbol`` (a base currency) in one answer."""
        self._check_kind(kind)
        return UpstreamRequest(url=f"{self._base_url}/latest", params={"from": symbol},
                               headers={"Accept": "application/json"})

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        self._check_kind(kind)
        if status == 404:
            self._fail(CurrencyNotFound, f"the ECB publishes no reference rate for {symbol}", currency=symbol)
        if status == 429:
            self._fail(RateLimited, "frankfurter rate limit reached",
                       retry_after=retry_after_seconds(headers, self._clock()))
        if not 200 <= status < 300:
            self._http_error(status, body)
        return self._run_parser(kind, symbol, params, self._json(body))

    def _http_error(self, status: int, body: bytes) -> NoReturn:
        try:
            message = json_object(body).get("message")
        except ValueError:
            message = None
        shown = f": {message[:120]}" if isinstance(message, str) else ""
        self._fail(UpstreamError, f"frankfurter answered HTTP {status}{shown}")

    def _parse_fx(self, symbol: str, params: Mapping[str, Any], data: Any) -> FxRates:
        require_dict(data)
        if data["base"] != symbol:
            raise ValueError("rates for another base currency")
        if number(data.get("amount", 1.0), strings=False) != 1.0:
            raise ValueError("rates for an amount other than 1")
        rates = data["rates"]
        require_dict(rates)
        if not isinstance(data["date"], str):
            raise TypeError("date is not a string")
        return FxRates(base=symbol, date=data["date"],
                       rates={code: number(rate, strings=False) for code, rate in rates.items()})
