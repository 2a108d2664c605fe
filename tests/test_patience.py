"""--patience: a member stops once its validation MSE has stopped improving, and the run when every
member has. A stopped member's weights stay bit for bit those of the member trained alone (which
ends there, up to the rounding of the batched kernels), and a resume ends as an uninterrupted run (issue: real measured data)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rungefit.cli.app import app
from rungefit.training.train import fit

from .helpers import runner, stop_after
from .test_data_units import data_config, noisy_wave, write_points

PATIENCE = 12


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    x, y = noisy_wave(noise=0.4)
    path = write_points(tmp_path_factory.mktemp("patience") / "noisy.csv", x, y)
    config, target = data_config(path, layers="16:tanh", lr=0.05, schedule="constant", epochs=400, batch_size=1000, seeds=(0, 1, 2), dtype="float64", workers=1, patience=PATIENCE)
    return config, target, fit(config, target)


def stop_epoch(val: np.ndarray, patience: int) -> int | None:
    """The rule from a member's validation curve alone: the first epoch T after which its best so
    far is `patience` epochs old and at least half as old as the epochs that found it."""
    for end in range(1, len(val) + 1):
        best = int(np.argmin(val[:end])) + 1  # the earliest of equal bests
        if end - best >= max(patience, -(-best // 2)):
            return end
    return None


def test_each_member_stops_by_the_rule_and_the_run_ends_when_all_have(noisy):
    config, _, result = noisy
    history = np.array(result.history.val_mse)
    stops = result.summary()["stopped"]["epochs"]
    assert stops == [stop_epoch(history[:, k], PATIENCE) for k in range(3)]
    assert None not in stops and len(set(stops)) > 1  # the members stop apart, before --epochs
    assert result.epochs_run == max(stops) < config.epochs and result.steps == result.epochs_run
    for k, stop in enumerate(stops):  # a stopped member's weights, and so its curve, stay as they were
        assert (history[stop - 1 :, k] == history[stop - 1, k]).all()
        assert result.history.lr[-1][k] == (0.0 if stop < result.epochs_run else config.lr)


def test_the_progress_reports_count_the_stopped_members(noisy):
    config, target, result = noisy
    reports = []
    fit(config, target, on_epoch=reports.append)
    stops = result.summary()["stopped"]["epochs"]
    assert [r.stopped for r in reports] == [sum(stop <= r.epoch for stop in stops) for r in reports]
    assert reports[-1].stopped == reports[-1].members == 3 and reports[-1].epoch == max(stops)


def test_a_stopped_member_is_the_member_trained_alone(noisy):
    config, target, stack = noisy
    stops = stack.summary()["stopped"]["epochs"]
    for k, seed in enumerate(config.seeds):
        alone = fit(replace(config, seeds=(seed,)), target)
        assert alone.epochs_run == stops[k]
        # As test_stacking's member k and single run: equal up to the batched kernels' rounding.
        assert torch.allclose(alone.model.params[0], stack.model.params[k], rtol=0, atol=1e-9)  # the kept (best) weights
        assert all(torch.allclose(alone.last_state[key][0], last[k], rtol=0, atol=1e-9) for key, last in stack.last_state.items())  # and the last
        assert alone.best.epoch.item() == stack.best.epoch[k].item()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_resume_across_the_stops_ends_as_the_uninterrupted_run(noisy, workers):
    config, target, whole = noisy
    config = replace(config, workers=workers)
    uninterrupted = whole if workers == 1 else fit(config, target)
    stops = sorted(whole.summary()["stopped"]["epochs"])
    result = fit(config, target, should_stop=stop_after(stops[0] - 3))  # before the first stop
    for step in (stops[1] - stops[0] + 1, 1):  # between two stops, then one step on
        assert result.status == "interrupted"
        result = fit(config, target, resume=result.state(), should_stop=stop_after(step))
    result = fit(config, target, resume=result.state())
    assert torch.equal(result.model.params, uninterrupted.model.params)
    assert all(torch.equal(result.last_state[key], last) for key, last in uninterrupted.last_state.items())
    assert result.history == uninterrupted.history and result.epochs_run == uninterrupted.epochs_run
    assert torch.equal(result.best.epoch, uninterrupted.best.epoch)


def test_train_says_when_each_member_stopped_and_an_explicit_epochs_runs_them_all(tmp_path):
    x, y = noisy_wave(noise=0.4)
    path = str(write_points(tmp_path / "noisy.csv", x, y))
    base = ["train", "--data", path, "--layers", "16:tanh", "--lr", "0.05", "--epochs", "400", "--seeds", "2", "--runs-dir", str(tmp_path / "runs"), "--json"]
    doc = json.loads(runner.invoke(app, [*base, "--patience", str(PATIENCE)]).stdout)
    assert doc["config"]["patience"] == PATIENCE and doc["epochs"] == max(doc["stopped"]["epochs"]) < 400
    assert "not improved" in doc["stopped"]["why"] and "stopping once" in doc["steps_why"]
    plain = json.loads(runner.invoke(app, base).stdout)  # --epochs given: every epoch runs
    assert plain["config"]["patience"] == 0 and plain["epochs"] == 400 and "stopped" not in plain
    shown = runner.invoke(app, [*base[:-1], "--patience", str(PATIENCE), "--quiet"])
    assert "stopped" in shown.stdout


def test_nothing_learned_names_patience_when_every_member_stopped_and_val_fraction_when_few_points_judged(tmp_path):
    x = np.linspace(0.0, 1.0, 60)
    path = str(write_points(tmp_path / "noise.csv", x, np.random.default_rng(3).normal(size=x.size)))
    runs = ["--runs-dir", str(tmp_path / "runs"), "--quiet", "--layers", "8:tanh"]
    stopped = runner.invoke(app, ["train", "--data", path, "--epochs", "300", "--patience", "10", *runs])
    (line,) = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert stopped.exit_code == 1 and "a larger --patience" in line and "more --epochs" not in line and "--layers 64:sin,64:tanh" in line
    assert "--val-fraction" not in line  # 14 validation points
    few = runner.invoke(app, ["train", "--data", path, "--epochs", "20", "--val-fraction", "0.1", *runs])
    (line,) = [line for line in few.stderr.splitlines() if line.startswith("error:")]
    assert few.exit_code == 1 and "more --epochs" in line and "a larger --val-fraction (a test over 5 points" in line


def test_a_stop_in_the_polish_after_every_member_stopped_resumes_at_the_polish(noisy):
    config, target, whole = noisy
    config = replace(config, polish="lm", polish_iterations=3)
    ended = max(whole.summary()["stopped"]["epochs"])
    epochs_done: list = []
    # Yes once the last member has stopped: the stop lands in the polish's first iteration.
    result = fit(config, target, on_epoch=epochs_done.append, should_stop=lambda: len(epochs_done) == ended)
    assert (result.status, result.epochs_run, result.polish, result.training_done) == ("interrupted", ended, None, True)
    resumed = fit(config, target, resume=result.state())
    uninterrupted = fit(config, target)
    assert resumed.epochs_run == uninterrupted.epochs_run == ended  # no epoch trained after the stops
    assert torch.equal(resumed.model.params, uninterrupted.model.params) and resumed.history == uninterrupted.history
    assert torch.equal(resumed.polish.final_mse, uninterrupted.polish.final_mse)
