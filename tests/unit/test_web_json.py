"""Answers as JSON: the fast encoder writes what the strict stdlib encoder wrote, and refuses what it refused."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from stockcache.cache.frozen import freeze
from stockcache.web.plugins import encode_json

STRICT = json.JSONEncoder(
    allow_nan=False, default=lambda v: list(v) if isinstance(v, tuple | set | frozenset) else None)


@pytest.mark.parametrize(
    "answer",
    [
        freeze({"quotes": {"AAPL": {"price": 189.5, "volume": 10**12, "history": [{"close": 1.25}]}}}),
        {"candles": (1.5, 2, None), "tags": ("a", "b")},
        {"symbols": frozenset({"AAPL"}), "watch": {"MSFT"}},
        {"name": "Société Générale ✓", "quote": None, "stale": False, "age": 0},
        {"text": "null is a word here", "n": -0.0, "tiny": 5e-324, "big": 1e308},
        {"surrogate": "\ud800"},  # from a JSON body's "\ud800" escape: orjson refuses it, the stdlib writes it
        {"huge": 2**80, 1: "int key", None: "none key"},
        [],
    ],
    ids=["frozen-nested", "tuples", "sets", "unicode", "floats", "surrogate", "big-int-and-keys", "list"],
)
def test_web_json_encodes_what_the_stdlib_encoder_encoded(answer: Any) -> None:
    out = encode_json(answer)
    assert isinstance(out, bytes)
    assert json.loads(out) == json.loads(STRICT.encode(answer))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_web_json_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError):
        encode_json({"quotes": {"AAPL": {"price": bad, "quote": None}}})
    with pytest.raises(ValueError):
        encode_json([bad])


def test_web_json_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        encode_json({"when": object()})
