"""lr_find: the sweep, the smoothing, the rules on synthetic curves, the range test's stops and
state restoration, the verification grid's layout, the --lr auto pick, and the lr-find command."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch

from rungefit.cli import render as report
from rungefit.cli.app import app
from rungefit.cli.train import lr_find_command
from rungefit.config import TrainConfig
from rungefit.targets import DataSplit, resolve
from rungefit.training import lr_find as lr_find
from rungefit.training import lr_rules as lr_rules
from rungefit.training.stack import EpochBatches, new_stack
from rungefit.training.train import fit

from .helpers import LEARNS, runner

# 70 training points in batches of 10: seven steps an epoch, so the sweep crosses epochs.
SMALL = TrainConfig(points=100, batch_size=10, seeds=(0, 1))


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the sweep and the smoothing


@pytest.mark.parametrize("mode", lr_rules.MODES)
@pytest.mark.parametrize(("start", "end", "iters"), [(1e-7, 10.0, 100), (3e-5, 0.7, 37), (1e-3, 1e-2, 2)])
def test_sweep_hits_both_ends_exactly_and_is_evenly_spaced(mode, start, end, iters):
    rates = lr_rules.sweep(start, end, iters, mode)
    assert len(rates) == iters
    assert rates[0] == start and rates[-1] == end
    steps = np.diff(np.log(rates) if mode == "exp" else rates)
    assert np.allclose(steps, steps[0], rtol=1e-9, atol=0)


def test_sweep_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        lr_rules.sweep(1e-7, 10.0, 100, "cosine")


def test_smoothing_is_bias_corrected():
    # Without the correction the average would start near zero; with it a constant stays constant.
    average = np.zeros(2)
    for step in range(50):
        average, smoothed = lr_rules.ema_step(average, np.full(2, 0.3), 0.98, step)
        assert np.allclose(smoothed, 0.3, rtol=1e-12)
    average, first = lr_rules.ema_step(np.zeros(1), np.array([4.0]), 0.5, 0)
    _, second = lr_rules.ema_step(average, np.array([2.0]), 0.5, 1)
    assert (first[0], second[0]) == (4.0, (0.25 * 4 + 0.5 * 2) / 0.75)


def test_divergence_is_a_ratio_to_the_best_or_any_non_finite_loss():
    raw = np.array([1.0, 1.0, np.nan, np.inf])
    smoothed = np.array([3.9, 4.1, 1.0, 1.0])
    assert lr_rules.is_diverged(raw, smoothed, np.ones(4), 4.0).tolist() == [False, True, True, True]


# ---------------------------------------------------------------- the rules on synthetic curves

LRS = np.geomspace(1e-6, 1.0, 61)  # ten points a decade


def test_steepest_finds_the_steepest_fall_in_log_lr():
    # A logistic drop centred on 1e-3 falls fastest there.
    losses = 1 - 0.9 / (1 + np.exp(-(np.log10(LRS) + 3) / 0.3))
    assert lr_rules.steepest(LRS, losses) == pytest.approx(1e-3)


def test_steepest_reads_slopes_against_log_lr_in_linear_mode():
    # Evenly spaced in lr, the points crowd at the top of the log axis; the drop at 1e-1 must still
    # be found where it is, not where the index-based slope would put it.
    lrs = np.linspace(1e-3, 1.0, 200)
    losses = 1 - 0.9 / (1 + np.exp(-(np.log10(lrs) + 1) / 0.2))
    assert math.log10(lr_rules.steepest(lrs, losses)) == pytest.approx(-1, abs=0.02)


def test_valley_picks_the_middle_of_the_longest_decreasing_stretch():
    losses = np.concatenate([np.ones(20), np.linspace(1, 0.1, 41)[1:], np.linspace(0.2, 3, 21)])
    index = int(np.flatnonzero(LRS == lr_rules.valley(LRS, losses))[0])
    # fastai: the stretch ends at 59 and is 41 long (one flat point, then 40 falling), so it starts
    # at 18 and the pick is 18 + int(41/3) + int(41/6).
    assert index == 18 + 13 + 6
    assert 20 < index < 59


def test_minimum_is_a_tenth_of_the_lowest_point():
    losses = (np.log10(LRS) + 2) ** 2
    assert lr_rules.minimum(LRS, losses) == pytest.approx(1e-3)


def test_rules_decline_a_curve_too_short_to_read():
    assert lr_rules.steepest(LRS[:2], np.ones(2)) is None
    assert lr_rules.valley(LRS[:1], np.ones(1)) is None
    assert lr_rules.minimum(LRS[:0], np.ones(0)) is None


def test_trim_drops_the_settling_start_and_the_blow_up():
    losses = np.linspace(1, 0, 100)
    losses[70] = np.nan
    lrs, kept = lr_rules.trim(np.arange(100.0), losses, iters=100)
    assert lrs[0] == 10 and lrs[-1] == 70 - lr_rules.SKIP_END - 1
    assert np.isfinite(kept).all()


def test_uninformative_curve_warns_and_an_informative_one_does_not():
    var_y = 0.08
    flat = np.full((100, 1), var_y) * (1 + 0.01 * np.sin(np.arange(100)))[:, None]
    falling = np.geomspace(var_y, var_y / 20, 100)[:, None]
    for smoothed, warns in ((flat, True), (falling, False)):
        test = lr_find.RangeTest(
            config=lr_find.RangeTestConfig(),
            seeds=(0,),
            lrs=lr_rules.sweep(1e-7, 10.0, 100),
            raw=smoothed,
            smoothed=smoothed,
            val=None,
            stops=[None],
            mean_loss=np.array([var_y]),
        )
        warning = lr_find.Findings(TrainConfig(), test).warning()
        assert (warning is not None) == warns
        if warns:
            assert "Var(y)" in warning and "--verify" in warning


# ---------------------------------------------------------------- the range test on a real stack


def _trained_stack():
    """A small stack after a few real steps, so the optimizer state is not trivially zero."""
    model, optimizer, data, seeds = new_stack(SMALL, resolve(SMALL))
    for x, y in EpochBatches(data.x_train, data.y_train, seeds, SMALL.batch_size)(0):
        model.mse_backward(x, y)
        optimizer.step()
    return model, optimizer, data, seeds


def test_range_test_restores_model_optimizer_and_rng_bit_for_bit():
    model, optimizer, data, seeds = _trained_stack()
    torch.manual_seed(1234)
    before = (model.params.clone(), model.grads.clone(), optimizer.state_dict(), torch.get_rng_state())
    test = lr_find.range_test(model, optimizer, data, seeds, SMALL.batch_size, lr_find.RangeTestConfig(iters=30, end_lr=100.0))
    assert len(test.lrs) > 1  # it did train
    assert torch.equal(model.params, before[0])
    assert torch.equal(model.grads, before[1])
    after = optimizer.state_dict()
    assert after["step"] == before[2]["step"]
    assert torch.equal(after["exp_avg"], before[2]["exp_avg"])
    assert torch.equal(after["exp_avg_sq"], before[2]["exp_avg_sq"])
    assert torch.equal(torch.get_rng_state(), before[3])


def test_range_test_stops_each_member_at_divergence():
    config = lr_find.RangeTestConfig(start_lr=1e-4, end_lr=1e3, iters=40, smooth=0.5)
    test = lr_find.run_range_test(SMALL, resolve(SMALL), config)
    for member in range(2):
        stop = test.stops[member]
        assert stop is not None and test.stop_reason(member) == "diverged"
        smoothed = test.smoothed[: stop + 1, member]
        assert smoothed[-1] > config.diverge * smoothed.min()
        running_best = np.minimum.accumulate(smoothed[:-1])
        assert (smoothed[:-1] <= config.diverge * running_best).all()
        assert np.isnan(test.smoothed[stop + 1 :, member]).all()
    assert len(test.lrs) == max(test.stops) + 1 < config.iters


def test_a_non_finite_loss_stops_its_member_at_once_and_spares_the_others():
    model, optimizer, data, seeds = new_stack(SMALL, resolve(SMALL))
    poisoned = data.x_train.clone()
    poisoned[1] = float("nan")
    config = lr_find.RangeTestConfig(start_lr=1e-5, end_lr=1e-3, iters=20)
    test = lr_find.range_test(model, optimizer, DataSplit(poisoned, data.x_val, data.y_train, data.y_val), seeds, SMALL.batch_size, config)
    assert test.stops == [None, 0]
    assert test.stop_reason(1) == "non-finite"
    assert len(test.lrs) == config.iters and np.isfinite(test.raw[:, 0]).all()


def test_csv_has_one_row_per_recorded_step_and_member():
    test = lr_find.run_range_test(SMALL, resolve(SMALL), lr_find.RangeTestConfig(iters=12, val=True))
    lines = test.csv().splitlines()
    assert lines[0] == "step,member,seed,lr,loss,smoothed,val_loss"
    assert len(lines) == 1 + test.steps(0) + test.steps(1)
    assert float(lines[1].split(",")[3]) == 1e-7


# ---------------------------------------------------------------- verification and --lr auto


def test_verification_member_r_s_is_rate_r_with_seed_s():
    config = TrainConfig(points=60, batch_size=10, epochs=3)
    rates, seeds = np.array([1e-3, 3e-2]), (4, 9)
    check = lr_find.verify(config, resolve(config), rates, seeds)
    assert check.val_mse.shape == (2, 2)
    for r, rate in enumerate(rates):
        for s, seed in enumerate(seeds):
            single = fit(TrainConfig(points=60, batch_size=10, epochs=3, seeds=(seed,), lr=float(rate)))
            assert check.val_mse[r, s] == pytest.approx(single.members[0].val_mse, rel=1e-5)
    assert check.ratios()[check.best] == 1.0
    document = json.loads(json.dumps(check.to_json(), allow_nan=False))
    assert document["best_lr"] == float(rates[check.best])


def test_grid_and_suggestions_merge_in_order_with_their_labels():
    grid = lr_rules.verification_rates(10.0, 3)
    assert np.allclose(grid, [10**-0.5, 1.0, 10**0.5])
    rates, labels = lr_rules.merge_rates(grid, {"steepest": 0.01, "valley": float(grid[1]), "minimum": None})
    assert rates.tolist() == sorted([0.01, *grid.tolist()])
    assert labels[rates.tolist().index(float(grid[1]))] == ["valley"]
    assert labels[0] == ["steepest"]


def test_pick_seeds_continues_after_the_given_ones():
    assert lr_rules.pick_seeds((0,), 3) == (0, 1, 2)
    assert lr_rules.pick_seeds((3, 7, 11), 2) == (3, 7)
    assert lr_rules.pick_seeds((5, 2), 3) == (5, 2, 6)


def test_auto_pick_goes_by_the_worst_seed_and_steps_down():
    rates = np.array([1e-3, 1e-2, 1e-1])
    val = np.array([[1e-3, 1e-3], [1e-6, 2e-6], [1e-7, 0.08]])  # 1e-1: best median, one seed stuck
    assert lr_rules.pick_auto_lr(rates, val) == 1e-2 / lr_rules.AUTO_SAFETY
    assert lr_rules.pick_auto_lr(rates, np.full((3, 2), np.inf)) is None


# ---------------------------------------------------------------- the commands


def test_cli_range_test_defaults_are_the_config_defaults():
    defaults = lr_find.RangeTestConfig()
    parameters = inspect.signature(lr_find_command).parameters
    for name in ("start_lr", "end_lr", "iters", "smooth", "diverge", "val"):
        assert parameters[name].default == getattr(defaults, name), name
    assert parameters["mode"].default.value == defaults.mode


def test_lr_find_command_writes_its_files_and_one_json_document(tmp_path):
    out = tmp_path / "out"
    args = ["lr-find", "--points", "60", "--batch-size", "10", "--iters", "20", "--seeds", "2", "--val", "--verify",
            "--verify-rates", "2", "--verify-seeds", "1", "--verify-epochs", "2", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document["suggestions"]) == set(lr_rules.RULES)
    assert len(document["range_test"]["members"]) == 2
    assert document["verification"]["epochs"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.csv", "lr_find.json", "lr_find.png", "lr_verify.png"]


def test_lr_find_command_defaults_to_a_new_directory_under_the_runs_dir(tmp_path):
    result = runner.invoke(app, ["lr-find", "--points", "60", "--iters", "10", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (made,) = [p for p in (tmp_path / "lr-find").iterdir() if p.is_dir()]
    assert (made / "lr_find.png").is_file()
    assert "steepest" in result.stdout


def test_lr_find_rejects_an_end_below_the_start(tmp_path):
    result = runner.invoke(app, ["lr-find", "--start-lr", "1", "--end-lr", "0.1", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--end-lr" in result.output


def test_train_lr_auto_says_which_rate_and_how(tmp_path):
    args = ["train", "--lr", "auto", *LEARNS, "--seed", "2", "--runs-dir", str(tmp_path), "--name", "auto", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["lr_choice"].startswith("auto:")
    times = summary["times_s"]  # the rate search is a phase of its own, inside the total
    assert times["rate_search"] > 0 and sum(v for k, v in times.items() if k != "total" and v) == pytest.approx(times["total"], rel=1e-9)
    assert summary["members"][0]["lr"] == pytest.approx(summary["lr_auto"]["lr"])
    saved = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert saved["lr_choice"] == summary["lr_choice"]
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["lr"] == pytest.approx(summary["lr_auto"]["lr"])


# ---------------------------------------------------------------- lr-find's plain output


def flat_findings(seeds: tuple[int, ...], verified: bool) -> lr_find.Findings:
    """A range test that never falls below Var(y) = 0.08 (so the rules are guesses), and with
    `verified` a verification where only the grid's top rate trains, on every seed."""
    config = lr_find.RangeTestConfig(iters=50)
    lrs = lr_find.sweep(config.start_lr, config.end_lr, config.iters)
    wobble = 0.08 * (1 + 0.01 * np.sin(np.arange(config.iters)))[:, None] * np.ones((1, len(seeds)))
    test = lr_find.RangeTest(config, seeds, lrs, wobble, wobble, None, [None] * len(seeds), np.full(len(seeds), 0.08))
    findings = lr_find.Findings(SMALL, test)
    if verified:
        rates, labels = lr_find.merge_rates(np.array([1e-3, 1e2]), findings.medians())
        val = np.where(rates[:, None] == 1e2, 1e-6, 0.08) * np.ones((1, 3))
        findings.verification = lr_find.Verification(rates, labels, (0, 1, 2), val, 0.08, epochs=5, wall_time_s=1.0)
    return findings


