"""The CLI through CliRunner: exit codes first, then the text, files and JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from rungefit.cli import app

from .conftest import QUICK_TRAIN, heavy_imports_after

runner = CliRunner()

RUN_FILES = {"config.json", "model.pt", "history.csv", "summary.json", "fit.png", "loss.png"}


def test_train_writes_the_run_directory(quick_run):
    runs_dir, run_dir, summary = quick_run
    assert {p.name for p in run_dir.iterdir()} == RUN_FILES
    assert (runs_dir / "latest").read_text().strip() == "quick"
    assert summary["status"] == "complete"
    assert summary["run"] == str(run_dir)
    assert summary["epochs"] == 20
    member = summary["members"][0]
    assert set(member) >= {"train_mse", "val_mse", "test_mse", "test_max_abs_error", "lr", "seed"}
    assert json.loads((run_dir / "summary.json").read_text())["members"] == summary["members"]


def test_json_output_is_one_document_and_nothing_else(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--epochs", "2", "--runs-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["config"]["epochs"] == 2


def test_table_output_names_the_figures(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--epochs", "2", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("train MSE", "validation MSE", "test MSE", "max |error|", "optimizer steps", "learning rate", "wall time"):
        assert text in result.stdout


def test_stacked_seeds_report_each_member(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--epochs", "2", "--seeds", "3,7", "--runs-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [m["seed"] for m in document["members"]] == [3, 7]
    assert set(document["stats"]["test_mse"]) == {"median", "mean", "min", "max"}


def test_cuda_without_gpu_fails_cleanly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(tmp_path / "runs"), "--device", "cuda"])
    assert result.exit_code == 1
    assert "no CUDA GPU" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_divergence_exits_1_suggesting_a_lower_rate_and_keeps_the_last_finite_state(tmp_path):
    import torch

    diverging = ["--points", "120", "--epochs", "5", "--lr", "1e30", "--schedule", "constant", "--quiet"]
    result = runner.invoke(app, ["train", *diverging, "--runs-dir", str(tmp_path), "--name", "d"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite" in lines[0] and "lower --lr" in lines[0] and "rungefit lr-find" in lines[0]
    assert f"saved in {tmp_path / 'd'}" in lines[0]
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["status"] == "diverged"
    checkpoint = torch.load(tmp_path / "d" / "model.pt", weights_only=True)
    assert checkpoint["status"] == "diverged"
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())


def test_existing_run_name_is_refused_before_training(quick_run):
    runs_dir, run_dir, _ = quick_run
    before = (run_dir / "model.pt").read_bytes()
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "quick"])
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert (run_dir / "model.pt").read_bytes() == before


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "rungefit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("rungefit ")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_does_not_import_torch_or_matplotlib(argv):
    stdout, heavy = heavy_imports_after(f"from rungefit.cli import app\napp({argv!r}, prog_name='rungefit')")
    assert "Usage" in stdout
    assert heavy == ""


def _words(text: str) -> list[str]:
    """The words of a text, without the quoting that rendering removes or adds."""
    words = (word.replace("`", "").strip("'\"") for word in re.split(r"[\s│╭╮╰╯─]+", text))
    return [word for word in words if word]


@pytest.mark.parametrize("name", ["", *sorted(typer.main.get_command(app).commands)])
def test_help_shows_every_word_of_its_texts(name, monkeypatch):
    # The help is rendered as Markdown (so that a paragraph wraps as one): text that Markdown
    # would swallow, such as [L](x) or <timestamp>, must be written so that it survives.
    monkeypatch.setenv("COLUMNS", "1000")
    group = typer.main.get_command(app)
    command = group.commands[name] if name else group
    shown = " ".join(_words(runner.invoke(app, [name, "--help"] if name else ["--help"]).stdout))
    texts = [command.help, *(param.help for param in command.params if getattr(param, "help", None))]
    for text in texts:
        for word in _words(text):
            assert word in shown, (word, text)


def test_paths_and_names_with_rich_markup_are_printed_as_they_are(tmp_path):
    runs_dir = tmp_path / "mk[/]" / "[red]runs"
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--epochs", "2", "--runs-dir", str(runs_dir), "--name", "x"])
    assert result.exit_code == 0, result.output
    assert "".join(f"rungefit train → {runs_dir / 'x'}".split()) in "".join(result.stdout.split())  # the title wraps
    (runs_dir / "latest").write_text("[/]\n")
    damaged = runner.invoke(app, ["eval", "--runs-dir", str(runs_dir)])
    assert damaged.exit_code == 1
    lines = damaged.stderr.strip().splitlines()
    assert len(lines) == 1 and "'[/]'" in lines[0] and "[red]runs" in lines[0], damaged.stderr


def test_a_resume_that_cannot_write_fails_before_it_trains_and_leaves_the_run(tmp_path, monkeypatch):
    import errno
    import itertools
    import tempfile

    from rungefit import runs
    from rungefit.train import TrainConfig, fit

    steps = itertools.count(1)
    stopped = fit(TrainConfig(points=120, epochs=5), should_stop=lambda: next(steps) >= 7)
    runs.save_new_run(tmp_path, "r", runs.run_files(stopped, {}, {}, {}))
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr("rungefit.train.fit", lambda *args, **kwargs: pytest.fail("a resume that cannot save trained"))
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--runs-dir" in lines[0] and "read-only" in lines[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_sigterm_outside_training_ends_the_command_with_143_in_one_line(quick_run, monkeypatch):
    import os
    import signal

    from rungefit import evaluate

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
        pytest.fail("SIGTERM did not stop the command")

    monkeypatch.setattr(evaluate, "evaluate", terminated)
    runs_dir, _, _ = quick_run
    result = runner.invoke(app, ["eval", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 143
    assert result.stderr.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
