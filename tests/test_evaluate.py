"""Eval's metrics, the classical baselines, and eval reproducing train's test figures exactly."""

import math

import numpy as np
import pytest
import torch

from rungefit.config import TrainConfig, parameter_count
from rungefit.net.model import StackedMLP
from rungefit.runs import store as runs
from rungefit.study import evaluate
from rungefit.targets import resolve
from rungefit.training import metrics
from rungefit.training.train import fit

from .helpers import runge, save_run, stacked

RUNGE = resolve(TrainConfig())


def test_score_splits_the_interval_into_ends_and_middle():
    x = np.array([-1.0, -0.8, 0.0, 0.9])
    error = np.array([0.1, 0.05, -0.3, -0.2])
    s = evaluate.score("test", 7, x, error)
    assert s.mse == pytest.approx((0.01 + 0.0025 + 0.09 + 0.04) / 4)
    assert s.rmse == pytest.approx(math.sqrt(s.mse))
    assert (s.max_abs_error, s.max_abs_error_at) == (0.3, 0.0)
    # |x| = 0.8 belongs to the middle; the ends are |x| > 0.8.
    assert s.ends_max_abs_error == 0.2 and s.ends_rmse == pytest.approx(math.sqrt((0.01 + 0.04) / 2))
    assert s.middle_max_abs_error == 0.3 and s.middle_rmse == pytest.approx(math.sqrt((0.0025 + 0.09) / 2))


def test_score_of_an_empty_region_is_nan():
    s = evaluate.score("test", 1, np.array([0.1, 0.2]), np.array([0.0, 1.0]))
    assert math.isnan(s.ends_rmse) and math.isnan(s.ends_max_abs_error)


def test_interpolants_pass_through_their_nodes():
    nodes = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(evaluate.equispaced_interpolant(RUNGE, 10)(nodes), runge(nodes), atol=1e-13)
    np.testing.assert_allclose(evaluate.spline_interpolant(RUNGE, 10)(nodes), runge(nodes), atol=1e-15)
    chebyshev_points = np.cos((2 * np.arange(11) + 1) * np.pi / 22)
    np.testing.assert_allclose(evaluate.chebyshev_interpolant(RUNGE, 10)(chebyshev_points), runge(chebyshev_points), atol=1e-13)


def test_baselines_show_the_runge_phenomenon():
    scores = {s.name: s for s in evaluate.baseline_scores(RUNGE, 100, (10, 20, 40))}
    assert len(scores) == 9
    assert {scores[f"{kind}, d = 20"].parameters for kind in evaluate.BASELINES} == {21}

    def worst(kind):
        return [scores[f"{kind}, d = {d}"].max_abs_error for d in (10, 20, 40)]

    equispaced, chebyshev, spline = worst("equispaced"), worst("Chebyshev"), worst("cubic spline")
    assert equispaced[0] < equispaced[1] < equispaced[2] and equispaced[2] > 1e3
    assert chebyshev[0] > chebyshev[1] > chebyshev[2]
    assert spline[0] > spline[1] > spline[2]
    # The equispaced interpolant fails at the ends, not in the middle.
    d40 = scores["equispaced, d = 40"]
    assert d40.ends_max_abs_error > 1e3 * d40.middle_max_abs_error


def test_best_member_is_the_lowest_finite_validation_mse():
    summary = {"members": [{"val_mse": 3e-4}, {"val_mse": float("nan")}, {"val_mse": 1e-4}, {"val_mse": None}]}
    assert metrics.best_member(summary) == 2


def untrained(layers="5:tanh", seeds=(0, 1), dtype=torch.float32) -> StackedMLP:
    return stacked(layers, seeds, dtype)


def test_point_scores_flag_extrapolation_and_use_the_exact_target():
    model = untrained()
    scored = evaluate.point_scores(model, RUNGE, 1, [0.3, -1.5])
    assert [p.extrapolation for p in scored] == [False, True]
    assert scored[0].target == runge(0.3)
    assert scored[0].error == scored[0].prediction - scored[0].target


def test_evaluate_rejects_a_missing_member_and_plots_the_largest_degree():
    model = untrained()
    with pytest.raises(ValueError, match="member 2"):
        evaluate.evaluate(model, RUNGE, 2)
    result = evaluate.evaluate(model, RUNGE, 1, 50, [0.5], (10, 20))
    assert [s.name for s in result.scores][:2] == ["network", "equispaced, d = 10"]
    assert result.scores[0].parameters == parameter_count(model.layers)
    assert list(result.curves.errors) == ["network", "equispaced, d = 20", "Chebyshev, d = 20", "cubic spline, d = 20"]
    assert list(evaluate.evaluate(model, RUNGE, 0).curves.errors) == ["network"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eval_reproduces_the_test_figures_train_saved(tmp_path, dtype):
    config = TrainConfig(epochs=2, points=120, seeds=(4, 5, 6), dtype=dtype)
    result = fit(config)
    save_run(tmp_path, result, "r")
    loaded = runs.load_run(tmp_path, "r")
    for member, saved in enumerate(loaded.summary["members"]):
        network = evaluate.evaluate(loaded.model, loaded.target, member, loaded.config.test_points).scores[0]
        assert network.mse == saved["test_mse"]
        assert network.max_abs_error == saved["test_max_abs_error"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_overall_max_error_is_exactly_the_larger_regional_one(dtype):
    model = untrained("8:tanh,8:sigmoid", seeds=(0, 1, 2), dtype=dtype)
    for member in range(3):
        for points in (100, 101, 257):
            network = evaluate.evaluate(model, RUNGE, member, points).scores[0]
            assert network.max_abs_error == max(network.ends_max_abs_error, network.middle_max_abs_error)


def test_a_float64_runs_test_mse_is_the_plain_float64_mean_as_before():
    model = untrained("8:tanh,8:sigmoid", seeds=(0, 1, 2), dtype=torch.float64)
    x = RUNGE.test_grid(100, dtype=torch.float64).expand(3, -1)
    with torch.no_grad():
        before = ((model.forward(x) - runge(x)) ** 2).mean(dim=1)  # how it was computed
    assert torch.equal(metrics.grid_errors(model, RUNGE).mse, before)


def test_a_member_learned_when_its_validation_mse_is_below_a_hundredth_of_var_y():
    var_y = [0.08] * 5
    assert metrics.learned([7.9e-4, 8.1e-4, 0.08, float("nan"), float("inf")], var_y).tolist() == [True, False, False, False, False]


def test_the_verdict_says_whether_every_some_or_no_member_learned():
    assert metrics.fit_verdict([True, True]) == metrics.FIT_OK == "ok"
    assert metrics.fit_verdict([False, True]) == metrics.FIT_SOME == "some members learned nothing"
    assert metrics.fit_verdict([False]) == metrics.FIT_NONE == "nothing learned"
