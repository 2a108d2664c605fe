"""How sure a stack is: the ensemble mean and a prediction band around it, in data units.

The band is a prediction interval for a new measurement y at x, centred on the ensemble mean
m(x) = mean_k f_k(x) of the K members (those whose validation MSE is finite; a diverged member is
left out). Its spread is the standard deviation of y − m(x), estimated as

    spread(x)² = noise² + s(x)² / K,    noise² = mean_k val_mse_k − s̄²,

s(x)² the sample variance (ddof 1) of the members' predictions at x, s̄² its mean over the pool
(the points the members' validation sets are drawn from: a data set's non-test points, a
function's check grid), and val_mse_k member k's validation MSE (data units, from the summary).

Why: with y = f(x) + ε, Var ε = σ², the error of a new y about the mean has variance
σ² + E(m − f)², the classical prediction interval's "noise + variance of the estimate". Members
are fits of one data set from different inits and splits: each is f + b + d_k, b the error they
share (what the data themselves mislead every member into) and d_k its own, of variance v, so that
E(m − f)² = b² + v/K, and s² estimates v. A member's validation MSE is out of sample: σ² + b² + v
on average. Hence noise² = mean val_mse − s̄² estimates σ² + b², what no disagreement between the
members reveals, and spread² adds the variance of the mean at x, s(x)²/K: wider where the members
disagree (between sparse points, outside the data). Averaged over the pool, spread² is
mean val_mse − (K − 1)/K · s̄², which by the identity mean_k (f_k − f)² = (m − f)² + (K − 1)/K · s²
is the ensemble mean's own out-of-sample MSE. The mean of the validation MSEs, not the median: only
the mean enters the identity, and a member that missed f raises both terms, so that it cancels.
Adding the members' full variance to the median validation MSE instead would count their scatter
twice (the validation MSE already holds it): on noisy data that band covers nearly every point
rather than ~95 %. With one member there is no scatter: spread is √val_mse everywhere. noise² is
floored at 0. For Gaussian ε, y lies within ±2 spread about 95 % of the time; the estimate rests
on the validation points (a few dozen per member on a small set), so on one data set the coverage
scatters about that: tests/test_band.py checks 90-98 % on 1,000 fresh points of a synthetic set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rungefit.net.model import StackedMLP
from rungefit.targets import Target
from rungefit.training.metrics import data_predictions, standard_x

# Points per forward pass: bounds the memory of the pre-activations, [K, chunk, width] per layer.
CHUNK = 1 << 16
# A function target's pool (its validation points are uniform on the domain): this many grid points.
FUNCTION_POOL = 1000
# The band's half-width in spreads: ±2 spread holds ~95 % of Gaussian noise.
WIDTH = 2.0


@dataclass(frozen=True)
class Band:
    """The ensemble's prediction at each x (float64 arrays [n], data units) and how sure it is."""

    x: np.ndarray
    mean: np.ndarray  # the mean of the members' predictions
    spread: np.ndarray  # the standard deviation of a new measurement about `mean` (see the module's docstring)
    noise: float  # the noise level: the spread where the members agree, √noise²
    members: tuple[int, ...]  # the members averaged

    @property
    def lower(self) -> np.ndarray:
        return self.mean - WIDTH * self.spread

    @property
    def upper(self) -> np.ndarray:
        return self.mean + WIDTH * self.spread

    def coverage(self, y: np.ndarray) -> float:
        """The share of measurements y (at x) that lie within ±WIDTH spread of the mean."""
        return float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - self.mean) <= WIDTH * self.spread))


def stack_predictions(model: StackedMLP, target: Target, x: np.ndarray) -> np.ndarray:
    """Every member's prediction at data-unit x [n], as eval computes it (the whole stack in the
    run's dtype, x mapped in float64 then cast), float64 [K, n] in data units."""
    x = np.asarray(x, dtype=np.float64)
    parts = np.array_split(x, max(1, math.ceil(len(x) / CHUNK)))
    standard = (standard_x(target, torch.from_numpy(part), model) for part in parts)
    return np.concatenate([data_predictions(model, target, inputs).cpu().numpy() for inputs in standard], axis=1)


def finite_members(val_mse: Sequence[float | None]) -> tuple[int, ...]:
    """The members whose validation MSE is a finite number (None in a summary: not a number)."""
    return tuple(k for k, value in enumerate(val_mse) if value is not None and math.isfinite(value))


def pool_x(target: Target) -> np.ndarray:
    """Where the members' validation points come from, in data units."""
    if target.has_function:
        return target.test_grid(FUNCTION_POOL, dtype=torch.float64).numpy()
    return target.points.x[target.pool]


def noise_variance(val_mse: np.ndarray, pool_predictions: np.ndarray) -> float:
    """noise² = mean val_mse − the members' variance averaged over the pool, floored at 0
    (val_mse [K] finite; pool_predictions [K, m])."""
    with np.errstate(over="ignore", invalid="ignore"):  # diverged members: inf, not a warning
        scatter = float(np.mean(np.var(pool_predictions, axis=0, ddof=1))) if len(val_mse) > 1 else 0.0
        return max(0.0, float(np.mean(val_mse)) - scatter)


def spread(predictions: np.ndarray, noise2: float) -> np.ndarray:
    """√(noise² + s²/K) at each point of predictions [K, n]."""
    members = len(predictions)
    with np.errstate(over="ignore", invalid="ignore"):  # diverged members: inf, not a warning
        scatter = np.var(predictions, axis=0, ddof=1) if members > 1 else np.zeros(predictions.shape[1])
        return np.sqrt(noise2 + scatter / members)


def band(model: StackedMLP, target: Target, val_mse: Sequence[float | None], x: np.ndarray) -> Band:
    """The ensemble mean and its spread at data-unit x [n], from the members with a finite
    validation MSE (val_mse [K], data units, as the summary holds them)."""
    members = finite_members(val_mse)
    if not members:
        raise ValueError("no member has a finite validation MSE: there is no band")
    chosen = list(members)
    errors = np.array([val_mse[k] for k in members], dtype=np.float64)
    noise2 = noise_variance(errors, stack_predictions(model, target, pool_x(target))[chosen])
    predictions = stack_predictions(model, target, x)[chosen]
    return Band(
        x=np.asarray(x, dtype=np.float64), mean=predictions.mean(axis=0), spread=spread(predictions, noise2),
        noise=math.sqrt(noise2), members=members,
    )
