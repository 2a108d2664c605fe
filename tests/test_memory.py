"""A training's memory is checked against what the machine holds before anything is allocated
(training/memory.py): a network too large is refused in one line stating the need and the limit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.errors import UsageError
from rungefit.training import memory
from rungefit.training import train as core

from .helpers import REPO, fresh_interpreter_env, runner

# The issue's network: 31 layers of 4096, half a billion parameters.
HUGE = "4096:tanh," * 30 + "4096:tanh"


def test_each_part_is_counted_as_the_docstring_says():
    config = TrainConfig(layers="3:tanh,2:relu", points=20, val_fraction=0.25, batch_size=4, seeds=(0, 1), dtype="float64", polish="lm")
    size = (1 * 3 + 3) + (3 * 2 + 2) + (2 * 1 + 1)  # parameters of 1 → 3 → 2 → 1
    rows = (1 + 1 + 3 * 3) + (3 + 1 + 3 * 2) + (2 + 1 + 3 * 1)  # fan_in + 1 + 3 fan_out per map
    assert memory.training_bytes(config) == {
        "parameters": 2 * size * 15 * 8,
        "activations": 2 * (4 + 15 % 4) * rows * 8,  # a batch of 4 and the last of 3, of 15 training points
        "points": 2 * 20 * (4 * 8 + 8 + 32),
        "polish": 8 * (5 * size * size + 2 * 1024 * size),
    }
    float32 = memory.training_bytes(TrainConfig(layers="3:tanh,2:relu", seeds=(0, 1), workers=2))
    assert float32["parameters"] == 2 * size * max((15 + 5) * 4, 2 * 4 + 6 * 8) and float32["polish"] == 0


@pytest.mark.parametrize("slack, refused", [(0, False), (-1, True)])
def test_the_limit_is_the_estimate_itself(monkeypatch, slack, refused):
    config = TrainConfig(layers="64:tanh", seeds=(0, 1, 2))
    need = sum(memory.training_bytes(config).values())
    monkeypatch.setattr(memory, "memory_limit", lambda device: (need + slack, "this machine has {} of memory"))
    if refused:
        with pytest.raises(UsageError, match=r"needs about .* GiB of memory .*, but this machine has .* GiB of memory: use"):
            memory.check_fits(config)
    else:
        memory.check_fits(config)


def test_fit_is_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr(memory, "memory_limit", lambda device: (2**30, "this machine has {} of memory"))
    monkeypatch.setattr("rungefit.training.stack.StackedMLP", lambda *a, **k: pytest.fail("a model was allocated"))
    with pytest.raises(UsageError, match=r"1 member × 503,451,649 parameters.*this machine has 1 GiB of memory: use fewer or narrower --layers"):
        core.fit(TrainConfig(points=200, epochs=2, workers=1, layers=HUGE))


def test_train_refuses_a_network_too_large_in_one_line_and_saves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "memory_limit", lambda device: (2**30, "this machine has {} of memory"))
    result = runner.invoke(app, ["train", "--layers", "1024:tanh,1024:tanh,1024:tanh", "--seeds", "200", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "200 members × 2,102,273 parameters" in lines[0] and "1 GiB" in lines[0], result.stderr
    assert not any(tmp_path.iterdir())


def test_the_issue_example_is_refused_at_once_under_a_process_memory_limit():
    """In a fresh interpreter held to 2 GiB of address space (RLIMIT_AS), as a machine with less
    memory than the network needs: a UsageError stating both, where it used to allocate until the
    kernel stopped it."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "import rungefit\n"
        "from rungefit.errors import UsageError\n"
        "try:\n"
        f"    rungefit.fit(rungefit.TrainConfig(points=200, epochs=2, workers=1, layers={HUGE!r}))\n"
        "except UsageError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=fresh_interpreter_env(), timeout=100)
    assert done.returncode == 0, done.stderr
    assert "503,451,649 parameters" in done.stdout and "this process may hold at most 2 GiB (RLIMIT_AS)" in done.stdout, done.stdout


def test_the_default_training_needs_a_few_megabytes():
    assert sum(memory.training_bytes(TrainConfig()).values()) < 2**20
