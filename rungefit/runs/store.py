"""A saved run as the rest of rungefit sees it: loading one (one version, every file checked),
resuming it, `latest`, and run names for completion.

The runs directory's other jobs have their own modules, each building only on those before it:
runlayout.py (what its entries are called; RunError), runlock.py (who owns what, and whether the
owner lives), runread.py (opening a run's files safely), runformat.py (what each file holds,
written and checked) and runsave.py (atomic saves and updates, and what a killed process leaves).
torch is imported only inside the functions that need it, so listing runs for TAB completion
stays fast.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rungefit.errors import UsageError
from rungefit.runs.format import check_checkpoint, check_config, check_summary
from rungefit.runs.layout import (
    CONFIG_FILE,
    LATEST,
    MODEL_FILE,
    RETRAIN,
    SUMMARY_FILE,
    RunError,
    check_name,
    name_problem,
)
from rungefit.runs.lock import DirLock, locked, own_run
from rungefit.runs.read import latest_named, opened, read_bounded, read_checkpoint, read_json
from rungefit.runs.commit import ensure_writable_dir, finish_update


@dataclass
class LoadedRun:
    """A saved run: its directory, settings, every member's network, its raw checkpoint and summary."""

    path: Path
    config: Any  # TrainConfig
    model: Any  # StackedMLP
    checkpoint: dict
    summary: dict
    note: str | None = None  # which run `latest` stood for, when not the one it names
    owner: DirLock | None = None  # held while the run may be updated (run_for_update)

    @property
    def history(self) -> dict:
        """train_mse, val_mse and lr of every epoch and member, float64 NumPy arrays [epochs, K]
        (checked when the run was loaded)."""
        from rungefit.training.train import History

        return {field.name: self.checkpoint["history"][field.name].numpy() for field in fields(History)}

    def member(self, member: int | None = None, option: str = "member") -> int:
        """`member` checked against the run, or, for None, the member with the best validation MSE.

        `option` names the value in the error message (the CLI's "--member")."""
        from rungefit.study.evaluate import best_member

        if member is None:
            return best_member(self.summary)
        members = self.model.members
        if not 0 <= member < members:
            raise UsageError(f"{option} {member}: run {self.path.name!r} has {members} member(s), numbered 0…{members - 1}")
        return member

    def network(self, member: int | None = None):
        """The member (default: the best by validation MSE) as a torch.nn.Sequential in the run's
        dtype, on the CPU, in eval mode and without gradients for its parameters."""
        from rungefit.net.model import to_sequential

        return to_sequential(self.model, self.member(member))

    def target(self):
        """What the run fits (target.py's FunctionTarget or DataTarget): its name and domain."""
        from rungefit.targets.target import target_of

        return target_of(self.config)


# ---------------------------------------------------------------- names


def list_run_names(runs_dir: Path) -> list[str]:
    """Names of the saved runs in runs_dir, newest model.pt first (no torch import, no lock, never
    raises). Reservations (no model.pt yet), hidden directories, `latest` and `lr-find` are not runs."""
    found = []
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return []
    for entry in entries:
        if name_problem(entry.name) is not None:
            continue
        try:
            model = os.stat(os.path.join(entry.path, MODEL_FILE))
        except OSError:
            continue
        if stat.S_ISREG(model.st_mode):
            found.append((-model.st_mtime_ns, entry.name))
    return [name for _, name in sorted(found)]


def latest_run(runs_dir: Path) -> str | None:
    """The run `latest` names if that run exists, else None; never raises (for completion)."""
    try:
        name = latest_named(runs_dir)
    except (RunError, OSError):
        return None
    return name if name in list_run_names(runs_dir) else None


# A summary.json larger than this is not read when listing runs for completion: it stays quick.
MAX_LISTED_SUMMARY_BYTES = 16 << 20


def list_interrupted_runs(runs_dir: Path) -> list[str]:
    """Names of the runs in runs_dir that `train --resume` can continue, newest first: those whose
    summary.json says "interrupted" (read as untrusted JSON, no torch import)."""
    names = []
    for name in list_run_names(runs_dir):
        try:
            document = json.loads(read_bounded(runs_dir / name / SUMMARY_FILE, MAX_LISTED_SUMMARY_BYTES))
        except (OSError, RunError, ValueError, RecursionError):  # not resumable, whatever is wrong
            continue
        if isinstance(document, dict) and document.get("status") == "interrupted":
            names.append(name)
    return names


# ---------------------------------------------------------------- loading


