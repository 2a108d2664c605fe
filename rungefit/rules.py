"""What a setting or a number must be, written once: the Rule of each TrainConfig field (config.py
lists them) and the one rule for numbers, used wherever a number is typed or read."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rungefit.errors import UsageError, suggest

# The one rule for a number typed or read anywhere (options, --data cells, predict's input, formula
# literals; JSON's own grammar is this rule): int() and float() also take other scripts' digits
# ('１', '٣', '𝟏') and underscores ('1_0'), which would make '１,2' a domain and '1_000' a thousand.
NUMBER_RULE = "numbers are written in ASCII digits, without underscores"


def parse_number(text: str, *, whole: bool = False) -> float | int:
    """The number `text` spells: float()'s syntax (int()'s with whole) in ASCII without
    underscores, per NUMBER_RULE; ValueError for anything else."""
    if not isinstance(text, str) or not text.isascii() or "_" in text:
        raise ValueError(f"not a number: {text!r}; {NUMBER_RULE}")
    return int(text) if whole else float(text)


@dataclass(frozen=True)
class Rule:
    """What a TrainConfig field must be: `accepts` tells, `wanted` says it in words, `option` is the
    CLI option that sets it ("" for none). TrainConfig.validate applies every rule, for the Python
    API and for a run's config.json alike (runs/format.py), so that each is written once."""

    wanted: str
    accepts: Callable[[Any], bool]
    option: str = ""
    choices: tuple[str, ...] = ()  # for a choice: the closest is suggested

    def check(self, name: str, value: Any) -> None:
        if not self.accepts(value):
            label = f"{self.option} ({name})" if self.option else name
            raise UsageError(suggest(f"{label} must be {self.wanted}, got {described(value)}", value, self.choices))


def _short(value: Any) -> bool:
    """A value whose repr is short: a bool, a float, None, an int below 1e30, a string of ≤ 40 characters."""
    return type(value) in (bool, float, type(None)) or (type(value) is int and abs(value) < 10**30) or (isinstance(value, str) and len(value) <= 40)


def described(value: Any) -> str:
    """A value for a message: short, on one line, with its type (never the whole of a large one)."""
    if isinstance(value, str) and len(value) > 40:
        text = repr(value[:39] + "…")
    elif _short(value) or (isinstance(value, (list, tuple)) and len(value) <= 8 and all(map(_short, value))):
        text = repr(value)
    elif isinstance(value, (list, tuple, dict)):
        text = f"{len(value)} entries"
    else:
        text = "an integer beyond 1e30" if type(value) is int else "a value"
    return f"{text} ({type(value).__name__})"


def is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def whole_in(lo: int, hi: int, option: str = "") -> Rule:
    return Rule(f"a whole number in {lo}…{hi}", lambda v: type(v) is int and lo <= v <= hi, option)  # not a bool: true is no count


def fraction(option: str) -> Rule:
    return Rule("a number strictly between 0 and 1", lambda v: is_real(v) and 0 < v < 1, option)


def positive(option: str = "") -> Rule:
    return Rule("a positive finite number", lambda v: is_real(v) and v > 0, option)


def one_of(choices: tuple[str, ...], option: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices, option, choices)


def text_of(wanted: str, most: int, option: str) -> Rule:
    return Rule(f"{wanted} of at most {most} characters", lambda v: isinstance(v, str) and len(v) <= most, option)


def pair_of(value: Any, item: Callable[[Any], bool]) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(item(v) for v in value)
