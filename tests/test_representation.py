"""Points the run's dtype cannot hold are refused before training, saying so and what keeps them
(--scale xy, --dtype float64), never blaming the learning rate; and what the scaling makes
representable trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.targets import read_points
from rungefit.targets.maps import spread
from rungefit.training.train import fit

from .helpers import runner

NARROW_FAR = ["--domain", "100000,100000.001", "--target", "x"]


def data_file(tmp_path, y) -> str:
    x = np.linspace(0.0, 1.0, 100)
    path = tmp_path / "points.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y(x).tolist(), strict=True)))
    return str(path)


def test_a_narrow_domain_far_from_zero_trains_in_float32_with_the_default_scaling():
    """Every float32 x of [1e5, 1e5 + 0.001] is 1e5 (float32's spacing there is 1/128), but the
    network sees x mapped onto [-1, 1] in float64 before the cast."""
    result = fit(TrainConfig(domain=(1e5, 1e5 + 1e-3), target="x", points=120, batch_size=8, epochs=60, workers=1))
    variance = (1e-3) ** 2 / 12  # of x uniform on the domain, the MSE of predicting the mean
    assert result.members[0].val_mse < 0.01 * variance
    assert result.members[0].test_mse < 0.01 * variance


def test_data_near_1e39_train_in_float32_with_the_default_scaling(tmp_path):
    """Beyond float32's largest number (3.4e38), but scaled to spread 1 in float64 before the cast."""
    path = data_file(tmp_path, lambda x: 1e39 * (2 + np.sin(3 * x)))
    result = runner.invoke(app, ["train", "--data", path, "--epochs", "400", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    member = json.loads(result.stdout)["members"][0]
    assert member["test_mse"] < 0.01 * np.var(1e39 * np.sin(3 * np.linspace(0, 1, 100)))


def refusal(tmp_path, args) -> str:
    """The one error line of `train ARGS`, which must exit 2 before training."""
    result = runner.invoke(app, ["train", *args, "--epochs", "1", "--runs-dir", str(tmp_path)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "--lr" not in errors[0] and "learning rate" not in errors[0]
    return errors[0]


# What float32 cannot hold of each target as the network sees it with --scale SCALE.
CASES = {
    "x rounds": (NARROW_FAR, "none"),
    "y rounds": (NARROW_FAR, "x"),
    "too little: errors a thousandth of that square to less than the smallest normal float32": (["--target", "1e-40*(1+x)"], "none"),
    "whose square overflows float32": (["--target", "1e20*(1+x)"], "none"),
}


@pytest.mark.parametrize("problem", CASES)
def test_what_float32_cannot_hold_is_refused_saying_so_and_what_keeps_it(tmp_path, problem):
    args, scale = CASES[problem]
    line = refusal(tmp_path, [*args, "--scale", scale])
    assert "cannot be represented in float32 as the network sees it" in line and problem in line, line
    assert line.endswith("use --scale xy (the network then sees x on [-1, 1] and y of spread 1) or --dtype float64"), line


@pytest.mark.parametrize("problem", CASES)
@pytest.mark.parametrize("fix", [["--dtype", "float64"], ["--scale", "xy"]])
def test_each_fix_the_refusal_names_does_keep_the_points(tmp_path, problem, fix):
    args, scale = CASES[problem]
    chosen = fix if fix[0] == "--scale" else [*fix, "--scale", scale]
    result = runner.invoke(app, ["train", *args, *chosen, "--epochs", "1", "--points", "40", "--quiet", "--runs-dir", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output  # trained (one epoch may learn nothing)


@pytest.mark.parametrize(
    "values, problem",
    [(lambda x: 1e39 * (1 + x), "y reaches 2e+39, beyond the largest float32"), (lambda x: 1e-20 * (1 + x), "too little: errors a thousandth")],
)
def test_data_float32_cannot_hold_unscaled_are_refused_saying_so(tmp_path, values, problem):
    line = refusal(tmp_path, ["--data", data_file(tmp_path, values), "--scale", "none"])
    assert "cannot be represented in float32" in line and problem in line and "--dtype float64" in line, line


def test_a_formula_whose_figures_float64_cannot_hold_is_refused_before_training(tmp_path):
    """Near 1e-300 the MSEs (squares, near 1e-600) are 0 in float64: every fit would read as
    'learned nothing'. Data are held to the same bounds (MIN_DATA_SPREAD)."""
    line = refusal(tmp_path, ["--target", "1e-300*(1+x)"])
    assert "f varies by only 5.77e-301" in line and "in float64" in line and "multiply it by a power of ten" in line, line


def test_data_near_1e300_are_refused_with_their_true_spread(tmp_path):
    x = np.linspace(0.0, 1.0, 100)
    true = 1e-300 * np.std(1 + x)  # what np.std of the values themselves underflows to 0
    with pytest.raises(ValueError, match=f"a standard deviation of {true:.3g}, below 1e-150"):
        read_points(data_file(tmp_path, lambda x: 1e-300 * (1 + x)))


def test_spread_is_numpy_s_where_numpy_can_and_scaled_where_its_squares_would_not_fit():
    values = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    assert spread(values) == np.std(values)  # bit for bit: runs stay as they were
    for scale in (1e-300, 1e-200, 1e200, 1e300):
        assert spread(values * scale) == pytest.approx(np.std(values) * scale, rel=1e-12)
