"""The one JSON codec: what the SQLite and Redis tiers store, and how it comes back.

An entry is stored as the JSON text ``[value, stored_at, expires_at]``, never
pickle, so a tampered file or Redis key can at worst be a miss: decoding never
runs anything, whatever the bytes are. Decoding builds the value frozen
(:mod:`.frozen`) straight from the text, so a hit from either tier hands out
the same read-only shapes the memory tier holds.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from .base import Entry
from .frozen import FrozenDict, freeze

# One encoder for every write: json.dumps() with options builds a new encoder per call.
# Values reach it frozen (freeze refused cycles, NaN and non-string keys), so it need not
# look for cycles; allow_nan=False still guards entries built by hand.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode


def encode(entry: Entry) -> str:
    """The stored text of ``entry``; ValueError if its value is not JSON."""
    try:
        return _encode([entry.value, entry.stored_at, entry.expires_at])
    except (TypeError, RecursionError) as exc:  # RecursionError: a value that contains itself
        raise ValueError(f"value cannot be stored as JSON: {exc}") from None


def decode(text: Any, tier: str) -> Entry:
    """The entry stored as ``text``, tagged with ``tier``; ValueError for anything else.

    Anything but our JSON triple (a planted pickle, another program's value,
    bytes) is refused the same way, so a tier can treat it as a miss.
    """
    try:
        value, stored_at, expires_at = loads_frozen(text)
        return Entry(value, float(stored_at), float(expires_at), tier)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a cache entry: {exc}") from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_scan = json.JSONDecoder(  # the C scanner: loads() without its whitespace regex passes
    object_pairs_hook=FrozenDict, parse_constant=_reject_constant
).scan_once  # type: ignore[attr-defined]


def loads_frozen(text: str) -> Any:
    """Parse JSON text straight into a frozen value (what :func:`~.frozen.freeze` would give).

    Objects are built as FrozenDict by the C scanner; only text that holds a
    nested array needs a second walk to turn lists into tuples. Only ``str`` is
    accepted: the cache writes text, so bytes in its file are not ours.
    """
    if type(text) is not str:
        raise ValueError(f"expected JSON text, not {type(text).__name__}")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON text") from None
    except RecursionError:  # the C scanner's depth limit: text nested deeper than any value of ours
        raise ValueError("cached value is nested too deeply") from None
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the JSON value")
    if type(value) is list:
        if text.find("[", 1) == -1:  # the outer array is the only one
            return tuple(value)
    elif "[" not in text:
        return value
    return freeze(value)
