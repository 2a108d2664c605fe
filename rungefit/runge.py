"""The Runge function, its derivative, and the data sets the experiments use.

Training points are drawn uniformly from [-1, 1] per seed; a fixed fraction of them is held out as
the validation set; the test set is an equally spaced grid, as in the reference experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rungefit import rng
from rungefit.config import validation_size
from rungefit.errors import UsageError

INTERVAL = (-1.0, 1.0)


def runge(x):
    """f(x) = 1 / (1 + 25 x²), for floats, NumPy arrays or tensors."""
    return 1.0 / (1.0 + 25.0 * x * x)


def runge_prime(x):
    """f'(x) = -50 x / (1 + 25 x²)²."""
    return -50.0 * x / (1.0 + 25.0 * x * x) ** 2


@dataclass(frozen=True)
class DataSplit:
    """Inputs per member; the targets are runge(x)."""

    x_train: torch.Tensor  # [K, n_train]
    x_val: torch.Tensor  # [K, n_val]


def sample_split(
    seeds: torch.Tensor, points: int, val_fraction: float, *, dtype=torch.float32, device="cpu"
) -> DataSplit:
    """Draw `points` uniform points in [-1, 1] per seed and hold out the last val_fraction of them.

    The points are i.i.d., so holding out the last ones is a uniformly random split.
    """
    n_val = validation_size(points, val_fraction)
    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    lo, hi = INTERVAL
    x = lo + (hi - lo) * rng.uniform(seeds, rng.STREAM_DATA, points)
    x = x.to(dtype)
    return DataSplit(x_train=x[:, : points - n_val].contiguous(), x_val=x[:, points - n_val :].contiguous())


def test_grid(n: int = 100, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """n equally spaced points on [-1, 1], both ends included."""
    if n < 2:
        raise UsageError(f"the test grid needs at least 2 points, got {n}")
    lo, hi = INTERVAL
    return torch.linspace(lo, hi, n, dtype=torch.float64, device=device).to(dtype)


# Not a pytest test, although its name says so when a test module imports it.
test_grid.__test__ = False
