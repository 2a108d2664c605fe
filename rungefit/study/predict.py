"""`rungefit predict`: x values from a file or a pipe in, the member's y (and dy/dx) as CSV out;
for the ensemble of a stacked data run, its mean y and the band's spread.

The input is read line by line as it comes, within a bound on lines and on a line's length, and
checked in full before anything is computed, so a bad line anywhere means no output at all. y is
computed exactly as `eval --x` computes it (evaluate.member_prediction, in the run's dtype);
dy/dx is autograd's, in float64, as `rungefit grad` computes it. The ensemble's mean and spread
are training.band's (its docstring says how the spread is estimated), and its dy/dx is that of
the mean: the mean of the members' derivatives.
"""

from __future__ import annotations

import itertools
import math
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from rungefit.errors import UsageError
from rungefit.net.model import StackedMLP
from rungefit.rules import NUMBER_RULE, parse_number
from rungefit.study.evaluate import member_prediction
from rungefit.study.grad import as_float64, data_unit_autograd
from rungefit.targets import Target, is_number
from rungefit.training.band import band

# The most lines an input may have (blank ones and a header count), and bytes a line may have:
# read line by line, so that an endless or huge input (/dev/zero, a sparse file) is refused at
# the limit instead of being held in memory.
MAX_LINES = 10_000_000
MAX_LINE_CHARS = 10_000
# Points per forward pass: bounds the memory of the pre-activations, [K, chunk, width] per layer.
CHUNK = 1 << 16
# A first line whose first field is a name like this is a CSV header, not a value.
HEADER = re.compile(r"[A-Za-z_][\w .()/-]*")


def read_x(stream: BinaryIO, source: str) -> np.ndarray:
    """The x values of a binary stream as float64 [n]: one number per line, or the first column
    of a CSV (comma- or tab-separated, an optional header line first). Blank lines are skipped.
    Read as it comes: a line that is not a finite number, a line too long or one line too many
    raises UsageError naming `source` and the line number as soon as it is read."""
    values = array("d")  # 8 bytes a value, as it is read
    for number, raw in enumerate(_lines(stream, source), start=1):
        field = _first_field(raw, number, source)
        if not field or (number == 1 and HEADER.fullmatch(field) and not is_number(field)):
            continue
        try:
            value = parse_number(field)
        except ValueError:
            raise UsageError(f"{source}, line {number}: {field[:40]!r} is not a number ({NUMBER_RULE})") from None
        if not math.isfinite(value):
            raise UsageError(f"{source}, line {number}: {field[:40]!r} is not a finite number")
        values.append(value)
    if not values:
        raise UsageError(f"{source}: no x values (expected one number per line, or a CSV whose first column holds them)")
    return np.array(values, dtype=np.float64)


def _lines(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The lines of `stream` without their line endings, each read no further than one byte past
    MAX_LINE_CHARS: a longer line, or more than MAX_LINES lines, is a UsageError at that line."""
    for number in itertools.count(1):
        raw = stream.readline(MAX_LINE_CHARS + 2)  # room for the line's own "\r\n"
        if not raw:
            return
        if number > MAX_LINES:
            raise UsageError(f"{source}: more than {MAX_LINES} lines; split the input")
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"{source}, line {number}: longer than {MAX_LINE_CHARS} characters; one x value per line")
        yield line


def _first_field(raw: bytes, number: int, source: str) -> str:
    try:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{source}, line {number}: not UTF-8 text") from None
    return re.split(r"[,\t]", line, maxsplit=1)[0].strip().strip('"').strip()


@dataclass(frozen=True)
class Predictions:
    """The member's output at each x, and its derivative when asked for (float64 arrays [n]); for
    an ensemble, y is the members' mean and spread the band's (None for one member)."""

    x: np.ndarray
    y: np.ndarray
    dydx: np.ndarray | None
    spread: np.ndarray | None = None

    def columns(self) -> dict[str, np.ndarray]:
        named = {"x": self.x, "y": self.y, "spread": self.spread, "dydx": self.dydx}
        return {name: column for name, column in named.items() if column is not None}

    def csv(self) -> str:
        """x,y (spread) (dydx) with a header, every float written so that it reads back exactly."""
        columns = self.columns()
        rows = (",".join(map(repr, row)) for row in zip(*(column.tolist() for column in columns.values()), strict=True))
        return "\n".join([",".join(columns), *rows]) + "\n"

    def as_dict(self) -> dict:
        return {name: column.tolist() for name, column in self.columns().items()}


def predict(model: StackedMLP, target: Target, member: int, x: np.ndarray, with_grad: bool = False) -> Predictions:
    """Member `member`'s y at x [n] (as eval computes it, in data units), and with_grad its dy/dx
    by autograd of the data-unit function (as grad computes it)."""
    y = np.concatenate([member_prediction(model, target, member, part) for part in _chunks(x)])
    dydx = _mean_slope(as_float64(model, member), target, x) if with_grad else None
    return Predictions(x=x, y=y, dydx=dydx)


def predict_ensemble(model: StackedMLP, target: Target, val_mse, x: np.ndarray, with_grad: bool = False) -> tuple[Predictions, float, int]:
    """(the ensemble's mean y and spread at x [n] (training.band.band), and with_grad dy/dx of the
    mean; the noise level; how many members were averaged)."""
    result = band(model, target, val_mse, x)
    dydx = None
    if with_grad:
        dydx = _mean_slope(model.select(list(result.members)).to(dtype=torch.float64, device="cpu"), target, x)
    return Predictions(x=x, y=result.mean, dydx=dydx, spread=result.spread), result.noise, len(result.members)


def _mean_slope(stack: StackedMLP, target: Target, x: np.ndarray) -> np.ndarray:
    """dy/dx at x [n] of the mean of a float64 stack's members, in data units, CHUNK points at a time."""
    return np.concatenate([
        data_unit_autograd(stack, target.maps, torch.as_tensor(part).reshape(1, -1).expand(stack.members, -1)).mean(dim=0).numpy()
        for part in _chunks(x)
    ])


def _chunks(x: np.ndarray) -> list[np.ndarray]:
    return np.array_split(x, max(1, math.ceil(len(x) / CHUNK)))
