"""Targets end to end through the CLI: the default stays the Runge function, exactly as before."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rungefit.cli import app

runner = CliRunner()

# A float64 run that gets past the mean predictor's plateau in a fraction of a second.
PINNED = ["--points", "300", "--epochs", "40", "--batch-size", "10", "--dtype", "float64", "--quiet", "--json"]
# Its test MSE, measured before the target became a setting of the run (commit "Pin a float64
# run's test MSE"): any change to the default target's numbers moves it.
PINNED_TEST_MSE = 0.00016147695890587758


def train(tmp_path, *args: str) -> dict:
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_float64_run_of_the_default_target_keeps_its_test_mse(tmp_path):
    test_mse = train(tmp_path, *PINNED)["members"][0]["test_mse"]
    assert abs(test_mse - PINNED_TEST_MSE) <= 1e-12 * PINNED_TEST_MSE
