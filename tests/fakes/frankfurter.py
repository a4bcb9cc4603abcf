"""A fake Frankfurter v1 (ECB reference rates), as ``upstream-apis-2.md`` section 3 describes it.

Mounted under ``/frankfurter``; clients are pointed at ``.../frankfurter/v1``
(the real ``https://api.frankfurter.dev/v1``). Rates are
:meth:`DemoMarket.ecb_rates`, so tests compare answers with ground truth.

Quirks kept (from the Frankfurter source, ``lib/versions/v1*``):

- ``/v1/latest`` (alias ``/current``), ``/v1/YYYY-MM-DD``, ``/v1/START..END``,
  ``/v1/START..`` and ``/v1/currencies``; ``from`` wins over ``base``, ``to``
  over ``symbols``; codes are upper-cased; ``amount`` defaults to 1.0 and is
  always in the answer.
- A date without a publication (weekend, TARGET holiday, today before 16:00
  Frankfurt time, the future) answers the last publication, and ``date`` is
  that publication's date, not the one asked for. A range's ``start_date`` may
  come before the start asked for.
- EUR-based rates are the ECB's figures as published; any other base (or an
  amount) is rebased and rounded by Frankfurter's own rule (:func:`round_rate`).
- Unknown base, or no known symbol left: 404 ``{"message":"not found"}``.
  Unknown symbols among known ones are dropped silently. A bad date, an
  ``amount`` <= 0 or base == symbols: 422 ``{"message": ...}``. An unknown
  path: 404 ``{"status":404,"message":"not found"}``.
- ``Cache-Control: public, max-age=86400`` and an ``ETag``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .base import Answer, MountedApi, Request, Route, json_answer

CURRENCY_NAMES = {
    "AUD": "Australian Dollar", "BGN": "Bulgarian Lev", "BRL": "Brazilian Real", "CAD": "Canadian Dollar",
    "CHF": "Swiss Franc", "CNY": "Chinese Renminbi Yuan", "CZK": "Czech Koruna", "DKK": "Danish Krone",
    "EUR": "Euro", "GBP": "British Pound", "HKD": "Hong Kong Dollar", "HUF": "Hungarian Forint",
    "IDR": "Indonesian Rupiah", "ILS": "Israeli New Sheqel", "INR": "Indian Rupee", "ISK": "Icelandic Króna",
    "JPY": "Japanese Yen", "KRW": "South Korean Won", "MXN": "Mexican Peso", "MYR": "Malaysian Ringgit",
    "NOK": "Norwegian Krone", "NZD": "New Zealand Dollar", "PHP": "Philippine Peso", "PLN": "Polish Złoty",
    "RON": "Romanian Leu", "SEK": "Swedish Krona", "SGD": "Singapore Dollar", "THB": "Thai Baht",
    "TRY": "Turkish Lira", "USD": "United States Dollar", "ZAR": "South African Rand",
}
NOT_FOUND = {"message": "not found"}
PATH_NOT_FOUND = {"status": 404, "message": "not found"}
_DATE = r"\d{4}-\d{2}-\d{2}"
_RANGE_RE = re.compile(rf"/({_DATE})\.\.({_DATE})?")
_DATE_RE = re.compile(rf"/({_DATE})")


def round_rate(value: float) -> float:
    """Frankfurter's rounding of rebased rates (``Roundable#round``)."""
    if value > 5000:
        return float(round(value))
    for above, decimals in ((80, 2), (20, 3), (1, 4), (0.0001, 5)):
        if value > above:
            return float(f"{value:.{decimals}f}")
    return float(f"{value:.6f}")


