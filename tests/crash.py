"""Saves killed on the spot at a chosen file-system operation, in forks of a fresh interpreter:

    python -m tests.crash FILES

FILES is a pickled {name: bytes} of a run. For each line `ACTION STEP RUNS_DIR` read from stdin,
this process forks a child that runs ACTION on RUNS_DIR and exits on the spot (as on SIGKILL: no
cleanup runs) at its STEP-th file-system operation, and answers one line: the child's exit code,
KILLED when it was stopped, 0 when it got to the end. test_concurrent_runs kills saves at every step
this way without forking the test process, and pays for one interpreter, not one per step.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import sys
from pathlib import Path

KILLED = 77

# What a save does to the file system, operation by operation.
OPERATIONS = ((os, ("rename", "replace", "link", "mkdir", "rmdir", "unlink", "fsync", "symlink")), (shutil, ("rmtree", "copy2", "copytree")))


def _actions(files: dict[str, bytes]) -> dict:
    from rungefit.runs import commit as runsave

    return {
        "update": lambda runs_dir: runsave.update_run(runs_dir / "x", files),
        "new": lambda runs_dir: runsave.save_new_run(runs_dir, None, files, runsave.reserve(runs_dir, "x")),
    }


def _killed_at(step: int, action, runs_dir: Path) -> None:
    """In the child: make the step-th operation exit on the spot, run action on runs_dir, never return."""
    code = 1
    try:
        counter = itertools.count(1)
        for module, names in OPERATIONS:
            for name in names:
                real = getattr(module, name)
                setattr(module, name, lambda *a, _real=real, **k: os._exit(KILLED) if next(counter) == step else _real(*a, **k))
        action(runs_dir)
        code = 0
    finally:
        os._exit(code)


def main(files_path: str) -> None:
    actions = _actions(pickle.loads(Path(files_path).read_bytes()))
    for line in sys.stdin:
        name, step, runs_dir = line.rstrip("\n").split(" ", 2)
        pid = os.fork()  # a fork of this single-threaded interpreter, not of the test process
        if pid == 0:
            _killed_at(int(step), actions[name], Path(runs_dir))
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
