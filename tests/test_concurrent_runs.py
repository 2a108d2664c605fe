"""Concurrent and failed saves: runs never share or clobber a directory, `latest` always names a
complete run, and nothing temporary is left behind."""

from __future__ import annotations

import errno
import json
import os
import pickle
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rungefit import files as files_module
from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.runs import commit as runsave
from rungefit.runs import format as runformat
from rungefit.runs import store as runs
from rungefit.training.train import fit

from . import crash
from .helpers import (
    ENDLESS_TRAIN,
    QUICK_TRAIN,
    RUN_FILES,
    WORKERS_GONE_WITHIN_S,
    Rungefit,
    fresh_interpreter_env,
    runner,
    stop_after,
    wait_until_gone,
)


def leftovers(runs_dir):
    """Staging directories and temporary files: everything a save writes under a dot name."""
    return [p for p in runs_dir.rglob(".*")]


def latest_is_complete(runs_dir) -> bool:
    """True when `latest` is absent or names a directory holding every file of a run."""
    try:
        name = (runs_dir / "latest").read_text().strip()
    except FileNotFoundError:
        return True
    return RUN_FILES <= set(os.listdir(runs_dir / name))


def test_two_trains_started_together_get_two_complete_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    # No --name: both take a timestamp, most often the same one, and os.mkdir decides who gets it.
    with Rungefit("train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--json") as one, Rungefit("train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--json") as two:
        children = [one, two]
        while running := [child for child in children if child.process.poll() is None]:
            assert latest_is_complete(runs_dir)
            # Until a train ends; `latest` is checked again every 50 ms meanwhile.
            select.select([child.exited for child in running], [], [], 0.05)
        codes = [child.finish() for child in children]
    outputs = [(child.stdout, child.stderr) for child in children]
    assert codes == [0, 0], outputs

    paths = {json.loads(stdout)["run"] for stdout, _ in outputs}
    assert len(paths) == 2
    for path in paths:
        assert {p.name for p in (runs_dir / os.path.basename(path)).iterdir()} == RUN_FILES
        assert json.loads((runs_dir / os.path.basename(path) / "summary.json").read_text())["status"] == "complete"
    assert latest_is_complete(runs_dir)
    assert (runs_dir / "latest").read_text().strip() in {os.path.basename(p) for p in paths}
    assert leftovers(runs_dir) == []


@pytest.fixture(scope="module")
def files():
    return runformat.run_files(fit(TrainConfig(points=60, epochs=1)), {}, {})


@pytest.mark.parametrize("failure", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize("stage", ["writing", "moving"])
def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, files, failure, stage):
    real_write, real_replace = files_module.write_synced, os.replace

    def failing_write(path, data):
        if path.name == "summary.json":
            raise failure()
        real_write(path, data)

    def failing_replace(source, target):
        if os.path.basename(source).startswith(".staging-"):
            raise failure()
        real_replace(source, target)

    if stage == "writing":
        monkeypatch.setattr(files_module, "write_synced", failing_write)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(runs.RunError if failure is OSError else failure):
        runsave.save_new_run(tmp_path, "r", files)
    assert list(tmp_path.iterdir()) == []


def test_every_name_a_save_makes_is_synced_in_its_directory_before_the_save_goes_on(tmp_path, monkeypatch, files):
    # Power loss cannot be staged here; what surviving it needs can be checked: after every entry
    # made in a directory (a file put in place, a hard link, a run renamed onto its name, `latest`),
    # that directory is synced, so that no later step builds on a name the disk may not have.
    events = []
    real = {name: getattr(os, name) for name in ("fsync", "replace", "rename", "link")}

    def fsync(fd):
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        real["fsync"](fd)

    def naming(name):
        def call(source, target, *args, **kwargs):
            real[name](source, target, *args, **kwargs)
            events.append(("name", os.path.dirname(os.path.realpath(target))))

        return call

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, naming(name))
    path = runsave.save_new_run(tmp_path, "r", files)
    (path / "notes.txt").write_text("mine")  # carried over by the update, as a hard link
    runsave.update_run(path, files)
    monkeypatch.undo()
    made = [(index, directory) for index, (kind, directory) in enumerate(events) if kind == "name"]
    assert {directory for _, directory in made} >= {str(tmp_path.resolve())}
    for index, directory in made:
        assert ("sync", directory) in events[index + 1:], (directory, events[index:])


