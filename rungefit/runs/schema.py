"""Schemas for the files of a run: what each field must be, checked before anything uses it.

A file read back from a run directory is untrusted: it may be damaged, hand-edited or hostile. Each
file has a schema, and a value that does not fit is refused with a SchemaError naming the field
(`members[3].val_mse`). A check is a function (value, where) → value: it raises SchemaError, or
returns the value in the form the code uses (a JSON number as a float, an array as a list).

Types are exact: an integer field takes a JSON integer, not `true` or `"1"`; a number field takes
an integer or a float, finite unless it is a measured figure. A schema is a dict from field name
to check, so adding a field to a file is one line in its schema, for example in config.json:

    "target": optional(text(max_length=1000)),
    "domain": optional(array(number(), length=2)),

This module imports torch only inside the tensor check, which only a checkpoint needs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[Any, str], Any]


class SchemaError(ValueError):
    """A value that does not fit its schema; `where` is the path of the field."""

    def __init__(self, where: str, message: str):
        super().__init__(f"field {where or '(the whole document)'!r} {message}")
        self.where = where


# How deep into a value shown() looks: a message needs its start only.
SHOWN_DEPTH = 4
BRACKETS = {list: "[]", tuple: "()", set: "{}", frozenset: "{}", dict: "{}"}


def shown(value: Any, limit: int = 40) -> str:
    """A short description of a value for a message: the start of its repr on one line, cut, and
    its type. Only as much of the value is looked at as the message shows: a value from a damaged
    file may be nested deeply, repeat one object so often that its whole repr would not fit in
    memory, or be an integer too long to print."""
    text = " ".join(_start(value, limit, SHOWN_DEPTH).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{text} ({type(value).__name__})"


def _start(value: Any, budget: int, depth: int) -> str:
    """The start of repr(value): at least `budget` characters of it where it has them (or the whole),
    with containers below `depth` levels shown as …; built from at most about `budget` entries a level."""
    kind = next((base for base in BRACKETS if isinstance(value, base)), None)
    if kind is None:
        return _scalar(value, budget)
    if depth == 0:
        return "…"
    entries = value.items() if kind is dict else value
    parts, used = [], 0
    for entry in entries:
        if used > budget:
            parts.append("…")
            break
        if kind is dict:
            key = _start(entry[0], budget - used, depth - 1)
            part = f"{key}: {_start(entry[1], budget - used - len(key), depth - 1)}"
        else:
            part = _start(entry, budget - used, depth - 1)
        parts.append(part)
        used += len(part) + 2
    opening, closing = BRACKETS[kind]
    return opening + ", ".join(parts) + ("," if kind is tuple and len(parts) == 1 else "") + closing


def _scalar(value: Any, budget: int) -> str:
    """The start of repr(value) for anything but a container, made from no more of it than needed."""
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value[: budget + 1])
    if exact_int(value) and value.bit_length() > 4 * budget:  # its digits would outrun the budget
        return f"{'-' if value < 0 else ''}<an integer of {value.bit_length()} bits>"
    return repr(value)


def exact_int(value: Any) -> bool:
    """An int that is not a bool (JSON's true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}…{hi}"
    if lo is not None:
        return f" ≥ {lo}"
    return "" if hi is None else f" ≤ {hi}"


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    """A JSON integer (not a boolean) in lo…hi."""

    def check(value: Any, where: str) -> int:
        if not exact_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SchemaError(where, f"must be an integer{_range_text(lo, hi)}, got {shown(value)}")
        return value

    return check


def number(lo: float | None = None, hi: float | None = None, *, positive: bool = False) -> Check:
    """A finite JSON number in lo…hi (above 0 with positive), as a float."""
    wanted = "a finite number" + (" above 0" if positive else _range_text(lo, hi))

    def check(value: Any, where: str) -> float:
        if not (exact_int(value) or isinstance(value, float)):
            raise SchemaError(where, f"must be {wanted}, got {shown(value)}")
        try:
            result = float(value)
        except OverflowError:
            raise SchemaError(where, f"must be {wanted}, got an integer too large for a float") from None
        if not math.isfinite(result) or (positive and result <= 0) or (lo is not None and result < lo) or (hi is not None and result > hi):
            raise SchemaError(where, f"must be {wanted}, got {shown(value)}")
        return result

    return check


def figure() -> Check:
    """A measured figure such as an MSE: a number ≥ 0, where null, NaN and ∞ stand for a
    non-finite result (a diverged member); returned as a float, NaN for null."""

    def check(value: Any, where: str) -> float:
        if value is None:
            return math.nan
        if not (exact_int(value) or isinstance(value, float)):
            raise SchemaError(where, f"must be a number ≥ 0 or null, got {shown(value)}")
        try:
            result = float(value)
        except OverflowError:
            return math.inf
        if result < 0:
            raise SchemaError(where, f"must be a number ≥ 0 or null, got {shown(value)}")
        return result

    return check


def text(*, choices: Sequence[str] | None = None, max_length: int = 200) -> Check:
    """A string of at most max_length characters, one of choices if given."""

    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > max_length:
            raise SchemaError(where, f"must be a string of at most {max_length} characters, got {shown(value)}")
        if choices is not None and value not in choices:
            raise SchemaError(where, f"must be one of {', '.join(choices)}, got {shown(value)}")
        return value

    return check


def equal_to(expected: Any, source: str) -> Check:
    """Exactly `expected`, of its type, as `source` fixes it."""

    def check(value: Any, where: str) -> Any:
        if type(value) is not type(expected) or value != expected:
            raise SchemaError(where, f"must be {expected!r} ({source}), got {shown(value)}")
        return value

    return check


def array(item: Check, *, length: int | None = None, min_length: int = 0, max_length: int | None = None) -> Check:
    """A JSON array of `length` entries (else min_length…max_length) that each pass item, as a list."""
    if length is not None:
        min_length = max_length = length
    size = f"exactly {length}" if length is not None else f"{min_length}…{max_length}"

    def check(value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise SchemaError(where, f"must be an array of {size} entries, got {shown(value)}")
        if not min_length <= len(value) <= max_length:
            raise SchemaError(where, f"must have {size} entries, got {len(value)}")
        return [item(entry, f"{where}[{index}]") for index, entry in enumerate(value)]

    return check


class OptionalField:
    """A field that may be missing; when present it must pass `check`."""

    def __init__(self, check: Check):
        self.check = check

    def __call__(self, value: Any, where: str) -> Any:
        return self.check(value, where)


def optional(check: Check) -> OptionalField:
    return OptionalField(check)


def record(fields: dict[str, Check], *, exact: bool = False) -> Check:
    """A JSON object (a dict) whose named fields pass their checks. Other keys are kept as they
    are (newer versions may add fields), or refused when exact."""

    def check(value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be an object, got {shown(value)}")
        # Only strings name fields (as in JSON); any other key, such as a deeply nested tuple, is
        # refused before anything hashes or compares it again.
        odd = next((key for key in value if not isinstance(key, str)), None)
        if odd is not None:
            raise SchemaError(where, f"has a key that is not a string: {shown(odd)}")
        result = dict(value)
        for name, field_check in fields.items():
            path = f"{where}.{name}" if where else name
            if name in value:
                result[name] = field_check(value[name], path)
            elif not isinstance(field_check, OptionalField):
                raise SchemaError(path, "is missing")
        extra = heapq.nsmallest(5, (key for key in value if key not in fields)) if exact else []
        if extra:
            raise SchemaError(where, f"has unexpected entries {', '.join(repr(key[:40]) for key in extra)}")
        return result

    return check


def json_value(max_depth: int) -> Check:
    """Any JSON value nested at most max_depth deep: for data that is only carried along, which
    must still be writable again (deep nesting would overflow the encoder's recursion)."""

    def depth(value: Any, where: str, level: int) -> None:
        if level > max_depth:
            raise SchemaError(where, f"is nested more than {max_depth} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            depth(child, where, level + 1)

    def check(value: Any, where: str) -> Any:
        depth(value, where, 0)
        return value

    return check


def tensor(dtype, shape: tuple[int, ...], *, finite: bool) -> Check:
    """A dense CPU torch tensor of this dtype and shape; with finite, holding no NaN or ±∞."""

    def check(value: Any, where: str):
        import torch

        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.device.type != "cpu":
            raise SchemaError(where, f"must be a dense CPU tensor, got {shown(value)}")
        if value.dtype != dtype or tuple(value.shape) != tuple(shape):
            raise SchemaError(where, f"must be a {dtype} tensor of shape {list(shape)}, got {value.dtype} {list(value.shape)}")
        if finite and not bool(torch.isfinite(value).all()):
            raise SchemaError(where, "holds non-finite values (NaN or ±inf), which no saved run has")
        return value

    return check


def optional_or_none(check: Check) -> Check:
    """A value that passes `check`, or None."""
    return lambda value, where: None if value is None else check(value, where)
