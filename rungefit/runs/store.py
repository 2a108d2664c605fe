"""RunStore and Run: the runs directory and a saved run, as the rest of rungefit sees them.

A Run is opened whole (every file checked against its schema, one version of the run, its target
resolved from its own settings) and written only through its methods; a RunStore lists, opens,
reserves and saves. The directory's other jobs have their own modules, each building only on those
before it: layout.py (what its entries are called), lock.py (who owns what, and whether the owner
lives), read.py (opening a run's files safely), format.py (what each file holds, written and
checked, and how an older version is upgraded) and commit.py (atomic saves and updates, and what a
killed process leaves). torch is imported only inside the functions that need it, so listing runs
for TAB completion stays fast."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rungefit.errors import RunError, UsageError, suggest
from rungefit.files import atomic_write, ensure_writable_dir, read_bounded
from rungefit.runs.commit import finish_update, prepare_runs_dir, save_new_run, update_run
from rungefit.runs.format import check_checkpoint, check_config, check_summary, run_files
from rungefit.runs.layout import (
    CONFIG_FILE,
    LATEST,
    LR_FIND_DIR,
    MODEL_FILE,
    RETRAIN,
    SUMMARY_FILE,
    check_derived_name,
    check_name,
    holds_a_run,
    made_from_the_network,
    name_problem,
)
from rungefit.runs.lock import DirLock, locked, own_run
from rungefit.runs.read import DAMAGED_ADVICE, latest_named, opened, read_checkpoint, read_json


@dataclass
class Run:
    """A saved run: its directory, settings, target, every member's network, its raw checkpoint
    and summary, each checked when it was opened. The only way to write into it is through its
    methods: write_derived (a figure, an export) and update (a resumed training)."""

    path: Path
    config: Any  # TrainConfig
    target: Any  # targets.Target, resolved once when the run was opened (a data run: from its own copy of the points)
    model: Any  # StackedMLP
    checkpoint: dict
    summary: dict
    note: str | None = None  # which run `latest` stood for, when not the one it names
    owner: DirLock | None = None  # held while the run may be updated (RunStore.open_for_update)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        """complete, interrupted or diverged."""
        return self.checkpoint["status"]

    @property
    def epochs_run(self) -> int:
        return self.checkpoint["epochs_run"]

    @property
    def learned_nothing(self) -> bool:
        """Whether the run's verdict is that no member learned (summary.json's fit)."""
        from rungefit.training.metrics import FIT_NONE  # torch: listing runs for TAB completion needs none

        return self.summary.get("fit") == FIT_NONE

    @property
    def val_mse(self) -> list:
        """Every member's validation MSE as summary.json holds it (None where it was not finite)."""
        return [member["val_mse"] for member in self.summary["members"]]

    @property
    def history(self) -> dict:
        """train_mse, val_mse and lr of every epoch and member, float64 NumPy arrays [epochs, K]
        (checked when the run was loaded)."""
        from rungefit.training.train import History  # torch: listing runs for TAB completion needs none

        return {field.name: self.checkpoint["history"][field.name].numpy() for field in fields(History)}

    def member(self, member: int | None = None, option: str = "member") -> int:
        """`member` checked against the run, or, for None, the member with the best validation MSE.

        `option` names the value in the error message (the CLI's "--member")."""
        from rungefit.training.metrics import best_member  # torch, as above

        if member is None:
            return best_member(self.summary)
        members = self.model.members
        if not 0 <= member < members:
            raise UsageError(f"{option} {member}: run {self.path.name!r} has {members} member(s), numbered 0…{members - 1}")
        return member

    def uses_ensemble(self, member: int | None) -> bool:
        """Whether `member` (None: none chosen) stands for the ensemble, as predict and export take
        it: on a data run with several members, none chosen means their mean (and its band)."""
        return member is None and self.model.members > 1 and not self.target.has_function

    def network(self, member: int | None = None):
        """The member (default: the best by validation MSE) as a torch.nn.Sequential in the run's
        dtype and the target's units (the maps folded in), on the CPU, in eval mode and without
        gradients for its parameters."""
        from rungefit.net.sequential import to_sequential  # torch, as above

        return to_sequential(self.model, self.member(member), self.target.maps)

    def ensemble_network(self) -> tuple:
        """The mean of the members with a finite validation MSE as one module (an EnsembleMean of
        their network()s, in the target's units), and which members those are."""
        from rungefit.net.sequential import EnsembleMean  # torch, as above
        from rungefit.training.band import finite_members  # torch, as above

        members = list(finite_members(self.val_mse))
        return EnsembleMean([self.network(k) for k in members]), members

    def predict(self, x):
        """The ensemble's prediction at x (numbers in data units) and how sure it is: a Band with
        .mean and .spread (float64 arrays [n]), .lower and .upper (mean ∓ 2 spread), .noise and
        .members.

        mean is the average of the members (those with a finite validation MSE); spread is the
        standard deviation of a new measurement about it, √(noise² + s²/K), s² the members'
        variance at x and noise² their validation MSE less the part their scatter explains
        (rungefit.training.band says how, and why). With one member, mean is its prediction and
        spread √(its validation MSE) at every x. On a function target the "noise" is the members'
        shared error against f."""
        import numpy as np

        from rungefit.training.band import band  # torch, as above

        values = np.atleast_1d(np.asarray(x, dtype=np.float64))
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise UsageError("x: give finite numbers (a number or a 1-D sequence of them)")
        return band(self.model, self.target, self.val_mse, values)

    def resume_state(self):
        """The TrainState an interrupted run stopped at; RunError for a run that cannot be resumed."""
        return resume_state(self)

    def derived_path(self, file_name: str) -> Path:
        """Where write_derived puts `file_name`: in the run directory."""
        check_derived_name(file_name)
        return self.path / file_name

    def write_derived(self, file_name: str, data: bytes) -> Path:
        """Write a file made from the run (a figure, an export) into its directory, atomically. Its path."""
        path = self.derived_path(file_name)
        atomic_write(path, data)
        return path

    def made_from_the_network(self, formats: tuple[str, ...]) -> list[str]:
        """The files eval, grad and export wrote from this run's network under their default names."""
        return made_from_the_network(self.path, formats)

    def update(self, files: dict[str, bytes]) -> None:
        """Replace the run by its new version (a resumed training's files) in one swap; the other
        files in its directory are carried over. Needs the run opened for update."""
        update_run(self.path, files, self.owner)


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
            document = json.loads(read_bounded(runs_dir / name / SUMMARY_FILE, MAX_LISTED_SUMMARY_BYTES, DAMAGED_ADVICE))
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


