"""Measured data in any units: the maps into the network's standard coordinates, the step floor,
the kept best-validation weights and the significance verdict (issue: real measured data)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

import rungefit
from rungefit import targets
from rungefit.cli.app import app
from rungefit.config import (
    DATA_LAYERS,
    DATA_LR,
    DATA_PATIENCE_STEPS,
    DATA_STEPS,
    DataPlan,
    TrainConfig,
    data_defaults,
    data_plan,
)
from rungefit.errors import UsageError
from rungefit.runs import RunStore
from rungefit.study import grad
from rungefit.study.evaluate import member_prediction
from rungefit.training.metrics import learned_significantly
from rungefit.training.train import fit

from .helpers import runner, stop_after

SEEDS = (0, 1, 2, 3, 4)


def write_points(path, x, y, header="x,y"):
    """A CSV whose every number reads back exactly (repr of a Python float)."""
    path.write_text(header + "\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y, strict=True)))
    return path


def noisy_wave(n=120, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 1.0, n))
    return x, np.sin(6 * x) + 0.5 * x + rng.normal(0.0, noise, n)


def data_config(path, **settings) -> tuple[TrainConfig, targets.Target]:
    chosen = targets.settings(data=str(path))
    config = TrainConfig(**chosen.fields, **settings)
    return config, targets.resolve(config, chosen.points)


def test_powers_of_two_in_x_and_y_give_the_same_standard_points_and_the_same_network(tmp_path):
    x, y = noisy_wave()
    configs = [data_config(write_points(tmp_path / f"{a}-{c}.csv", a * x, c * y), epochs=40, batch_size=1000, seeds=(0, 1), dtype="float64")
               for a, c in ((1.0, 1.0), (1024.0, 1.0 / 8), (1.0 / 64, 2.0**20))]
    splits = [target.split(torch.tensor([0, 1]), config.points, config.val_fraction, dtype=torch.float64) for config, target in configs]
    results = [fit(config, target) for config, target in configs]
    for split, result in zip(splits[1:], results[1:], strict=True):
        for name in ("x_train", "x_val", "y_train", "y_val"):
            assert torch.equal(getattr(split, name), getattr(splits[0], name)), name
        assert torch.equal(result.model.params, results[0].model.params)


@pytest.mark.parametrize("a, b, c, d", [(1e-3, 2.5, 1e3, -7.0), (1e3, -4e5, 1e-3, 1e2), (37.0, 3.7e4, 0.05, 300.0)])
def test_any_affine_units_give_nearly_the_same_standard_points_and_fit(tmp_path, a, b, c, d):
    x, y = noisy_wave()
    plain = data_config(write_points(tmp_path / "plain.csv", x, y), epochs=200, seeds=SEEDS, dtype="float64")
    moved = data_config(write_points(tmp_path / "moved.csv", a * x + b, c * y + d), epochs=200, seeds=SEEDS, dtype="float64")
    tolerance = 1e-12 * (1 + abs(b) / (a * np.std(x)))
    first, second = (target.split(torch.tensor(SEEDS), config.points, config.val_fraction, dtype=torch.float64) for config, target in (plain, moved))
    for name in ("x_train", "x_val", "y_train", "y_val"):
        assert torch.allclose(getattr(first, name), getattr(second, name), rtol=0, atol=tolerance), name
    scores = []
    for config, target in (plain, moved):
        result = fit(config, target)
        test_y = target.points.y[target.test_index]
        scores.append(np.median([m.test_mse for m in result.members]) / np.var(test_y))
    assert 1 / 1.5 <= scores[1] / scores[0] <= 1.5, scores


def test_history_tables_and_predictions_are_in_data_units(tmp_path):
    x, y = noisy_wave()
    config, target = data_config(write_points(tmp_path / "units.csv", 1000 + 500 * x, 300 + 40 * y), epochs=300, dtype="float64")
    assert not target.maps.identity
    result = fit(config, target)
    member = result.members[0]
    test_x, test_y = target.points.x[target.test_index], target.points.y[target.test_index]
    prediction = member_prediction(result.model, target, 0, test_x)
    assert np.mean((prediction - test_y) ** 2) == pytest.approx(member.test_mse, rel=1e-12)
    assert result.history.val_mse[-1][0] == pytest.approx(member.val_mse, rel=1e-9) or result.keeps_best
    assert member.val_var == pytest.approx(np.var(target.maps.y_out(target.split([0], config.points, config.val_fraction, dtype=torch.float64).y_val.numpy())), rel=1e-9)


def test_a_scaled_run_exports_in_data_units_and_its_gradient_is_autograds(tmp_path):
    x, y = noisy_wave()
    path = write_points(tmp_path / "years.csv", 1950 + 50 * x, 320 + 15 * y, header="year,ppm")
    result = runner.invoke(app, ["train", "--data", str(path), "--epochs", "300", "--dtype", "float64", "--runs-dir", str(tmp_path / "runs"), "--name", "y", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    run = RunStore(tmp_path / "runs").open("y")
    xs = np.linspace(1950, 2000, 101)
    network = run.network(0)
    exported = network(torch.tensor(xs).reshape(-1, 1)).numpy().ravel()
    assert np.abs(exported - member_prediction(run.model, run.target, 0, xs)).max() <= 1e-5 * np.std(run.target.points.y)
    check = grad.check_gradient(grad.as_float64(run.model, 0), run.target, xs)
    np.testing.assert_allclose(check.explicit, check.autograd, rtol=1e-9, atol=1e-12)
    chain = grad.explain_chain(grad.as_float64(run.model, 0), 1975.0, run.target.maps)
    assert chain[0].kind == "units" and chain[-1].running[0, 0] == pytest.approx(grad.check_gradient(grad.as_float64(run.model, 0), run.target, np.array([1975.0])).autograd[0], rel=1e-9)


def test_a_data_run_trains_to_its_patience_unless_epochs_are_given(tmp_path):
    x, y = noisy_wave(n=60)
    path = write_points(tmp_path / "small.csv", x, y)
    config, why = data_defaults(data_config(path)[0], given=())
    assert (config.batch_size, config.epochs, config.patience, config.schedule) == (config.n_train, DATA_STEPS, DATA_PATIENCE_STEPS, "constant")
    assert f"up to {DATA_STEPS} optimizer steps" in why and f"not improved for {DATA_PATIENCE_STEPS} steps" in why
    assert data_plan(config.n_train, {"epochs": 7}) == DataPlan(config.n_train, 7, 0)  # an explicit --epochs runs them all
    assert data_plan(config.n_train, {"epochs": 7, "patience": 3}).patience == 3
    large = data_plan(5000, {})
    assert large.batch_size < 5000 and large.epochs * -(-5000 // large.batch_size) >= DATA_STEPS
    assert large.patience * -(-5000 // large.batch_size) >= DATA_PATIENCE_STEPS
    given = runner.invoke(app, ["train", "--data", str(path), "--epochs", "5", "--runs-dir", str(tmp_path / "runs"), "--quiet", "--json"])
    doc = json.loads(given.stdout)
    assert doc["epochs"] == 5 and doc["steps"] == 5 and "5 optimizer steps" in doc["steps_why"]
    assert doc["config"]["layers"] == DATA_LAYERS and doc["config"]["lr"] == DATA_LR  # the data defaults, not given
    mine = runner.invoke(app, ["train", "--data", str(path), "--epochs", "5", "--layers", "8:tanh", "--lr", "0.1", "--runs-dir", str(tmp_path / "runs"), "--quiet", "--json"])
    assert (json.loads(mine.stdout)["config"]["layers"], json.loads(mine.stdout)["config"]["lr"]) == ("8:tanh", 0.1)


def test_the_api_data_config_is_the_config_train_data_runs(tmp_path):
    x, y = noisy_wave(n=60)
    path = write_points(tmp_path / "years.csv", 1900 + 100 * x, 300 + 20 * y)
    runs = str(tmp_path / "runs")
    ran = runner.invoke(app, ["train", "--data", str(path), "--epochs", "3", "--seeds", "2", "--runs-dir", runs, "--name", "d", "--quiet"])
    assert ran.exit_code in (0, 1), ran.output
    saved = RunStore(runs).open("d").config
    config = rungefit.data_config(path, epochs=3, seeds=(0, 1))
    assert replace(config, workers=saved.workers, device=saved.device) == saved
    assert (config.layers, config.lr, config.batch_size) == (DATA_LAYERS, DATA_LR, config.n_train)
    with pytest.raises(UsageError, match="points cannot be given"):
        rungefit.data_config(path, points=10)
    assert rungefit.data_config(path, domain=(1850, 2050)).domain == (1850.0, 2050.0)  # a pair, as TrainConfig holds it
    for bad in (("a", "b"), (2050, 1850), 3):
        with pytest.raises(UsageError, match="--domain"):
            rungefit.data_config(path, domain=bad)


def test_each_member_keeps_its_best_validation_epoch_and_a_resume_ends_the_same(tmp_path):
    x, y = noisy_wave(noise=0.3)
    config, target = data_config(write_points(tmp_path / "noisy.csv", x, y), epochs=60, batch_size=1000, seeds=(0, 1, 2, 3), dtype="float64", workers=1)
    whole = fit(config, target)
    assert whole.keeps_best
    history = np.array(whole.history.val_mse)
    assert whole.best.epoch.tolist() == (np.argmin(history, axis=0) + 1).tolist()
    assert [m.val_mse for m in whole.members] == pytest.approx(history.min(axis=0).tolist(), rel=1e-12)
    for workers in (1, 2):
        uninterrupted = whole if workers == 1 else fit(replace(config, workers=workers), target)
        stopped = fit(replace(config, workers=workers), target, should_stop=stop_after(25))
        resumed = fit(replace(config, workers=workers), target, resume=stopped.state())
        assert torch.equal(resumed.model.params, uninterrupted.model.params), workers
        assert torch.equal(resumed.best.epoch, uninterrupted.best.epoch) and torch.equal(resumed.best.val, uninterrupted.best.val)


def test_the_significance_verdict_knows_noise_from_signal():
    rng = np.random.default_rng(0)
    n = 60
    # Noise alone: predicting it cannot beat the mean.
    noise = rng.normal(size=n)
    assert not learned_significantly([np.var(noise) * 0.95], [np.var(noise)], n)[0]
    # A signal with noise of 5 % of Var(y): the true function scores about 0.05 and has learned.
    assert learned_significantly([0.05], [1.0], n)[0]
    assert not learned_significantly([float("nan")], [1.0], n)[0]


@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_the_significance_test_holds_its_level_and_passes_good_fits_at_any_size(n):
    # Pure noise predicted by the mean: flagged as learned in about 1 % of draws, at every size.
    rng = np.random.default_rng(n)
    residuals = rng.normal(size=(40_000, n))
    flagged = learned_significantly((residuals**2).mean(axis=1), np.ones(40_000), n).mean()
    assert 0.007 < flagged < 0.013
    # A close fit passes even on a handful of validation points.
    assert learned_significantly([2e-4], [1.0], n)[0]


def test_a_noisy_data_set_fitted_well_exits_0_and_pure_noise_exits_1(tmp_path):
    x, y = noisy_wave(noise=0.2)  # noise variance well above 1 % of Var(y)
    good = runner.invoke(app, ["train", "--data", str(write_points(tmp_path / "good.csv", x, y)), "--epochs", "300", "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert good.exit_code == 0, good.output
    rng = np.random.default_rng(3)
    noise = runner.invoke(app, ["train", "--data", str(write_points(tmp_path / "noise.csv", x, rng.normal(size=x.size))), "--epochs", "300", "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert noise.exit_code == 1, noise.output
    (line,) = [line for line in noise.stderr.splitlines() if line.startswith("error:")]
    assert "not significantly below Var(y)" in line and "optimizer steps on x in [" in line and "y in [" in line and "--seeds 5" in line


def test_a_run_that_learned_nothing_is_never_used_silently(tmp_path):
    x = np.linspace(0.0, 1.0, 60)
    noise = np.random.default_rng(3).normal(size=x.size)
    path = write_points(tmp_path / "noise.csv", x, noise)
    runs = str(tmp_path / "runs")
    assert runner.invoke(app, ["train", "--data", str(path), "--epochs", "50", "--runs-dir", runs, "--name", "n", "--quiet"]).exit_code == 1
    for command in (["eval"], ["predict"], ["export", "--format", "safetensors"]):
        result = runner.invoke(app, [*command, "--run", "n", "--runs-dir", runs], input="0.5\n")
        assert result.exit_code == 0, result.output
        assert "learned nothing" in result.stderr, command
    import rungefit

    with pytest.warns(UserWarning, match="learned nothing"):
        rungefit.load("n", runs)


def test_a_polish_on_data_starts_from_the_kept_weights_and_stays_only_where_validation_improves(tmp_path):
    x, y = noisy_wave(noise=0.3)
    config, target = data_config(write_points(tmp_path / "noisy.csv", x, y), epochs=40, batch_size=1000, seeds=(0, 1, 2, 3), dtype="float64", workers=1, polish="lm", polish_iterations=8)
    result = fit(config, target)
    best_val = np.array(result.history.val_mse).min(axis=0)
    final_val = np.array([m.val_mse for m in result.members])
    kept = result.polish.kept.numpy()
    assert (final_val[kept] < best_val[kept]).all()
    np.testing.assert_allclose(final_val[~kept], best_val[~kept], rtol=1e-12)
    assert result.summary()["polish"]["kept"] == kept.tolist()


@pytest.mark.parametrize("x0, span", [(1900.0, 100.0), (1e6, 1e3)])
def test_a_float32_run_far_from_zero_exports_within_1e_5_of_its_spread(tmp_path, x0, span):
    x, y = noisy_wave()
    path = write_points(tmp_path / "far.csv", x0 + span * x, 300 + 20 * y)
    runs = str(tmp_path / "runs")
    assert runner.invoke(app, ["train", "--data", str(path), "--epochs", "100", "--runs-dir", runs, "--name", "f", "--quiet"]).exit_code in (0, 1)
    out = tmp_path / "f.pt2"
    assert runner.invoke(app, ["export", "--run", "f", "--runs-dir", runs, "--format", "pt2", "--out", str(out)]).exit_code == 0
    run = RunStore(runs).open("f")
    xs = np.linspace(x0, x0 + span, 301)
    exported = torch.export.load(str(out)).module()(torch.tensor(xs).reshape(-1, 1)).double().numpy().ravel()
    assert np.abs(exported - member_prediction(run.model, run.target, 0, xs)).max() <= 1e-5 * np.std(run.target.points.y)
    # The float64 ends are stated: the module takes and returns float64.
    tensors = tmp_path / "f.safetensors"
    assert runner.invoke(app, ["export", "--run", "f", "--runs-dir", runs, "--format", "safetensors", "--out", str(tensors)]).exit_code == 0
    with safe_open(str(tensors), "pt") as opened:
        assert (opened.metadata()["dtype"], opened.metadata()["io_dtype"]) == ("float32", "float64")
