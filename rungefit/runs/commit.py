"""Saving runs: reserved names, atomic saves and updates, and what a killed process leaves behind.

No save changes a run in place, so that a run directory is always one whole run:

- A new run is written in full into a hidden `.staging-*` directory, which is then renamed onto
  its name (replacing the empty directory that reserved it).
- An update (a resumed run) is written in full in the same way, the old run's other files (eval.png,
  grad.png, files of your own) carried over as hard links, and renamed `.new-NAME` once complete.
  Then, under the runs directory's lock, NAME is renamed `.old-NAME` and `.new-NAME` renamed NAME;
  last, `.old-NAME` is deleted.

At every instant NAME is the old run or the new one, or, between the two renames, missing with
both complete beside it. A process killed there leaves `.new-NAME` and `.old-NAME`: the next
command that reads, reserves or updates NAME finishes the swap (`.new-NAME` is complete, so it
wins) and deletes `.old-NAME`. A `.staging-*` left by a killed writer is deleted by the next save
into the same runs directory; an empty NAME left by a killed `train --name` is reclaimed by the
next `train --name NAME`. Whose a directory is, and whether its owner lives, lock.py tells.

Against power loss, every file is synced before it is renamed into place, and every directory
after an entry in it is made or renamed (sync_dir), before the next step builds on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from rungefit.errors import RunError
from rungefit.files import atomic_write, describe, ensure_writable_dir, sync_dir, umask, write_files
from rungefit.runs.layout import LATEST, check_name
from rungefit.runs.lock import DirLock, held, locked, own_run

STAGING_PREFIX = ".staging-"


# ---------------------------------------------------------------- names


class Reservation:
    """A run name held by this process until a run is saved under it, or it gives the name up.

    Its directory exists, empty, from the start, so a second `train --name` with the same name
    fails before it trains. The owner is alive while it holds the directory's lock: the kernel
    drops the lock when the owner dies, however it dies, so an empty directory whose lock can be
    taken was left by a killed owner and is reclaimed. Leaving the context manager without a save
    removes the directory.
    """

    def __init__(self, lock: DirLock):
        self.path, self._lock = lock.path, lock

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Give the name up (a no-op once a run is saved under it)."""
        if self._lock is not None:
            try:
                os.rmdir(self.path)
            except OSError:
                pass  # something was put into it meanwhile: leave that alone
            self.saved()

    def saved(self) -> None:
        """A run now lives in the directory: the lock is no longer needed."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def reserve(runs_dir: Path, name: str) -> Reservation:
    """Hold `name` in runs_dir for a run to be saved later; RunError when it is taken."""
    with _write_errors(runs_dir, "nothing was reserved"), locked(runs_dir):
        return _reserve_locked(runs_dir, name)


def _reserve_locked(runs_dir: Path, name: str) -> Reservation:
    """reserve(), with the runs directory locked."""
    check_name(name)
    path = runs_dir / name
    finish_update(runs_dir, name)
    try:
        os.mkdir(path)
    except FileExistsError:
        return _reclaim(path)
    return Reservation(DirLock.take(path))  # nobody else can have locked what we just made


def _reclaim(path: Path) -> Reservation:
    """The reservation of an existing `path` if it is an empty directory that nobody holds: one
    left by a `train --name` that was killed before it saved."""
    taken = RunError(f"run {path.name!r} already exists in {path.parent}; choose another --name or delete it")
    if not path.is_dir() or path.is_symlink():
        raise taken
    lock = DirLock.take(path)
    if lock is None:
        raise RunError(f"run {path.name!r} in {path.parent} is in use by another rungefit process (being trained or resumed); choose another --name")
    if os.listdir(path):
        lock.release()
        raise taken
    return Reservation(lock)


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _claim_free_name(runs_dir: Path) -> Reservation:
    """A reservation of the default name (a timestamp), suffixed -2, -3, … when taken: os.mkdir
    decides, so two processes never share a directory. The runs directory is locked."""
    base = default_run_name()
    for attempt in range(1, 1000):
        try:
            candidate = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
            os.mkdir(candidate)
            return Reservation(DirLock.take(candidate))
        except FileExistsError:
            continue
    raise RunError(f"could not find a free run name starting with {base!r} in {runs_dir}")


# ---------------------------------------------------------------- writing


@contextmanager
def _write_errors(where: Path, consequence: str) -> Iterator[None]:
    """Turn a failed file operation into a one-line RunError saying what it means for the user."""
    try:
        yield
    except OSError as error:
        raise RunError(f"cannot write in {where}: {describe(error)}; {consequence}") from None


def prepare_runs_dir(runs_dir: Path, name: str | None) -> Reservation:
    """Before any training: fail if the runs directory cannot be written, and reserve `name`, or
    without one the default name (so that the run's figures can name it before it is saved)."""
    if name is not None:
        check_name(name)  # before the directory is made
    ensure_writable_dir(runs_dir, "--runs-dir")
    if name is not None:
        return reserve(runs_dir, name)
    with _write_errors(runs_dir, "nothing was reserved"), locked(runs_dir):
        return _claim_free_name(runs_dir)


class _Staging:
    """A hidden directory in the runs directory where a run is written in full before it is moved
    into place. Its writer holds its lock; one nobody holds was left by a killed writer and is
    deleted when the next staging directory is made."""

    def __init__(self, runs_dir: Path):
        with locked(runs_dir):
            for entry in runs_dir.glob(f"{STAGING_PREFIX}*"):
                _remove_if_abandoned(entry)
            self.path = Path(tempfile.mkdtemp(dir=runs_dir, prefix=STAGING_PREFIX))
            self._lock = DirLock.take(self.path)
        os.chmod(self.path, 0o777 & ~umask())  # mkdtemp makes 0700, and the run keeps its mode

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.moved()

    def moved(self) -> None:
        """The directory is now a run (or gone): no longer staging."""
        self._lock.release()


def _remove_if_abandoned(staging: Path) -> None:
    """Delete a staging directory whose writer is gone (nobody holds its lock)."""
    try:
        lock = DirLock.take(staging)
    except OSError:
        return
    if lock is not None:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _stage(runs_dir: Path, files: dict[str, bytes], carry_from: Path | None = None) -> _Staging:
    """A complete new run in a staging directory: `files`, and with carry_from the other files of
    that old run."""
    staging = _Staging(runs_dir)
    try:
        write_files(staging.path, files)
        if carry_from is not None:
            _carry_over(carry_from, staging.path, files)
            sync_dir(staging.path)
    except BaseException:
        staging.discard()
        raise
    return staging


def _carry_over(old: Path, new: Path, rewritten: dict[str, bytes]) -> None:
    """Everything in run directory `old` that the update does not rewrite, into `new`: files as
    hard links (no copy, and the old run keeps its own), directories copied, links recreated.
    Hidden entries are temporary files of writes that were cut short, and stay behind."""
    for entry in os.scandir(old):
        if entry.name in rewritten or entry.name.startswith("."):
            continue
        target = new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True)
        elif entry.is_file():
            try:
                os.link(entry.path, target)
            except OSError:  # a file system without hard links
                shutil.copy2(entry.path, target)


