"""Shared fixtures: a small trained run, made once per session under a temporary directory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rungefit.cli import app

runner = CliRunner()

# Small enough to train in about a second, big enough to be a real run with several batches.
QUICK_TRAIN = ["--points", "120", "--epochs", "20", "--quiet"]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """(runs_dir, run_dir, summary) of a short default-architecture run."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "quick", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return runs_dir, runs_dir / "quick", summary