def rendered(findings: lr_find.Findings, capsys, monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("COLUMNS", "250")
    report.render_lr_find(findings.to_json(), "out")
    captured = capsys.readouterr()
    return captured.out, captured.err


def rule_row(out: str, rule: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {rule} ("))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_one_seed_has_no_spread_to_show(capsys, monkeypatch):
    one = flat_findings((0,), verified=False)
    assert {rule["spread_decades"] for rule in one.to_json()["suggestions"].values()} == {None}
    out, _ = rendered(one, capsys, monkeypatch)
    assert all(rule_row(out, rule)[2] == "—" for rule in lr_find.RULES)
    two = flat_findings((0, 1), verified=False)
    assert all(rule["spread_decades"] is not None for rule in two.to_json()["suggestions"].values())


def test_the_flat_curve_warning_points_at_the_verification_once_it_has_run(capsys, monkeypatch):
    _, before = rendered(flat_findings((0,), verified=False), capsys, monkeypatch)
    _, after = rendered(flat_findings((0,), verified=True), capsys, monkeypatch)
    assert "check them with --verify" in before
    assert "--verify" not in after and "the verification below says which rates train" in after


def test_a_rule_whose_pick_did_not_train_is_marked_contradicted_beside_it(capsys, monkeypatch):
    findings = flat_findings((0,), verified=True)
    suggestions = findings.to_json()["suggestions"]
    for rule in lr_find.RULES:
        check = suggestions[rule]["verified"]
        assert (check["lr"], check["trained"], check["seeds"], check["verdict"]) == (suggestions[rule]["median"], 0, 3, "contradicted")
    out, _ = rendered(findings, capsys, monkeypatch)
    assert all(rule_row(out, rule)[-1].startswith("contradicted: 0/3 trained") for rule in lr_find.RULES)


def test_a_rule_verdict_says_whether_every_some_or_no_seed_trained_at_its_pick():
    rates, labels = np.array([1e-3, 1e-2, 1e-1]), [["steepest"], ["valley", "minimum"], []]
    val = np.array([[1e-6, 1e-6], [1e-6, 0.08], [0.08, 0.08]])
    checks = lr_find.Verification(rates, labels, (0, 1), val, 0.08, epochs=5, wall_time_s=1.0).rule_checks()
    assert {rule: check["verdict"] for rule, check in checks.items()} == {"steepest": "confirmed", "valley": "partly confirmed", "minimum": "partly confirmed"}
    assert checks["valley"]["trained"] == 1 and checks["valley"]["lr"] == 1e-2
