"""The run directory: atomic saves and updates, safe loading, "latest", and run names for completion.

A runs directory holds a directory per run, `latest` (a text file naming the newest run) and
`lr-find/`. No save changes a run in place, so that a run directory is always one whole run:

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
next `train --name NAME`.

Whether an owner is alive is told by flock locks, which the kernel drops when their holder dies,
however it dies (SIGKILL included):
- the runs directory is locked during the short steps that create, rename or delete entries in it,
  and while a reader opens a run's files (so that it reads one version, never parts of two);
- a run directory is locked by the process that may update it (`train --resume`), or, still
  empty, by the `train --name` that reserved it; a `.staging-*` directory by its writer.
A directory whose lock can be taken has no living owner.

Every file read from a run is opened without blocking, must be a regular file of bounded size, and
is checked against its schema (schema.py) before use. torch is imported only inside the functions
that need it, so listing runs for TAB completion stays fast.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import stat
import string
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rungefit import schema
from rungefit.errors import RungefitError, UsageError

CHECKPOINT_FORMAT = 1
LATEST = "latest"
LR_FIND_DIR = "lr-find"  # lr-find's outputs live in this subdirectory of the runs directory
RESERVED_NAMES = (LATEST, LR_FIND_DIR)
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
STATUSES = ("complete", "interrupted", "diverged")
MAX_NAME_LENGTH = 100
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-")
STAGING_PREFIX = ".staging-"
# The most bytes each file may hold: far above what any run writes (a checkpoint of the largest
# stack is a few GB), and a bound on what a damaged or hostile file can make rungefit read.
FILE_LIMITS = {LATEST: 1024, CONFIG_FILE: 16 << 20, SUMMARY_FILE: 256 << 20, MODEL_FILE: 64 << 30}
# How long to wait for another process's step under the runs directory's lock (milliseconds, or
# the time to open a run's files) before saying that something holds it.
LOCK_WAIT_S = 60.0
RETRAIN = "retrain with `rungefit train`"


class RunError(RungefitError):
    """A run directory problem the user can fix; the message says how."""


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
        """train_mse, val_mse and lr of every epoch and member, float64 NumPy arrays [epochs, K]."""
        import torch

        curves = self.checkpoint.get("history")
        if not isinstance(curves, dict) or not all(isinstance(curve, torch.Tensor) and curve.dim() == 2 for curve in curves.values()):
            raise RunError(f"{self.path / MODEL_FILE} holds no readable history; retrain with `rungefit train`")
        return {name: curve.double().numpy() for name, curve in curves.items()}

    def member(self, member: int | None = None, option: str = "member") -> int:
        """`member` checked against the run, or, for None, the member with the best validation MSE.

        `option` names the value in the error message (the CLI's "--member")."""
        from rungefit.evaluate import best_member

        if member is None:
            return best_member(self.summary)
        members = self.model.members
        if not 0 <= member < members:
            raise UsageError(f"{option} {member}: run {self.path.name!r} has {members} member(s), numbered 0…{members - 1}")
        return member

    def network(self, member: int | None = None):
        """The member (default: the best by validation MSE) as a torch.nn.Sequential in the run's
        dtype, on the CPU, in eval mode and without gradients for its parameters."""
        from rungefit.model import to_sequential

        return to_sequential(self.model, self.member(member))

    def target(self):
        """What the run fits (target.py's FunctionTarget or DataTarget): its name and domain."""
        from rungefit.target import target_of

        return target_of(self.config)


# ---------------------------------------------------------------- names


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a run (one path component of safe characters), or None."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if name.startswith("."):
        return "starts with '.'"
    if not set(name) <= NAME_CHARACTERS:
        return "has characters other than letters, digits, '.', '_' and '-' (a run name, not a path)"
    if name in RESERVED_NAMES:
        return f"is reserved ({' and '.join(repr(n) for n in RESERVED_NAMES)} are not run names)"
    return None


def check_name(name: str, option: str = "--name") -> None:
    """UsageError naming the option unless `name` is a valid run name."""
    problem = name_problem(name)
    if problem:
        raise UsageError(f"{option} {_quoted(name)} is not a valid run name: it {problem}")


def _quoted(name: str) -> str:
    """A name in quotes for a message, cut if long."""
    return repr(name) if len(name) <= 60 else repr(name[:57]) + "…"


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


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
        name = _latest_named(runs_dir)
    except (RunError, OSError):
        return None
    return name if name in list_run_names(runs_dir) else None


# ---------------------------------------------------------------- locks


class DirLock:
    """An exclusive flock on a directory, held until release() or the holder's death."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def take(cls, path: Path) -> DirLock | None:
        """The lock of directory `path`, or None while another process holds it."""
        import fcntl

        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _held(path: Path) -> bool:
    """Whether a living process holds the lock of directory `path` (False if there is none)."""
    try:
        lock = DirLock.take(path)
    except OSError:
        return False
    if lock is None:
        return True
    lock.release()
    return False


@contextmanager
def _locked(runs_dir: Path) -> Iterator[None]:
    """Hold the runs directory's lock, waiting up to LOCK_WAIT_S for another process to let go."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while (lock := _take_runs_dir(runs_dir)) is None:
        if time.monotonic() > deadline:
            raise RunError(f"{runs_dir} stays locked by another rungefit process; try again when it has finished")
        time.sleep(0.01)
    try:
        yield
    finally:
        lock.release()


def _take_runs_dir(runs_dir: Path) -> DirLock | None:
    try:
        return DirLock.take(runs_dir)
    except OSError as error:
        raise RunError(f"cannot open --runs-dir {runs_dir} ({describe(error)})") from None


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
    with _write_errors(runs_dir, "nothing was reserved"), _locked(runs_dir):
        return _reserve_locked(runs_dir, name)


def _reserve_locked(runs_dir: Path, name: str) -> Reservation:
    """reserve(), with the runs directory locked."""
    check_name(name)
    path = runs_dir / name
    _finish_update(runs_dir, name)
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


def describe(error: OSError) -> str:
    """What went wrong with a file operation, in words a user can act on."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if error.errno == errno.EROFS:
        return "the file system is read-only"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or str(error) or type(error).__name__


@contextmanager
def _write_errors(where: Path, consequence: str) -> Iterator[None]:
    """Turn a failed file operation into a one-line RunError saying what it means for the user."""
    try:
        yield
    except OSError as error:
        raise RunError(f"cannot write in {where}: {describe(error)}; {consequence}") from None


def prepare_runs_dir(runs_dir: Path, name: str | None) -> Reservation | None:
    """Before any training: fail if the runs directory cannot be written, and reserve `name`."""
    if name is not None:
        check_name(name)  # before the directory is made
    ensure_writable_dir(runs_dir, "--runs-dir")
    return None if name is None else reserve(runs_dir, name)


def ensure_writable_dir(path: Path, option: str, advice: str = "choose another directory") -> None:
    """Create path if needed; RunError naming the option if it cannot be created or written.

    Writing is tried (a file created and removed): permissions alone do not tell, as root may
    write anywhere but on a read-only or full file system.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"{option} {path}: cannot create it ({describe(error)}); {advice}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise RunError(f"{option} {path} is not writable ({describe(error)}); {advice}") from None


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a temporary file in the same directory and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run is as shareable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_bytes(result, extra: dict | None = None) -> bytes:
    """model.pt: format, layer spec, members, dtype, the tensors, and what --resume needs: the
    optimizer state, the epochs run and the history (as float64 [epochs, K] tensors: exact for
    float32 and float64 runs alike, and stored as raw bytes rather than one pickled float each)."""
    import torch

    curves = {name: torch.tensor(values, dtype=torch.float64).reshape(len(values), result.model.members) for name, values in asdict(result.history).items()}
    state = {
        "format": CHECKPOINT_FORMAT,
        "layers": result.config.layers,
        "members": result.model.members,
        "dtype": result.config.dtype,
        "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
        "optimizer": {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in result.optimizer.state_dict().items()},
        "epochs_run": result.epochs_run,
        "history": curves,
        "status": result.status,
        **(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def history_csv(history, seeds) -> bytes:
    """One row per epoch per member."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "member", "seed", "train_mse", "val_mse", "lr"])
    for epoch, (train, val, lr) in enumerate(zip(history.train_mse, history.val_mse, history.lr), start=1):
        for member, seed in enumerate(seeds):
            writer.writerow([epoch, member, seed, repr(train[member]), repr(val[member]), repr(lr[member])])
    return out.getvalue().encode()


def _finite_or_null(value: Any) -> Any:
    """value with every NaN and ±inf float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def json_text(document: dict) -> str:
    """Strict JSON: a non-finite figure is written null (NaN and Infinity are not JSON, and strict
    parsers refuse them)."""
    return json.dumps(_finite_or_null(document), indent=2, allow_nan=False)


def json_bytes(document: dict) -> bytes:
    return (json_text(document) + "\n").encode()


def run_files(result, config_extra: dict, summary_extra: dict, pictures: dict[str, bytes]) -> dict[str, bytes]:
    """Everything a run directory holds, as bytes keyed by file name."""
    import torch

    from rungefit import __version__
    from rungefit.datafile import DATA_FILE
    from rungefit.target import target_of

    config = {**asdict(result.config), **config_extra, "rungefit_version": __version__, "torch_version": torch.__version__}
    return {
        CONFIG_FILE: json_bytes(config),
        MODEL_FILE: checkpoint_bytes(result),
        "history.csv": history_csv(result.history, result.config.seeds),
        SUMMARY_FILE: json_bytes({**result.summary(), **summary_extra}),
        # A data run keeps its points, so that it survives the file moving.
        **({DATA_FILE: target_of(result.config).points.raw} if result.config.data else {}),
        **pictures,
    }


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write every file into an existing directory, each atomically."""
    for file_name, data in files.items():
        atomic_write(directory / file_name, data)


class _Staging:
    """A hidden directory in the runs directory where a run is written in full before it is moved
    into place. Its writer holds its lock; one nobody holds was left by a killed writer and is
    deleted when the next staging directory is made."""

    def __init__(self, runs_dir: Path):
        with _locked(runs_dir):
            for entry in runs_dir.glob(f"{STAGING_PREFIX}*"):
                _remove_if_abandoned(entry)
            self.path = Path(tempfile.mkdtemp(dir=runs_dir, prefix=STAGING_PREFIX))
            self._lock = DirLock.take(self.path)
        os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp makes 0700, and the run keeps its mode

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
            with _locked(runs_dir):
                if reservation is None:
                    reservation = made_here = _reserve_locked(runs_dir, name) if name is not None else _claim_free_name(runs_dir)
                os.replace(staging.path, reservation.path)  # an empty directory is replaced in one step
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
                with _locked(runs_dir):
                    owner = _own(run_dir)
                stack.callback(owner.release)
            staging = _stage(runs_dir, files, carry_from=run_dir)
            try:
                os.rename(staging.path, new)  # complete: a killed swap is finished from here on
            except BaseException:
                staging.discard()
                raise
            staging.moved()
            try:
                with _locked(runs_dir):
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


def _finish_update(runs_dir: Path, name: str) -> None:
    """With the runs directory locked: complete the update of run `name` that a killed process
    left half done (a `.new-NAME` is complete and wins; a `.old-NAME` alone is garbage).

    Nothing is touched while the updater lives: it holds the old directory's lock throughout.
    """
    run, new, old = runs_dir / name, runs_dir / f".new-{name}", runs_dir / f".old-{name}"
    if not (os.path.lexists(new) or os.path.lexists(old)) or _held(run) or _held(old):
        return
    try:
        if os.path.lexists(new):
            if os.path.lexists(run):
                if os.path.lexists(old):
                    shutil.rmtree(old)  # left by an earlier update: older still
                os.rename(run, old)
            os.rename(new, run)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise RunError(f"run {name!r} in {runs_dir} was left half updated by a killed process, and finishing the update failed ({describe(error)})") from None


def _own(run_dir: Path) -> DirLock:
    """The lock of an existing run, for updating it; RunError while another process holds it.
    The runs directory is locked."""
    lock = DirLock.take(run_dir)
    if lock is None:
        raise RunError(f"run {run_dir.name!r} is in use by another rungefit process (a resume in progress); try again when it has finished")
    return lock


def mark_latest(runs_dir: Path, name: str) -> None:
    """Point `latest` at run `name`. If that fails, `latest` is removed rather than left naming an
    older run: eval and grad then take the newest run, which is this one."""
    try:
        atomic_write(runs_dir / LATEST, (name + "\n").encode())
    except OSError:
        (runs_dir / LATEST).unlink(missing_ok=True)


# ---------------------------------------------------------------- reading


def _open_regular(path: Path, limit: int, advice: str = f"the run is damaged: {RETRAIN}") -> int:
    """A read-only descriptor of `path`, which must be a regular file of at most `limit` bytes.

    Opened without blocking (a FIFO would wait for a writer forever) and checked on the
    descriptor, so that a device such as /dev/zero is refused before a byte is read.
    FileNotFoundError passes through; anything else is a RunError ending with `advice`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RunError(f"cannot open {path} ({describe(error)}); {advice}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"{path} is not a regular file (it is {_kind(info.st_mode)})"
    elif info.st_size > limit:
        problem = f"{path} holds {info.st_size} bytes, more than its {limit} at most"
    if problem:
        os.close(fd)
        raise RunError(f"{problem}; {advice}")
    return fd


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "not a file")


def _read(fd: int, limit: int, path: Path) -> bytes:
    """All of an open file, refused if it grows past `limit` while being read."""
    chunks, size = [], 0
    while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RunError(f"{path} grew past {limit} bytes while being read; try again")
    return b"".join(chunks)


def _latest_named(runs_dir: Path) -> str | None:
    """The run name in runs_dir/latest; None without such a file, RunError when it is damaged."""
    path = runs_dir / LATEST
    advice = "delete it (eval and grad then take the newest run)"
    fd = _open_regular(path, FILE_LIMITS[LATEST], advice)
    try:
        data = _read(fd, FILE_LIMITS[LATEST], path)
    finally:
        os.close(fd)
    name = data.decode("ascii", errors="replace").removesuffix("\n")
    problem = name_problem(name)
    if problem:
        raise RunError(f"{path} is damaged: the run name in it, {_quoted(name)}, {problem}; {advice}")
    return name


def _resolve(runs_dir: Path, name: str | None) -> tuple[str, str | None]:
    """The run `name` stands for (None or `latest`: the latest), and a note when `latest` named
    a run that is gone. The runs directory is locked."""
    if name is not None and name != LATEST:
        _finish_update(runs_dir, name)
        return name, None
    try:
        named = _latest_named(runs_dir)
    except FileNotFoundError:
        named = None
    if named is not None:
        _finish_update(runs_dir, named)
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
        with _locked(runs_dir):
            name, note = _resolve(runs_dir, name)
            path = runs_dir / name
            if not path.is_dir():
                known = ", ".join(list_run_names(runs_dir)[:5]) or "none"
                raise RunError(f"run {name!r} not found in {runs_dir} (runs: {known}); create one with `rungefit train`")
            # Opened under the lock, so that all three come from one version of the run.
            fds = {file: stack.enter_context(_opened(path, file)) for file in (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE)}
            if own:
                owner = _own(path)
        try:
            config = _check_config(_read_json(fds[CONFIG_FILE], path / CONFIG_FILE), path / CONFIG_FILE)
            checkpoint = _check_checkpoint(_read_checkpoint(fds[MODEL_FILE], path / MODEL_FILE), config, path / MODEL_FILE)
            summary = _check_summary(_read_json(fds[SUMMARY_FILE], path / SUMMARY_FILE), config, checkpoint, path)
        except BaseException:
            if owner is not None:
                owner.release()
            raise
    return LoadedRun(path=path, config=config, model=_model(checkpoint, config), checkpoint=checkpoint, summary=summary, note=note, owner=owner)


@contextmanager
def _opened(run_dir: Path, file: str) -> Iterator[int]:
    try:
        fd = _open_regular(run_dir / file, FILE_LIMITS[file])
    except FileNotFoundError:
        if file == MODEL_FILE:
            raise RunError(f"{run_dir} has no {MODEL_FILE}; it is not a rungefit run. Create one with `rungefit train`") from None
        raise RunError(f"{run_dir} has no {file}; the run is incomplete: {RETRAIN}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _damaged(file: Path, detail: str) -> RunError:
    return RunError(f"{file} is damaged or incomplete: {detail}; {RETRAIN}")


def _read_json(fd: int, file: Path) -> Any:
    data = _read(fd, FILE_LIMITS[file.name], file)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _damaged(file, "not JSON that rungefit wrote (nested too deeply)") from None
    except ValueError as error:
        raise _damaged(file, f"not valid JSON ({str(error).splitlines()[0][:100]})") from None


def _validated(value: Any, check: schema.Check, file: Path, where: str = "") -> Any:
    try:
        return check(value, where)
    except schema.SchemaError as error:
        raise _damaged(file, str(error)) from None


def _check_config(document: Any, file: Path):
    """The TrainConfig that config.json holds. Field types here; ranges by TrainConfig.validate,
    the one place that knows them. Missing fields take their defaults (older runs lack newer ones)."""
    from rungefit.config import DTYPE_NAMES, MAX_FORMULA_CHARS, MAX_MEMBERS, MAX_SEED, POLISHES, SCHEDULES, TrainConfig
    from rungefit.datafile import DATA_FILE, read_points
    from rungefit.schema import array, integer, number, optional, record, text

    fields = {
        "layers": optional(text(max_length=10_000)),
        "points": optional(integer()),
        "val_fraction": optional(number()),
        "batch_size": optional(integer()),
        "epochs": optional(integer()),
        "lr": optional(number(positive=True)),
        "schedule": optional(text(choices=SCHEDULES)),
        "seeds": optional(array(integer(0, MAX_SEED), min_length=1, max_length=MAX_MEMBERS)),
        "dtype": optional(text(choices=DTYPE_NAMES)),
        "device": optional(text(choices=("cpu", "cuda"))),
        "test_points": optional(integer()),
        "betas": optional(array(number(0, 1), length=2)),
        "eps": optional(number(positive=True)),
        "polish": optional(text(choices=POLISHES)),
        "polish_iterations": optional(integer()),
        "workers": optional(integer()),
        # The target: parsed below as if typed, by target.py's own whitelist, never executed.
        "target": optional(text(max_length=MAX_FORMULA_CHARS)),
        "domain": optional(array(number(), length=2)),
        "data": optional(text(max_length=4096)),
        "data_sha256": optional(text(max_length=64)),
        "test_fraction": optional(number()),
    }
    checked = _validated(document, record(fields), file)
    config = TrainConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in checked.items() if key in fields})
    try:
        if config.data:  # a data run's points are its own copy of them, whatever became of the file
            read_points(file.parent / DATA_FILE, expected_sha256=config.data_sha256)
        config.validate()
    except UsageError as error:
        raise _damaged(file, str(error)) from None
    return config


def _read_checkpoint(fd: int, file: Path) -> Any:
    """model.pt as data only: torch.load with weights_only=True rebuilds tensors and plain
    containers and refuses any pickle that would call a function."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), os.fdopen(os.dup(fd), "rb") as handle:
            # A foreign pickle makes torch warn about its protocol before refusing it.
            warnings.simplefilter("ignore")
            return torch.load(handle, map_location="cpu", weights_only=True)
    except (RecursionError, MemoryError):
        raise RunError(f"{file} is not a readable rungefit checkpoint (nested too deeply or too large); {RETRAIN}") from None
    except Exception as error:  # noqa: BLE001 — whatever a damaged file makes the unpickler raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"{file} is not a readable rungefit checkpoint ({first[:120]}); {RETRAIN}") from None


def _check_checkpoint(checkpoint: Any, config, file: Path) -> dict:
    """model.pt's contents against config.json: format, architecture, finite weights, shapes."""
    import torch

    from rungefit.config import MAX_STEPS, layer_shapes, parameter_count, parse_layers
    from rungefit.schema import equal_to, integer, record, tensor, text
    from rungefit.stack import DTYPES
    from rungefit.train import History

    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise RunError(f"{file} is not a rungefit checkpoint; {RETRAIN}")
    found = checkpoint["format"]
    if schema.exact_int(found) and found > CHECKPOINT_FORMAT:
        raise RunError(f"{file} has checkpoint format {found}, this rungefit reads format {CHECKPOINT_FORMAT}; upgrade rungefit")
    layers, members, dtype = parse_layers(config.layers), len(config.seeds), DTYPES[config.dtype]

    def same_layers(value: Any, where: str) -> str:
        try:
            same = parse_layers(text(max_length=10_000)(value, where)) == layers
        except UsageError as error:
            raise schema.SchemaError(where, str(error)) from None
        if not same:
            raise schema.SchemaError(where, f"must be config.json's layers {config.layers!r}, got {schema.shown(value)}")
        return value

    weights = {}
    for index, (fan_in, fan_out) in enumerate(layer_shapes(layers)):
        weights[f"layers.{index}.weight"] = tensor(dtype, (members, fan_out, fan_in), finite=True)
        weights[f"layers.{index}.bias"] = tensor(dtype, (members, fan_out), finite=True)
    moments = tensor(dtype, (members, parameter_count(layers)), finite=True)
    checked = _validated(checkpoint, record({
        "format": equal_to(CHECKPOINT_FORMAT, "the format this rungefit reads"),
        "layers": same_layers,
        "members": equal_to(members, "config.json's number of seeds"),
        "dtype": equal_to(config.dtype, "config.json's dtype"),
        "state_dict": record(weights, exact=True),
        "optimizer": record({"step": integer(0, MAX_STEPS), "exp_avg": moments, "exp_avg_sq": moments}),
        "epochs_run": integer(0, config.epochs),
        "history": record({}),
        "status": text(choices=STATUSES),
    }), file)
    curve = tensor(torch.float64, (checked["epochs_run"], members), finite=False)
    checked["history"] = _validated(checked["history"], record({field.name: curve for field in fields(History)}), file, "history")
    return checked


def _check_summary(document: Any, config, checkpoint: dict, run_dir: Path) -> dict:
    """summary.json, which must describe the state model.pt holds."""
    from rungefit.config import MAX_SEED
    from rungefit.schema import array, figure, integer, json_value, number, optional, record, text

    file = run_dir / SUMMARY_FILE
    member = record({
        "seed": integer(0, MAX_SEED),
        "lr": number(positive=True),
        **dict.fromkeys(("train_mse", "val_mse", "test_mse", "test_max_abs_error"), figure()),
    })
    summary = _validated(document, record({
        "status": text(choices=STATUSES),
        "members": array(member, length=len(config.seeds)),
        "epochs": optional(integer(0)),
        "wall_time_s": optional(number(0)),
        "lr_choice": optional(text(max_length=1000)),
        "lr_auto": optional(json_value(max_depth=8)),
    }), file)
    disagreements = [
        f"{what} {schema.shown(ours)} against {schema.shown(theirs)}"
        for what, ours, theirs in (
            ("status", summary["status"], checkpoint["status"]),
            ("epochs", summary.get("epochs", checkpoint["epochs_run"]), checkpoint["epochs_run"]),
            ("seeds", [m["seed"] for m in summary["members"]], list(config.seeds)),
        )
        if ours != theirs
    ]
    if disagreements:
        raise RunError(f"{run_dir}: summary.json disagrees with model.pt and config.json ({'; '.join(disagreements)}); the run is damaged: {RETRAIN}")
    return summary


def _model(checkpoint: dict, config):
    from rungefit.config import parse_layers
    from rungefit.model import StackedMLP
    from rungefit.stack import DTYPES

    model = StackedMLP(parse_layers(config.layers), len(config.seeds), dtype=DTYPES[config.dtype])
    model.load_state_dict(checkpoint["state_dict"])
    return model


def resume_state(loaded: LoadedRun):
    """The TrainState an interrupted run stopped at; RunError for a run that cannot be resumed."""
    from rungefit.train import History, TrainState

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


# A summary.json larger than this is not read when listing runs for completion: it stays quick.
MAX_LISTED_SUMMARY_BYTES = 16 << 20


def list_interrupted_runs(runs_dir: Path) -> list[str]:
    """Names of the runs in runs_dir that `train --resume` can continue, newest first: those whose
    summary.json says "interrupted" (read as untrusted JSON, no torch import)."""
    names = []
    for name in list_run_names(runs_dir):
        summary = runs_dir / name / "summary.json"
        try:
            if summary.stat().st_size > MAX_LISTED_SUMMARY_BYTES:
                continue
            document = json.loads(summary.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and document.get("status") == "interrupted":
            names.append(name)
    return names