def save_new_run(runs_dir: Path, name: str | None, files: dict[str, bytes], reservation: Reservation | None = None) -> Path:
    """Write a complete run, rename it onto its name in one step, mark it latest; its directory.

    The name is the reservation's, else `name` (RunError when taken), else a timestamp.
    """
    with _write_errors(runs_dir, "nothing was saved"):
        staging = _stage(runs_dir, files)
        made_here = None
        try:
            with locked(runs_dir):
                if reservation is None:
                    reservation = made_here = _reserve_locked(runs_dir, name) if name is not None else _claim_free_name(runs_dir)
                os.replace(staging.path, reservation.path)  # an empty directory is replaced in one step
                sync_dir(runs_dir)
        except BaseException:
            staging.discard()
            if made_here is not None:
                made_here.release()
            raise
        staging.moved()
        reservation.saved()
    mark_latest(runs_dir, reservation.path.name)
    return reservation.path


def update_run(run_dir: Path, files: dict[str, bytes], owner: DirLock | None = None) -> None:
    """Replace the run in run_dir by a complete new version of it in one swap (see the module
    docstring), and mark it latest. After a failure, the run is the old one.

    owner: the run's lock, when the caller holds it (run_for_update); else it is taken here.
    """
    runs_dir, name = run_dir.parent, run_dir.name
    new, old = runs_dir / f".new-{name}", runs_dir / f".old-{name}"
    with _write_errors(runs_dir, f"run {name!r} is unchanged"):
        with ExitStack() as stack:
            if owner is None:
                with locked(runs_dir):
                    owner = own_run(run_dir)
                stack.callback(owner.release)
            staging = _stage(runs_dir, files, carry_from=run_dir)
            try:
                os.rename(staging.path, new)  # complete: a killed swap is finished from here on
                sync_dir(runs_dir)
            except BaseException:
                staging.discard()
                raise
            staging.moved()
            try:
                with locked(runs_dir):
                    _swap(run_dir, new, old)
            except BaseException:
                if run_dir.exists():  # the swap did not happen: only the new copy goes
                    shutil.rmtree(new, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
    mark_latest(runs_dir, name)


def _swap(run_dir: Path, new: Path, old: Path) -> None:
    """With the runs directory locked: `new` takes run_dir's place, which moves to `old`."""
    os.rename(run_dir, old)
    try:
        os.rename(new, run_dir)
    except BaseException:
        os.rename(old, run_dir)
        raise
    sync_dir(run_dir.parent)


def finish_update(runs_dir: Path, name: str) -> None:
    """With the runs directory locked: complete the update of run `name` that a killed process
    left half done (a `.new-NAME` is complete and wins; a `.old-NAME` alone is garbage).

    Nothing is touched while the updater lives: it holds the old directory's lock throughout.
    """
    run, new, old = runs_dir / name, runs_dir / f".new-{name}", runs_dir / f".old-{name}"
    if not (os.path.lexists(new) or os.path.lexists(old)) or held(run) or held(old):
        return
    try:
        if os.path.lexists(new):
            if os.path.lexists(run):
                if os.path.lexists(old):
                    shutil.rmtree(old)  # left by an earlier update: older still
                os.rename(run, old)
            os.rename(new, run)
            sync_dir(runs_dir)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise RunError(f"run {name!r} in {runs_dir} was left half updated by a killed process, and finishing the update failed ({describe(error)})") from None


def mark_latest(runs_dir: Path, name: str) -> None:
    """Point `latest` at run `name`. If that fails, `latest` is removed rather than left naming an
    older run: eval and grad then take the newest run, which is this one."""
    try:
        atomic_write(runs_dir / LATEST, (name + "\n").encode())
    except OSError:
        with suppress(OSError):  # a directory in its place stays: reading `latest` says to delete it
            (runs_dir / LATEST).unlink(missing_ok=True)
