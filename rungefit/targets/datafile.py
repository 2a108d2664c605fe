"""Data files for --data: a CSV of two numeric columns x,y, read as untrusted input and
remembered by its SHA-256 (a run keeps a copy of its points as DATA_FILE)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rungefit.config import MAX_DATA_BYTES
from rungefit.errors import UsageError

DATA_FILE = "data.csv"  # a data run's copy of its points, in the run directory


@dataclass(frozen=True, eq=False)
class PointsFile:
    """The points of a --data file: its bytes as read, their SHA-256, and x, y as float64 [N]."""

    raw: bytes
    sha256: str
    x: np.ndarray
    y: np.ndarray


def read_points(path, expected_sha256: str | None = None) -> PointsFile:
    """Read a CSV of two numeric columns x,y (a header line is allowed); a UsageError for anything
    else, or when `expected_sha256` is given and the bytes do not match it."""
    path = Path(path)
    label = f"--data {path}"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UsageError(f"{label} is not a file")
        if size > MAX_DATA_BYTES:
            raise UsageError(f"{label} is {size} bytes; a data file may have at most {MAX_DATA_BYTES}")
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{label}: cannot read it ({error.strerror})") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise UsageError(f"{label} does not match the SHA-256 the run recorded for its points")
    x, y = _parse_points(raw, label)
    return PointsFile(raw, sha256, x, y)


def _parse_points(raw: bytes, label: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not UTF-8 text; expected a CSV of two columns x,y") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise UsageError(f"{label} is empty; expected a CSV of two columns x,y")
    values = []
    for index, (number, line) in enumerate(rows):
        cells = [cell.strip() for cell in (line.split(",") if "," in line else line.split())]
        if len(cells) != 2:
            count = "one column" if len(cells) == 1 else f"{len(cells)} columns"
            raise UsageError(f"{label}, line {number}: {count}; expected two columns x,y")
        try:
            pair = (float(cells[0]), float(cells[1]))
        except ValueError:
            if index == 0:  # a header
                continue
            bad = next(cell for cell in cells if not is_number(cell))
            raise UsageError(f"{label}, line {number}: {bad[:20]!r} is not a number") from None
        if not all(math.isfinite(v) for v in pair):
            raise UsageError(f"{label}, line {number}: {line.strip()[:40]!r} has a NaN or infinite value")
        values.append(pair)
    if not values:
        raise UsageError(f"{label} has a header but no points")
    points = np.array(values, dtype=np.float64)
    return points[:, 0].copy(), points[:, 1].copy()


def is_number(cell: str) -> bool:
    """Whether float() reads the text."""
    try:
        float(cell)
    except ValueError:
        return False
    return True
