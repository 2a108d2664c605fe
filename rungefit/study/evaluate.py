"""Metrics of a trained stack on the test set or given points, and classical baselines for context.

The network's figures come from training's grid_errors, so `eval` on a saved run reproduces what
`train` reported. For a function the test set is
an equally spaced grid of the domain, and the baselines (interpolants at equispaced and Chebyshev
nodes, cubic splines) are built from f at nodes of the domain; for data the test set is the
held-out share, and the baselines are least-squares fits of the member's training points (Chebyshev
series, a smoothing spline). All are scored on the same points. SciPy is imported only when a
baseline is built, because `train` imports this module too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from numpy.polynomial.chebyshev import Chebyshev

from rungefit.config import DEFAULT_DOMAIN, PLOT_POINTS, TrainConfig, parameter_count
from rungefit.errors import UsageError
from rungefit.net.model import StackedMLP
from rungefit.targets import FunctionTarget, Target
from rungefit.training.band import WIDTH, band
from rungefit.training.metrics import data_predictions, grid_errors, seen_x, standard_x


@dataclass(frozen=True)
class FitCurves:
    """What fit.png draws: f (None for data) and every member's prediction [K, n] on a fine grid;
    for data, its points by role and every member's predictions there, and the columns' names; for
    a data stack given its validation MSEs, the ensemble's ±2-spread band on the grid (lower, upper)."""

    x: np.ndarray
    target: np.ndarray | None
    predictions: np.ndarray
    label: str
    # data: role ("training", "validation": member 0's split; "test") -> (x, y, predictions [K, m])
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None
    x_label: str = "x"
    y_label: str = "y"
    band: tuple[np.ndarray, np.ndarray] | None = None


def fit_curves(model: StackedMLP, target: Target, n: int = PLOT_POINTS, config: TrainConfig | None = None, val_mse=None) -> FitCurves:
    """The curves of fit.png, in data units. For data, `config` draws member 0's training and
    validation split (each member has its own; without it the pool is one role, "training and
    validation"), and val_mse (the members' validation MSEs, as in the summary) a stack's band
    (training.band)."""
    x = standard_x(target, target.test_grid(n, dtype=torch.float64), model)
    predictions = data_predictions(model, target, x).cpu().numpy()
    grid = seen_x(target, x[0]).cpu().numpy()
    if target.has_function:
        return FitCurves(grid, target(torch.from_numpy(grid)).numpy(), predictions, target.label, None)
    if config is None:
        roles = {"training and validation": (target.points.x[target.pool], target.points.y[target.pool])}
    else:
        split = target.split(config.seeds[:1], config.points, config.val_fraction, dtype=torch.float64)
        maps = target.maps
        roles = {
            "training": (maps.x_out(split.x_train[0]).numpy(), maps.y_out(split.y_train[0]).numpy()),
            "validation": (maps.x_out(split.x_val[0]).numpy(), maps.y_out(split.y_val[0]).numpy()),
        }
    roles["test"] = test_points(target, 0, torch.float64)
    points = {role: (px, py, data_predictions(model, target, standard_x(target, torch.as_tensor(px), model)).cpu().numpy()) for role, (px, py) in roles.items()}
    shaded = None
    if val_mse is not None and has_band(model, target):
        around = band(model, target, val_mse, grid)
        shaded = (around.lower, around.upper)
    return FitCurves(grid, None, predictions, target.label, points, target.x_label, target.y_label, shaded)


def has_band(model: StackedMLP, target: Target) -> bool:
    """Whether a run's ensemble gets a band in figures and eval: a data run with several members."""
    return model.members > 1 and not target.has_function


def band_coverage(model: StackedMLP, target: Target, val_mse) -> dict:
    """How the ensemble's band (training.band) does on the held-out test points: the share within
    ±2 spread of the mean, the mean spread, the noise level, and how many members and points."""
    x, y = (values.numpy() for values in target.test_set(dtype=torch.float64))
    around = band(model, target, val_mse, x)
    return {
        "members": len(around.members), "points": len(x), "width": WIDTH, "coverage": around.coverage(y),
        "mean_spread": float(np.mean(around.spread)), "noise": around.noise,
    }


# Where the Runge phenomenon lives: farther than END_REGION of the half-width from the domain's
# centre is "near the ends" (|x| > 0.8 on [-1, 1]), the rest the middle.
END_REGION = 0.8
BASELINE_DEGREES = (10, 20, 40)


def near_the_ends(x: np.ndarray, domain: tuple[float, float] = DEFAULT_DOMAIN) -> np.ndarray:
    low, high = domain
    return np.abs(x - (low + high) / 2) > END_REGION * ((high - low) / 2)


