"""The target: what the network fits. A preset, a formula in x (formula.py), or a data file
(datafile.py); its domain, the training points and their train/validation split, the test set,
and f' by autograd. The domain itself is domain.py's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rungefit.config import (
    MAX_DATA_VALUE,
    MAX_FORMULA_CHARS,
    MIN_DATA_SPREAD,
    PRESETS,
    TRAIN_RULES,
    validation_size,
)
from rungefit.errors import UsageError, suggest
from rungefit.targets.datafile import PointsFile
from rungefit.targets.domain import check_domain, check_grid, describe_domain
from rungefit.targets.formula import CONSTANTS, FUNCTIONS, KINK_TOLERANCE, Formula, parse_formula, short
from rungefit.targets.maps import Maps, spread

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------- splits


@dataclass(frozen=True)
class DataSplit:
    """Each member's training and validation points and their targets, [K, n] each, in the run's
    dtype: the targets are evaluated here, once, and never again while training."""

    x_train: torch.Tensor  # [K, n_train]
    x_val: torch.Tensor  # [K, n_val]
    y_train: torch.Tensor  # [K, n_train]
    y_val: torch.Tensor  # [K, n_val]

    def select(self, start: int, stop: int) -> DataSplit:
        """Members start…stop-1."""
        return DataSplit(*(part[start:stop] for part in (self.x_train, self.x_val, self.y_train, self.y_val)))


def _hold_out(x, y, points: int, val_fraction: float) -> DataSplit:
    """The last val_fraction of each row as the validation set."""
    n_train = points - validation_size(points, val_fraction)
    return DataSplit(x[:, :n_train].contiguous(), x[:, n_train:].contiguous(), y[:, :n_train].contiguous(), y[:, n_train:].contiguous())


# ---------------------------------------------------------------- the points in the run's dtype

# What the network trains on, in its standard coordinates and the run's dtype, must keep what it is
# to learn: rounding may move x and y by at most RESOLUTION of their spread (RMS), and errors of
# RESOLUTION × y's spread must square to normal numbers of the dtype, as must y: the loss is a
# mean of squares. With --scale none or x, y is in the data's units, and float32 may lose it.
RESOLUTION = 1e-3
SCALE_FIX = "--scale xy (the network then sees x on [-1, 1] and y of spread 1)"


def _fixes(maps: Maps, float32: bool, dtype_helps: bool = True) -> str:
    """What to use instead: --scale xy where y is in the data's units, --dtype float64 from float32."""
    fixes = [SCALE_FIX] if (maps.y_mean, maps.y_scale) == (0.0, 1.0) else []
    fixes += ["--dtype float64"] if float32 and dtype_helps else []
    return f"use {' or '.join(fixes)}" if fixes else "rescale the values"


def _rms(values) -> float:
    """The root mean square of a tensor, taken of values / max|values|: no square under- or overflows."""
    largest = float(values.abs().max())
    return largest * float((values / largest).square().mean().sqrt()) if 0 < largest < math.inf else largest


def check_rounding(exact, cast, what: str, maps: Maps) -> None:
    """UsageError when the points (x, y) cast to the run's dtype leave its range or move by more
    than RESOLUTION of their spread from exact, their float64 values (standard coordinates)."""
    import torch

    name = str(cast[0].dtype).removeprefix("torch.")
    for axis, values, rounded in zip("xy", exact, cast, strict=True):
        deviation, error = _rms(values - values.mean()), _rms(rounded.double() - values)
        if not bool(torch.isfinite(rounded).all()):
            problem = f"{axis} reaches {float(values.abs().max()):.3g}, beyond the largest {name}"
        elif error > RESOLUTION * deviation:
            problem = f"{axis} rounds by {error:.3g} (RMS), more than {RESOLUTION:g} of its spread {deviation:.3g}"
        else:
            continue
        raise UsageError(f"{what} cannot be represented in {name} as the network sees it: {problem}; {_fixes(maps, name == 'float32')}")


def _range_problem(y, dtype) -> str | None:
    """What keeps the squares of y (a float64 tensor) and of errors of RESOLUTION × its spread
    out of dtype's normal numbers, in words; None when nothing."""
    import torch

    info, name = torch.finfo(dtype), str(dtype).removeprefix("torch.")
    varies, largest = _rms(y - y.mean()), float(y.abs().max())
    if varies > 0 and (RESOLUTION * varies) ** 2 < info.tiny:  # (a constant is targets.resolve's to refuse)
        return f"y varies by {varies:.3g}, too little: errors a thousandth of that square to less than the smallest normal {name}, {info.tiny:.3g}"
    if largest**2 > info.max:
        return f"y reaches {largest:.3g}, whose square overflows {name}"
    return None


