"""Shared fixtures: a small trained run, made once per session under a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
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


@pytest.fixture()
def one_thread():
    """For tests that call the core below fit(), which otherwise picks one thread for small stacks:
    the networks are tiny, and a second intra-op thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def runge(x):
    """The Runge function in closed form, independent of target.py: what the default target must compute."""
    return 1.0 / (1.0 + 25.0 * x * x)


def runge_prime(x):
    return -50.0 * x / (1.0 + 25.0 * x * x) ** 2


def heavy_imports_after(setup: str) -> tuple[str, str]:
    """Run `setup` (which calls the CLI) in a fresh interpreter: (its stdout, and which of torch and
    matplotlib it imported, comma-separated, '' when none)."""
    code = (
        "import sys\n"
        f"try:\n{''.join('    ' + line + chr(10) for line in setup.splitlines())}except SystemExit:\n    pass\n"
        "sys.stderr.write('HEAVY:' + ','.join(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout, result.stderr.rpartition("HEAVY:")[2].strip()