def region_texts(domain: tuple[float, float], x: str = "x") -> dict[str, str]:
    """How the ends and the middle read, e.g. "|x| > 0.8" and "|x| ≤ 0.8" on [-1, 1]; `x` is
    what x is called (a data file's column name)."""
    low, high = domain
    centre, radius = (low + high) / 2, END_REGION * (high - low) / 2
    distance = f"|{x}|" if centre == 0 else f"|{x} {'−' if centre > 0 else '+'} {abs(centre):.4g}|"
    return {"ends": f"{distance} > {radius:.4g}", "middle": f"{distance} ≤ {radius:.4g}"}


@dataclass(frozen=True)
class Scores:
    """How well one approximant fits f on a set of points."""

    name: str
    parameters: int
    mse: float
    rmse: float
    max_abs_error: float
    max_abs_error_at: float  # the x where |error| is largest
    ends_rmse: float  # near the ends (near_the_ends)
    ends_max_abs_error: float
    middle_rmse: float  # in the middle
    middle_max_abs_error: float


def score(name: str, parameters: int, x: np.ndarray, error: np.ndarray, domain: tuple[float, float] = DEFAULT_DOMAIN) -> Scores:
    """Scores from the errors approximant − f at points x (float64 arrays of one shape). Errors
    beyond 1e154 (a diverged network's) square past float64: the MSE and RMSE are then inf."""
    worst = int(np.argmax(np.abs(error)))
    ends = near_the_ends(x, domain)
    with np.errstate(over="ignore"):
        mse = float(np.mean(error**2))
    return Scores(
        name=name,
        parameters=parameters,
        mse=mse,
        rmse=math.sqrt(mse),
        max_abs_error=float(abs(error[worst])),
        max_abs_error_at=float(x[worst]),
        ends_rmse=_rms(error[ends]),
        ends_max_abs_error=_max_abs(error[ends]),
        middle_rmse=_rms(error[~ends]),
        middle_max_abs_error=_max_abs(error[~ends]),
    )