def check_range(y, dtype, what: str, maps: Maps) -> None:
    """UsageError when y (float64, as the network sees it) is too small or too large for the
    squares of the loss in the run's dtype."""
    import torch

    problem = _range_problem(y, dtype)
    if problem is not None:
        name = str(dtype).removeprefix("torch.")
        helps = _range_problem(y, torch.float64) is None
        raise UsageError(f"{what} cannot be represented in {name} as the network sees it: {problem}; {_fixes(maps, dtype == torch.float32, helps)}")


# ---------------------------------------------------------------- function targets


@dataclass(frozen=True)
class FunctionTarget:
    """A preset or a formula on a domain: f is known everywhere, and so is f' (by autograd)."""

    spec: str  # the preset name or the formula as typed
    formula: Formula
    domain: tuple[float, float]
    label: str  # f in a plot legend
    derivative_label: str
    known_kinks: tuple[float, ...] | None  # a preset's; None for a formula (detected on demand)
    maps: Maps = Maps()  # into the network's standard coordinates (resolve sets them from --scale)

    has_function = True
    x_label, y_label = "x", "y"  # the axes of figures and tables

    @property
    def name(self) -> str:
        return self.spec if self.spec in PRESETS else f"f(x) = {self.spec}"

    @property
    def description(self) -> str:
        """The target as its options give it, for messages."""
        return f"--target {short(self.spec)} on --domain {describe_domain(self.domain)}"

    def __call__(self, x):
        """f(x) on a NumPy array or a tensor, in its dtype."""
        return self.formula(x)

    def check_finite(self, x: np.ndarray, where: str) -> None:
        """A UsageError naming the first x where f is NaN or infinite."""
        values = self(x)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            what = "not a real number (NaN)" if np.isnan(values[first]) else "infinite"
            raise UsageError(
                f"--target {short(self.spec)} is {what} at x = {x[first]:.6g} ({int(bad.sum())} of the {x.size} "
                f"{where}); choose a formula that is finite on the whole --domain {describe_domain(self.domain)}"
            )

    def split(self, seeds, points: int, val_fraction: float, *, dtype=None, device="cpu") -> DataSplit:
        """`points` uniform points of the domain per seed, the last val_fraction of them held out.

        The points are i.i.d., so holding out the last ones is a uniformly random split."""
        # torch (for rng) only when points are drawn: a target is checked without it
        import torch

        from rungefit import rng

        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
        low, high = self.domain
        x_data = low + (high - low) * rng.uniform(seeds, rng.STREAM_DATA, points)
        x_exact = self.maps.x_in(x_data)
        x = x_exact.to(dtype or torch.float32)
        y_exact = self.maps.y_in(self(self.maps.x_out(x.double())))  # in float64 at the point the network sees
        # The maps' identity: f in the run's dtype, as runs before the maps computed it, bit for bit.
        y = self(x) if self.maps.identity else y_exact.to(x.dtype)
        finite = torch.isfinite(y)
        if not bool(finite.all()):
            raise UsageError(
                f"--target {short(self.spec)} is not finite at the training point x = {float(x[~finite][0]):.6g} in "
                f"{str(x.dtype).removeprefix('torch.')}; use --dtype float64, or a formula that stays finite there"
            )
        check_rounding((x_exact, y_exact), (x, y), self.description, self.maps)
        check_range(y_exact, x.dtype, self.description, self.maps)
        return _hold_out(x, y, points, val_fraction)

    def test_grid(self, n: int, *, dtype=None, device="cpu"):
        """n equally spaced points of the domain, both ends included, as a tensor."""
        return linspace(self.domain, n, dtype=dtype, device=device)

    def test_set(self, n: int, *, dtype=None, device="cpu"):
        """(x, f(x)) on the n-point test grid, tensors [n] in dtype (in data units)."""
        x = self.test_grid(n, dtype=dtype, device=device)
        return x, self(x)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """f'(x) by autograd in float64; NaN where f is not differentiable."""
        slope = self._autograd(x)
        slope[~self.differentiable(x, slope)] = np.nan
        return slope

    def differentiable(self, x: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
        """Elementwise: x is not at a kink, and autograd's f' there is finite."""
        x = np.asarray(x, dtype=np.float64)
        slope = self._autograd(x) if slope is None else slope
        tolerance = KINK_TOLERANCE * (self.domain[1] - self.domain[0])
        return np.isfinite(slope) & ~near_any(x, self.kinks, tolerance)

    def _autograd(self, x: np.ndarray) -> np.ndarray:
        import torch

        points = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        values = self(points)
        if not values.requires_grad:  # constant, or flat where it is defined (a step)
            return np.zeros(points.shape)
        (slope,) = torch.autograd.grad(values.sum(), points)
        return slope.numpy()

    @functools.cached_property
    def kinks(self) -> tuple[float, ...]:
        """Where f is not differentiable on the domain: a preset's known points; for a formula, the
        sign changes of the arguments of abs, sign, step, min and max, and the points of the check
        grid where autograd's f' is NaN or infinite."""
        low, high = self.domain
        if self.known_kinks is not None:
            return tuple(k for k in self.known_kinks if low <= k <= high)
        grid = check_grid(self.domain)
        found = [grid[~np.isfinite(self._autograd(grid))]]
        found += [_sign_changes(lambda v, node=node: Formula.evaluate(node, v), grid) for node in self.formula.kink_arguments()]
        return tuple(float(k) for k in np.unique(np.concatenate(found)))


def near_any(x: np.ndarray, points, tolerance: float) -> np.ndarray:
    """Elementwise: x lies within tolerance of one of `points`. Each x is compared with its two
    neighbours in the sorted points only (a binary search), so the cost grows with len(x) plus
    len(points), never with their product: a short formula may have hundreds of thousands of kinks."""
    points = np.sort(np.asarray(points, dtype=np.float64))
    if not points.size:
        return np.zeros(x.shape, dtype=bool)
    above = np.minimum(np.searchsorted(points, x), points.size - 1)
    below = np.maximum(above - 1, 0)
    return (np.abs(x - points[below]) <= tolerance) | (np.abs(x - points[above]) <= tolerance)


def _sign_changes(g, grid: np.ndarray, steps: int = 60) -> np.ndarray:
    """The points of a sorted grid where g is 0 between values of opposite sign, and each
    bracket [a, b] of the grid over which g changes sign, bisected `steps` times."""
    values = np.sign(g(grid))
    zeros = grid[1:-1][(values[1:-1] == 0) & (values[:-2] * values[2:] < 0)]
    brackets = np.flatnonzero(values[:-1] * values[1:] < 0)
    low, high, low_sign = grid[brackets], grid[brackets + 1], values[brackets]
    for _ in range(steps):
        middle = (low + high) / 2
        same = np.sign(g(middle)) == low_sign
        low, high = np.where(same, middle, low), np.where(same, high, middle)
    return np.concatenate([zeros, (low + high) / 2])


def function_target(spec: str, domain) -> FunctionTarget:
    """A preset or a formula on a domain, checked: parses, and finite on the domain's check grid."""
    domain = check_domain(domain)
    if not isinstance(spec, str) or len(spec) > MAX_FORMULA_CHARS:
        parse_formula(spec)  # says what is wrong
    preset = PRESETS.get(spec.strip())
    if preset is not None:
        target = FunctionTarget(spec.strip(), parse_formula(preset.formula), domain, preset.label, preset.derivative_label, preset.kinks)
    elif spec.strip().isidentifier() and spec.strip() not in ("x", *CONSTANTS, *FUNCTIONS):
        message = f"--target {short(spec)}: unknown preset; choose one of {', '.join(PRESETS)}, or give a formula in x such as 'exp(-x**2)*cos(5*x)'"
        raise UsageError(suggest(message, spec.strip(), PRESETS))
    else:
        target = FunctionTarget(spec, parse_formula(spec), domain, f"f(x) = {spec}", "f'(x)", None)
    grid = check_grid(domain)
    target.check_finite(grid, "points checked")
    _check_reportable(target(grid), target.description)
    return target


def _check_reportable(values: np.ndarray, what: str) -> None:
    """A UsageError unless f's figures, reported in float64 in f's units (MSEs are its squares),
    can be: f within ±MAX_DATA_VALUE and varying by at least MIN_DATA_SPREAD (or not at all: a
    constant is targets.resolve's to refuse), as a data column must."""
    largest, varies = float(np.max(np.abs(values))), spread(values)
    if largest > MAX_DATA_VALUE or 0 < varies < MIN_DATA_SPREAD:
        found = f"reaches {largest:.3g}" if largest > MAX_DATA_VALUE else f"varies by only {varies:.3g}"
        raise UsageError(
            f"{what}: f {found}; rungefit reports its figures (MSEs, in f's units squared) in float64, which holds them for "
            f"f within ±{MAX_DATA_VALUE:g} varying by at least {MIN_DATA_SPREAD:g}: rescale the formula (multiply it by a power of ten) or narrow --domain"
        )


# ---------------------------------------------------------------- data targets


def test_size(count: int, test_fraction: float) -> int:
    """How many of a data set's points are held out as the test set."""
    return round(count * test_fraction)


@dataclass(frozen=True, eq=False)
class DataTarget:
    """Measured points: no f and no f' beyond them. A fixed share of them (the same for every
    member, a function of the data alone) is the test set; each member draws its own
    train/validation split from the rest, as it draws its own points from a function."""

    points: PointsFile
    domain: tuple[float, float]
    test_fraction: float
    source: str  # the file as the user named it
    maps: Maps = Maps()  # into the network's standard coordinates (resolve sets them from --scale)

    has_function = False
    derivative_label = "f'"
    kinks = ()

    @property
    def name(self) -> str:
        return f"data {Path(self.source).name}"

    @property
    def label(self) -> str:
        return self.name

    @property
    def x_label(self) -> str:
        """The x column's name in the file's header, else "x" (figures, tables)."""
        return self.points.x_name or "x"

    @property
    def y_label(self) -> str:
        return self.points.y_name or "y"

    @functools.cached_property
    def _order(self) -> np.ndarray:
        """All indices in one seeded order, whatever the members' seeds: the first test_size are the test set."""
        return _orders([0], "STREAM_TEST", len(self.points.x))[0]

    @functools.cached_property
    def test_index(self) -> np.ndarray:
        return np.sort(self._order[: test_size(len(self.points.x), self.test_fraction)])

    @functools.cached_property
    def pool(self) -> np.ndarray:
        """The indices of the points left for training and validation."""
        return np.sort(self._order[test_size(len(self.points.x), self.test_fraction) :])

    def split(self, seeds, points: int, val_fraction: float, *, dtype=None, device="cpu") -> DataSplit:
        """Each seed's own order of the pool (drawn on the CPU, so the same on every device); the last val_fraction held out."""
        import torch

        pool = self.pool
        if points != len(pool):
            raise UsageError(f"--data leaves {len(pool)} points for training and validation; the config asks for {points}")
        index = pool[_orders(seeds, "STREAM_DATA", len(pool))]
        exact = tuple(torch.from_numpy(values).to(device=device) for values in (self.maps.x_in(self.points.x[index]), self.maps.y_in(self.points.y[index])))
        x, y = (values.to(dtype=dtype or torch.float32) for values in exact)
        check_rounding(exact, (x, y), f"--data {self.source}", self.maps)
        check_range(exact[1], x.dtype, f"--data {self.source}", self.maps)
        return _hold_out(x, y, points, val_fraction)

    def test_set(self, n: int | None = None, *, dtype=None, device="cpu"):
        """(x, y) of the held-out test points, tensors in dtype, ascending in x (n is the data's own)."""
        import torch

        index = self.test_index[np.argsort(self.points.x[self.test_index], kind="stable")]
        return tuple(torch.from_numpy(values[index]).to(dtype=dtype or torch.float32, device=device) for values in (self.points.x, self.points.y))

    def test_grid(self, n: int, *, dtype=None, device="cpu"):
        """n equally spaced points of the domain (for plots; the test set is the held-out points)."""
        return linspace(self.domain, n, dtype=dtype, device=device)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """There is no true derivative: NaN everywhere."""
        return np.full(np.shape(x), np.nan)

    def differentiable(self, x: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
        return np.ones(np.shape(x), dtype=bool)


def _orders(seeds, stream: str, n: int) -> np.ndarray:
    """[K, n] permutations of range(n), row k a function of seeds[k] and the rng stream of that
    name alone: the argsort of hashed uniforms, the same on every device and with every torch
    version (torch.randperm's need not be)."""
    # torch (for rng) only when points are drawn: a target is checked without it
    import torch

    from rungefit import rng

    keys = rng.uniform(torch.as_tensor(seeds, dtype=torch.int64).reshape(-1), getattr(rng, stream), n)
    return torch.argsort(keys, dim=1, stable=True).numpy()


def linspace(domain: tuple[float, float], n: int, *, dtype=None, device="cpu"):
    """n equally spaced points of the domain, both ends included, as a tensor in dtype."""
    import torch

    if n < 2:
        raise UsageError(f"the test grid needs at least 2 points, got {n}")
    low, high = domain
    return torch.linspace(low, high, n, dtype=torch.float64, device=device).to(dtype or torch.float32)


def data_target(points: PointsFile, domain, test_fraction: float, source: str) -> DataTarget:
    domain = check_domain(domain, MAX_DATA_VALUE)
    outside = (points.x < domain[0]) | (points.x > domain[1])
    if outside.any():
        raise UsageError(
            f"--data {source}: x = {points.x[outside][0]:g} lies outside --domain {describe_domain(domain)} "
            f"({int(outside.sum())} points); widen --domain, or drop it to use the data's range"
        )
    TRAIN_RULES["test_fraction"].check("test_fraction", test_fraction)
    return DataTarget(points, domain, test_fraction, source)
