"""The codec (what SQLite and Redis store), freeze / loads_frozen (deep-immutable JSON values), the GLOB matcher."""

from __future__ import annotations

import copy
import json
import pickle
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockcache.cache import Entry, codec, freeze
from stockcache.cache.base import glob_to_regex
from stockcache.cache.codec import loads_frozen
from stockcache.cache.frozen import FrozenDict

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def assert_deep_frozen(value: Any) -> None:
    assert type(value) not in (list, dict)
    if isinstance(value, dict):
        assert type(value) is FrozenDict
        for item in value.values():
            assert_deep_frozen(item)
    elif isinstance(value, tuple):
        for item in value:
            assert_deep_frozen(item)


@given(json_values)
def test_freeze_is_deep_and_json_equal(value: Any) -> None:
    frozen = freeze(value)
    assert_deep_frozen(frozen)
    assert json.loads(json.dumps(frozen)) == json.loads(json.dumps(value))


@given(json_values)
def test_freeze_loads_frozen_matches_freeze(value: Any) -> None:
    text = json.dumps(value)
    assert loads_frozen(text) == freeze(json.loads(text))
    assert_deep_frozen(loads_frozen(text))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__("a", 2),
        lambda d: d.__delitem__("a"),
        lambda d: d.update(a=2),
        lambda d: d.pop("a"),
        lambda d: d.popitem(),
        lambda d: d.setdefault("b", 1),
        lambda d: d.clear(),
        lambda d: d.__ior__({"b": 1}),
    ],
    ids=["setitem", "delitem", "update", "pop", "popitem", "setdefault", "clear", "ior"],
)
def test_freeze_dict_mutation_raises(mutate: Any) -> None:
    frozen = freeze({"a": 1})
    with pytest.raises(TypeError):
        mutate(frozen)
    assert frozen == {"a": 1}


def test_freeze_copies_are_plain_and_mutable() -> None:
    frozen = freeze({"a": {"b": [1]}})
    shallow = dict(frozen)
    shallow["c"] = 1
    assert type({**frozen}) is dict
    assert type(frozen | {"z": 1}) is dict
    assert copy.copy(frozen) is frozen and copy.deepcopy(frozen) is frozen
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    assert "c" not in frozen


@pytest.mark.parametrize(
    "text", ['[{"a":1}', "NaN", "[Infinity]", "", "  ", '{"a":1} x', "\x80\x04garbage"]
)
def test_freeze_loads_frozen_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        loads_frozen(text)


def test_freeze_loads_frozen_refuses_bytes() -> None:
    with pytest.raises(ValueError):
        loads_frozen(b'{"a": 1}')  # type: ignore[arg-type]


# GLOB semantics: the memory tier must remove exactly what SQLite's GLOB removes.

_GLOB_ALPHABET = "ab-]^[*?:"


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(_GLOB_ALPHABET, max_size=7), key=st.text("ab-]^[:", max_size=6))
def test_glob_matches_like_sqlite(pattern: str, key: str) -> None:
    with sqlite3.connect(":memory:") as conn:
        expected = bool(conn.execute("SELECT ? GLOB ?", (key, pattern)).fetchone()[0])
    assert bool(glob_to_regex(pattern).fullmatch(key)) is expected, (pattern, key)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("quote:AAPL*", "quote:AAPL", True),
        ("quote:AAPL*", "quote:AAPL:x", True),
        ("quote:AAPL*", "quote:aapl", False),
        ("quote:[A-C]*", "quote:BRK.B", True),
        ("quote:[^A-C]*", "quote:BRK.B", False),
        ("quote:?", "quote:F", True),
        ("quote:.", "quote:F", False),
        ("quote:[z-a]", "quote:z", True),
        ("quote:[", "quote:[", False),
    ],
)
def test_glob_examples(pattern: str, key: str, matches: bool) -> None:
    assert bool(glob_to_regex(pattern).fullmatch(key)) is matches


# The codec: the one text format SQLite and Redis store.


@given(json_values, st.floats(0, 2e9), st.floats(0, 2e9))
def test_codec_round_trips_entries_frozen(value: Any, stored_at: float, expires_at: float) -> None:
    entry = Entry(freeze(value), stored_at, expires_at, "memory")
    text = codec.encode(entry)
    assert json.loads(text) == [json.loads(json.dumps(value)), stored_at, expires_at]
    back = codec.decode(text, "redis")
    assert (back.value, back.stored_at, back.expires_at, back.tier) == (entry.value, stored_at, expires_at, "redis")
    assert_deep_frozen(back.value)


def test_codec_text_is_compact_json() -> None:
    assert codec.encode(Entry(freeze({"a": [1, "x"]}), 1.5, 2.0, "memory")) == '[{"a":[1,"x"]},1.5,2.0]'


@pytest.mark.parametrize(
    "text",
    ['{"not": "a triple"}', "[1, 2]", '[1, 2, 3, 4]', '["v", "later", 3]', "[1, 2, null]", "\x80\x04garbage",
     b"[1,2,3]", None, 17],
    ids=["object", "pair", "four", "text-time", "null-time", "pickle", "bytes", "none", "int"],
)
def test_codec_decode_refuses_anything_but_a_triple(text: Any) -> None:
    with pytest.raises(ValueError):
        codec.decode(text, "sqlite")


@pytest.mark.parametrize("value", [float("nan"), object(), "self"], ids=["nan", "object", "loop"])
def test_codec_encode_refuses_values_json_cannot_carry(value: Any) -> None:
    if value == "self":
        value = []
        value.append(value)
    with pytest.raises(ValueError):
        codec.encode(Entry(value, 1.0, 2.0, "memory"))
