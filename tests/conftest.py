"""Shared fixtures: a small trained run, made once per session under a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from rungefit.cli import app
from rungefit.config import parse_layers
from rungefit.model import StackedMLP

runner = CliRunner()
# What every saved training run holds.
RUN_FILES = {"config.json", "model.pt", "history.csv", "summary.json", "fit.png", "loss.png"}

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


def stacked(spec: str, seeds=(0, 1, 2), dtype=torch.float64) -> StackedMLP:
    """A freshly initialised stack, one member per seed, float64 unless told otherwise."""
    model = StackedMLP(parse_layers(spec), len(seeds), dtype=dtype)
    model.initialise(torch.tensor(list(seeds)))
    return model


# The default network and two others that between them use every other activation but identity.
SPECS = ["20:tanh,10:sigmoid,20:tanh,10:sigmoid", "16:gelu,8:relu", "8:silu,6:softplus"]


@pytest.fixture(scope="session")
def spec_runs(tmp_path_factory):
    """{(layers, dtype): (runs_dir, name, summary)}: a short two-member run of each of SPECS in float32
    and float64, saved as `train` saves it but without its figures (drawing them is most of the time)."""
    from rungefit import runs
    from rungefit.config import TrainConfig
    from rungefit.train import fit

    runs_dir = tmp_path_factory.mktemp("spec-runs")
    made = {}
    for index, layers in enumerate(SPECS):
        for dtype in ("float32", "float64"):
            name = f"s{index}-{dtype}"
            result = fit(TrainConfig(layers=layers, points=120, epochs=4, seeds=(0, 1), dtype=dtype, workers=1))
            runs.save_new_run(runs_dir, name, runs.run_files(result, {}, {"schedule": result.config.schedule}, {}))
            made[layers, dtype] = (runs_dir, name, result.summary())
    return made
