"""Portfolio performance: pure maths over positions and their quotes, finite whatever comes in.

``value = shares * price``, ``gain = value - shares * cost_basis``, ``day_change =
shares * change``. Every number in the answer is finite or null, whatever is
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
                errors: Mapping[str, Any]) -> dict[str, Any]:
    """``{"positions", "totals", "errors"}`` for ``rows`` priced by ``quotes`` (by symbol)."""
    out_rows: list[dict[str, Any]] = []
    total_value = total_cost = total_day = 0.0
    priced_cost = 0.0
    for row in rows:
        shares, cost_basis = row["shares"], row["cost_basis"]
        cost = _finite(shares * cost_basis)
        if cost is not None:
            total_cost += cost
        shown = {**row, "shares": _finite(shares), "cost_basis": _finite(cost_basis)}
        quote = quotes.get(row["symbol"])
        price = None if quote is None else _finite(quote.get("price"))
        if quote is None or price is None or price <= 0:
            out_rows.append({**shown, "price": None, "value": None, "gain": None,
                             "gain_percent": None, "day_change": None, "stale": None})
            continue
        value = _finite(shares * price)
        gain = None if value is None or cost is None else _finite(value - cost)
        day_change = _finite(shares * (_finite(quote.get("change")) or 0.0))
        if value is not None and cost is not None and day_change is not None:
            total_value += value
            total_day += day_change
            priced_cost += cost
        out_rows.append({
            **shown, "price": price, "value": _r(value), "gain": _r(gain),
            "gain_percent": _percent(gain, cost), "day_change": _r(day_change),
            "stale": bool(quote.get("stale")),
        })
    total_gain = total_value - priced_cost
    totals = {
        "value": _r(total_value), "cost": _r(total_cost), "gain": _r(total_gain),
        "gain_percent": _percent(total_gain, priced_cost), "day_change": _r(total_day),
    }
    return {"positions": out_rows, "totals": totals, "errors": dict(errors)}



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
