"""Shell completion: committed scripts are current, and completion answers the way a shell asks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rungefit.completions import FILES, completion_script

from .conftest import heavy_imports_after

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("shell", sorted(FILES))
def test_committed_scripts_are_current(shell):
    committed = (REPO / "completions" / FILES[shell]).read_text()
    assert committed == completion_script(shell), "stale: run `python -m rungefit.completions completions`"


def complete(words: str, cwd: Path | None = None) -> list[str]:
    """Candidates bash would get for the command line `words` (completing its last word)."""
    parts = words.split(" ")
    env = {**os.environ, "_RUNGEFIT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    result = subprocess.run([sys.executable, "-m", "rungefit"], env=env, capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_commands():
    assert "train" in complete("rungefit ")
    assert complete("rungefit tr") == ["train"]


def test_options():
    candidates = complete("rungefit train --s")
    assert {"--schedule", "--seed", "--seeds"} <= set(candidates)


@pytest.mark.parametrize(
    "option, values",
    [
        ("--device", ["auto", "cpu", "cuda"]),
        ("--dtype", ["float32", "float64"]),
        ("--schedule", ["constant", "cosine", "onecycle"]),
    ],
)
def test_choice_values(option, values):
    assert complete(f"rungefit train {option} ") == values


def test_activation_names_in_layers():
    assert complete("rungefit train --layers 20:tanh,10:s") == ["20:tanh,10:sigmoid", "20:tanh,10:silu", "20:tanh,10:softplus"]


def test_completing_never_imports_torch_or_matplotlib():
    stdout, heavy = heavy_imports_after(
        "import os\n"
        "os.environ.update(_RUNGEFIT_COMPLETE='complete_bash', COMP_WORDS='rungefit train --device ', COMP_CWORD='3')\n"
        "from rungefit.cli import main\n"
        "main()"
    )
    assert "cuda" in stdout
    assert heavy == ""


def test_activation_names_offered_are_the_model_table():
    from rungefit.cli import ACTIVATION_NAMES
    from rungefit.model import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)


def test_run_names_come_from_the_runs_directory(tmp_path):
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(b"")
    (tmp_path / "not-a-run").mkdir()  # no model.pt
    for command in ("eval --run", "grad --run", "train --resume"):
        candidates = complete(f"rungefit {command.split()[0]} --runs-dir {tmp_path} {command.split()[1]} ")
        assert sorted(candidates) == ["alpha", "beta"], command
    assert complete(f"rungefit eval --runs-dir {tmp_path} --run al") == ["alpha"]


def test_lr_find_mode_values():
    assert complete("rungefit lr-find --mode ") == ["exp", "linear"]


def test_latest_is_offered_only_while_it_names_a_run(tmp_path):
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(b"")
    (tmp_path / "reserved").mkdir()  # a train --name in progress: not a run yet
    (tmp_path / "lr-find").mkdir()
    (tmp_path / "lr-find" / "model.pt").write_bytes(b"")
    (tmp_path / "latest").write_text("beta\n")
    assert sorted(complete(f"rungefit eval --runs-dir {tmp_path} --run ")) == ["alpha", "beta", "latest"]
    (tmp_path / "beta" / "model.pt").unlink()
    (tmp_path / "beta").rmdir()
    assert complete(f"rungefit eval --runs-dir {tmp_path} --run ") == ["alpha"]
