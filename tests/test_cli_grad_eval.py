"""`rungefit grad` and `rungefit eval` end to end, on short runs trained under tmp_path."""

import errno
import json
import os
import shutil

import pytest

from rungefit.cli.app import app

from .helpers import QUICK_TRAIN, runner, save_run, stop_after


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A runs directory with a one-member run "single" and a three-member run "stack"."""
    path = tmp_path_factory.mktemp("runs")
    for name, extra in (("single", ()), ("stack", ("--seeds", "3"))):
        result = invoke("train", *QUICK_TRAIN, "--runs-dir", str(path), "--name", name, *extra)
        assert result.exit_code == 0, result.output
    return path


def summary(runs_dir, name):
    return json.loads((runs_dir / name / "summary.json").read_text())


def test_grad_prints_a_table_and_writes_grad_png(runs_dir):
    result = invoke("grad", "--x", "0.3", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert "autograd" in result.stdout and "f'(x)" in result.stdout
    assert (runs_dir / "single" / "grad.png").read_bytes().startswith(b"\x89PNG")


def test_grad_json_checks_the_product_three_ways(runs_dir):
    result = invoke("grad", "--x", "0.3", "--x", "-0.7", "--grid", "21", "--json", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [p["x"] for p in doc["points"]] == [0.3, -0.7]
    assert all(p["product_vs_autograd"] < 1e-12 and p["fd_vs_autograd"] < 1e-6 for p in doc["points"])
    assert doc["grid"]["points"] == 21 and doc["dtype"] == "float64"


def test_grad_defaults_to_a_grid_of_the_latest_run_and_its_best_member(runs_dir):
    result = invoke("grad", "--json", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    val = [m["val_mse"] for m in summary(runs_dir, "stack")["members"]]
    assert doc["run"].endswith("stack") and doc["member"] == val.index(min(val))
    assert doc["grid"]["points"] == 201 and doc["points"] == []


def test_grad_explain_shows_the_shapes_and_the_input_layer_note(runs_dir):
    result = invoke("grad", "--x", "0.3", "--explain", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert "20×1" in result.stdout and "identity" in result.stdout


def test_grad_untrained_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("grad", "--untrained", "--seed", "2", "--layers", "4:tanh", "--x", "0.3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"] is None
    assert list(tmp_path.iterdir()) == []


def test_extrapolation_is_allowed_with_a_warning(runs_dir):
    result = invoke("eval", "--x", "1.5", "--json", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert "extrapolation" in result.stderr
    assert json.loads(result.stdout)["at_x"][0]["extrapolation"] is True


@pytest.mark.parametrize(
    "args",
    [
        ("grad", "--x", "nan"),
        ("eval", "--x", "inf"),
        ("grad", "--seed", "1"),
        ("grad", "--explain"),
        ("grad", "--member", "7"),
        ("eval", "--points", "1"),
        ("grad", "--untrained", "--layers", "5:nope"),
    ],
)
def test_bad_options_are_one_line_usage_errors(runs_dir, args):
    result = invoke(*args, "--runs-dir", str(runs_dir))
    assert result.exit_code == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def test_eval_reproduces_the_test_mse_train_reported(runs_dir):
    for name, member in (("single", 0), ("stack", 2)):
        result = invoke("eval", "--json", "--member", str(member), "--run", name, "--runs-dir", str(runs_dir))
        assert result.exit_code == 0, result.output
        network = json.loads(result.stdout)["scores"][0]
        assert network["mse"] == summary(runs_dir, name)["members"][member]["test_mse"]
    assert (runs_dir / "stack" / "eval.png").read_bytes().startswith(b"\x89PNG")


def test_eval_baselines_table(runs_dir):
    result = invoke("eval", "--baselines", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert "Chebyshev, d = 40" in result.stdout and "cubic spline, d = 10" in result.stdout


@pytest.mark.parametrize("command", ["grad", "eval"])
def test_missing_runs_and_models_say_how_to_make_one(runs_dir, tmp_path, command):
    (runs_dir / "no-model").mkdir(exist_ok=True)
    for args in (("--run", "nope", "--runs-dir", str(runs_dir)), ("--run", "no-model", "--runs-dir", str(runs_dir)), ("--runs-dir", str(tmp_path))):
        result = invoke(command, *args)
        assert result.exit_code == 1
        assert len(result.stderr.strip().splitlines()) == 1 and "rungefit train" in result.stderr


def test_eval_after_the_newest_run_was_deleted_takes_the_newest_left_and_says_which(runs_dir, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    shutil.rmtree(copy / "stack")  # the latest run
    result = invoke("eval", "--json", "--runs-dir", str(copy))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"] == str(copy / "single")
    assert "'stack'" in result.stderr and "no longer exists" in result.stderr and "'single'" in result.stderr


@pytest.mark.parametrize("command", ["grad", "eval"])
@pytest.mark.parametrize("errno_, words", [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied")])
def test_a_figure_that_cannot_be_written_is_a_warning_after_the_results(runs_dir, monkeypatch, command, errno_, words):
    from rungefit.runs import store

    def refuse(path, data):
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(store, "atomic_write", refuse)
    result = invoke(command, "--json", "--run", "single", "--runs-dir", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"] == str(runs_dir / "single")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{command}.png" in warnings[0] and words in warnings[0]


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A runs directory with an interrupted run and a diverged one."""
    from rungefit.config import TrainConfig
    from rungefit.training.train import fit

    path = tmp_path_factory.mktemp("unfinished")
    stopped = fit(TrainConfig(points=120, epochs=5), should_stop=stop_after(7))
    save_run(path, stopped, "stopped")
    diverging = invoke("train", "--points", "120", "--epochs", "5", "--lr", "1e30", "--schedule", "constant", "--quiet", "--runs-dir", str(path), "--name", "blown")
    assert diverging.exit_code == 1, diverging.output
    return path


@pytest.mark.parametrize("command", ["grad", "eval"])
@pytest.mark.parametrize(
    "run, words",
    [("stopped", ["interrupted after epoch 2 of 5", "train --resume stopped"]), ("blown", ["diverged in epoch 1", "last finite state"])],
)
def test_studying_an_unfinished_run_says_so(unfinished, command, run, words):
    result = invoke(command, "--json", "--run", run, "--runs-dir", str(unfinished))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and all(word in warnings[0] for word in words), result.stderr


def test_a_member_asked_for_is_not_called_the_best(spec_runs):
    runs_dir, name, _ = spec_runs["16:gelu,8:relu", "float64"]
    asked = json.loads(invoke("eval", "--json", "--run", name, "--runs-dir", str(runs_dir), "--member", "1").stdout)
    chosen = json.loads(invoke("eval", "--json", "--run", name, "--runs-dir", str(runs_dir)).stdout)
    assert asked["source"].endswith("member 1 of 2") and chosen["source"].endswith("best by validation MSE")
