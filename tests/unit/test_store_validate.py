"""Validation of client bodies: tables of refusals plus property tests that nothing else ever escapes."""

from __future__ import annotations

import math
import re
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockcache.errors import InvalidRequest, InvalidSymbol
from stockcache.store import validate
from stockcache.store.validate import (
    MAX_COST_BASIS,
    MAX_SHARES,
    MIN_COST_BASIS,
    MIN_SHARES,
    login_input,
    position_input,
    watch_input,
)

SYMBOL_RE = re.compile(r"[A-Z0-9.\-^=:_]{1,20}")
SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-^=:_"

shares_ok = st.floats(min_value=MIN_SHARES, max_value=MAX_SHARES) | st.integers(
    min_value=1, max_value=int(MAX_SHARES)
)
cost_ok = st.just(0) | st.floats(min_value=MIN_COST_BASIS, max_value=MAX_COST_BASIS) | st.integers(
    min_value=0, max_value=int(MAX_COST_BASIS)
)
symbols_ok = st.text(alphabet=SYMBOL_CHARS, min_size=1, max_size=20)

# Any JSON-like value, nested.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@given(symbol=symbols_ok, shares=shares_ok, cost=cost_ok)
def test_position_input_accepts_and_round_trips_any_valid_position(symbol: str, shares: Any, cost: Any) -> None:
    out = position_input({"symbol": symbol, "shares": shares, "cost_basis": cost})
    assert out == {"symbol": symbol.upper(), "shares": float(shares), "cost_basis": float(cost)}
    assert isinstance(out["shares"], float) and isinstance(out["cost_basis"], float)
    assert position_input(out) == out  # cleaning is idempotent


@given(body=json_values)
def test_position_input_refuses_any_junk_with_invalid_request_only(body: Any) -> None:
    for partial in (False, True):
        try:
            out = position_input(body, partial=partial)
        except InvalidRequest as exc:
            assert exc.message and exc.status == 400
        else:  # only a real position gets through
            assert set(out) <= {"symbol", "shares", "cost_basis"} and out


bad_numbers = (
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, True, False, "1", None,
                     [1], {"n": 1}, 10**400, MAX_SHARES * 10, 1e-320, 5e-324, MIN_SHARES / 2])
    | st.floats(max_value=0)
    | st.floats(min_value=0, max_value=MIN_SHARES, exclude_max=True)  # tiny positives, subnormals included
)


