"""Untrusted and damaged files: every bad checkpoint is a one-line RunError, and none runs code."""

from __future__ import annotations

import io
import pickle
import shutil

import pytest
import torch

from rungefit import runs


@pytest.fixture()
def run_copy(quick_run, tmp_path):
    """A private copy of the session's quick run, safe to damage."""
    runs_dir, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    return tmp_path, tmp_path / "r"


class RunsCode:
    """A pickle that would create a file when unpickled, if unpickling ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def rewrite_checkpoint(run_dir, change):
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, run_dir / "model.pt")


def test_intact_copy_loads(run_copy):
    runs_dir, _ = run_copy
    assert runs.load_run(runs_dir, "r").model.members == 1


@pytest.mark.parametrize("size", [0, 10, 1000])
def test_empty_or_truncated_checkpoint(run_copy, size):
    runs_dir, run_dir = run_copy
    data = (run_dir / "model.pt").read_bytes()
    (run_dir / "model.pt").write_bytes(data[:size])
    with pytest.raises(runs.RunError, match="not a readable rungefit checkpoint"):
        runs.load_run(runs_dir, "r")


@pytest.mark.parametrize("via_torch", [False, True])
def test_foreign_pickle_is_refused_and_never_executed(run_copy, tmp_path, via_torch):
    runs_dir, run_dir = run_copy
    marker = tmp_path / "code-ran"
    if via_torch:
        buffer = io.BytesIO()
        torch.save({"format": 1, "payload": RunsCode(marker)}, buffer)
        (run_dir / "model.pt").write_bytes(buffer.getvalue())
    else:
        (run_dir / "model.pt").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(runs.RunError, match="not a readable rungefit checkpoint"):
        runs.load_run(runs_dir, "r")
    assert not marker.exists()


def test_wrong_architecture(run_copy):
    runs_dir, run_dir = run_copy
    rewrite_checkpoint(run_dir, lambda c: c.update(layers="5:tanh"))
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(runs_dir, "r")


def test_newer_format_is_refused_with_advice(run_copy):
    runs_dir, run_dir = run_copy
    rewrite_checkpoint(run_dir, lambda c: c.update(format=runs.CHECKPOINT_FORMAT + 1))
    with pytest.raises(runs.RunError, match="upgrade rungefit"):
        runs.load_run(runs_dir, "r")


def test_not_a_rungefit_checkpoint(run_copy):
    runs_dir, run_dir = run_copy
    torch.save({"weights": torch.zeros(3)}, run_dir / "model.pt")
    with pytest.raises(runs.RunError, match="not a rungefit checkpoint"):
        runs.load_run(runs_dir, "r")


def test_damaged_config(run_copy):
    runs_dir, run_dir = run_copy
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(runs_dir, "r")
