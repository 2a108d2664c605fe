"""The domain [A, B]: --domain parsed and checked, and the dense grid a target is checked on.

Torch-free: the CLI checks --domain before it loads anything heavy.
"""

from __future__ import annotations

import math

import numpy as np

from rungefit.config import CHECK_POINTS, MAX_DOMAIN
from rungefit.errors import UsageError
from rungefit.rules import NUMBER_RULE, parse_number


def parse_domain(text: str, limit: float = MAX_DOMAIN) -> tuple[float, float]:
    """--domain "A,B" as a checked (A, B): check_domain's rules, the ends within ±limit."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        domain = (parse_number(parts[0]), parse_number(parts[1]))
    except ValueError:
        raise UsageError(f"--domain {text!r}: expected two numbers A,B with A < B, e.g. -1,1 or 0,3 ({NUMBER_RULE})") from None
    return check_domain(domain, limit)


def check_domain(domain, limit: float = MAX_DOMAIN) -> tuple[float, float]:
    """The domain as two floats, or a UsageError: finite, A < B, within ±limit, not too narrow.

    A formula's domain is held to MAX_DOMAIN; a data set's range only to MAX_DATA_VALUE (calendar
    years and x in Hz are ordinary measurements)."""
    try:
        low, high = (float(v) for v in domain)
        if any(isinstance(v, (bool, str)) for v in domain):
            raise TypeError
    except (TypeError, ValueError):
        raise UsageError(f"--domain must be two numbers A,B, got {str(domain)[:40]}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UsageError(f"--domain {low:g},{high:g}: both ends must be finite")
    if not low < high:
        raise UsageError(f"--domain {low:g},{high:g}: A must be below B")
    if max(abs(low), abs(high)) > limit:
        raise UsageError(f"--domain {low:g},{high:g}: the ends must lie within ±{limit:g}")
    if high - low < 1e-9 * max(1.0, abs(low), abs(high)):
        raise UsageError(f"--domain {low:g},{high:g} is too narrow for float64 points to resolve")
    return low, high


def describe_domain(domain: tuple[float, float]) -> str:
    """[A, B] in 6 digits, or in full where those would not tell the ends apart ([100000, 100000.001])."""
    ends = [f"{end:g}" for end in domain]
    return f"[{', '.join(ends if ends[0] != ends[1] else map(repr, domain))}]"


def check_grid(domain: tuple[float, float]) -> np.ndarray:
    """CHECK_POINTS equally spaced points of the domain, its ends, and 0 when inside; sorted."""
    low, high = domain
    extra = [0.0] if low < 0.0 < high else []
    return np.unique(np.concatenate([np.linspace(low, high, CHECK_POINTS), extra]))
