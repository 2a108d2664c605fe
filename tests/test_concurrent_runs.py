"""Concurrent and failed saves: runs never share or clobber a directory, `latest` always names a
complete run, and nothing temporary is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from rungefit import runs
from rungefit.config import TrainConfig
from rungefit.train import fit

from .conftest import QUICK_TRAIN, RUN_FILES


def leftovers(runs_dir):
    """Staging directories and temporary files: everything a save writes under a dot name."""
    return [p for p in runs_dir.rglob(".*")]


def latest_is_complete(runs_dir) -> bool:
    """True when `latest` is absent or names a directory holding every file of a run."""
    try:
        name = (runs_dir / "latest").read_text().strip()
    except FileNotFoundError:
        return True
    return RUN_FILES <= set(os.listdir(runs_dir / name))


def test_two_trains_started_together_get_two_complete_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    # No --name: both take a timestamp, most often the same one, and os.mkdir decides who gets it.
    command = [sys.executable, "-m", "rungefit", "train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--json"]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    while any(child.poll() is None for child in children):
        assert latest_is_complete(runs_dir)
        time.sleep(0.005)
    outputs = [child.communicate() for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs

    paths = {json.loads(stdout)["run"] for stdout, _ in outputs}
    assert len(paths) == 2
    for path in paths:
        assert {p.name for p in (runs_dir / os.path.basename(path)).iterdir()} == RUN_FILES
        assert json.loads((runs_dir / os.path.basename(path) / "summary.json").read_text())["status"] == "complete"
    assert latest_is_complete(runs_dir)
    assert (runs_dir / "latest").read_text().strip() in {os.path.basename(p) for p in paths}
    assert leftovers(runs_dir) == []


@pytest.fixture(scope="module")
def files():
    return runs.run_files(fit(TrainConfig(points=60, epochs=1)), {}, {}, {})


@pytest.mark.parametrize("failure", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize("stage", ["writing", "moving"])
def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, files, failure, stage):
    real_write, real_replace = runs.atomic_write, os.replace

    def failing_write(path, data):
        if path.name == "summary.json":
            raise failure()
        real_write(path, data)

    def failing_replace(source, target):
        if os.path.basename(source).startswith(".staging-"):
            raise failure()
        real_replace(source, target)

    if stage == "writing":
        monkeypatch.setattr(runs, "atomic_write", failing_write)
    else:
        monkeypatch.setattr(runs.os, "replace", failing_replace)
    with pytest.raises(failure):
        runs.save_new_run(tmp_path, "r", files)
    assert list(tmp_path.iterdir()) == []


def test_saves_and_updates_leave_no_temporary_files(tmp_path, files):
    path = runs.save_new_run(tmp_path, None, files)
    runs.update_run(path, files)
    assert {p.name for p in tmp_path.iterdir()} == {path.name, "latest"}
    assert leftovers(tmp_path) == []
