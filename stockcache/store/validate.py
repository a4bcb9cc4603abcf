"""Validation of what clients send about users, positions, watch items and alerts.

The web layer calls these on parsed JSON bodies; the command line calls
:func:`username`. Each returns clean values or raises
:class:`~stockcache.errors.InvalidRequest` (or ``InvalidSymbol``) with a
message a person can act on and a ``field`` naming the culprit. They never
raise anything else, whatever the body (property-tested), and never echo a
password.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ..currency import parse_code
from ..errors import InvalidRequest, InvalidSymbol
from ..symbols import normalize_isin, normalize_symbol
from ..validation import MAX_PRICE, MIN_PRICE
from .rows import ALERT_CONDITIONS

# Shares: a satoshi-sized fraction up to a trillion-token crypto holding. A cost basis is a
# price paid per share: 0 (a gift) or within the bounds every quote price keeps
# (models.MIN_PRICE .. MAX_PRICE). Tiny positives are refused, not only negatives: a
# cost of 1e-320 (subnormal) made every gain percent infinite. Within these bounds
# shares * price stays below 1e24 and gain / cost below 1e42, finite in any total.
MIN_SHARES = 1e-8
MAX_SHARES = 1e15
MIN_COST_BASIS = MIN_PRICE
MAX_COST_BASIS = MAX_PRICE

USERNAME_MAX = 64
PASSWORD_MIN = 8  # for new passwords; login still takes any length, so no old account is locked out
PASSWORD_MAX = 1024
LABEL_MAX = 100

# ASCII only: the store compares names with SQLite's NOCASE, which folds
# ASCII letters only, so "Ä" and "ä" would otherwise be two different users.
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_POSITION_FIELDS = ("symbol", "shares", "cost_basis")


def _shown(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text[:40] + ("..." if len(text) > 40 else "")


def _object(body: object) -> dict[Any, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _refuse_unknown(body: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            shown = _shown(key)
            raise InvalidRequest(
                f"Unknown field {shown!r}; expected only: {', '.join(allowed)}.", field=shown
            )


def symbol(raw: object, *, field: str = "symbol") -> str:
    """A normalised symbol, or InvalidSymbol carrying ``field``."""
    try:
        return normalize_symbol(raw)
    except InvalidSymbol as exc:
        raise InvalidSymbol(exc.message, field=field, **exc.fields) from None


def _number(body: dict[Any, Any], name: str, low: float, high: float, *, zero: bool) -> float:
    """``body[name]`` as a float within [low, high], or exactly 0 when ``zero``."""
    raw = body[name]
    bounds = f"{'0 or ' if zero else ''}a number from {low:g} to {high:g}"
    # bool is an int subclass: true as "1 share" is a client bug, not a number.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidRequest(f"{name} must be a number.", field=name)
    try:
        value = float(raw)
    except OverflowError:  # an int too large for a float
        value = math.inf
    if not (low <= value <= high or (zero and value == 0)):  # NaN fails both
        raise InvalidRequest(f"{name} must be {bounds}.", field=name)
    return value + 0.0  # -0.0 becomes 0.0


def isin(raw: object) -> str:
    """A checked ISIN (shape and check digit), or InvalidRequest naming ``isin``."""
    return normalize_isin(raw)


def _symbol_or_isin(data: dict[Any, Any]) -> dict[str, str]:
    """``{"symbol": ...}`` or ``{"isin": ...}``: a new holding names one of them, never both."""
    if "symbol" in data and "isin" in data:
        raise InvalidRequest("Give symbol or isin, not both.", field="isin")
    if "isin" in data:
        return {"isin": isin(data["isin"])}
    if "symbol" not in data:
        raise InvalidRequest("symbol (or isin) is required.", field="symbol")
    return {"symbol": symbol(data["symbol"])}


def position_input(body: object, *, partial: bool = False) -> dict[str, Any]:
    """``{"symbol" or "isin", "shares", "cost_basis"}`` cleaned; with ``partial`` any non-empty subset (no isin)."""
    data = _object(body)
    _refuse_unknown(data, _POSITION_FIELDS if partial else ("isin", *_POSITION_FIELDS))
    if not partial:
        out: dict[str, Any] = _symbol_or_isin(data)
        for name in _POSITION_FIELDS[1:]:
            if name not in data:
                raise InvalidRequest(f"{name} is required.", field=name)
    elif not data:
        raise InvalidRequest("Give at least one of: " + ", ".join(_POSITION_FIELDS) + ".")
    else:
        out = {}
    if partial and "symbol" in data:
        out["symbol"] = symbol(data["symbol"])
    if "shares" in data:
        out["shares"] = _number(data, "shares", MIN_SHARES, MAX_SHARES, zero=False)
    if "cost_basis" in data:
        out["cost_basis"] = _number(data, "cost_basis", MIN_COST_BASIS, MAX_COST_BASIS, zero=True)
    return out


def watch_input(body: object) -> dict[str, str]:
    """``{"symbol": ...}`` normalised, or ``{"isin": ...}`` checked."""
    data = _object(body)
    _refuse_unknown(data, ("symbol", "isin"))
    return _symbol_or_isin(data)


_ALERT_FIELDS = ("symbol", "condition", "value", "channel", "note")
NOTE_MAX = 200
MAX_ALERT_VALUE = 1e12  # a price bound as generous as quotes'; a change in percent is far inside it


def alert_input(body: object, channels: Sequence[str]) -> dict[str, Any]:
    """``{"symbol", "condition", "value", "channel", "note"?}`` cleaned.

    ``channel`` must name one of ``channels`` (the operator's): anything else,
    a URL included, is refused, so no user can make the server call an address.
    """
    data = _object(body)
    _refuse_unknown(data, _ALERT_FIELDS)
    for name in _ALERT_FIELDS[:4]:
        if name not in data:
            raise InvalidRequest(f"{name} is required.", field=name)
    condition = data["condition"]
    if condition not in ALERT_CONDITIONS:
        raise InvalidRequest(f"condition must be one of: {', '.join(ALERT_CONDITIONS)}.", field="condition")
    channel = data["channel"]
    picked = channel.strip().lower() if isinstance(channel, str) else None
    if picked is None or picked not in channels:
        if not channels:
            raise InvalidRequest("No alert channels are configured on this server; the operator adds one with "
                                 "STOCKCACHE_NOTIFY_<NAME>.", field="channel")
        raise InvalidRequest(f"channel must be the name of a configured channel: {', '.join(channels)}.",
                             field="channel")
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > NOTE_MAX or any(ord(c) < 32 and c != "\n" for c in note):
        raise InvalidRequest(f"note must be text of at most {NOTE_MAX} characters.", field="note")
    value = _number(data, "value", -MAX_ALERT_VALUE, MAX_ALERT_VALUE, zero=True)
    return {"symbol": symbol(data["symbol"]), "condition": condition, "value": value, "channel": picked,
            "note": note.strip()}


def me_input(body: object) -> dict[str, Any]:
    """``PUT /api/me``: ``{"base_currency": "EUR"}`` (null goes back to the server's default)."""
    data = _object(body)
    _refuse_unknown(data, ("base_currency",))
    if not data:
        raise InvalidRequest("Send the fields to change: base_currency.")
    out: dict[str, Any] = {}
    if "base_currency" in data:
        out["base_currency"] = None if data["base_currency"] is None else currency_code(
            data["base_currency"], field="base_currency")
    return out


def currency_code(raw: object, *, field: str) -> str:
    """An ISO 4217 code (``eur`` -> ``EUR``), or InvalidRequest naming ``field``."""
    try:
        return parse_code(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}.", field=field) from None


def login_input(body: object) -> tuple[str, str]:
    """``(username, password)`` from a login body.

    Other keys are ignored: login clients often send extras ("remember") and
    refusing them would gain nothing. Only lengths are checked; the name's
    characters are not, so a login never says more than "wrong credentials".
    """
    data = _object(body)
    name = data.get("username")
    password = data.get("password")
    if not isinstance(name, str) or not 1 <= len(name) <= USERNAME_MAX:
        raise InvalidRequest(f"username must be a string of 1 to {USERNAME_MAX} characters.", field="username")
    if not isinstance(password, str) or not 1 <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(
            f"password must be a string of 1 to {PASSWORD_MAX} characters.", field="password"
        )
    return name, password


def username(text: object) -> str:
    """A new user's name: 1 to 64 ASCII letters, digits or ``. _ @ -``, starting with a letter or digit."""
    if not isinstance(text, str) or not _USERNAME_RE.fullmatch(text):
        raise InvalidRequest(
            "A username is 1 to 64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit.",
            field="username",
        )
    return text


def password(text: object, *, field: str = "password") -> str:
    """A new password: 8 to 1024 characters (the most login accepts). The same rule for the CLI and the API."""
    if not isinstance(text, str) or len(text) > PASSWORD_MAX:
        raise InvalidRequest(f"A password is {PASSWORD_MIN} to {PASSWORD_MAX} characters.", field=field)
    if len(text) < PASSWORD_MIN:
        raise InvalidRequest(f"A password is at least {PASSWORD_MIN} characters; this one has {len(text)}.",
                             field=field)
    return text


def password_change_input(body: object) -> tuple[str, str]:
    """``(current, new)`` from ``{"current", "new"}``: the current password as login takes it, a valid new one."""
    data = _object(body)
    _refuse_unknown(data, ("current", "new"))
    current, new = data.get("current"), data.get("new")
    if not isinstance(current, str) or not 1 <= len(current) <= PASSWORD_MAX:
        raise InvalidRequest(f"current must be your password, a string of 1 to {PASSWORD_MAX} characters.",
                             field="current")
    if "new" not in data:
        raise InvalidRequest("new is required.", field="new")
    return current, password(new, field="new")


def label(text: object) -> str:
    """An API token's label: up to 100 printable characters (may be empty)."""
    if not isinstance(text, str) or len(text) > LABEL_MAX or not text.isprintable():
        raise InvalidRequest(f"A label is at most {LABEL_MAX} printable characters.", field="label")
    return text.strip()