class Frankfurter(MountedApi):
    """The fake Frankfurter v1. No key; counts calls through the fake upstream. Thread-safe."""

    name = "frankfurter"
    prefix = "/frankfurter"
    base_path = "/v1"
    env_var = "STOCKCACHE_FX_URL"

    def route(self, request: Request) -> Route:
        path = request.path.removeprefix("/v1")
        endpoint = {"/latest": "latest", "/current": "latest", "/currencies": "currencies"}.get(path)
        if endpoint is None:
            endpoint = "range" if ".." in path else "date" if _DATE_RE.fullmatch(path) else path.strip("/")
        base = (request.query.get("from") or request.query.get("base") or "EUR").upper()
        return Route(endpoint, base, None, dict(request.query))

    def answer(self, request: Request, route: Route) -> Answer:
        if not request.path.startswith("/v1/") or request.method != "GET":
            return json_answer(404, PATH_NOT_FOUND)
        path = request.path.removeprefix("/v1")
        now = self.clock()
        today = datetime.fromtimestamp(now, UTC).date()
        if path == "/currencies":
            codes = ("EUR", *self.market.ecb_currencies(self.market.ecb_publication(today, now=now)))
            return self._cached(200, {code: CURRENCY_NAMES[code] for code in sorted(codes)})
        try:
            query = self._query(request)
            if path in ("/latest", "/current"):
                return self._end_of_day(today, now, query)
            single = _DATE_RE.fullmatch(path)
            if single is not None:
                return self._end_of_day(_parse_date(single.group(1)), now, query)
            interval = _RANGE_RE.fullmatch(path)
            if interval is not None:
                end = _parse_date(interval.group(2)) if interval.group(2) else today
                return self._interval(_parse_date(interval.group(1)), min(end, today), now, query)
        except ValueError as exc:
            return json_answer(422, {"message": str(exc)})
        return json_answer(404, PATH_NOT_FOUND)

    @staticmethod
    def _query(request: Request) -> tuple[float, str, list[str] | None]:
        q = request.query
        amount = 1.0
        if q.get("amount") is not None:
            try:
                amount = float(q["amount"])
            except ValueError:
                amount = 0.0  # Ruby's "abc".to_f
            if not amount > 0:
                raise ValueError("invalid amount")
        base = (q.get("from") or q.get("base") or "EUR").upper()
        raw = q.get("to") if q.get("to") is not None else q.get("symbols")
        symbols = raw.upper().split(",") if raw is not None else None
        if symbols == [base]:
            raise ValueError("bad currency pair")
        return amount, base, symbols

    def _rates(self, day: date, amount: float, base: str, symbols: list[str] | None) -> dict[str, float] | None:
        """One publication's rates rebased to ``base``, as Frankfurter's ``Quote::Base`` does; None if empty."""
        published = self.market.ecb_rates(day)
        wanted = None if symbols is None else set(symbols) | {base}
        rows = {code: rate for code, rate in published.items() if wanted is None or code in wanted}
        rebase = base != "EUR"
        exact = amount == 1.0 and not rebase
        rates = {code: (rate * amount if exact else round_rate(amount * rate)) for code, rate in rows.items()}
        if not rebase:
            return dict(sorted(rates.items())) or None
        if symbols is None or "EUR" in symbols:
            rates["EUR"] = amount
        divisor = rates.pop(base, None)
        if divisor is None or not rates:
            return None
        return {code: round_rate(amount * rate / divisor) for code, rate in sorted(rates.items())}

    def _end_of_day(self, day: date, now: float, query: tuple[float, str, list[str] | None]) -> Answer:
        amount, base, symbols = query
        today = datetime.fromtimestamp(now, UTC).date()
        try:
            published = self.market.ecb_publication(min(day, today), now=now)
        except ValueError:
            return json_answer(404, NOT_FOUND)
        rates = self._rates(published, amount, base, symbols)
        if rates is None:
            return json_answer(404, NOT_FOUND)
        return self._cached(200, {"amount": amount, "base": base, "date": published.isoformat(), "rates": rates})

    def _interval(self, start: date, end: date, now: float, query: tuple[float, str, list[str] | None]) -> Answer:
        amount, base, symbols = query
        try:
            first = self.market.ecb_publication(start, now=now)
        except ValueError:
            return json_answer(404, NOT_FOUND)
        series: dict[str, Any] = {}
        day = first
        while day <= end:
            if self.market.ecb_publication(day, now=now) == day:
                rates = self._rates(day, amount, base, symbols)
                if rates is not None:
                    series[day.isoformat()] = rates
            day += timedelta(days=1)
        if not series:
            return json_answer(404, NOT_FOUND)
        return self._cached(200, {"amount": amount, "base": base, "start_date": min(series),
                                  "end_date": max(series), "rates": series})

    @staticmethod
    def _cached(status: int, obj: Any) -> Answer:
        tag = hashlib.md5(repr(obj).encode(), usedforsecurity=False).hexdigest()
        return json_answer(status, obj, {"Cache-Control": "public, max-age=86400", "ETag": f'"{tag}"'})


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError("invalid date") from None
