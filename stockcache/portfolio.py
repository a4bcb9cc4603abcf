"""Portfolio performance: pure maths over positions, their quotes and FX rates, finite whatever comes in.

``value = shares * price``, ``gain = value - shares * cost_basis``, ``day_change =
shares * change``, each in the listing's currency and again in the base
currency (``*_base``), which the totals add up. Every number in the answer is finite or null, whatever is
stored: rows written before the input bounds (``store.validate``), such as a
cost basis of 1e-320, get ``null`` where their maths is not finite (a gain
percent over a vanishing cost), and a position whose value, cost or day change
is not finite is left out of the totals like one without a quote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .symbols import normalize_symbol


def position_rows(positions: Sequence[Any]) -> list[dict[str, Any]]:
    """Positions (dicts or objects with id, symbol, shares, cost_basis) as plain rows."""
    return [_position_fields(p) for p in positions]


def performance(rows: Sequence[Mapping[str, Any]], quotes: Mapping[str, Mapping[str, Any]],
                errors: Mapping[str, Any], *, base: str, rates: Mapping[str, float] | None,
                rates_error: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"positions", "totals", "errors", "currency"}`` for ``rows`` priced by ``quotes`` (by symbol).

    Each position's figures are in its listing's currency, and again in ``base``
    (``*_base``) at ``rates``: the reference rates from ``base`` (1 ``base`` =
    ``rates[X]`` of X), None when they could not be had (``rates_error``). A
    position without a quote, a known currency or a rate is left out of every
    total, its value and its cost alike, and named in ``errors``; the totals
    then say ``"complete": false``.
    """
    out_rows: list[dict[str, Any]] = []
    out_errors = dict(errors)
    total_value = total_cost = total_day = 0.0
    complete = True
    for row in rows:
        symbol, shares, cost_basis = row["symbol"], row["shares"], row["cost_basis"]
        cost = _finite(shares * cost_basis)
        shown = {**row, "shares": _finite(shares), "cost_basis": _finite(cost_basis)}
        quote = quotes.get(symbol)
        price = None if quote is None else _finite(quote.get("price"))
        if quote is None or price is None or price <= 0:
            complete = False
            out_rows.append({**shown, "price": None, "value": None, "gain": None, "gain_percent": None,
                             "day_change": None, "stale": None, "currency": None, "fx_rate": None,
                             "value_base": None, "gain_base": None, "day_change_base": None})
            continue
        value = _finite(shares * price)
        gain = None if value is None or cost is None else _finite(value - cost)
        day_change = _finite(shares * (_finite(quote.get("change")) or 0.0))
        listed_in = quote.get("currency")
        fx = _rate_to_base(listed_in, base, rates)
        value_base, gain_base, day_base, cost_base = (
            None if fx is None or x is None else _finite(x * fx) for x in (value, gain, day_change, cost))
        if value_base is not None and cost_base is not None and day_base is not None:
            total_value += value_base
            total_cost += cost_base
            total_day += day_base
        else:
            complete = False
            if fx is None and symbol not in out_errors:  # (else a stored row's maths is not finite)
                out_errors[symbol] = _unconverted(symbol, listed_in, base, rates_error)
        out_rows.append({
            **shown, "price": price, "value": _r(value), "gain": _r(gain),
            "gain_percent": _percent(gain, cost), "day_change": _r(day_change),
            "stale": bool(quote.get("stale")), "currency": listed_in,
            "fx_rate": None if fx is None else round(fx, 8), "value_base": _r(value_base),
            "gain_base": _r(gain_base), "day_change_base": _r(day_base),
        })
    total_gain = total_value - total_cost
    totals = {
        "currency": base, "value": _r(total_value), "cost": _r(total_cost), "gain": _r(total_gain),
        "gain_percent": _percent(total_gain, total_cost), "day_change": _r(total_day), "complete": complete,
    }
    return {"positions": out_rows, "totals": totals, "errors": out_errors}


def _rate_to_base(listed_in: Any, base: str, rates: Mapping[str, float] | None) -> float | None:
    """How many ``base`` one unit of ``listed_in`` is worth, or None when unknown."""
    if not isinstance(listed_in, str):
        return None
    if listed_in == base:
        return 1.0
    rate = None if rates is None else _finite(rates.get(listed_in))
    return None if rate is None or rate <= 0 else 1.0 / rate


def _unconverted(symbol: str, listed_in: Any, base: str, rates_error: Mapping[str, Any] | None) -> dict[str, Any]:
    """The error of a position left out of the totals for want of a currency or a rate."""
    if not isinstance(listed_in, str):
        return {"code": "currency_not_found", "symbol": symbol,
                "message": f"No source says what currency {symbol} is priced in; it is left out of the totals."}
    if rates_error is not None:
        return {**rates_error, "symbol": symbol,
                "message": f"No {listed_in} to {base} rate could be had ({rates_error.get('message', '')}); "
                           f"{symbol} is left out of the totals."}
    return {"code": "currency_not_found", "symbol": symbol, "currency": listed_in,
            "message": f"No reference rate from {listed_in} to {base} is published; {symbol} is left out of "
                       "the totals."}


def _position_fields(position: Any) -> dict[str, Any]:
    def get(name: str) -> Any:
        return position[name] if isinstance(position, Mapping) else getattr(position, name)

    return {"id": get("id"), "symbol": normalize_symbol(get("symbol")),
            "shares": _amount(get("shares")), "cost_basis": _amount(get("cost_basis"))}


def _amount(value: Any) -> float:
    """A stored amount as a float; what is not one (None, text) is NaN, shown as null."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None (NaN, infinities, junk)."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past the float range
        return None
    return number if math.isfinite(number) else None


def _r(value: float | None) -> float | None:
    """Rounded for the answer; None for None or anything not finite (the encoder refuses those)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)


def _percent(gain: float | None, cost: float | None) -> float | None:
    """``gain`` as a percentage of ``cost``: None without a positive cost or when it is not finite."""
    if gain is None or cost is None or cost <= 0:
        return None
    return _r(gain / cost * 100)
