"""Tests of the Levenberg-Marquardt polish: it lowers the loss, and members stay independent."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from rungefit.config import DEFAULT_LAYERS, TrainConfig, parse_layers
from rungefit.net.model import StackedMLP
from rungefit.targets import resolve
from rungefit.training.metrics import grid_errors
from rungefit.training.polish import PolishProgress, levenberg_marquardt
from rungefit.training.train import fit

from .helpers import runge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def short_run():
    """A short Adam run of three members (seconds), and each member's training points."""
    config = TrainConfig(seeds=(0, 1, 2), points=400, epochs=200)
    result = fit(config, stop_on_divergence=False)
    data = resolve(config).split(torch.tensor(config.seeds), config.points, config.val_fraction)
    return result.model, data.x_train


def lm(model: StackedMLP, x_train: torch.Tensor, **options):
    """The polish against the Runge function, its targets in float64 as fit gives them."""
    return levenberg_marquardt(model, x_train, runge(x_train.double()), **options)


RUNGE = resolve(TrainConfig())


def _copy(model: StackedMLP) -> StackedMLP:
    return model.select(list(range(model.members)))


def test_polish_lowers_training_and_test_error(short_run):
    model, x_train = short_run
    model = _copy(model)
    before_train = model.mse(x_train, runge(x_train))
    before_test = grid_errors(model, RUNGE).mse
    report = lm(model, x_train, iterations=10)
    after_train = model.mse(x_train, runge(x_train))
    after_test = grid_errors(model, RUNGE).mse
    assert model.dtype == torch.float32
    # The report's figures are the float64 ones of the same parameters.
    torch.testing.assert_close(report.initial_mse, before_train.double(), rtol=1e-3, atol=0)
    torch.testing.assert_close(report.final_mse, after_train.double(), rtol=1e-2, atol=1e-12)
    # Ten LM iterations gain over an order of magnitude (22-77× measured) on every member, on both sets.
    assert bool((after_train < before_train / 10).all()), (before_train, after_train)
    assert bool((after_test < before_test / 10).all()), (before_test, after_test)
    assert bool((report.accepted >= 1).all())


def test_member_alone_equals_member_in_stack(short_run):
    model, x_train = short_run
    stacked = _copy(model)
    lm(stacked, x_train, iterations=5)
    for k in range(model.members):
        alone = model.select([k])
        lm(alone, x_train[k : k + 1], iterations=5)
        assert torch.equal(alone.params[0], stacked.params[k]), k


def test_deterministic(short_run):
    model, x_train = short_run
    first, second = _copy(model), _copy(model)
    lm(first, x_train, iterations=5)
    lm(second, x_train, iterations=5)
    assert torch.equal(first.params, second.params)


def test_float64_model_and_progress(short_run):
    model, x_train = short_run
    model = model.to(dtype=torch.float64)
    seen: list[PolishProgress] = []
    report = lm(model, x_train.double(), iterations=4, progress=seen.append)
    assert model.dtype == torch.float64
    assert [(p.member, p.iteration) for p in seen] == [(k, i) for k in range(3) for i in range(1, 5)]
    assert all(p.iterations == 4 for p in seen)
    # The callback's MSE never rises: rejected steps keep the best point.
    for k in range(3):
        curve = [p.mse for p in seen if p.member == k]
        assert curve == sorted(curve, reverse=True)
        assert curve[-1] == pytest.approx(float(report.final_mse[k]))


def test_diverged_member_is_left_alone(short_run):
    model, x_train = short_run
    model = _copy(model)
    with torch.no_grad():
        model.params[1, 0] = float("nan")
    before = model.params.clone()
    report = lm(model, x_train, iterations=5)
    assert torch.equal(model.params[1].isnan(), before[1].isnan())
    assert math.isnan(float(report.final_mse[1])) and int(report.iterations[1]) == 0
    assert float(report.final_mse[0]) < float(report.initial_mse[0])


def test_zero_iterations_changes_nothing(short_run):
    model, x_train = short_run
    copy = _copy(model)
    lm(copy, x_train, iterations=0)
    assert torch.equal(copy.params, model.params)


def test_a_stop_undoes_the_polish_of_every_member(short_run):
    model, x_train = short_run
    copy = _copy(model)
    seen: list[PolishProgress] = []
    # Yes at member 1's second iteration: member 0 is polished by then, member 1 half-way.
    report = lm(copy, x_train, iterations=5, progress=seen.append, should_stop=lambda: (seen[-1].member, seen[-1].iteration) == (1, 2))
    assert report is None
    assert [(p.member, p.iteration) for p in seen][-2:] == [(1, 1), (1, 2)]
    assert torch.equal(copy.params, model.params)


def test_rejects_mismatched_points():
    model = StackedMLP(parse_layers(DEFAULT_LAYERS), 2)
    with pytest.raises(ValueError, match="x_train"):
        levenberg_marquardt(model, torch.zeros(3, 10), torch.zeros(3, 10))


def test_jacobian_matches_autograd():
    """The hand-written per-point backpropagation equals torch.func.jacrev, every activation."""
    _MemberLM = sys.modules[levenberg_marquardt.__module__]._MemberLM  # the private helper

    layers = parse_layers("3:tanh,3:sigmoid,3:gelu,3:relu,3:silu,3:softplus,3:identity")
    model = StackedMLP(layers, 1, dtype=torch.float64)
    model.initialise(torch.tensor([7]))
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)
    member = _MemberLM(model, model.params[0].detach(), x, runge(x), damping=1e-3)
    jacobian, residual = member._jacobian(x, runge(x))
    rows = []
    for point in range(x.shape[0]):  # autograd accumulates ∂a^[L](x_i)/∂p into model.grads
        model.grads.zero_()
        model.forward(x.unsqueeze(0))[0, point].backward()
        rows.append(model.grads[0].clone())
    expected = torch.stack(rows)
    torch.testing.assert_close(jacobian, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(residual, model.forward(x.unsqueeze(0))[0].detach() - runge(x))


def test_the_report_keeps_each_members_mse_before_and_after_every_iteration(short_run):
    model, x_train = short_run
    model = _copy(model)
    with torch.no_grad():
        model.params[1, 0] = float("nan")  # never polished: its curve is all NaN
    seen: list[PolishProgress] = []
    report = levenberg_marquardt(model, x_train, runge(x_train.double()), iterations=4, progress=seen.append)
    assert report.curves.shape == (3, 5)
    for k in (0, 2):
        steps = [p.mse for p in seen if p.member == k]
        assert report.curves[k, 0] == report.initial_mse[k]
        assert report.curves[k, 1 : 1 + len(steps)].tolist() == steps
        assert report.curves[k, 1 + len(steps) :].isnan().all()
    assert report.curves[1].isnan().all()
