"""Property tests of the validators test_store_validate.py does not cover: symbol batches and query integers.

``normalize_symbols`` guards every batch route (fold duplicates, keep order,
refuse more than max_batch, set each invalid symbol aside with its own error)
and ``query_int`` every ``?days=``; whatever they are given, they return clean
values or raise InvalidRequest, nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import bottle
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stockcache.errors import InvalidRequest, InvalidSymbol, TooManySymbols
from stockcache.symbols import normalize_symbols
from stockcache.web.plugins import query_int

SYMBOL_RE = re.compile(r"[A-Z0-9.\-^=:_]{1,20}")
SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-^=:_"
symbols_ok = st.text(alphabet=SYMBOL_CHARS, min_size=1, max_size=20)
padded = st.tuples(st.sampled_from(["", " ", "  "]), symbols_ok, st.sampled_from(["", " ", "\t"])).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=25),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@given(raw=st.lists(padded, min_size=1, max_size=40), max_batch=st.integers(1, 50))
def test_normalize_symbols_folds_duplicates_keeps_order_and_caps_the_batch(raw: list[str], max_batch: int) -> None:
    wanted = list(dict.fromkeys(s.strip().upper() for s in raw))
    try:
        out, invalid = normalize_symbols(raw, max_batch=max_batch)
    except TooManySymbols as exc:
        assert len(wanted) > max_batch and exc.status == 400
        return
    assert out == wanted and len(out) <= max_batch and invalid == {}
    assert all(SYMBOL_RE.fullmatch(s) for s in out)
    assert normalize_symbols(out, max_batch=max_batch) == (out, {})  # idempotent


@given(raw=st.lists(symbols_ok, min_size=1, max_size=30))
def test_normalize_symbols_comma_text_equals_the_list(raw: list[str]) -> None:
    assert normalize_symbols(",".join(raw), max_batch=100) == normalize_symbols(raw, max_batch=100)
    assert normalize_symbols(" , ".join(raw) + ",,", max_batch=100) == normalize_symbols(raw, max_batch=100)


@given(raw=json_values | st.lists(st.text(max_size=25), max_size=8) | st.text(max_size=60))
def test_normalize_symbols_refuses_junk_with_invalid_request_only(raw: Any) -> None:
    try:
        out, invalid = normalize_symbols(raw, max_batch=5)
    except InvalidRequest as exc:  # only the batch's shape or size refuses the whole request
        assert exc.status == 400 and exc.code in ("invalid_request", "too_many_symbols")
    else:
        assert 1 <= len(out) + len(invalid) <= 5 and all(SYMBOL_RE.fullmatch(s) for s in out)
        assert all(error.code == "invalid_symbol" for error in invalid.values())


@given(good=st.lists(symbols_ok, min_size=1, max_size=5), bad=st.text(max_size=25))
def test_normalize_symbols_one_bad_symbol_costs_only_its_own_answer(good: list[str], bad: str) -> None:
    assume(not SYMBOL_RE.fullmatch(bad.strip().upper()))
    out, invalid = normalize_symbols([*good, bad], max_batch=100)
    assert out == list(dict.fromkeys(symbol.upper() for symbol in good))
    assert list(invalid) == [bad[:24]] and isinstance(invalid[bad[:24]], InvalidSymbol)


def query(text: str) -> Any:
    bottle.request.bind({"QUERY_STRING": text, "REQUEST_METHOD": "GET"})
    return query_int("days", 7)


@given(value=st.integers(-10**30, 10**30))
def test_query_int_reads_any_whole_number(value: int) -> None:
    assert query(f"days={value}") == value
    assert query(f"days={value}.0") == value or abs(value) > 2**53


@given(raw=st.text(max_size=30))
def test_query_int_gives_a_number_or_invalid_request(raw: str) -> None:
    try:
        value = query("days=" + raw.replace("&", "").replace("#", "").replace("%", "").replace("+", ""))
    except InvalidRequest as exc:
        assert exc.fields["field"] == "days"
    else:
        assert isinstance(value, int)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e400", "1.5", "0x10", "one", "1e3.5"])
def test_query_int_refuses_what_is_not_a_whole_number(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        query(f"days={raw}")


def test_query_int_missing_or_empty_is_the_default() -> None:
    assert query("") == 7 and query("days=") == 7


@given(raw=st.lists(padded, min_size=1, max_size=40))
def test_normalize_symbols_a_list_seen_before_gets_the_same_answer_in_a_list_of_its_own(raw: list[str]) -> None:
    # Answers for lists seen before are remembered; the caller may still change what it gets.
    first, invalid = normalize_symbols(raw, max_batch=50)
    first.append("CHANGED")
    again, invalid_again = normalize_symbols(list(raw), max_batch=50)
    assert again == first[:-1] and "CHANGED" not in again
    assert set(invalid_again) == set(invalid)
