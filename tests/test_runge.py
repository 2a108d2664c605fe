import math

import numpy as np
import pytest
import torch

from rungefit.config import validation_size
from rungefit.runge import runge, runge_prime, sample_split, test_grid


def test_runge_values_and_derivative():
    assert runge(0.0) == 1.0
    assert runge(1.0) == pytest.approx(1 / 26)
    x = np.linspace(-1, 1, 11)
    h = 1e-6
    assert np.allclose(runge_prime(x), (runge(x + h) - runge(x - h)) / (2 * h), atol=1e-8)


def test_test_grid_is_100_equally_spaced_points_with_both_ends():
    x = test_grid(100, dtype=torch.float64)
    assert x.shape == (100,)
    assert x[0] == -1.0 and x[-1] == 1.0
    assert torch.allclose(torch.diff(x), torch.full((99,), 2 / 99, dtype=torch.float64))


def test_split_sizes_and_range():
    data = sample_split(torch.tensor([0, 1, 2]), 200, 0.3, dtype=torch.float64)
    assert data.x_train.shape == (3, 140) and data.x_val.shape == (3, 60)
    for x in (data.x_train, data.x_val):
        assert x.min() >= -1 and x.max() < 1


def test_split_is_a_function_of_the_seed_alone():
    alone = sample_split(torch.tensor([7]), 50, 0.3, dtype=torch.float64)
    stacked = sample_split(torch.tensor([3, 7, 9]), 50, 0.3, dtype=torch.float64)
    assert torch.equal(alone.x_train[0], stacked.x_train[1])
    assert torch.equal(alone.x_val[0], stacked.x_val[1])
    assert not torch.equal(stacked.x_train[0], stacked.x_train[1])


def test_training_and_validation_points_are_disjoint_and_uniform():
    data = sample_split(torch.tensor([0]), 20000, 0.3, dtype=torch.float64)
    everything = torch.cat([data.x_train[0], data.x_val[0]])
    assert everything.unique().numel() == 20000
    # Uniform on [-1, 1]: mean 0, variance 1/3 (standard errors ≈ 0.004 and 0.002).
    assert abs(everything.mean().item()) < 0.02
    assert abs(everything.var().item() - 1 / 3) < 0.01


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_bad_validation_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        validation_size(100, fraction)


def test_split_that_would_leave_an_empty_set():
    with pytest.raises(ValueError, match="use more points"):
        validation_size(2, 0.1)
