"""Data files for --data: a CSV of two numeric columns x,y (a header names them), read as
untrusted input and remembered by its SHA-256 (a run keeps a copy of its points as DATA_FILE)."""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rungefit.config import MAX_DATA_BYTES, MAX_DATA_VALUE, MIN_DATA_SPREAD
from rungefit.errors import UsageError
from rungefit.rules import NUMBER_RULE, parse_number
from rungefit.targets.maps import spread


@dataclass(frozen=True, eq=False)
class PointsFile:
    """The points of a --data file: its bytes as read, their SHA-256, x, y as float64 [N], and the
    names its header gives the two columns (None without a header, or for an empty cell)."""

    raw: bytes
    sha256: str
    x: np.ndarray
    y: np.ndarray
    x_name: str | None = None
    y_name: str | None = None


def read_points(path, expected_sha256: str | None = None) -> PointsFile:
    """Read a CSV of two numeric columns x,y (a header line is allowed, a cell may be quoted); a
    UsageError for anything else, for values too large or too narrowly spread to scale, or when
    `expected_sha256` is given and the bytes do not match it."""
    path = Path(path)
    label = f"--data {path}"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UsageError(f"{label} is not a file")
        if size > MAX_DATA_BYTES:
            raise UsageError(f"{label} is {size} bytes; a data file may have at most {MAX_DATA_BYTES} ({MAX_DATA_BYTES // 2**20} MiB)")
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{label}: cannot read it ({error.strerror})") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise UsageError(f"{label} does not match the SHA-256 the run recorded for its points")
    return PointsFile(raw, sha256, *_parse_points(raw, label))


def _parse_points(raw: bytes, label: str) -> tuple[np.ndarray, np.ndarray, str | None, str | None]:
    """x, y and the header's names of the two columns (None without a header)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not UTF-8 text; expected a CSV of two columns x,y") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise UsageError(f"{label} is empty; expected a CSV of two columns x,y")
    values, lines, names = [], [], (None, None)
    for index, (number, line) in enumerate(rows):
        cells = _cells(line)
        if len(cells) != 2:
            raise UsageError(f"{label}, line {number}: {_column_count_advice(len(cells))}")
        try:
            pair = (parse_number(cells[0]), parse_number(cells[1]))
        except ValueError:
            if index == 0 and not any(map(_spelled_otherwise, cells)):  # a header
                names = (_name(cells[0]), _name(cells[1]))
                continue
            bad = next(cell for cell in cells if not is_number(cell))
            raise UsageError(f"{label}, line {number}: {bad[:20]!r} is not a number ({NUMBER_RULE})") from None
        if not all(math.isfinite(v) for v in pair):
            raise UsageError(f"{label}, line {number}: {line.strip()[:40]!r} has a NaN or infinite value")
        values.append(pair)
        lines.append(number)
    if not values:
        raise UsageError(f"{label} has a header but no points")
    points = np.array(values, dtype=np.float64)
    for column, (axis, name) in enumerate(zip("xy", names, strict=True)):
        _check_scalable(points[:, column], lines, label, axis if name is None else f"{axis} ({name})")
    return points[:, 0].copy(), points[:, 1].copy(), *names


def _cells(line: str) -> list[str]:
    """A line's cells, split at semicolons, else at commas (CSV quoting understood), else at
    whitespace, each stripped of blanks and of the double quotes around it: a quoted "0.1" is the
    number 0.1. Between semicolons a decimal comma is a decimal point ("1,5;2,25", as spreadsheets
    in many locales write CSV)."""
    if ";" in line:
        return [_decimal_point(_unquote(cell.strip())) for cell in next(csv.reader([line], delimiter=";", skipinitialspace=True))]
    if "," in line:
        cells = next(csv.reader([line], skipinitialspace=True))
    else:
        cells = line.split()
    return [_unquote(cell.strip()) for cell in cells]


DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+([eE][+-]?[0-9]+)?")


def _decimal_point(cell: str) -> str:
    return cell.replace(",", ".") if DECIMAL_COMMA.fullmatch(cell) else cell


def _column_count_advice(count: int) -> str:
    """What is wrong with a line of `count` cells, and what to do."""
    if count == 1:
        return "one column; expected two columns x,y, separated by a comma, a semicolon, a tab or spaces"
    return f"{count} columns; expected two columns x,y: write the two to fit to a file of their own (e.g. `cut -d, -f1,3`)"


def _unquote(cell: str) -> str:
    return cell[1:-1].strip() if len(cell) >= 2 and cell[0] == cell[-1] == '"' else cell


def _name(cell: str) -> str | None:
    """A header cell as a column name for labels: printable, single-spaced, at most
    MAX_NAME_CHARS; None when nothing is left."""
    name = " ".join("".join(c if c.isprintable() else " " for c in cell).split())
    return name[:MAX_NAME_CHARS] or None


MAX_NAME_CHARS = 40  # of a column name in a figure or a table


def _check_scalable(values: np.ndarray, lines: list[int], label: str, what: str) -> None:
    """A UsageError unless the column's mean and variance are finite and, where it varies at all,
    its spread is not lost to rounding: the network sees the data scaled by them."""
    worst = int(np.argmax(np.abs(values)))
    if abs(values[worst]) > MAX_DATA_VALUE:
        raise UsageError(
            f"{label}, line {lines[worst]}: {what} = {values[worst]:g} is beyond ±{MAX_DATA_VALUE:g}, the largest magnitude "
            "a data column may have (its mean and variance must be finite in float64); rescale the column, e.g. to other units"
        )
    deviation = spread(values)
    if np.ptp(values) > 0 and not deviation >= MIN_DATA_SPREAD:
        raise UsageError(
            f"{label}: {what} runs from {values.min():g} to {values.max():g}, a standard deviation of {deviation:.3g}, "
            f"below {MIN_DATA_SPREAD:g}, the smallest a varying data column may have; rescale the column, e.g. to other units"
        )


def is_number(cell: str) -> bool:
    """Whether the text is a number by the one rule for numbers (rules.parse_number)."""
    try:
        parse_number(cell)
    except ValueError:
        return False
    return True


def _spelled_otherwise(cell: str) -> bool:
    """A number in other digits or with underscores ('１', '1_0'): float() reads it, the rule does
    not. Such a first line is refused, not taken for a header."""
    try:
        float(cell)
    except ValueError:
        return False
    return not is_number(cell)
