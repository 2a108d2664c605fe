"""Who owns what in a runs directory, told by flock locks, which the kernel drops when their holder
dies, however it dies (SIGKILL included):
- the runs directory is locked during the short steps that create, rename or delete entries in it,
  and while a reader opens a run's files (so that it reads one version, never parts of two);
- a run directory is locked by the process that may update it (`train --resume`), or, still
  empty, by the `train --name` that reserved it; a `.staging-*` directory by its writer.
A directory whose lock can be taken has no living owner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rungefit.errors import RunError
from rungefit.files import describe

# How long to wait for another process's step under the runs directory's lock (milliseconds, or
# the time to open a run's files) before saying that something holds it.
LOCK_WAIT_S = 60.0


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


def held(path: Path) -> bool:
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
def locked(runs_dir: Path) -> Iterator[None]:
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


def own_run(run_dir: Path) -> DirLock:
    """The lock of an existing run, for updating it; RunError while another process holds it.
    The runs directory is locked."""
    lock = DirLock.take(run_dir)
    if lock is None:
        raise RunError(f"run {run_dir.name!r} is in use by another rungefit process (a resume in progress); try again when it has finished")
    return lock
