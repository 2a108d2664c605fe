"""Interrupts and resume: a stopped run continues to exactly the numbers of an uninterrupted one.

The core is stopped through fit's should_stop; the CLI through a real SIGINT sent to a `train`
process, as Ctrl-C in a terminal would.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from rungefit.cli import app as cli
from rungefit.cli import train as cli_train
from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.training.train import fit

from .helpers import (
    ENDLESS_TRAIN,
    LEARNS,
    WORKERS_GONE_WITHIN_S,
    Rungefit,
    runner,
    save_run,
    stop_after,
    wait_until_gone,
)

CONFIG = TrainConfig(points=120, epochs=6, seeds=(0, 1))  # 3 optimizer steps per epoch


def assert_same_training(a, b):
    assert torch.equal(a.model.params, b.model.params)
    for key, tensor in a.optimizer.state_dict().items():
        assert (torch.equal(tensor, b.optimizer.state_dict()[key]) if torch.is_tensor(tensor) else tensor == b.optimizer.state_dict()[key]), key
    assert a.history == b.history
    assert a.members == b.members
    assert (a.epochs_run, a.steps, a.status) == (b.epochs_run, b.steps, b.status)


@pytest.fixture(scope="module")
def uninterrupted():
    return fit(CONFIG)


@pytest.mark.parametrize("stops", [(1,), (3,), (10,), (4, 5, 11)], ids=["first-step", "end-of-epoch-1", "mid-epoch-4", "three-times"])
def test_stopped_and_resumed_runs_end_exactly_like_an_uninterrupted_one(uninterrupted, stops):
    result = fit(CONFIG, should_stop=stop_after(stops[0]))
    for steps in stops[1:]:
        assert result.status == "interrupted"
        result = fit(CONFIG, resume=result.state(), should_stop=stop_after(steps))
    assert result.status == "interrupted"
    assert result.steps == result.epochs_run * CONFIG.steps_per_epoch  # the unfinished epoch is dropped
    assert_same_training(fit(CONFIG, resume=result.state()), uninterrupted)


def test_a_stop_keeps_the_last_completed_epoch(uninterrupted):
    result = fit(CONFIG, should_stop=stop_after(10))
    assert result.epochs_run == 3 and result.steps == 9
    assert result.history.val_mse == uninterrupted.history.val_mse[:3]


def test_a_state_that_does_not_fit_the_config_is_refused(uninterrupted):
    with pytest.raises(ValueError, match="nothing to resume"):
        uninterrupted.state()
    finished = fit(CONFIG, should_stop=stop_after(4)).state()
    with pytest.raises(ValueError, match="none left to train"):
        fit(replace(CONFIG, epochs=1), resume=finished)
    with pytest.raises(ValueError, match="does not fit"):
        fit(TrainConfig(points=120, epochs=6, seeds=(0,)), resume=fit(CONFIG, should_stop=stop_after(4)).state())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_during_the_polish_undoes_it_and_resume_runs_it_again(workers):
    config = replace(CONFIG, polish="lm", polish_iterations=4, workers=workers)
    epochs_done: list = []
    # Yes once every epoch is done: the stop lands in the polish's first iteration.
    result = fit(config, on_epoch=epochs_done.append, should_stop=lambda: len(epochs_done) == config.epochs)
    assert (result.status, result.epochs_run, result.polish) == ("interrupted", config.epochs, None)
    assert torch.equal(result.model.params, fit(replace(config, polish="none")).model.params)  # unpolished
    resumed = fit(config, resume=result.state())
    uninterrupted = fit(config)
    assert_same_training(resumed, uninterrupted)
    assert torch.equal(resumed.polish.final_mse, uninterrupted.polish.final_mse)


# ---------------------------------------------------------------- the CLI, with a real Ctrl-C

LONG_TRAIN = [*LEARNS, "--seeds", "2", "--quiet"]  # a run that learns, so that it exits 0
STEPS_PER_EPOCH = TrainConfig(points=120, batch_size=8).steps_per_epoch
PRESS_AFTER = 3  # the epoch after which Ctrl-C is pressed: tests/driver.py's announce-then-wait stops there


def checkpoint(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def assert_same_checkpoint(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_checkpoint(a[key], b[key])
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def without_wall_time(run_dir) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["wall_time_s"], summary["times_s"]
    return summary


def train_options(runs_dir, workers: int) -> list[str]:
    return ["train", *LONG_TRAIN, "--workers", str(workers), "--runs-dir", str(runs_dir), "--name", "x"]


def test_ctrl_c_saves_an_interrupted_run_that_resumes_to_the_uninterrupted_numbers(tmp_path):
    # Two worker processes, the harder case: the stop must reach them and their epoch ahead be
    # undone. One process is covered by the should_stop tests above, which take the same path.
    workers = 2
    runs_dir, ref_dir = tmp_path / "runs", tmp_path / "ref" / "x"
    with Rungefit(*train_options(runs_dir, workers), prepare=(f"announce-then-wait:{PRESS_AFTER}",), stdin=True) as child:
        child.wait_until(lambda: f"EPOCH {PRESS_AFTER}" in child.stderr, f"epoch {PRESS_AFTER}")
        os.killpg(child.pid, signal.SIGINT)  # the training process and its workers, as Ctrl-C does
        child.close_stdin()  # the run goes on, and sees the flag
        assert child.finish() == 130, child.stderr
    stderr = child.stderr
    assert "Traceback" not in stderr
    assert f"rungefit train --resume x --runs-dir {runs_dir}" in stderr

    run_dir = runs_dir / "x"
    saved = checkpoint(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert saved["status"] == summary["status"] == "interrupted"
    # Workers run one epoch ahead of the parent, and may finish it before the stop reaches them.
    assert PRESS_AFTER <= saved["epochs_run"] == summary["epochs"] <= PRESS_AFTER + 1
    assert saved["optimizer"]["step"] == summary["steps"] == STEPS_PER_EPOCH * saved["epochs_run"]
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2 * saved["epochs_run"]

    resumed = runner.invoke(app, ["train", "--resume", "x", "--runs-dir", str(runs_dir), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "complete"
    uninterrupted = runner.invoke(app, train_options(ref_dir.parent, workers))  # in this process: no torch import
    assert uninterrupted.exit_code == 0, uninterrupted.output

    assert_same_checkpoint(checkpoint(run_dir), checkpoint(ref_dir))
    assert without_wall_time(run_dir) == without_wall_time(ref_dir)
    for name in ("history.csv", "config.json"):
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    assert sorted(p.name for p in runs_dir.iterdir()) == ["latest", "x"]  # nothing temporary left


def test_sigterm_saves_the_run_exits_143_says_so_and_leaves_no_worker(tmp_path):
    # To the whole process group, as a service manager stops a service: the workers get it too
    # and leave the stopping to the main process (tests/test_workers.py: they ignore it).
    runs_dir = tmp_path / "runs"
    with Rungefit(*ENDLESS_TRAIN, "--runs-dir", str(runs_dir), "--name", "x") as child:
        workers = child.training_workers()
        os.killpg(child.pid, signal.SIGTERM)
        assert child.finish() == 143, child.stderr
    assert wait_until_gone(workers, WORKERS_GONE_WITHIN_S) == []
    assert "Traceback" not in child.stderr
    saved = checkpoint(runs_dir / "x")
    assert saved["status"] == "interrupted" and saved["epochs_run"] >= 1
    assert f"terminated (SIGTERM): epoch {saved['epochs_run']} of 100000 is saved" in child.stderr
    assert f"rungefit train --resume x --runs-dir {runs_dir}" in child.stderr


def test_ctrl_c_during_the_polish_saves_the_run_unpolished_and_says_so(tmp_path, monkeypatch):
    polish = ["--polish", "lm", "--polish-iterations", "4"]
    train = ["train", *LEARNS, *polish, "--quiet"]
    assert runner.invoke(app, [*train, "--runs-dir", str(tmp_path / "ref"), "--name", "x"]).exit_code == 0
    pressed = cli_train.StopRequest()

    @contextmanager
    def ctrl_c_once_the_epochs_are_done():
        yield pressed

    def pressing_after_the_last_epoch(epochs, quiet):
        progress, on_epoch, on_polish = real_progress(epochs, quiet)

        def on_epoch_then_press(epoch) -> None:
            on_epoch(epoch)
            if epoch.epoch == epochs:
                pressed.set(signal.SIGINT)

        return progress, on_epoch_then_press, on_polish

    real_progress = cli.report.training_progress
    monkeypatch.setattr(cli_train, "ctrl_c_stops_training", ctrl_c_once_the_epochs_are_done)
    monkeypatch.setattr(cli.report, "training_progress", pressing_after_the_last_epoch)
    runs_dir = tmp_path / "runs"
    stopped = runner.invoke(app, [*train, "--runs-dir", str(runs_dir), "--name", "x"])
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted during the polish: all 60 epochs are saved" in stopped.stderr
    summary = json.loads((runs_dir / "x" / "summary.json").read_text())
    assert (summary["status"], summary["epochs"], summary["polish"]) == ("interrupted", 60, None)

    again = runner.invoke(app, ["train", "--resume", "x", "--runs-dir", str(runs_dir)])
    assert again.exit_code == 130
    assert "interrupted during the polish again; the run still resumes at the polish" in again.stderr
    monkeypatch.undo()
    resumed = runner.invoke(app, ["train", "--resume", "x", "--runs-dir", str(runs_dir), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_checkpoint(checkpoint(runs_dir / "x"), checkpoint(tmp_path / "ref" / "x"))
    assert without_wall_time(runs_dir / "x") == without_wall_time(tmp_path / "ref" / "x")


def test_a_resume_keeps_what_eval_grad_and_export_made_and_says_it_no_longer_matches(tmp_path):
    result = fit(CONFIG, should_stop=stop_after(4))
    save_run(tmp_path, result, "r")
    run_dir = tmp_path / "r"
    made = ["eval.png", "grad.png", "member-1.onnx", "member-0.safetensors"]
    for name in [*made, "member-0.txt", "member-x.onnx", "notes.txt"]:  # the last three: not what rungefit makes
        (run_dir / name).write_text(name)
    outcome = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path), "--json"])
    assert outcome.exit_code == 1, outcome.output  # too short a run to learn
    assert f"warning: {', '.join(sorted(made))} in {run_dir} were made from the network before this resume" in outcome.stderr
    for name in [*made, "member-0.txt", "member-x.onnx", "notes.txt"]:
        assert (run_dir / name).read_text() == name  # kept: an old export may be the only copy of the old network


# ---------------------------------------------------------------- runs that cannot be resumed


def test_resuming_a_complete_run_is_refused(quick_run):
    runs_dir, _, _ = quick_run
    result = runner.invoke(app, ["train", "--resume", "quick", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 1
    assert "complete" in result.stderr and "nothing to resume" in result.stderr


def test_resuming_a_diverged_run_suggests_a_lower_rate(tmp_path):
    diverge = ["train", "--points", "120", "--epochs", "5", "--lr", "1e30", "--schedule", "constant", "--quiet"]
    assert runner.invoke(app, [*diverge, "--runs-dir", str(tmp_path), "--name", "d"]).exit_code == 1
    result = runner.invoke(app, ["train", "--resume", "d", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "lower --lr" in result.stderr and "lr-find" in result.stderr


@pytest.mark.parametrize(
    "extra, code, text",
    [
        (["--epochs", "5"], 2, "drop --epochs"),
        (["--lr", "0.1", "--name", "y"], 2, "drop --lr, --name"),
        (["--seed", "0"], 2, "drop --seed"),
    ],
)
def test_settings_beside_resume_are_refused(quick_run, extra, code, text):
    runs_dir, _, _ = quick_run
    result = runner.invoke(app, ["train", "--resume", "quick", "--runs-dir", str(runs_dir), *extra])
    assert result.exit_code == code
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr


def test_resuming_an_unknown_run_names_it(tmp_path):
    result = runner.invoke(app, ["train", "--resume", "nope", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "'nope' not found" in result.stderr


def test_a_damaged_interrupted_checkpoint_is_refused(tmp_path):
    result = fit(CONFIG, should_stop=stop_after(4))
    save_run(tmp_path, result, "r")
    saved = checkpoint(tmp_path / "r")
    saved["optimizer"]["step"] = 99
    torch.save(saved, tmp_path / "r" / "model.pt")
    outcome = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path)])
    assert outcome.exit_code == 1
    assert "cannot be resumed" in outcome.stderr and "step count" in outcome.stderr
