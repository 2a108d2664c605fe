"""How well a stack fits, as training judges it: every member's MSE in float64, the verdict of
whether it learned, and the best member. `train` reports its test figures through grid_errors, so
that `eval` on a saved run reproduces them exactly (the same points, dtype and stacked forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rungefit.net.model import StackedMLP
from rungefit.targets import Target

# A network learned f, not just its mean, when its validation MSE ends below this share of Var(y),
# the MSE of predicting the mean (R² > 0.99); a failed training sits at Var(y) itself.
TRAINED_BELOW = 0.01


# A run's verdict: every member learned, some did not, none did.
FIT_OK, FIT_SOME, FIT_NONE = "ok", "some members learned nothing", "nothing learned"


def learned(val_mse, val_var) -> np.ndarray:
    """Elementwise: is the validation MSE below TRAINED_BELOW × Var(y) of the validation targets?
    (A non-finite MSE never is.)"""
    return np.asarray(val_mse, dtype=np.float64) < TRAINED_BELOW * np.asarray(val_var, dtype=np.float64)


# Measured data cannot pass TRAINED_BELOW: with noise of 5 % of Var(y) even the true function
# scores 0.05. A data member has learned when its validation MSE is significantly below Var(y_val),
# the score of predicting the mean: one-sided, at the 1 % level.
SIGNIFICANCE = 0.01


def learned_significantly(val_mse, val_var, n_val: int) -> np.ndarray:
    """Elementwise, for data: is the validation MSE significantly below Var(y_val)?

    Under "learned nothing" the network predicts no better than the mean: its n validation
    residuals are like n draws of the spread of y, so n · MSE / Var(y) follows a chi-square
    distribution with n degrees of freedom (Gaussian residuals). A member has learned when
    n · MSE / Var(y) lies below that distribution's SIGNIFICANCE quantile. The exact quantile, not
    the normal approximation (ratio 1 ± sqrt(2 / n)), which no fit can pass below 11 points.
    (A non-finite MSE never has.)
    """
    from scipy.special import gammaincinv  # only data runs ask, and scipy costs an import

    ratio = np.asarray(val_mse, dtype=np.float64) / np.asarray(val_var, dtype=np.float64)
    return ratio < 2.0 * gammaincinv(n_val / 2.0, SIGNIFICANCE) / n_val


def members_learned(val_mse, val_var, n_val: int, data: bool) -> np.ndarray:
    """The yardstick of a run: significance for data, TRAINED_BELOW of Var(y) for a function."""
    return learned_significantly(val_mse, val_var, n_val) if data else learned(val_mse, val_var)


def fit_verdict(members_learned) -> str:
    """FIT_OK when every member learned, FIT_NONE when none did, FIT_SOME otherwise."""
    flags = [bool(flag) for flag in members_learned]
    return FIT_OK if all(flags) else FIT_SOME if any(flags) else FIT_NONE


# Hidden activations float64_mse lets a forward pass hold at once (members × points × units).
MSE_CHUNK_ACTIVATIONS = 1 << 22


def data_predictions(model: StackedMLP, target: Target, x: torch.Tensor) -> torch.Tensor:
    """The network's outputs at standard x [K, n] (in the run's dtype), in data units, float64."""
    with torch.no_grad():
        prediction = model.forward(x)
    return target.maps.y_out(prediction.double())


def standard_x(target: Target, x: torch.Tensor, model: StackedMLP) -> torch.Tensor:
    """Data-unit x [n] (float64) as the whole stack's input [K, n]: mapped in float64, then cast."""
    return target.maps.x_in(x.double()).to(dtype=model.dtype, device=model.device).expand(model.members, -1)


def seen_x(target: Target, x: torch.Tensor) -> torch.Tensor:
    """The data-unit x that standard x (in the run's dtype) stands for, in float64."""
    return target.maps.x_out(x.double())


def float64_truth(target: Target, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What the network is scored against at standard x (y: the standard targets beside x), in data
    units and float64: f at exactly the point the network sees (x as the run's dtype holds it) for
    a function, the measured y for data."""
    if target.has_function:
        return target(seen_x(target, x))
    return target.maps.y_out(y.double())


def standard_truth(target: Target, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float64_truth in the network's standard coordinates (what a float64 polish fits)."""
    return target.maps.y_in(target(seen_x(target, x))) if target.has_function else y.double()


def float64_errors(model: StackedMLP, target: Target, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """network − truth at standard x [K, n] (y: the targets beside x), in data units and float64:
    the network's outputs as they are. Every statistic a run reports is computed from these."""
    return data_predictions(model, target, x) - float64_truth(target, x, y)


def float64_mse(model: StackedMLP, target: Target, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every member's MSE at its points x [K, n], from float64_errors, a chunk of points at a time."""
    chunk = max(1, MSE_CHUNK_ACTIVATIONS // (model.members * sum(layer.width for layer in model.layers)))
    parts = zip(x.split(chunk, dim=1), y.split(chunk, dim=1), strict=True)
    squares = sum(float64_errors(model, target, xs, ys).square().sum(dim=1) for xs, ys in parts)
    return squares / x.shape[1]


@dataclass(frozen=True)
class GridErrors:
    errors: torch.Tensor  # [K, n] network − f, float64
    mse: torch.Tensor  # [K]
    max_abs_error: torch.Tensor  # [K]


def grid_errors(model: StackedMLP, target: Target, n: int = 100) -> GridErrors:
    """Errors, MSE and max |error| of every member on the target's test set, in data units and
    float64: n equally spaced points of the domain for a function, the held-out points for data
    (their measured y as they are, not as the run's dtype rounds them)."""
    if target.has_function:
        x = target.test_grid(n, dtype=torch.float64, device=model.device)
    else:
        x, y = target.test_set(n, dtype=torch.float64, device=model.device)
    x = standard_x(target, x, model)
    truth = target(seen_x(target, x)) if target.has_function else y.expand(model.members, -1)
    error = data_predictions(model, target, x) - truth
    return GridErrors(errors=error, mse=(error**2).mean(dim=1), max_abs_error=error.abs().max(dim=1).values)


def best_member(summary: dict) -> int:
    """The member with the lowest validation MSE in a run's summary (non-finite values never win)."""
    val = np.array([m["val_mse"] for m in summary["members"]], dtype=np.float64)  # None → nan
    val[~np.isfinite(val)] = np.inf
    return int(np.argmin(val))
