"""The CLI through CliRunner: exit codes first, then the text, files and JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer

from rungefit.cli import options as cli_common
from rungefit.cli import render as report
from rungefit.cli.app import app

from .helpers import QUICK_TRAIN, RUN_FILES, heavy_imports_after, runner, save_run, stop_after


def test_train_writes_the_run_directory(quick_run):
    runs_dir, run_dir, summary = quick_run
    assert {p.name for p in run_dir.iterdir()} == RUN_FILES
    assert (runs_dir / "latest").read_text().strip() == "quick"
    assert summary["status"] == "complete"
    assert summary["run"] == str(run_dir)
    assert summary["epochs"] == 60
    member = summary["members"][0]
    assert set(member) >= {"train_mse", "val_mse", "test_mse", "test_max_abs_error", "lr", "seed"}
    assert json.loads((run_dir / "summary.json").read_text())["members"] == summary["members"]


def test_json_output_is_one_document_and_nothing_else(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--epochs", "50", "--runs-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["config"]["epochs"] == 50


def test_table_output_names_the_figures(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("train MSE", "validation MSE", "test MSE", "max |error|", "optimizer steps", "learning rate", "fit"):
        assert text in result.stdout
    # The time of each phase that ran, and the total.
    shown = re.findall(r"time: ([a-z -]+?)(?: \(.*?\))?\s*│\s*[\d.]+ s", result.stdout)
    assert shown == ["start-up", "training", "saving and plots", "total"]


def test_stacked_seeds_report_each_member(tmp_path):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--seeds", "3,7", "--runs-dir", str(tmp_path), "--json"])
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


def test_the_lazily_imported_report_is_the_report_module_already_loaded():
    # A second copy would have consoles of its own: a swapped console would reach only one.
    assert cli_common._lazy_import("rungefit.cli.render") is report is sys.modules["rungefit.cli.render"] is cli_common.report


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["export", "--help"], ["predict", "--help"]])
def test_help_does_not_import_torch_or_matplotlib(argv):
    stdout, heavy = heavy_imports_after(f"from rungefit.cli.app import app\napp({argv!r}, prog_name='rungefit')")
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
    shows = command.get_params(typer.Context(command))  # the root's: its own, not the completion options Typer appends
    texts = [command.help, *(param.help for param in shows if getattr(param, "help", None))]
    for text in texts:
        for word in _words(text):
            assert word in shown, (word, text)


def test_a_run_that_learned_nothing_is_saved_and_shown_but_fails_naming_the_cause(tmp_path):
    import numpy as np
    import torch

    from rungefit.config import TrainConfig
    from rungefit.targets import resolve

    from .helpers import runge

    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--lr", "1e6", "--runs-dir", str(tmp_path), "--name", "stuck", "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    saved = json.loads((tmp_path / "stuck" / "summary.json").read_text())
    for summary in (document, saved):
        assert summary["status"] == "complete" and summary["fit"] == "nothing learned"
        assert [m["learned"] for m in summary["members"]] == [False]
    member = document["members"][0]
    x_val = resolve(TrainConfig()).split(torch.tensor([0]), 120, 0.3).x_val[0].double().numpy()
    assert member["val_var"] == pytest.approx(np.var(runge(x_val)), rel=1e-12)
    assert member["val_mse"] > 0.01 * member["val_var"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the network learned nothing")
    assert "--lr auto" in lines[0] and "rungefit lr-find" in lines[0] and "too high" in lines[0]


def test_members_that_learned_nothing_are_flagged_one_by_one_with_a_warning(tmp_path):
    # Seed 0 is still stuck at the mean after these 420 steps, seed 2 has learned f.
    result = runner.invoke(app, ["train", "--points", "120", "--batch-size", "4", "--epochs", "20", "--seeds", "0,2", "--quiet", "--runs-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"fit[\s│]+some[\s│]+members[\s│]+learned[\s│]+nothing:[\s│]+member[\s│]+0\s", result.stdout)  # its cell wrapped or not
    assert "validation MSE: median [min … max]" in result.stdout  # not taken for Rich markup
    assert re.search(r"│\s*0\s*│\s*0\s*│.*│\s*no\s*│", result.stdout) and re.search(r"│\s*1\s*│\s*2\s*│.*│\s*yes\s*│", result.stdout)
    assert result.stderr.startswith("warning: 1 of 2 members learned nothing (member 0, seed 0)")
    saved = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert saved["fit"] == "some members learned nothing" and [m["learned"] for m in saved["members"]] == [False, True]


@pytest.fixture(scope="module")
def polished(tmp_path_factory):
    """(run directory, --json document, seconds the command took) of a short run with --polish lm."""
    import time

    runs_dir = tmp_path_factory.mktemp("polished")
    started = time.perf_counter()
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--polish", "lm", "--polish-iterations", "2", "--runs-dir", str(runs_dir), "--name", "p", "--json"])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    return runs_dir / "p", json.loads(result.stdout), elapsed


def test_the_polish_ends_at_the_train_mse_of_the_saved_network(polished):
    _, document, _ = polished
    assert document["polish"]["train_mse_after"] == [m["train_mse"] for m in document["members"]]
    rows = dict(report._polish_rows(document["polish"]))
    assert rows["polish (Levenberg-Marquardt)"].split("→ ")[1].startswith(f"{document['members'][0]['train_mse']:.3e},")


def test_the_times_cover_every_phase_of_the_command_and_add_up_to_the_total(polished):
    run_dir, document, elapsed = polished
    times = document["times_s"]
    assert times["rate_search"] is None
    phases = [times[phase] for phase in ("start_up", "training", "polish", "saving_and_plots")]
    assert all(seconds > 0 for seconds in phases)
    assert sum(phases) == pytest.approx(times["total"], rel=1e-9)
    assert times["total"] <= elapsed
    # summary.json is made during the save: its times end there, the others are the same.
    saved = json.loads((run_dir / "summary.json").read_text())["times_s"]
    assert {k: v for k, v in saved.items() if k not in ("saving_and_plots", "total")} == {k: v for k, v in times.items() if k not in ("saving_and_plots", "total")}
    assert 0 < saved["saving_and_plots"] <= times["saving_and_plots"] and saved["total"] <= times["total"]


def test_a_polished_runs_loss_png_has_its_polish_panel(polished, quick_run):
    import struct

    def width(png: bytes) -> int:
        return struct.unpack(">I", png[16:20])[0]  # the IHDR chunk's first field

    # The panel of the LM iterations widens the figure; the unpolished run's is the plain one.
    assert width((polished[0] / "loss.png").read_bytes()) > 1.2 * width((quick_run[1] / "loss.png").read_bytes())


def test_paths_and_names_with_rich_markup_are_printed_as_they_are(tmp_path):
    runs_dir = tmp_path / "mk[/]" / "[red]runs"
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "x"])
    assert result.exit_code == 0, result.output
    assert "".join(f"rungefit train → {runs_dir / 'x'}".split()) in "".join(result.stdout.split())  # the title wraps
    (runs_dir / "latest").write_text("[/]\n")
    damaged = runner.invoke(app, ["eval", "--runs-dir", str(runs_dir)])
    assert damaged.exit_code == 1
    lines = damaged.stderr.strip().splitlines()
    assert len(lines) == 1 and "'[/]'" in lines[0] and "[red]runs" in lines[0], damaged.stderr


def test_a_resume_that_cannot_write_fails_before_it_trains_and_leaves_the_run(tmp_path, monkeypatch):
    import errno
    import tempfile

    from rungefit.config import TrainConfig
    from rungefit.training.train import fit

    stopped = fit(TrainConfig(points=120, epochs=5), should_stop=stop_after(7))
    save_run(tmp_path, stopped, "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr("rungefit.training.train.fit", lambda *args, **kwargs: pytest.fail("a resume that cannot save trained"))
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--runs-dir" in lines[0] and "read-only" in lines[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_sigterm_outside_training_ends_the_command_with_143_in_one_line(quick_run, monkeypatch):
    import os
    import signal

    from rungefit.study import evaluate as evaluate

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
        pytest.fail("SIGTERM did not stop the command")

    monkeypatch.setattr(evaluate, "evaluate", terminated)
    runs_dir, _, _ = quick_run
    result = runner.invoke(app, ["eval", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 143
    assert result.stderr.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
