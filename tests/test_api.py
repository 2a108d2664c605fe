"""The Python API in rungefit/__init__.py: lazy, documented, and what README's example shows."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

import rungefit
import rungefit.errors
from rungefit.cli.app import app
from rungefit.config import TRAIN_RULES
from rungefit.runs import store as runs
from rungefit.training import metrics
from rungefit.training import train as train

from .helpers import QUICK_TRAIN, REPO, heavy_imports_after, runner

# A run saved by this version's `rungefit train --points 60 --epochs 3 --layers 6:tanh,4:gelu
# --seeds 2` (its PNGs left out): later versions must still load it and agree with its summary.
COMMITTED_RUNS = REPO / "tests" / "data" / "runs"


def test_import_rungefit_and_listing_its_names_import_neither_torch_nor_matplotlib():
    stdout, heavy = heavy_imports_after("import rungefit\nprint(sorted(dir(rungefit)), rungefit.__version__)")
    assert "'fit'" in stdout and "'load'" in stdout
    assert heavy == ""


def test_lazy_names_are_the_core_objects():
    assert rungefit.fit is train.fit and rungefit.TrainConfig is train.TrainConfig
    assert set(rungefit.__all__) <= set(dir(rungefit))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        rungefit.nonesuch  # noqa: B018


def test_every_public_name_has_a_docstring():
    names = [name for name in rungefit.__all__ if name != "__version__"]
    assert names
    for name in names:
        assert inspect.getdoc(getattr(rungefit, name)), name
    for name in ("history", "member", "network"):
        assert inspect.getdoc(getattr(runs.Run, name)), name


def test_load_gives_the_best_member_as_a_frozen_eval_mode_sequential(spec_runs):
    runs_dir, name, summary = spec_runs["16:gelu,8:relu", "float64"]
    best = metrics.best_member(summary)
    network = rungefit.load(name, runs_dir)
    assert isinstance(network, torch.nn.Sequential) and not network.training
    assert all(not p.requires_grad and p.dtype == torch.float64 for p in network.parameters())
    assert torch.equal(network[0].weight, rungefit.open_run(name, runs_dir).model.weight(0)[best])
    with pytest.raises(ValueError, match="member 2: run 's1-float64' has 2 member"):
        rungefit.load(name, runs_dir, member=2)


def test_latest_and_none_both_name_the_newest_run(quick_run):
    runs_dir, run_dir, _ = quick_run
    assert rungefit.open_run("latest", runs_dir).path == rungefit.open_run(None, str(runs_dir)).path == run_dir


def test_a_missing_run_is_a_rungefit_error(tmp_path):
    with pytest.raises(rungefit.errors.RungefitError, match="no runs"):
        rungefit.load(runs_dir=tmp_path)


def test_the_history_arrays_are_history_csvs_numbers(quick_run):
    _, run_dir, summary = quick_run
    history = rungefit.open_run("quick", run_dir.parent).history
    with open(run_dir / "history.csv") as handle:
        table = list(csv.DictReader(handle))
    assert history["val_mse"].shape == (summary["epochs"], 1)
    assert history["val_mse"][:, 0].tolist() == [float(row["val_mse"]) for row in table]
    assert history["lr"][:, 0].tolist() == [float(row["lr"]) for row in table]


def readme_python_example() -> str:
    section = REPO.joinpath("README.md").read_text().split("\n## Use it from Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_as_printed(tmp_path, monkeypatch, capsys):
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    assert namespace["net"](torch.zeros(1, 1)).shape == (1, 1)
    assert namespace["stack"].layers == namespace["result"].model.layers
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_the_committed_run_loads_and_reproduces_its_summary(tmp_path):
    shutil.copytree(COMMITTED_RUNS, tmp_path / "runs")  # eval writes eval.png into the run
    loaded = runs.load_run(tmp_path / "runs", "format1")
    assert loaded.config.layers == "6:tanh,4:gelu" and loaded.model.members == 2
    summary = json.loads((tmp_path / "runs" / "format1" / "summary.json").read_text())
    for member, saved in enumerate(summary["members"]):
        result = runner.invoke(app, ["eval", "--run", "format1", "--runs-dir", str(tmp_path / "runs"), "--member", str(member), "--json"])
        assert result.exit_code == 0, result.output
        scores = json.loads(result.stdout)["scores"][0]
        # float32 sums may round differently on another CPU: agreement to 1e-5, not bit for bit.
        assert np.isclose(scores["mse"], saved["test_mse"], rtol=1e-5, atol=0)
        assert np.isclose(scores["max_abs_error"], saved["test_max_abs_error"], rtol=1e-5, atol=0)
    assert loaded.history["train_mse"].shape == (3, 2)


# ---------------------------------------------------------------- the API holds to config.json's rules

# A value of each field that no run may have, as the API could be given it; JSON writes tuples as arrays.
REFUSED_SETTINGS = [
    ("eps", -1), ("eps", 0), ("eps", math.inf), ("seeds", (1.5,)), ("seeds", (0, 0)), ("seeds", ()), ("epochs", True),
    ("betas", (2, -1)), ("betas", (0.9, 1)), ("points", 2.5), ("points", "100"), ("lr", None), ("val_fraction", 1),
    ("test_fraction", 0), ("test_points", 1), ("workers", -1), ("polish_iterations", 0.5), ("scale", "big"), ("keep", 1),
    ("layers", 5), ("target", None), ("domain", (0, "1")), ("data_sha256", "abc"), ("dtype", "float16"), ("device", "gpu"),
]


def test_every_field_has_one_rule():
    assert set(TRAIN_RULES) == {field.name for field in dataclasses.fields(rungefit.TrainConfig)}


@pytest.mark.parametrize("field, value", REFUSED_SETTINGS, ids=lambda v: repr(v))
def test_the_api_and_config_json_refuse_a_setting_with_the_same_words(field, value, quick_run, tmp_path):
    with pytest.raises(rungefit.errors.UsageError, match=rf"^(--\S+ \()?{field}\)? must be ") as api:
        rungefit.TrainConfig(**{field: value}).validate()
    shutil.copytree(quick_run[1], tmp_path / "r")
    config = tmp_path / "r" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), field: value}))
    with pytest.raises(rungefit.errors.RunError) as saved:
        runs.load_run(tmp_path, "r")
    assert str(api.value) in str(saved.value)


def test_fit_refuses_a_bad_setting_before_training_as_a_usage_error(monkeypatch):
    monkeypatch.setattr(train, "open_stack", lambda *a, **k: pytest.fail("training started"))
    for field, value in (("points", 2.5), ("betas", (2, -1)), ("epochs", True)):
        with pytest.raises(rungefit.errors.UsageError, match=field):
            rungefit.fit(rungefit.TrainConfig(**{field: value}))


def test_a_list_where_a_tuple_is_meant_is_taken_as_the_tuple():
    config = rungefit.TrainConfig(seeds=[3, 4], betas=[0.8, 0.9])
    config.validate()
    assert config.seeds == (3, 4) and config.betas == (0.8, 0.9)


@pytest.mark.parametrize("arguments, name", [((123,), "run"), ((None, 5), "runs_dir"), ((None, "runs", 1.5), "member"), ((None, "runs", True), "member")])
def test_load_names_an_argument_of_the_wrong_type(arguments, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(rungefit.errors.UsageError, match=f"^{name} must be "):
        rungefit.load(*arguments)