@given(bad=bad_numbers)
def test_position_input_refuses_bad_shares(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        position_input({"symbol": "AAPL", "shares": bad, "cost_basis": 1})
    assert info.value.fields["field"] == "shares"


@given(bad=st.sampled_from([math.nan, math.inf, -1, -0.001, True, "0", None, 10**400, 1e-320, 5e-324,
                            MAX_COST_BASIS * 2]) | st.floats(max_value=-1e-9)
       | st.floats(min_value=0, max_value=MIN_COST_BASIS, exclude_min=True, exclude_max=True))
def test_position_input_refuses_bad_cost_basis(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        position_input({"symbol": "AAPL", "shares": 1, "cost_basis": bad})
    assert info.value.fields["field"] == "cost_basis"


def test_position_input_refuses_deeply_nested_bodies_cleanly() -> None:
    nested: Any = "AAPL"
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(InvalidSymbol):
        position_input({"symbol": nested, "shares": 1, "cost_basis": 1})
    with pytest.raises(InvalidRequest):
        position_input({"symbol": "AAPL", "shares": 1, "cost_basis": 1, "x": {"y": nested}})


@pytest.mark.parametrize(
    ("body", "field", "partial"),
    [
        ({"symbol": "AAPL", "shares": 1}, "cost_basis", False),
        ({"shares": 1, "cost_basis": 1}, "symbol", False),
        ({"symbol": "AAPL", "shares": 1, "cost_basis": 1, "note": "x"}, "note", False),
        ({"symbol": "AAPL", "user_id": 2}, "user_id", True),
        ({"symbol": "bad symbol!"}, "symbol", True),
        ({"symbol": 42}, "symbol", True),
    ],
)
def test_position_input_names_the_bad_field(body: dict[str, Any], field: str, partial: bool) -> None:
    with pytest.raises(InvalidRequest) as info:
        position_input(body, partial=partial)
    assert info.value.fields["field"] == field


@pytest.mark.parametrize("body", [None, [], "AAPL", 3, {}])
def test_position_input_refuses_non_objects_and_empty_partial(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        position_input(body, partial=True)


def test_position_input_partial_keeps_only_given_fields() -> None:
    assert position_input({"shares": 2}, partial=True) == {"shares": 2.0}
    assert position_input({"symbol": "brk.b"}, partial=True) == {"symbol": "BRK.B"}


def test_position_input_invalid_symbol_keeps_its_code() -> None:
    with pytest.raises(InvalidSymbol) as info:
        position_input({"symbol": "$$$", "shares": 1, "cost_basis": 1})
    assert info.value.code == "invalid_symbol"


@given(text=st.text(max_size=40) | st.sampled_from(["\u017fpy", "\u0131bm", "\ufb00", "AAPL\u00a0", "\u3000MSFT"]))
def test_symbol_validation_accepts_exactly_the_contract_alphabet(text: str) -> None:
    # Only ASCII is upper-cased and only ASCII whitespace trimmed: "\u017fpy".upper() is "SPY".
    wanted = text.strip(string.whitespace).upper() if text.isascii() else None
    try:
        symbol = validate.symbol(text)
    except InvalidSymbol as exc:
        assert exc.fields["field"] == "symbol"
        assert wanted is None or not SYMBOL_RE.fullmatch(wanted)
    else:
        assert SYMBOL_RE.fullmatch(symbol) and symbol == wanted
        assert validate.symbol(symbol) == symbol


@given(symbol=symbols_ok)
def test_watch_input_normalises_valid_symbols(symbol: str) -> None:
    assert watch_input({"symbol": symbol}) == {"symbol": symbol.upper()}


@given(body=json_values)
def test_watch_input_refuses_junk_with_invalid_request_only(body: Any) -> None:
    try:
        watch_input(body)
    except InvalidRequest:
        pass


@pytest.mark.parametrize("body", [{}, {"symbol": "AAPL", "extra": 1}, {"symbol": ""}, ["AAPL"]])
def test_watch_input_refuses_bad_bodies(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        watch_input(body)


def test_login_input_returns_name_and_password_and_ignores_extras() -> None:
    assert login_input({"username": "alice", "password": "pw", "remember": True}) == ("alice", "pw")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "pw"}, "username"),
        ({"username": "", "password": "pw"}, "username"),
        ({"username": "a" * 65, "password": "pw"}, "username"),
        ({"username": 1, "password": "pw"}, "username"),
        ({"username": "alice"}, "password"),
        ({"username": "alice", "password": ""}, "password"),
        ({"username": "alice", "password": "p" * 1025}, "password"),
        ({"username": "alice", "password": ["pw"]}, "password"),
    ],
)
def test_login_input_refuses_bad_bodies_without_echoing_the_password(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        login_input(body)
    assert info.value.fields["field"] == field
    password = body.get("password")
    if isinstance(password, str) and password:
        assert password not in str(info.value.to_dict())


@given(body=json_values)
def test_login_input_refuses_junk_with_invalid_request_only(body: Any) -> None:
    try:
        login_input(body)
    except InvalidRequest:
        pass


@pytest.mark.parametrize("name", ["alice", "a", "Bob.Smith", "ops@example.com", "x" * 64, "a_b-c"])
def test_username_accepts_plain_names(name: str) -> None:
    assert validate.username(name) == name


@pytest.mark.parametrize("name", ["", " alice", "al ice", "x" * 65, "-alice", "ä", "a/b", "a\nb", None, 3])
def test_username_refuses_odd_names(name: Any) -> None:
    with pytest.raises(InvalidRequest):
        validate.username(name)


@pytest.mark.parametrize("text", ["x" * 101, "a\x00b", "tab\there", 7])
def test_label_refuses_long_or_unprintable_text(text: Any) -> None:
    with pytest.raises(InvalidRequest):
        validate.label(text)