def load_run(runs_dir: Path, name: str | None, *, option: str = "--run") -> Run:
    """The run `name` (None or `latest`: the latest run): its config, its model rebuilt from
    model.pt and its summary, each file checked against its schema. RunError for anything
    missing, damaged or inconsistent; UsageError (naming `option`) for a name that is not one."""
    return _load(runs_dir, name, option, own=False)


@contextmanager
def run_for_update(runs_dir: Path, name: str, *, option: str = "--resume") -> Iterator[Run]:
    """load_run, holding the run's lock until the end (pass loaded.owner to update_run): no other
    process updates it meanwhile. Fails at once if the runs directory cannot be written."""
    loaded = _load(runs_dir, name, option, own=True)
    try:
        ensure_writable_dir(runs_dir, "--runs-dir", "the update is saved there: make it writable, or copy the run elsewhere")
        yield loaded
    finally:
        loaded.owner.release()


def _load(runs_dir: Path, name: str | None, option: str, own: bool) -> Run:
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
                names = list_run_names(runs_dir)
                known = ", ".join(names[:5]) or "none"
                raise RunError(suggest(f"run {name!r} not found in {runs_dir} (runs: {known}); create one with `rungefit train`", name, names))
            # Opened under the lock, so that all three come from one version of the run.
            fds = {file: stack.enter_context(opened(path, file)) for file in (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE)}
            if own:
                owner = own_run(path)
        try:
            config, target = check_config(read_json(fds[CONFIG_FILE], path / CONFIG_FILE), path / CONFIG_FILE)
            checkpoint = check_checkpoint(read_checkpoint(fds[MODEL_FILE], path / MODEL_FILE), config, path / MODEL_FILE)
            # The network's own maps, as it was trained with them, whatever resolve would make today.
            target = replace(target, maps=type(target.maps)(**checkpoint["maps"]))
            summary = check_summary(read_json(fds[SUMMARY_FILE], path / SUMMARY_FILE), config, checkpoint, path)
        except BaseException:
            if owner is not None:
                owner.release()
            raise
    return Run(path=path, config=config, target=target, model=_model(checkpoint, config), checkpoint=checkpoint, summary=summary, note=note, owner=owner)