def test_saves_and_updates_leave_no_temporary_files(tmp_path, files):
    path = runsave.save_new_run(tmp_path, None, files)
    runsave.update_run(path, files)
    assert {p.name for p in tmp_path.iterdir()} == {path.name, "latest"}
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- all or nothing: failures and kills


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry under directory: a file's bytes, a directory as '<dir>'."""
    return {str(p.relative_to(directory)): "<dir>" if p.is_dir() else p.read_bytes() for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def two_versions():
    """The files of an interrupted run (2 of 4 epochs) and of the same run resumed to the end."""
    config = TrainConfig(points=60, epochs=4, seeds=(0, 1))  # 2 steps per epoch
    stopped = fit(config, should_stop=stop_after(5))
    assert stopped.epochs_run == 2
    return runformat.run_files(stopped, {}, {}), runformat.run_files(fit(config, resume=stopped.state()), {}, {})


def old_run(runs_dir: Path, two_versions) -> tuple[dict, dict]:
    """runs_dir/x holding the old version, with a figure and a folder of the user's own; the
    snapshots the run directory may have afterwards: (old, new)."""
    old_files, new_files = two_versions
    runs_dir.mkdir()
    run_dir = runsave.save_new_run(runs_dir, "x", old_files)
    (run_dir / "eval.png").write_bytes(b"a figure eval drew of the old model")
    (run_dir / "notes").mkdir()
    (run_dir / "notes" / "todo.txt").write_text("resume it")
    old = snapshot(run_dir)
    new = {**old, **new_files}
    return old, new


def hidden(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if p.name.startswith("."))


def test_an_update_that_fails_at_any_step_leaves_the_old_run_and_says_so(tmp_path, monkeypatch, two_versions):
    """Every file operation of an update fails in turn (a full disk): the run stays the old one,
    the error is a RunError, and nothing temporary is left."""
    operations = ("rename", "replace", "link", "mkdir", "fsync", "unlink")
    calls: list[str] = []
    real = {name: getattr(os, name) for name in operations}

    def counting(name):
        def call(*args, **kwargs):
            calls.append(name)
            if len(calls) == failing_call:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real[name](*args, **kwargs)

        return call

    failing_call = 0
    old, new = old_run(tmp_path / "measure", two_versions)
    for name in operations:
        monkeypatch.setattr(os, name, counting(name))
    runsave.update_run(tmp_path / "measure" / "x", two_versions[1])
    total = len(calls)
    assert snapshot(tmp_path / "measure" / "x") == new
    for failing_call in range(1, total + 1):
        calls.clear()
        monkeypatch.undo()
        runs_dir = tmp_path / f"fail-{failing_call}"
        old, new = old_run(runs_dir, two_versions)
        for name in operations:
            monkeypatch.setattr(os, name, counting(name))
        try:
            runsave.update_run(runs_dir / "x", two_versions[1])
        except runs.RunError as error:
            assert "no space left" in str(error) and "unchanged" in str(error), str(error)
        monkeypatch.undo()
        assert snapshot(runs_dir / "x") in (old, new), f"a mix after failing call {failing_call} ({calls[-1]})"
        runs.load_run(runs_dir, "x")
        assert hidden(runs_dir) == [], failing_call


class Crashes:
    """Saves killed at a chosen step (tests/crash.py): each runs in a fork of one fresh interpreter
    and exits on the spot, as on SIGKILL (no cleanup runs), at its `step`-th file-system operation."""

    def __init__(self, files_path: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash", str(files_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=fresh_interpreter_env()
        )

    def killed_at(self, step: int, action: str, runs_dir: Path) -> bool:
        """Whether the save `action` ("update" runs_dir/x, or a "new" run x) was killed at `step`
        (False: it got to the end)."""
        self.process.stdin.write(f"{action} {step} {runs_dir}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"tests.crash ended (exit {self.process.wait()})"
        code = int(answer)
        assert code in (0, crash.KILLED), f"the child failed at step {step} (exit {code})"
        return code == crash.KILLED

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def crashes(two_versions, tmp_path_factory):
    """Crashes of saves of the new version, two_versions[1]."""
    files_path = tmp_path_factory.mktemp("crash") / "files.pickle"
    files_path.write_bytes(pickle.dumps(two_versions[1]))
    crashes = Crashes(files_path)
    yield crashes
    crashes.close()


def test_an_update_killed_at_any_step_is_the_old_or_the_new_run_at_the_next_load(tmp_path, two_versions, crashes):
    step = 0
    while True:
        step += 1
        runs_dir = tmp_path / f"kill-{step}"
        old, new = old_run(runs_dir, two_versions)
        if not crashes.killed_at(step, "update", runs_dir):
            break
        loaded = runs.load_run(runs_dir, "x")  # finishes a swap the kill cut in two
        assert snapshot(runs_dir / "x") in (old, new), f"a mix after a kill at step {step}"
        assert loaded.checkpoint["status"] == loaded.summary["status"]
        # What a kill may leave: a staging directory, which the next save removes, and a
        # temporary file of `latest`, cut short while being written.
        assert all(name.startswith((runsave.STAGING_PREFIX, ".latest.")) for name in hidden(runs_dir)), step
        runsave.save_new_run(runs_dir, "later", two_versions[0])
        assert all(name.startswith(".latest.") for name in hidden(runs_dir)), step
    assert step > 10  # the updates did get killed all along the way
    assert snapshot(runs_dir / "x") == new


def test_a_new_run_killed_at_any_step_is_absent_or_complete_and_its_name_stays_usable(tmp_path, two_versions, crashes):
    files = two_versions[1]
    step = 0
    while True:
        step += 1
        runs_dir = tmp_path / f"kill-{step}"
        runs_dir.mkdir()
        runsave.save_new_run(runs_dir, "before", two_versions[0])
        if not crashes.killed_at(step, "new", runs_dir):
            break
        run_dir = runs_dir / "x"
        if run_dir.exists() and os.listdir(run_dir):
            assert snapshot(run_dir) == files, step
        else:  # nothing, or the empty reservation of a dead process: the name is free again
            runsave.reserve(runs_dir, "x").release()
        assert runs.load_run(runs_dir, None).path.name in ("before", "x")
    assert step > 5
    assert snapshot(runs_dir / "x") == files and (runs_dir / "latest").read_text() == "x\n"


# ---------------------------------------------------------------- a reserved name, a killed owner

def test_sigkill_of_a_named_train_leaves_no_worker_and_a_name_the_next_train_reclaims(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    with Rungefit(*ENDLESS_TRAIN, "--runs-dir", str(runs_dir), "--name", "x") as owner:
        workers = owner.training_workers()

        # While it trains, its name is taken: a second train fails before training.
        monkeypatch.setattr("rungefit.training.train.fit", lambda *args, **kwargs: pytest.fail("the clashing train trained"))
        clash = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "x"])
        assert clash.exit_code == 1, clash.output
        assert "in use by another rungefit process" in clash.stderr
        monkeypatch.undo()

        os.kill(owner.pid, signal.SIGKILL)
        assert owner.finish() == -signal.SIGKILL  # its output ended: no worker holds the pipes
    assert wait_until_gone(workers, WORKERS_GONE_WITHIN_S) == []
    assert os.listdir(runs_dir / "x") == []  # the killed owner's reservation

    again = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "x", "--json"])
    assert again.exit_code == 0, again.output
    assert RUN_FILES <= set(os.listdir(runs_dir / "x"))
