"""No Python warning reaches the user: the conditions that raised them are handled where they
arise (an overflow is inf, a glyph the font lacks is its box), and any other warning is one
`warning:` line of rungefit's, never Python's line with a source path."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch

from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.runs import RunStore
from rungefit.study import evaluate
from rungefit.training.train import fit

from .helpers import runner


def invoke_recording(args):
    """runner.invoke(app, args) with every Python warning recorded (none may be raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args)
    return result, caught


@pytest.fixture(scope="module")
def float64_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("warnings")
    RunStore(root).save(fit(TrainConfig(layers="6:tanh", points=60, epochs=2, dtype="float64", workers=1)), name="r")
    return root / "r"


def far_gone(run_dir, tmp_path, output: float):
    """A copy of the run whose network outputs about `output` everywhere: as the last finite state
    of a diverged float64 run may (its output bias set to it)."""
    shutil.copytree(run_dir, tmp_path / "r")
    checkpoint = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    bias = checkpoint["state_dict"]["layers.1.bias"]
    checkpoint["state_dict"]["layers.1.bias"] = torch.full_like(bias, output)
    torch.save(checkpoint, tmp_path / "r" / "model.pt")
    return tmp_path


@pytest.mark.real_png
@pytest.mark.parametrize("output", [1e200, 1e300, 1.5e308])
def test_eval_of_a_network_beyond_float64_s_squares_reports_inf_and_draws_its_figure(float64_run, tmp_path, output):
    runs_dir = far_gone(float64_run, tmp_path, output)
    result, caught = invoke_recording(["eval", "--run", "r", "--runs-dir", str(runs_dir), "--baselines", "--json"])
    assert result.exit_code == 0, result.output
    assert caught == [] and "overflow" not in result.stderr and "Warning" not in result.stderr, result.stderr
    network = json.loads(result.stdout)["scores"][0]
    assert network["mse"] is None and network["max_abs_error"] == pytest.approx(output, rel=1e-6)  # inf is null in JSON
    assert (runs_dir / "r" / "eval.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("command", [["grad", "--x", "0.3"], ["predict", "--grad"]])
def test_grad_and_predict_of_such_a_network_raise_no_warning(float64_run, tmp_path, command):
    runs_dir = far_gone(float64_run, tmp_path, 1.5e308)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, [*command, "--run", "r", "--runs-dir", str(runs_dir)], input="0.5\n")
    assert result.exit_code == 0 and caught == [] and "Warning" not in result.stderr, result.output


def test_an_error_beyond_float64_s_squares_scores_inf_without_a_warning():
    x = np.linspace(-1, 1, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = evaluate.score("network", 1, x, np.full(11, 1e200))
    assert scores.mse == math.inf and scores.rmse == math.inf and scores.ends_rmse == math.inf
    assert scores.max_abs_error == 1e200


@pytest.mark.real_png
def test_a_column_name_the_font_cannot_draw_is_drawn_without_a_warning(tmp_path):
    data = tmp_path / "cjk.csv"
    data.write_text("时间,温度🌡\n" + "".join(f"{i / 40},{math.sin(i / 10)}\n" for i in range(41)), encoding="utf-8")
    result, caught = invoke_recording(["train", "--data", str(data), "--epochs", "2", "--quiet", "--runs-dir", str(tmp_path / "runs"), "--name", "r"])
    assert result.exit_code in (0, 1), result.output  # two epochs may learn nothing
    assert caught == [] and "Glyph" not in result.stderr, result.stderr
    assert (tmp_path / "runs" / "r" / "fit.png").read_bytes().startswith(b"\x89PNG")


def test_any_other_warning_is_one_line_of_rungefit_s_own(float64_run, monkeypatch):
    """What no cause above handles still never prints Python's warning line (path, line number, code)."""
    original = evaluate.evaluate

    def warns(*args, **kwargs):
        warnings.warn("something\nodd happened", RuntimeWarning, stacklevel=1)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate", warns)
    result, caught = invoke_recording(["eval", "--run", "r", "--runs-dir", str(float64_run.parent)])
    assert result.exit_code == 0, result.output
    assert caught == []
    assert "warning: something odd happened" in result.stderr.splitlines()
    assert ".py" not in result.stderr and "RuntimeWarning" not in result.stderr