def _model(checkpoint: dict, config):
    from rungefit.net.model import DTYPES, StackedMLP  # torch, as above

    model = StackedMLP(config.hidden_layers, len(config.seeds), dtype=DTYPES[config.dtype])
    model.load_state_dict(checkpoint["state_dict"])
    return model


def resume_state(loaded: Run):
    """The TrainState an interrupted run stopped at; RunError for a run that cannot be resumed."""
    from rungefit.training.best import Best  # torch, as above
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
        model_state=checkpoint["resume_state_dict"],
        optimizer_state=checkpoint["optimizer"],
        epochs_run=checkpoint["epochs_run"],
        history=history,
        wall_time_s=loaded.summary.get("wall_time_s", 0.0),
        best=None if checkpoint["best"] is None else Best(checkpoint["best"]["params"], checkpoint["best"]["val_mse"], checkpoint["best"]["epoch"]),
    )
    try:
        state.check(loaded.config)
    except ValueError as error:
        raise RunError(f"{loaded.path} cannot be resumed: its checkpoint is damaged or incomplete ({error}); {RETRAIN}") from None
    return state


# ---------------------------------------------------------------- the store


class RunStore:
    """A runs directory, and the one way into it: its run names and `latest`, opening a run
    (checked, read-only, or locked for an update), reserving a name, saving a new run and
    lr-find's outputs. Nothing else in rungefit writes under a runs directory.

    Listing (names, latest, interrupted) imports no torch and never raises, for TAB completion.
    """

    def __init__(self, path: Path | str = "runs"):
        self.path = Path(path)

    def names(self) -> list[str]:
        """The saved runs, newest first."""
        return list_run_names(self.path)

    def latest(self) -> str | None:
        """The run `latest` names, if it exists."""
        return latest_run(self.path)

    def interrupted(self) -> list[str]:
        """The runs `train --resume` can continue, newest first."""
        return list_interrupted_runs(self.path)

    def open(self, name: str | None = None, *, option: str = "--run") -> Run:
        """The run `name` (None or `latest`: the latest), every file checked; see load_run."""
        return load_run(self.path, name, option=option)

    def open_for_update(self, name: str, *, option: str = "--resume"):
        """A context holding the run `name` locked until its end, for Run.update."""
        return run_for_update(self.path, name, option=option)

    def check_outside(self, path: Path, option: str) -> None:
        """UsageError naming `option` if `path` is this runs directory's `latest` or lies inside a
        run (of any runs directory): a run is written only through Run (write_derived), never over
        one of its own files."""
        where = path.parent.resolve()
        if where == self.path.resolve() and path.name == LATEST:
            raise UsageError(f"{option} {path} is the runs directory's `latest`, which names its newest run; choose another path")
        run = next((folder for folder in (where, *where.parents) if holds_a_run(folder)), None)
        if run is not None:
            raise UsageError(
                f"{option} {path} lies inside the run {run}, where only rungefit writes; "
                f"choose a path outside it, or leave out {option} to write into the run itself"
            )

    def reserve(self, name: str | None):
        """Before any training: RunError unless the directory can be written. A context manager
        that holds `name`, or without one the default name (a timestamp), for the run (leaving it
        unsaved gives the name up), and yields the reservation: its .path is the run's."""
        return prepare_runs_dir(self.path, name)

    def save(self, result, *, summary_extra: dict | None = None, figures: dict[str, bytes] | None = None, name: str | None = None, reservation=None) -> Path:
        """Save a training's result as a new run (all its files at once), mark it latest, and
        return its directory (open() reads it back). Its name: the reservation's, else `name`,
        else a timestamp."""
        files = run_files(result, summary_extra or {}, figures or {})
        if reservation is None:  # train reserved, and so made, the directory; a script may not have
            ensure_writable_dir(self.path, "--runs-dir")
        return save_new_run(self.path, name, files, reservation)

    def update(self, run: Run, result, *, summary_extra: dict | None = None, figures: dict[str, bytes] | None = None) -> None:
        """Replace `run` (opened for update) by its resumed training's result, in one swap."""
        run.update(run_files(result, summary_extra or {}, figures or {}))

    def check_lr_find(self) -> None:
        """RunError now, before a range test, unless lr-find's directory can be written."""
        ensure_writable_dir(self.path / LR_FIND_DIR, "--runs-dir")

    def save_lr_find(self, files: dict[str, bytes]) -> Path:
        """lr-find's outputs as a new directory RUNS_DIR/lr-find/<timestamp>; its path."""
        return save_new_run(self.path / LR_FIND_DIR, None, files)
