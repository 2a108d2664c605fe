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

# The smallest runs that still learn f (validation MSE below 1 % of Var(y), so `train` exits 0):
# a fraction of a second of training. Shorter runs learn nothing, and `train` exits 1.
LEARNS = ["--points", "120", "--batch-size", "8", "--epochs", "60"]
QUICK_TRAIN = [*LEARNS, "--quiet"]


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
