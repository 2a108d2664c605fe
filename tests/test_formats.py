"""Runs saved by earlier rungefit versions keep working: the committed fixture runs of every past
format load, evaluate and resume bit-exactly, and the upgrade chain runs one step per format.

tests/fixtures/runs-v1/ holds two float64 runs saved by the code before the house move (format 1):
`complete`, and `interrupted`, the same training stopped after epoch 80. expected.json holds what
that code computed from them (eval and grad as JSON, a SHA-256 of every tensor).
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from rungefit.cli.app import app
from rungefit.errors import RunError
from rungefit.runs import RunStore
from rungefit.runs import format as run_format

from .helpers import runner

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs-v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def copied(fixtures: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of fixture runs as RUNS_DIR `runs` under the working directory (eval writes its figure)."""
    for name in ("complete", "interrupted"):
        shutil.copytree(fixtures / name, tmp_path / "runs" / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


@pytest.fixture()
def old_runs(tmp_path, monkeypatch):
    return copied(FIXTURES, tmp_path, monkeypatch)


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--runs-dir", "runs", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


@pytest.mark.parametrize("name", ["complete", "interrupted"])
def test_a_format_1_run_loads_with_the_tensors_it_was_saved_with(old_runs, name):
    run = RunStore(old_runs).open(name)
    assert run.status == EXPECTED[name]["status"] and run.epochs_run == EXPECTED[name]["epochs_run"]
    state = run.model.state_dict()
    assert {key: tensor_digest(value) for key, value in state.items()} == {key: saved["sha256"] for key, saved in EXPECTED[name]["state_dict_sha256"].items()}
    assert run.history["val_mse"].shape == (run.epochs_run, 1)


@pytest.mark.parametrize("name", ["complete", "interrupted"])
def test_a_format_1_run_evaluates_and_differentiates_as_it_did(old_runs, name):
    assert cli_json("eval", "--run", name) == EXPECTED[name]["eval"]
    assert cli_json("grad", "--run", name, "--x", "0.3") == EXPECTED[name]["grad_x_0.3"]


def test_the_interrupted_format_1_run_resumes_to_the_complete_runs_numbers(old_runs):
    cli_json("train", "--resume", "interrupted")
    resumed, complete = checkpoint(old_runs / "interrupted"), checkpoint(old_runs / "complete")
    assert resumed["state_dict"].keys() == complete["state_dict"].keys()
    for key, tensor in complete["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(resumed["optimizer"][key], complete["optimizer"][key]), key
    assert (old_runs / "interrupted" / "history.csv").read_bytes() == (old_runs / "complete" / "history.csv").read_bytes()
    assert json.loads((old_runs / "interrupted" / "config.json").read_text())["format"] == run_format.VERSIONS["config.json"]


def test_a_format_1_checkpoint_saved_before_it_held_the_curves_takes_them_from_history_csv(old_runs):
    saved = checkpoint(old_runs / "complete")
    torch.save({key: value for key, value in saved.items() if key != "history"}, old_runs / "complete" / "model.pt")
    run = RunStore(old_runs).open("complete")
    for name, curve in saved["history"].items():
        assert torch.equal(torch.from_numpy(run.history[name]), curve), name


def test_an_old_checkpoint_without_curves_and_without_history_csv_is_damaged(old_runs):
    saved = checkpoint(old_runs / "complete")
    torch.save({key: value for key, value in saved.items() if key != "history"}, old_runs / "complete" / "model.pt")
    (old_runs / "complete" / "history.csv").unlink()
    with pytest.raises(RunError, match="history.csv is missing"):
        RunStore(old_runs).open("complete")


def test_each_upgrade_step_runs_once_in_order_and_a_newer_format_is_refused(old_runs, monkeypatch):
    steps = []

    def step(number):
        def upgrade(document: dict, run_dir: Path) -> dict:
            steps.append((number, run_dir.name))
            return {**document, "format": number + 1}

        return upgrade

    monkeypatch.setitem(run_format.VERSIONS, "summary.json", 3)
    monkeypatch.setitem(run_format.UPGRADES, "summary.json", {1: step(1), 2: step(2)})
    run = RunStore(old_runs).open("complete")
    assert steps == [(1, "complete"), (2, "complete")] and run.summary["format"] == 3
    summary = old_runs / "complete" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "format": 4}))
    with pytest.raises(RunError, match="format 4.*upgrade rungefit"):
        RunStore(old_runs).open("complete")


# Format 2 (the maps into standard coordinates, the kept best-validation weights, the last epoch's
# weights for a resume): a float64 data run in calendar years and ppm, complete and interrupted.
FIXTURES_V2 = FIXTURES.parent / "runs-v2"
EXPECTED_V2 = json.loads((FIXTURES_V2 / "expected.json").read_text())


@pytest.fixture()
def runs_v2(tmp_path, monkeypatch):
    return copied(FIXTURES_V2, tmp_path, monkeypatch)


@pytest.mark.parametrize("name", ["complete", "interrupted"])
def test_a_format_2_run_loads_evaluates_and_differentiates_as_it_did(runs_v2, name):
    run = RunStore(runs_v2).open(name)
    assert run.target.maps.as_dict() == EXPECTED_V2[name]["maps"] and not run.target.maps.identity
    assert {key: tensor_digest(value) for key, value in run.model.state_dict().items()} == EXPECTED_V2[name]["state_dict_sha256"]
    assert cli_json("eval", "--run", name) == EXPECTED_V2[name]["eval"]
    assert cli_json("grad", "--run", name, "--x", "1974.5") == EXPECTED_V2[name]["grad_x_1974.5"]


def test_the_interrupted_format_2_run_resumes_to_the_complete_runs_numbers_kept_epochs_included(runs_v2):
    cli_json("train", "--resume", "interrupted")
    resumed, complete = checkpoint(runs_v2 / "interrupted"), checkpoint(runs_v2 / "complete")
    for part in ("state_dict", "resume_state_dict"):
        for key, tensor in complete[part].items():
            assert torch.equal(resumed[part][key], tensor), (part, key)
    for key in ("params", "val_mse", "epoch"):
        assert torch.equal(resumed["best"][key], complete["best"][key]), key
    assert (runs_v2 / "interrupted" / "history.csv").read_bytes() == (runs_v2 / "complete" / "history.csv").read_bytes()
