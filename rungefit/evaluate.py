"""Metrics of a trained stack on the test grid or given points."""

from __future__ import annotations

import numpy as np
import torch

from rungefit.model import StackedMLP
from rungefit.runge import runge, test_grid


def fit_curves(model: StackedMLP, n: int = 401) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x on a fine grid, f(x), and every member's prediction [K, n], for plotting."""
    x = test_grid(n, dtype=model.dtype, device=model.device).expand(model.members, -1)
    with torch.no_grad():
        predictions = model.forward(x)
    return x[0].double().cpu().numpy(), runge(x[0]).double().cpu().numpy(), predictions.double().cpu().numpy()