def _resolve(runs_dir: Path, name: str | None) -> tuple[str, str | None]:
    """The run `name` stands for (None or `latest`: the latest), and a note when `latest` named
    a run that is gone. The runs directory is locked."""
    if name is not None and name != LATEST:
        finish_update(runs_dir, name)
        return name, None
    named = latest_named(runs_dir)
    if named is not None:
        finish_update(runs_dir, named)
    existing = list_run_names(runs_dir)
    if named in existing:
        return named, None
    if not existing:
        raise RunError(f"no runs in --runs-dir {runs_dir} yet; create one with `rungefit train`")
    gone = f"run {named!r}, which {runs_dir / LATEST} names, no longer exists" if named else f"{runs_dir} has no `latest`"
    return existing[0], f"{gone}; using the newest run, {existing[0]!r}"


def load_run(runs_dir: Path, name: str | None, *, option: str = "--run") -> LoadedRun:
    """The run `name` (None or `latest`: the latest run): its config, its model rebuilt from
    model.pt and its summary, each file checked against its schema. RunError for anything
    missing, damaged or inconsistent; UsageError (naming `option`) for a name that is not one."""
    return _load(runs_dir, name, option, own=False)


@contextmanager
def run_for_update(runs_dir: Path, name: str, *, option: str = "--resume") -> Iterator[LoadedRun]:
    """load_run, holding the run's lock until the end (pass loaded.owner to update_run): no other
    process updates it meanwhile. Fails at once if the runs directory cannot be written."""
    loaded = _load(runs_dir, name, option, own=True)
    try:
        ensure_writable_dir(runs_dir, "--runs-dir", "the update is saved there: make it writable, or copy the run elsewhere")
        yield loaded
    finally:
        loaded.owner.release()


def _load(runs_dir: Path, name: str | None, option: str, own: bool) -> LoadedRun:
    if name is not None and name != LATEST:
        check_name(name, option)
    if not runs_dir.is_dir():
        raise RunError(f"no runs in --runs-dir {runs_dir} yet; create one with `rungefit train`")
    with ExitStack() as stack:
        owner = None
        with locked(runs_dir):
            name, note = _resolve(runs_dir, name)
            path = runs_dir / name
            if not path.is_dir():
                known = ", ".join(list_run_names(runs_dir)[:5]) or "none"
                raise RunError(f"run {name!r} not found in {runs_dir} (runs: {known}); create one with `rungefit train`")
            # Opened under the lock, so that all three come from one version of the run.
            fds = {file: stack.enter_context(opened(path, file)) for file in (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE)}
            if own:
                owner = own_run(path)
        try:
            config = check_config(read_json(fds[CONFIG_FILE], path / CONFIG_FILE), path / CONFIG_FILE)
            checkpoint = check_checkpoint(read_checkpoint(fds[MODEL_FILE], path / MODEL_FILE), config, path / MODEL_FILE)
            summary = check_summary(read_json(fds[SUMMARY_FILE], path / SUMMARY_FILE), config, checkpoint, path)
        except BaseException:
            if owner is not None:
                owner.release()
            raise
    return LoadedRun(path=path, config=config, model=_model(checkpoint, config), checkpoint=checkpoint, summary=summary, note=note, owner=owner)


def _model(checkpoint: dict, config):
    from rungefit.config import parse_layers
    from rungefit.net.model import DTYPES, StackedMLP

    model = StackedMLP(parse_layers(config.layers), len(config.seeds), dtype=DTYPES[config.dtype])
    model.load_state_dict(checkpoint["state_dict"])
    return model


def resume_state(loaded: LoadedRun):
    """The TrainState an interrupted run stopped at; RunError for a run that cannot be resumed."""
    from rungefit.training.train import History, TrainState

    checkpoint, name = loaded.checkpoint, loaded.path.name
    status = checkpoint["status"]
    if status == "complete":
        raise RunError(f"run {name!r} is complete ({checkpoint['epochs_run']} epochs): there is nothing to resume; start a new run with `rungefit train`")
    if status == "diverged":
        raise RunError(
            f"run {name!r} diverged, and resuming it would diverge again; train a new run with a lower --lr "
            "(`rungefit lr-find` suggests one)"
        )
    history = History(**{curve.name: checkpoint["history"][curve.name].tolist() for curve in fields(History)})
    state = TrainState(
        model_state=checkpoint["state_dict"],
        optimizer_state=checkpoint["optimizer"],
        epochs_run=checkpoint["epochs_run"],
        history=history,
        wall_time_s=loaded.summary.get("wall_time_s", 0.0),
    )
    try:
        state.check(loaded.config)
    except ValueError as error:
        raise RunError(f"{loaded.path} cannot be resumed: its checkpoint is damaged or incomplete ({error}); {RETRAIN}") from None
    return state
