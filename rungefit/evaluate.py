"""Metrics of a trained stack on the test grid or given points, and classical baselines for context.

`train` reports its test figures through grid_errors, so `eval` on a saved run reproduces them
exactly: the same points, the same dtype, the same stacked forward. The baselines (interpolants at
equispaced and Chebyshev nodes, cubic splines) are scored on the same grid. SciPy is imported only
when a baseline is built, because `train` imports this module too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from numpy.polynomial.chebyshev import Chebyshev

from rungefit.config import parameter_count
from rungefit.errors import UsageError
from rungefit.model import StackedMLP
from rungefit.runge import INTERVAL, runge, test_grid

# A network learned f, not just its mean, when its validation MSE ends below this share of Var(y),
# the MSE of predicting the mean (R² > 0.99); a failed training sits at Var(y) itself.
TRAINED_BELOW = 0.01
# A run's verdict: every member learned, some did not, none did.
FIT_OK, FIT_SOME, FIT_NONE = "ok", "some members learned nothing", "nothing learned"


def learned(val_mse, val_var) -> np.ndarray:
    """Elementwise: is the validation MSE below TRAINED_BELOW × Var(y) of the validation targets?
    (A non-finite MSE never is.)"""
    return np.asarray(val_mse, dtype=np.float64) < TRAINED_BELOW * np.asarray(val_var, dtype=np.float64)


def fit_verdict(members_learned) -> str:
    """FIT_OK when every member learned, FIT_NONE when none did, FIT_SOME otherwise."""
    flags = [bool(flag) for flag in members_learned]
    return FIT_OK if all(flags) else FIT_SOME if any(flags) else FIT_NONE


# Hidden activations float64_mse lets a forward pass hold at once (members × points × units).
MSE_CHUNK_ACTIVATIONS = 1 << 22


def float64_errors(model: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """network − f at x [K, n] (in the run's dtype), in float64: the network's outputs as they are,
    f at exactly those points. Every statistic a run reports is computed from these."""
    with torch.no_grad():
        prediction = model.forward(x)
    return prediction.double() - runge(x.double())


def float64_mse(model: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """Every member's MSE at its points x [K, n], from float64_errors, a chunk of points at a time."""
    chunk = max(1, MSE_CHUNK_ACTIVATIONS // (model.members * sum(layer.width for layer in model.layers)))
    squares = sum(float64_errors(model, part).square().sum(dim=1) for part in x.split(chunk, dim=1))
    return squares / x.shape[1]


@dataclass(frozen=True)
class GridErrors:
    errors: torch.Tensor  # [K, n] network − f, float64
    mse: torch.Tensor  # [K]
    max_abs_error: torch.Tensor  # [K]


def grid_errors(model: StackedMLP, n: int = 100) -> GridErrors:
    """Errors, MSE and max |error| of every member on n equally spaced points of [-1, 1], in float64."""
    error = float64_errors(model, test_grid(n, dtype=model.dtype, device=model.device).expand(model.members, -1))
    return GridErrors(errors=error, mse=(error**2).mean(dim=1), max_abs_error=error.abs().max(dim=1).values)


def fit_curves(model: StackedMLP, n: int = 401) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x on a fine grid, f(x), and every member's prediction [K, n], for plotting."""
    x = test_grid(n, dtype=model.dtype, device=model.device).expand(model.members, -1)
    with torch.no_grad():
        predictions = model.forward(x)
    return x[0].double().cpu().numpy(), runge(x[0]).double().cpu().numpy(), predictions.double().cpu().numpy()


# Where the Runge phenomenon lives: |x| > END_REGION is "near the ends", |x| ≤ END_REGION the middle.
END_REGION = 0.8
BASELINE_DEGREES = (10, 20, 40)
PLOT_POINTS = 401


@dataclass(frozen=True)
class Scores:
    """How well one approximant fits f on a set of points."""

    name: str
    parameters: int
    mse: float
    rmse: float
    max_abs_error: float
    max_abs_error_at: float  # the x where |error| is largest
    ends_rmse: float  # over |x| > END_REGION
    ends_max_abs_error: float
    middle_rmse: float  # over |x| ≤ END_REGION
    middle_max_abs_error: float


def score(name: str, parameters: int, x: np.ndarray, error: np.ndarray) -> Scores:
    """Scores from the errors approximant − f at points x (float64 arrays of one shape)."""
    worst = int(np.argmax(np.abs(error)))
    ends = np.abs(x) > END_REGION
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
    return float(np.sqrt(np.mean(error**2))) if error.size else math.nan


def _max_abs(error: np.ndarray) -> float:
    return float(np.abs(error).max()) if error.size else math.nan


def member_prediction(model: StackedMLP, member: int, x: np.ndarray) -> np.ndarray:
    """The member's prediction at x [n], computed as grid_errors does (the whole stack, in the run's
    dtype), as a float64 array."""
    inputs = torch.as_tensor(x).to(dtype=model.dtype, device=model.device).expand(model.members, -1)
    with torch.no_grad():
        prediction = model.forward(inputs)
    return prediction[member].double().cpu().numpy()


def network_scores(model: StackedMLP, member: int, n: int) -> Scores:
    """The member's scores on the n-point test grid, all from grid_errors' float64 errors.

    The MSE is grid_errors' own number (torch's mean, which may round differently from NumPy's),
    so it equals the test MSE `train` reported, bit for bit.
    """
    x = test_grid(n, dtype=model.dtype).double().numpy()  # train's grid points, exactly
    exact = grid_errors(model, n)
    mse = float(exact.mse[member])
    scores = score("network", parameter_count(model.layers), x, exact.errors[member].cpu().numpy())
    return replace(scores, mse=mse, rmse=math.sqrt(mse))


def equispaced_interpolant(degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The polynomial through f at degree+1 equally spaced nodes, evaluated in barycentric form.

    The barycentric form evaluates the interpolant stably, so its growth near ±1 as the degree rises
    is the Runge phenomenon itself, not rounding in a monomial basis.
    """
    from scipy.interpolate import BarycentricInterpolator

    nodes = np.linspace(-1.0, 1.0, degree + 1)
    # SciPy orders the nodes at random to compute the weights; a fixed seed fixes the last bits, so
    # that ties such as the symmetric maxima at x = ±0.98 are always resolved the same way.
    return BarycentricInterpolator(nodes, runge(nodes), random_state=0)


def chebyshev_interpolant(degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The polynomial through f at the degree+1 Chebyshev points of the first kind."""
    return Chebyshev.interpolate(runge, degree)


def spline_interpolant(degree: int) -> Callable[[np.ndarray], np.ndarray]:
    """The not-a-knot cubic spline through f at the same degree+1 equally spaced nodes."""
    from scipy.interpolate import CubicSpline

    nodes = np.linspace(-1.0, 1.0, degree + 1)
    return CubicSpline(nodes, runge(nodes))


# Each is fixed by its degree+1 values of f, so that is its parameter count.
BASELINES: dict[str, Callable[[int], Callable[[np.ndarray], np.ndarray]]] = {
    "equispaced": equispaced_interpolant,
    "Chebyshev": chebyshev_interpolant,
    "cubic spline": spline_interpolant,
}


def baseline_approximants(degrees: tuple[int, ...]) -> list[tuple[str, int, Callable[[np.ndarray], np.ndarray]]]:
    """(name such as "cubic spline, d = 20", parameter count, approximant) for every baseline and degree."""
    return [(f"{kind}, d = {degree}", degree + 1, build(degree)) for degree in degrees for kind, build in BASELINES.items()]


def baseline_scores(n: int, degrees: tuple[int, ...] = BASELINE_DEGREES) -> list[Scores]:
    """Each baseline scored on the n-point test grid, in float64."""
    x = test_grid(n, dtype=torch.float64).numpy()
    return [score(name, parameters, x, approximant(x) - runge(x)) for name, parameters, approximant in baseline_approximants(degrees)]


@dataclass(frozen=True)
class PointScore:
    """The network at one requested x."""

    x: float
    prediction: float
    target: float
    error: float
    extrapolation: bool  # x lies outside the training interval [-1, 1]


@dataclass(frozen=True)
class Curves:
    """f, the network and every approximant's error on a fine grid, for eval.png."""

    x: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    errors: dict[str, np.ndarray]  # approximant name → approximant − f


@dataclass(frozen=True)
class Evaluation:
    member: int
    points: int  # size of the test grid
    scores: list[Scores]  # the network first, then the baselines
    at_x: list[PointScore]
    curves: Curves

    def as_dict(self) -> dict:
        return {
            "member": self.member,
            "points": self.points,
            "end_region": END_REGION,
            "scores": [asdict(s) for s in self.scores],
            "at_x": [asdict(p) for p in self.at_x],
        }


def point_scores(model: StackedMLP, member: int, x_values: list[float]) -> list[PointScore]:
    """The network's prediction (in the run's dtype) and its error against f (in float64) at each requested x."""
    if not x_values:
        return []
    x = np.array(x_values, dtype=np.float64)
    prediction, target = member_prediction(model, member, x), runge(x)
    lo, hi = INTERVAL
    return [
        PointScore(x=value, prediction=float(p), target=float(t), error=float(p - t), extrapolation=not lo <= value <= hi)
        for value, p, t in zip(x_values, prediction, target, strict=True)
    ]


def plot_curves(model: StackedMLP, member: int, degrees: tuple[int, ...]) -> Curves:
    """The network and, for the largest degree in `degrees` (none when empty), each baseline's error."""
    x = test_grid(PLOT_POINTS, dtype=torch.float64).numpy()
    prediction = member_prediction(model, member, x)
    errors = {"network": prediction - runge(x)}
    if degrees:
        errors.update({name: approximant(x) - runge(x) for name, _, approximant in baseline_approximants(degrees[-1:])})
    return Curves(x=x, target=runge(x), prediction=prediction, errors=errors)


def evaluate(
    model: StackedMLP, member: int, points: int = 100, x_values: list[float] | None = None, degrees: tuple[int, ...] = ()
) -> Evaluation:
    """Score one member of a stack on the test grid and at x_values, beside the baselines of the given degrees."""
    if not 0 <= member < model.members:
        raise UsageError(f"member {member} does not exist; the run has members 0…{model.members - 1}")
    return Evaluation(
        member=member,
        points=points,
        scores=[network_scores(model, member, points), *baseline_scores(points, degrees)],
        at_x=point_scores(model, member, x_values or []),
        curves=plot_curves(model, member, degrees),
    )


def best_member(summary: dict) -> int:
    """The member with the lowest validation MSE in a run's summary (non-finite values never win)."""
    val = np.array([m["val_mse"] for m in summary["members"]], dtype=np.float64)  # None → nan
    val[~np.isfinite(val)] = np.inf
    return int(np.argmin(val))
