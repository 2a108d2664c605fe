"""The schema checks: exact types, ranges, finite numbers, and the path of the field at fault."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from rungefit.runs.schema import (
    SchemaError,
    array,
    equal_to,
    figure,
    integer,
    json_value,
    number,
    optional,
    record,
    shown,
    text,
)


@pytest.mark.parametrize("value", [True, "1", 1.0, None, [1], 11, -1])
def test_an_integer_is_a_json_integer_in_range_and_nothing_else(value):
    with pytest.raises(SchemaError, match="must be an integer in 0…10"):
        integer(0, 10)(value, "n")
    assert integer(0, 10)(7, "n") == 7


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1e-3", True, 10**400, 0, -1e-3])
def test_a_number_is_finite_and_in_range(value):
    with pytest.raises(SchemaError, match="'lr' must be a finite number above 0"):
        number(positive=True)(value, "lr")
    assert number(positive=True)(3, "lr") == 3.0 and isinstance(number()(3, "lr"), float)


def test_a_figure_may_be_non_finite_but_never_negative_or_text():
    check = figure()
    assert math.isnan(check(None, "mse")) and math.isnan(check(math.nan, "mse"))
    assert check(math.inf, "mse") == math.inf and check(10**400, "mse") == math.inf and check(0, "mse") == 0.0
    for bad in (-1.0, "0.1", True):
        with pytest.raises(SchemaError, match="'mse' must be a number ≥ 0 or null"):
            check(bad, "mse")


def test_records_name_the_path_of_the_field_at_fault():
    member = record({"seed": integer(0, 9), "val_mse": figure()})
    schema = record({"members": array(member, min_length=1, max_length=4), "note": optional(text(max_length=5))})
    assert schema({"members": [{"seed": 1, "val_mse": None}], "extra": "kept"}, "")["extra"] == "kept"
    cases = [
        ({"members": [{"seed": 1, "val_mse": 0.1}, {"seed": "2", "val_mse": 0.1}]}, "'members[1].seed' must be an integer"),
        ({"members": [{"seed": 1}]}, "'members[0].val_mse' is missing"),
        ({"members": []}, "'members' must have 1…4 entries"),
        ({"members": [{"seed": 1, "val_mse": 0}], "note": "too long"}, "'note' must be a string of at most 5"),
        ([], "'(the whole document)' must be an object"),
    ]
    for document, message in cases:
        with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            schema(document, "")


def test_an_exact_record_refuses_entries_it_does_not_know():
    with pytest.raises(SchemaError, match="unexpected entries 'b'"):
        record({"a": integer()}, exact=True)({"a": 1, "b": 2}, "state")


def test_equal_to_takes_the_value_of_the_same_type_only():
    check = equal_to(1, "the format")
    assert check(1, "format") == 1
    for bad in (True, 1.0, "1", 2):
        with pytest.raises(SchemaError, match="'format' must be 1 \\(the format\\)"):
            check(bad, "format")


def test_carried_json_may_not_nest_deeper_than_its_bound():
    deep = [[[[1]]]]
    assert json_value(4)(deep, "lr_auto") is deep
    with pytest.raises(SchemaError, match="nested more than 3 levels"):
        json_value(3)({"a": deep}, "lr_auto")


def shared_nest(levels: int, pair=list):
    """[a, a] (or (a, a)) nested `levels` deep: a few objects in memory, 2**levels when expanded."""
    value = pair([0])
    for _ in range(levels):
        value = pair([value, value])
    return value


@pytest.mark.parametrize("pair", [list, tuple])
def test_a_value_is_shown_from_its_start_only_whatever_it_repeats(pair):
    value = shared_nest(20, pair)
    tracemalloc.start()
    try:
        text = shown(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10  # its whole repr would be megabytes
    opening, closing = ("[", "]") if pair is list else ("(", ")")
    assert text.startswith(opening * 4) and text.endswith(f"… ({pair.__name__})") and len(text) <= 40 + len(f" ({pair.__name__})")
    assert shown(shared_nest(60, pair)).endswith(f"… ({pair.__name__})")  # 2**60 entries, expanded


@pytest.mark.parametrize(
    "value, text",
    [
        ({"a": 1, "b": [1, (2,)]}, "{'a': 1, 'b': [1, (2,)]} (dict)"),
        ((), "() (tuple)"),
        ("x" * 100, "'" + "x" * 38 + "… (str)"),
        (10**5000, "<an integer of 16610 bits> (int)"),
        (-(2**64), "-18446744073709551616 (int)"),
        ({3}, "{3} (set)"),
    ],
    ids=["dict", "empty tuple", "long string", "long integer", "integer", "set"],
)
def test_shown_is_the_start_of_the_repr(value, text):
    assert shown(value) == text


def test_a_record_refuses_a_key_that_is_not_a_string_without_expanding_it():
    key = shared_nest(24, tuple)  # hashing or printing it in full: 2**24 tuples
    with pytest.raises(SchemaError, match=r"'state' has a key that is not a string: \(\(\(\(…"):
        record({"a": integer()})({**{"a": 1}, key: 1}, "state")
