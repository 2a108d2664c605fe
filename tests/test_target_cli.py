"""Targets end to end through the CLI: the default stays the Runge function, exactly as before."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from rungefit.cli.app import app
from rungefit.config import PRESETS, TrainConfig
from rungefit.runs import store as runs
from rungefit.targets import resolve
from rungefit.targets.formula import Formula
from rungefit.training.train import fit

from .helpers import DATA, heavy_imports_after, runge, runner, save_run, stop_after

# A float64 run that gets past the mean predictor's plateau in a fraction of a second.
PINNED = ["--points", "300", "--epochs", "40", "--batch-size", "10", "--dtype", "float64", "--quiet", "--json"]
# Its test MSE, measured before the target became a setting of the run (commit "Pin a float64
# run's test MSE"): any change to the default target's numbers moves it.
PINNED_TEST_MSE = 0.00016147695890587758



def train(tmp_path, *args: str) -> dict:
    """`rungefit train … --json`'s summary. Most of these runs are too short to learn f, which
    train reports with exit 1 (the run is saved all the same)."""
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output
    summary = json.loads(result.stdout)
    assert result.exit_code == (1 if summary["fit"] == "nothing learned" else 0), result.output
    return summary


def test_a_float64_run_of_the_default_target_keeps_its_test_mse(tmp_path):
    test_mse = train(tmp_path, *PINNED)["members"][0]["test_mse"]
    assert abs(test_mse - PINNED_TEST_MSE) <= 1e-12 * PINNED_TEST_MSE


def model_tensors(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def test_the_default_and_target_runge_give_identical_tensors_and_numbers(tmp_path):
    quick = ["--points", "120", "--epochs", "3", "--quiet", "--json"]
    default = train(tmp_path, *quick, "--name", "default")
    named = train(tmp_path, *quick, "--name", "named", "--target", "runge", "--domain", "-1,1")
    for key, tensor in model_tensors(tmp_path / "default").items():
        assert torch.equal(tensor, model_tensors(tmp_path / "named")[key]), key
    assert default["members"] == named["members"] and default["stats"] == named["stats"]
    config = json.loads((tmp_path / "default" / "config.json").read_text())
    assert (config["target"], config["domain"], config["data"]) == ("runge", [-1.0, 1.0], "")


def test_the_target_is_evaluated_once_per_data_set_never_per_step(monkeypatch):
    calls = {}
    original = Formula.__call__
    for epochs in (1, 4):
        config = TrainConfig(target="sin(3*x)", points=200, epochs=epochs, batch_size=10)
        target = resolve(config)  # parsed and checked once per command, then passed down
        seen = calls[epochs] = []
        monkeypatch.setattr(Formula, "__call__", lambda self, x, seen=seen: seen.append(tuple(x.shape)) or original(self, x))
        fit(config, target)
        monkeypatch.undo()
    # The member's points once; then, for the final figures in float64, the test grid, the
    # training and the validation points: as many evaluations for 4 epochs as for 1.
    assert calls[1] == calls[4]
    assert calls[1][0] == (1, 200) and (100,) in calls[1] + [shape[1:] for shape in calls[1]]
    assert all(10 not in shape for shape in calls[1])  # never a mini-batch


def test_an_old_run_without_target_fields_is_the_runge_function(tmp_path):
    train(tmp_path, "--points", "120", "--epochs", "2", "--quiet", "--json", "--name", "old")
    config_file = tmp_path / "old" / "config.json"
    config = json.loads(config_file.read_text())
    for name in ("target", "domain", "data", "data_sha256", "test_fraction"):
        del config[name]
    config_file.write_text(json.dumps(config))
    loaded = runs.load_run(tmp_path, "old")
    assert (loaded.config.target, loaded.config.domain) == ("runge", (-1.0, 1.0))
    doc = invoke_json("eval", "--run", "old", "--runs-dir", str(tmp_path))
    assert doc["scores"][0]["mse"] == json.loads((tmp_path / "old" / "summary.json").read_text())["members"][0]["test_mse"]


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_formula_round_trips_through_config_json(tmp_path):
    formula = "exp(-x**2) * cos(5*x)  +  0.1*abs(x - 0.25)"
    train(tmp_path, "--target", formula, "--points", "120", "--epochs", "2", "--quiet", "--json", "--name", "f")
    assert json.loads((tmp_path / "f" / "config.json").read_text())["target"] == formula  # exactly as typed
    target = runs.load_run(tmp_path, "f").target
    x = np.linspace(-1, 1, 101)
    np.testing.assert_array_equal(target(x), np.exp(-(x**2)) * np.cos(5 * x) + 0.1 * np.abs(x - 0.25))
    assert target.kinks == pytest.approx((0.25,), abs=1e-12)


def test_data_end_to_end_train_eval_grad_and_the_run_survives_the_file_moving(tmp_path):
    source = tmp_path / "measured.csv"
    shutil.copyfile(DATA, source)
    runs_dir = tmp_path / "runs"
    summary = train(runs_dir, "--data", str(source), "--epochs", "3", "--batch-size", "16", "--seeds", "2", "--quiet", "--json", "--name", "d")
    run_dir = runs_dir / "d"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"] == str(source) and config["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert (config["points"], config["test_points"], config["test_fraction"]) == (160, 40, 0.2)
    assert (run_dir / "data.csv").read_bytes() == DATA.read_bytes()
    source.unlink()  # the run keeps its own copy

    doc = invoke_json("eval", "--baselines", "--x", "1.0", "--runs-dir", str(runs_dir), "--member", "1")
    assert doc["data"] is True and doc["points"] == 40
    assert doc["scores"][0]["mse"] == summary["members"][1]["test_mse"]
    names = [s["name"] for s in doc["scores"]]
    assert names == ["network", "Chebyshev LS, d = 10", "Chebyshev LS, d = 20", "Chebyshev LS, d = 40", "smoothing spline (GCV)"]
    assert doc["at_x"][0]["target"] is None and doc["at_x"][0]["error"] is None

    doc = invoke_json("grad", "--grid", "201", "--x", "1.0", "--runs-dir", str(runs_dir))
    point = doc["points"][0]
    assert point["true"] is None and point["network_vs_true"] is None and point["target"] is None
    assert point["product_vs_autograd"] < 1e-12 and doc["grid"]["max_network_vs_true"] is None
    assert doc["grid"]["points"] == 201 and doc["domain"] == list(config["domain"])
    assert all((run_dir / name).read_bytes().startswith(b"\x89PNG") for name in ("fit.png", "eval.png", "grad.png"))
    text = runner.invoke(app, ["grad", "--x", "1.0", "--runs-dir", str(runs_dir)]).stdout
    assert "no true derivative" in text


def test_a_shifted_domain_end_to_end(tmp_path):
    train(tmp_path, "--domain", "0,3", "--points", "200", "--epochs", "3", "--quiet", "--json", "--name", "s")
    doc = invoke_json("eval", "--baselines", "--runs-dir", str(tmp_path))
    assert doc["domain"] == [0.0, 3.0] and doc["regions"] == {"ends": "|x − 1.5| > 1.2", "middle": "|x − 1.5| ≤ 1.2"}
    assert 0 <= doc["scores"][0]["max_abs_error_at"] <= 3
    # The baselines are built on [0, 3]: the spline through 11 equally spaced nodes of it.
    x, nodes = np.linspace(0, 3, 100), np.linspace(0, 3, 11)
    expected = np.mean((CubicSpline(nodes, runge(nodes))(x) - runge(x)) ** 2)
    spline = next(s for s in doc["scores"] if s["name"] == "cubic spline, d = 10")
    assert spline["mse"] == pytest.approx(expected, rel=1e-12)
    doc = invoke_json("grad", "--grid", "31", "--runs-dir", str(tmp_path))
    assert doc["grid"]["points"] == 31 and 0 <= doc["grid"]["max_network_vs_true_at"] <= 3
    warned = runner.invoke(app, ["eval", "--x", "-0.5", "--runs-dir", str(tmp_path)])
    assert "outside [0, 3]" in warned.stderr


def test_grad_says_where_f_is_not_differentiable(tmp_path):
    train(tmp_path, "--target", "abs", "--points", "120", "--epochs", "2", "--quiet", "--json", "--name", "a")
    doc = invoke_json("grad", "--x", "0", "--x", "0.5", "--grid", "201", "--runs-dir", str(tmp_path))
    kink, smooth = doc["points"]
    assert kink["differentiable"] is False and kink["true"] is None and kink["network_vs_true"] is None
    assert smooth["differentiable"] is True and smooth["true"] == 1.0
    assert doc["grid"]["not_differentiable_at"] == [0.0]
    text = runner.invoke(app, ["grad", "--x", "0", "--runs-dir", str(tmp_path)]).stdout
    assert "not differentiable" in text


def test_grad_untrained_and_eval_x_work_with_any_target(tmp_path):
    doc = invoke_json("grad", "--untrained", "--target", "step", "--domain", "-2,2", "--x", "0", "--x", "1")
    assert doc["domain"] == [-2.0, 2.0] and [p["differentiable"] for p in doc["points"]] == [False, True]
    doc = invoke_json("grad", "--untrained", "--data", str(DATA), "--grid", "5")
    assert doc["target"] == "data damped_sine.csv" and doc["grid"]["rms_network_vs_true"] is None
    train(tmp_path, "--target", "sine", "--points", "120", "--epochs", "2", "--quiet", "--json", "--name", "s")
    point = invoke_json("eval", "--x", "0.5", "--runs-dir", str(tmp_path))["at_x"][0]
    assert point["target"] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "formula",
    ["__import__('os').system('touch {marker}')", "open('{marker}', 'w')", "x.__class__", "(lambda: 1)()", "[x for x in (1,)]", "min(x, key=abs)", "'s'", "9**9**9**9", "x" * 1_000_000],
    ids=["import", "open", "attribute", "lambda", "comprehension", "keyword", "string", "power tower", "1 MB"],
)
def test_a_hostile_formula_planted_in_config_json_is_a_damaged_run(formula, quick_run, tmp_path):
    _, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    marker = tmp_path / "code-ran"
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps({**config, "target": formula.format(marker=marker)}))
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(tmp_path, "r")
    for command in ("eval", "grad"):
        result = runner.invoke(app, [command, "--run", "r", "--runs-dir", str(tmp_path)])
        assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert not marker.exists()


@pytest.mark.parametrize("change", [{"domain": [1, 1]}, {"domain": ["a", 1]}, {"domain": 3}, {"target": ["x"]}, {"test_fraction": "half"}, {"data": "gone.csv", "data_sha256": "0" * 64}])
def test_damaged_target_fields_in_config_json_are_a_damaged_run(change, quick_run, tmp_path):
    _, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(tmp_path, "r")


def test_train_help_lists_the_presets():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert all(f"`{name}`" in result.stdout or name in result.stdout for name in PRESETS)
    assert "--target" in result.stdout and "--domain" in result.stdout and "--data" in result.stdout


def test_checking_a_target_imports_no_torch():
    checked = "from rungefit import targets\nfrom rungefit.config import TrainConfig\n" + "\n".join(
        f"print(targets.resolve(TrainConfig(**targets.settings({spec!r}, {domain!r}).fields)).name)" for spec, domain in (("exp(-x**2)", "0,3"), ("abs", None))
    )
    printed, heavy = heavy_imports_after(checked)
    assert printed.split() == ["f(x)", "=", "exp(-x**2)", "abs"] and "torch" not in heavy


COVERED = [*(["--target", name] for name in PRESETS), ["--target", "exp(-x**2) * cos(5*x)"], ["--data", str(DATA), "--batch-size", "16"]]


@pytest.mark.parametrize("target", COVERED, ids=[" ".join(t[:2]) for t in COVERED])
def test_every_command_runs_on_every_preset_a_formula_and_a_data_file(target, tmp_path):
    quick = [] if "--data" in target else ["--points", "120"]
    train(tmp_path, *target, *quick, "--epochs", "2", "--quiet", "--json")
    found = invoke_json("lr-find", *target, *quick, "--iters", "5", "--verify", "--verify-rates", "1", "--verify-seeds", "1", "--verify-epochs", "1", "--runs-dir", str(tmp_path))
    assert found["verification"]["rates"]
    assert invoke_json("eval", "--baselines", "--runs-dir", str(tmp_path))["scores"][1:]
    assert invoke_json("grad", "--grid", "201", "--runs-dir", str(tmp_path))["grid"]["points"] == 201


def test_an_interrupted_data_run_resumes_from_its_own_copy_to_the_uninterrupted_numbers(tmp_path):
    from rungefit.targets import settings

    source = tmp_path / "points.csv"
    shutil.copyfile(DATA, source)
    config = TrainConfig(**settings(data=str(source)).fields, epochs=4, batch_size=16, dtype="float64", seeds=(0, 1))
    uninterrupted = fit(config)
    stopped = fit(config, should_stop=stop_after(25))
    assert stopped.status == "interrupted" and 0 < stopped.epochs_run < 4
    save_run(tmp_path, stopped, "r")
    source.unlink()
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path), "--json"])
    assert result.exit_code in (0, 1), result.output
    assert json.loads(result.stdout)["members"] == uninterrupted.summary()["members"]
