import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from rungefit.config import TrainConfig
from rungefit.errors import UsageError
from rungefit.runs import commit as runsave
from rungefit.runs import format as runformat
from rungefit.runs import lock as runlock
from rungefit.runs import store as runs
from rungefit.training.metrics import grid_errors
from rungefit.training.train import fit

from .helpers import fresh_interpreter_env, save_run, stop_after


@pytest.fixture(scope="module")
def result():
    return fit(TrainConfig(points=80, epochs=3, seeds=(0, 1)))


def test_saved_run_reloads_to_the_same_model_and_test_mse(tmp_path, result):
    path = save_run(tmp_path, result, "r1")
    loaded = runs.load_run(tmp_path, "r1")
    assert loaded.path == path
    assert loaded.config == result.config
    assert torch.equal(loaded.model.params, result.model.params)
    reported = [m["test_mse"] for m in loaded.summary["members"]]
    assert grid_errors(loaded.model, loaded.target).mse.tolist() == reported


def test_latest_names_the_newest_run(tmp_path, result):
    save_run(tmp_path, result, "a")
    save_run(tmp_path, result, "b")
    assert (tmp_path / "latest").read_text().strip() == "b"
    assert runs.load_run(tmp_path, None).path.name == "b"


def test_default_names_never_collide(tmp_path, result, monkeypatch):
    monkeypatch.setattr(runsave, "default_run_name", lambda: "same")
    names = [save_run(tmp_path, result).name for _ in range(3)]
    assert names == ["same", "same-2", "same-3"]


def test_existing_name_is_refused_and_left_untouched(tmp_path, result):
    save_run(tmp_path, result, "keep")
    before = (tmp_path / "keep" / "model.pt").read_bytes()
    with pytest.raises(runs.RunError, match="already exists"):
        save_run(tmp_path, result, "keep")
    assert (tmp_path / "keep" / "model.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_history_csv_has_a_row_per_epoch_per_member(tmp_path, result):
    path = save_run(tmp_path, result, "h")
    lines = (path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,member,seed,train_mse,val_mse,lr"
    assert len(lines) == 1 + 3 * 2


def test_config_records_versions(tmp_path, result):
    config = json.loads((save_run(tmp_path, result, "c") / "config.json").read_text())
    assert config["seeds"] == [0, 1] and "torch_version" in config and "rungefit_version" in config


def test_missing_runs_say_how_to_make_one(tmp_path):
    with pytest.raises(runs.RunError, match="rungefit train"):
        runs.load_run(tmp_path, None)
    with pytest.raises(runs.RunError, match="rungefit train"):
        runs.load_run(tmp_path, "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(runs.RunError, match="rungefit train"):
        runs.load_run(tmp_path, "empty")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "latest", "lr-find", "x y", "..", "/abs", "../up", "x" * 101, "run\n"])
def test_bad_run_names_are_usage_errors_that_create_nothing(tmp_path, name):
    with pytest.raises(UsageError, match="--name .* is not a valid run name"):
        runsave.prepare_runs_dir(tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()


def test_latest_falls_back_to_the_newest_run_that_still_exists_and_says_which(tmp_path, result):
    save_run(tmp_path, result, "a")
    save_run(tmp_path, result, "b")
    shutil.rmtree(tmp_path / "b")  # the run latest names
    for name in (None, "latest"):
        loaded = runs.load_run(tmp_path, name)
        assert loaded.path.name == "a"
        assert "'b'" in loaded.note and "no longer exists" in loaded.note and "'a'" in loaded.note
    (tmp_path / "latest").unlink()
    assert runs.load_run(tmp_path, None).path.name == "a"
    assert "has no `latest`" in runs.load_run(tmp_path, None).note
    assert runs.load_run(tmp_path, "a").note is None


def test_latest_and_the_run_listing_skip_reservations_staging_and_lr_find(tmp_path, result):
    save_run(tmp_path, result, "a")
    reservation = runsave.reserve(tmp_path, "reserved")
    for name in (".staging-x", "lr-find"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes((tmp_path / "a" / "model.pt").read_bytes())
    assert runs.list_run_names(tmp_path) == ["a"]
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(runs.RunError, match="no runs in --runs-dir"):
        runs.load_run(tmp_path, None)
    reservation.release()
    assert not (tmp_path / "reserved").exists()


def test_a_name_in_use_is_refused_until_its_owner_lets_go_or_dies(tmp_path):
    held = runsave.reserve(tmp_path, "x")
    with pytest.raises(runs.RunError, match="in use by another rungefit process"):
        runsave.reserve(tmp_path, "x")
    # A process that reserves and dies without a word (as on SIGKILL): the kernel frees its lock.
    dies = f"import os, pathlib\nfrom rungefit.runs import commit\ncommit.reserve(pathlib.Path({str(tmp_path)!r}), 'killed')\nos._exit(0)"
    subprocess.run([sys.executable, "-c", dies], env=fresh_interpreter_env(), check=True, timeout=60)
    assert os.listdir(tmp_path / "killed") == []
    runsave.reserve(tmp_path, "killed").release()  # reclaimed
    held.release()
    runsave.reserve(tmp_path, "x").release()


def test_json_files_and_json_output_write_null_for_a_non_finite_figure(capsys):
    from rungefit.cli import render as report

    document = {"mse": math.nan, "members": [{"max": math.inf}, {"min": -math.inf, "ok": 1.5}], "pair": (math.nan, 2.0)}
    expected = {"mse": None, "members": [{"max": None}, {"min": None, "ok": 1.5}], "pair": [None, 2.0]}

    def strict(text):
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))

    assert strict(runformat.json_bytes(document)) == expected
    report.print_json(document)
    assert strict(capsys.readouterr().out) == expected


def test_a_run_being_resumed_cannot_be_resumed_a_second_time(tmp_path):
    stopped = fit(TrainConfig(points=80, epochs=3, seeds=(0, 1)), should_stop=stop_after(4))
    save_run(tmp_path, stopped, "r")
    with runs.run_for_update(tmp_path, "r"):
        with pytest.raises(runs.RunError, match="in use by another rungefit process"):
            with runs.run_for_update(tmp_path, "r"):
                pass
        runs.load_run(tmp_path, "r")  # reading it is fine
    with runs.run_for_update(tmp_path, "r"):
        pass


def test_a_runs_directory_held_too_long_is_an_error_not_a_hang(tmp_path, result, monkeypatch):
    save_run(tmp_path, result, "a")
    monkeypatch.setattr(runlock, "LOCK_WAIT_S", 0.05)
    holder = runlock.DirLock.take(tmp_path)  # as another process in a step would hold it
    try:
        with pytest.raises(runs.RunError, match="stays locked by another rungefit process"):
            runs.load_run(tmp_path, "a")
    finally:
        holder.release()
    runs.load_run(tmp_path, "a")
