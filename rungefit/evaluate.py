"""Metrics of a trained stack on the test grid or given points.

`train` reports its test figures through grid_errors, so `eval` on a saved run reproduces them
exactly: the same points, the same dtype, the same stacked forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rungefit.model import StackedMLP
from rungefit.runge import runge, test_grid


@dataclass(frozen=True)
class GridErrors:
    mse: torch.Tensor  # [K]
    max_abs_error: torch.Tensor  # [K]


def grid_errors(model: StackedMLP, n: int = 100) -> GridErrors:
    """MSE and max |error| of every member on n equally spaced points of [-1, 1]."""
    x = test_grid(n, dtype=model.dtype, device=model.device).expand(model.members, -1)
    y = runge(x)
    with torch.no_grad():
        error = model.forward(x) - y
    return GridErrors(mse=(error**2).mean(dim=1), max_abs_error=error.abs().max(dim=1).values)


def fit_curves(model: StackedMLP, n: int = 401) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x on a fine grid, f(x), and every member's prediction [K, n], for plotting."""
    x = test_grid(n, dtype=model.dtype, device=model.device).expand(model.members, -1)
    with torch.no_grad():
        predictions = model.forward(x)
    return x[0].double().cpu().numpy(), runge(x[0]).double().cpu().numpy(), predictions.double().cpu().numpy()