def _rms(error: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # inf beyond float64, as score's MSE
        return float(np.sqrt(np.mean(error**2))) if error.size else math.nan


def _max_abs(error: np.ndarray) -> float:
    return float(np.abs(error).max()) if error.size else math.nan


def member_prediction(model: StackedMLP, target: Target, member: int, x: np.ndarray) -> np.ndarray:
    """The member's prediction at data-unit x [n], computed as grid_errors does (the whole stack, in
    the run's dtype, through the target's maps), as a float64 array in data units."""
    inputs = standard_x(target, torch.as_tensor(np.asarray(x, dtype=np.float64)), model)
    return data_predictions(model, target, inputs)[member].cpu().numpy()


def network_scores(model: StackedMLP, target: Target, member: int, n: int) -> Scores:
    """The member's scores on the test set (the n-point grid for a function), all from grid_errors'
    float64 errors.

    The MSE is grid_errors' own number (torch's mean, which may round differently from NumPy's),
    so it equals the test MSE `train` reported, bit for bit.
    """
    x = test_x(target, n, model.dtype)
    exact = grid_errors(model, target, n)
    mse = float(exact.mse[member])
    scores = score("network", parameter_count(model.layers), x, exact.errors[member].cpu().numpy(), target.domain)
    return replace(scores, mse=mse, rmse=math.sqrt(mse))


def test_x(target: Target, n: int, dtype: torch.dtype) -> np.ndarray:
    """The test set's x as the network sees them (train's points, exactly), in float64 data units."""
    return seen_x(target, target.maps.x_in(target.test_set(n, dtype=torch.float64)[0]).to(dtype)).numpy()


def test_points(target: Target, n: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """test_x and f there, or the measured y, in float64."""
    x = test_x(target, n, dtype)
    if target.has_function:
        return x, target(x)
    return x, target.test_set(n, dtype=torch.float64)[1].numpy()


def equispaced_interpolant(target: FunctionTarget, degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The polynomial through f at degree+1 equally spaced nodes of the domain, evaluated in barycentric form.

    The barycentric form evaluates the interpolant stably, so its growth near the ends as the degree
    rises is the Runge phenomenon itself, not rounding in a monomial basis.
    """
    from scipy.interpolate import BarycentricInterpolator

    nodes = np.linspace(*target.domain, degree + 1)
    # SciPy orders the nodes at random to compute the weights; a fixed seed fixes the last bits, so
    # that ties such as the symmetric maxima at x = ±0.98 are always resolved the same way.
    return BarycentricInterpolator(nodes, target(nodes), random_state=0)


def chebyshev_interpolant(target: FunctionTarget, degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The polynomial through f at the degree+1 Chebyshev points of the first kind, mapped to the domain."""
    return Chebyshev.interpolate(target, degree, domain=list(target.domain))


def spline_interpolant(target: FunctionTarget, degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The not-a-knot cubic spline through f at the same degree+1 equally spaced nodes."""
    from scipy.interpolate import CubicSpline

    nodes = np.linspace(*target.domain, degree + 1)
    return CubicSpline(nodes, target(nodes))


# Each is fixed by its degree+1 values of f, so that is its parameter count.
BASELINES: dict[str, Callable[[FunctionTarget, int], Callable[[np.ndarray], np.ndarray]]] = {
    "equispaced": equispaced_interpolant,
    "Chebyshev": chebyshev_interpolant,
    "cubic spline": spline_interpolant,
}
# Data has no f to interpolate: least-squares fits of the training points take the interpolants' place.
SMOOTHING_SPLINE = "smoothing spline (GCV)"


def chebyshev_least_squares(x: np.ndarray, y: np.ndarray, degree: int, domain: tuple[float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """The Chebyshev series of degree d on the domain closest to the points in least squares."""
    return Chebyshev.fit(x, y, degree, domain=list(domain))


def smoothing_spline(x: np.ndarray, y: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """SciPy's cubic smoothing spline, its smoothness chosen by generalised cross-validation, and
    its parameter count (its B-spline coefficients). Points at the same x become one, their mean
    y weighted by their count (the spline needs distinct x).

    SciPy searches the penalty on a bounded linear scale that depends on the units of x, and on
    thousands of closely spaced x it fails ("ill-posed"). Then the spline is fitted in the
    coordinate u that puts the distinct x at 0 … m-1 on average: an affine change of x changes
    only the penalty's scale, which GCV chooses anyway."""
    from scipy.interpolate import make_smoothing_spline

    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means, weights = np.bincount(inverse, weights=y) / counts, counts.astype(np.float64)
    try:
        spline = make_smoothing_spline(unique, means, w=weights)
        return spline, len(spline.c)
    except ValueError:
        pass
    origin, scale = unique[0], (unique.size - 1) / (unique[-1] - unique[0])
    spline = make_smoothing_spline((unique - origin) * scale, means, w=weights)
    return (lambda points: spline((np.asarray(points, dtype=np.float64) - origin) * scale)), len(spline.c)


def baseline_approximants(
    target: Target, degrees: tuple[int, ...], train: tuple[np.ndarray, np.ndarray] | None = None
) -> list[tuple[str, int, Callable[[np.ndarray], np.ndarray]]]:
    """(name such as "cubic spline, d = 20", parameter count, approximant) for every baseline and
    degree. For data: a Chebyshev least-squares fit of the training points `train` per degree that
    they determine, and one smoothing spline (its parameters: its B-spline coefficients)."""
    if target.has_function:
        return [(f"{kind}, d = {degree}", degree + 1, build(target, degree)) for degree in degrees for kind, build in BASELINES.items()]
    if not degrees:
        return []
    x, y = train
    distinct = np.unique(x).size
    fits = [(f"Chebyshev LS, d = {d}", d + 1, chebyshev_least_squares(x, y, d, target.domain)) for d in degrees if d < distinct]
    if distinct >= 5:
        spline, parameters = smoothing_spline(x, y)
        fits.append((SMOOTHING_SPLINE, parameters, spline))
    return fits


def baseline_scores(target: Target, n: int, degrees: tuple[int, ...] = BASELINE_DEGREES, train=None) -> list[Scores]:
    """Each baseline scored on the test set (the n-point grid for a function), in float64."""
    x, y = test_points(target, n, torch.float64)
    return [score(name, parameters, x, approximant(x) - y, target.domain) for name, parameters, approximant in baseline_approximants(target, degrees, train)]


def training_points(config: TrainConfig, target: Target, member: int) -> tuple[np.ndarray, np.ndarray]:
    """A member's training points and their y, in float64 data units (as drawn for its seed from
    config's target, and mapped back from the network's standard coordinates)."""
    split = target.split([config.seeds[member]], config.points, config.val_fraction, dtype=torch.float64)
    return target.maps.x_out(split.x_train[0]).numpy(), target.maps.y_out(split.y_train[0]).numpy()


@dataclass(frozen=True)
class PointScore:
    """The network at one requested x."""

    x: float
    prediction: float
    target: float | None  # None for data: no truth between the points
    error: float | None
    extrapolation: bool  # x lies outside the domain the network was trained on


@dataclass(frozen=True)
class Curves:
    """f, the network and every approximant's error, for eval.png."""

    x: np.ndarray  # a fine grid of the domain
    target: np.ndarray | None  # f on it; None for data
    prediction: np.ndarray  # the network on it
    error_x: np.ndarray  # where the errors are known: the grid, or a data set's test points
    errors: dict[str, np.ndarray]  # approximant name → approximant − f at error_x
    label: str  # what f is called in the legend
    points: tuple[np.ndarray, np.ndarray] | None  # a data set's test points
    x_label: str = "x"  # the axes' names: a data file's columns
    y_label: str = "y"


@dataclass(frozen=True)
class Evaluation:
    member: int
    points: int  # size of the test set
    target: Target
    scores: list[Scores]  # the network first, then the baselines
    at_x: list[PointScore]
    curves: Curves
    band: dict | None = None  # a data stack's band on the test points (band_coverage)

    def as_dict(self) -> dict:
        data = not self.target.has_function
        # A data run's columns are named as its file names them; a function's output is as it was.
        columns = {"x_label": self.target.x_label, "y_label": self.target.y_label} if data else {}
        return {
            "member": self.member,
            "points": self.points,
            "end_region": END_REGION,
            "target": self.target.name,
            "domain": list(self.target.domain),
            "data": data,
            **columns,
            "regions": region_texts(self.target.domain, self.target.x_label),
            "scores": [asdict(s) for s in self.scores],
            "at_x": [asdict(p) for p in self.at_x],
            **({"band": self.band} if self.band is not None else {}),
        }


def point_scores(model: StackedMLP, target: Target, member: int, x_values: list[float]) -> list[PointScore]:
    """The network's prediction (in the run's dtype) and its error against f (in float64) at each
    requested x; for data the target and the error are None."""
    if not x_values:
        return []
    x = np.array(x_values, dtype=np.float64)
    prediction = member_prediction(model, target, member, x)
    truth = target(x) if target.has_function else [None] * len(x)
    low, high = target.domain
    return [
        PointScore(
            x=value, prediction=float(p), target=None if t is None else float(t), error=None if t is None else float(p - t),
            extrapolation=not low <= value <= high,
        )
        for value, p, t in zip(x_values, prediction, truth, strict=True)
    ]


def plot_curves(model: StackedMLP, target: Target, member: int, degrees: tuple[int, ...], train=None) -> Curves:
    """The network and, for the largest degree in `degrees` (none when empty), each baseline's error."""
    x = target.test_grid(PLOT_POINTS, dtype=torch.float64).numpy()
    prediction = member_prediction(model, target, member, x)
    if target.has_function:
        error_x, truth, points = x, target(x), None
    else:
        error_x, truth = test_points(target, 0, torch.float64)
        points = (error_x, truth)
    errors = {"network": (prediction if error_x is x else member_prediction(model, target, member, error_x)) - truth}
    if degrees:
        errors.update({name: approximant(error_x) - truth for name, _, approximant in baseline_approximants(target, degrees[-1:], train)})
    return Curves(x, truth if target.has_function else None, prediction, error_x, errors, target.label, points, target.x_label, target.y_label)


def evaluate(
    model: StackedMLP,
    target: Target,
    member: int,
    points: int = 100,
    x_values: list[float] | None = None,
    degrees: tuple[int, ...] = (),
    train: tuple[np.ndarray, np.ndarray] | None = None,
    val_mse=None,
) -> Evaluation:
    """Score one member of a stack on the test set and at x_values, beside the baselines of the
    given degrees (for data, fitted to `train`, the member's training points: training_points).
    With val_mse (every member's validation MSE, as the summary holds them), a data stack's band
    is scored too (band_coverage)."""
    if not 0 <= member < model.members:
        raise UsageError(f"member {member} does not exist; the run has members 0…{model.members - 1}")
    if degrees and not target.has_function and train is None:
        raise ValueError("a data set's baselines are fitted to the member's training points: pass train")
    n = points if target.has_function else len(target.test_index)
    return Evaluation(
        member=member,
        points=n,
        target=target,
        scores=[network_scores(model, target, member, n), *baseline_scores(target, n, degrees, train)],
        at_x=point_scores(model, target, member, x_values or []),
        curves=plot_curves(model, target, member, degrees, train),
        band=band_coverage(model, target, val_mse) if val_mse is not None and has_band(model, target) else None,
    )


