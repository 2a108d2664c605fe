"""Reading a run's files as untrusted input.

Every file read from a run is opened without blocking, must be a regular file of bounded size,
and is read no further than that bound; JSON is parsed, and model.pt unpickled as data only, once
its pickle's shape is known to be bounded (pickled.py).
What the contents must then be, format.py checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rungefit.errors import RunError
from rungefit.files import open_regular, read_bounded, read_open
from rungefit.runs.layout import (
    CONFIG_FILE,
    HISTORY_FILE,
    LATEST,
    MODEL_FILE,
    RETRAIN,
    SUMMARY_FILE,
    damaged,
    name_problem,
    quoted,
)

DAMAGED_ADVICE = f"the run is damaged: {RETRAIN}"
# The most bytes each file may hold: far above what any run writes (a checkpoint of the largest
# stack is a few GB), and a bound on what a damaged or hostile file can make rungefit read.
FILE_LIMITS = {LATEST: 1024, CONFIG_FILE: 16 << 20, SUMMARY_FILE: 256 << 20, HISTORY_FILE: 1 << 30, MODEL_FILE: 64 << 30}


@contextmanager
def opened(run_dir: Path, file: str) -> Iterator[int]:
    try:
        fd = open_regular(run_dir / file, FILE_LIMITS[file], DAMAGED_ADVICE)
    except FileNotFoundError:
        if file == MODEL_FILE:
            raise RunError(f"{run_dir} has no {MODEL_FILE}; it is not a rungefit run. Create one with `rungefit train`") from None
        raise RunError(f"{run_dir} has no {file}; the run is incomplete: {RETRAIN}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def read_json(fd: int, file: Path) -> Any:
    data = read_open(fd, FILE_LIMITS[file.name], file)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise damaged(file, "not JSON that rungefit wrote (nested too deeply)") from None
    except ValueError as error:
        raise damaged(file, f"not valid JSON ({str(error).splitlines()[0][:100]})") from None


def read_checkpoint(fd: int, file: Path) -> Any:
    """model.pt as data only: its pickle's shape checked first (pickled.check_archive: bounded
    depth and size, whatever repeats it holds), then torch.load with weights_only=True, which
    rebuilds tensors and plain containers and refuses any pickle that would call a function."""
    import warnings

    import torch

    from rungefit.runs.pickled import check_archive  # zipfile: for a checkpoint, not TAB completion

    try:
        with warnings.catch_warnings(), os.fdopen(os.dup(fd), "rb") as handle:
            check_archive(handle)
            handle.seek(0)
            # A foreign pickle makes torch warn about its protocol before refusing it.
            warnings.simplefilter("ignore")
            return torch.load(handle, map_location="cpu", weights_only=True)
    except (RecursionError, MemoryError):
        raise RunError(f"{file} is not a readable rungefit checkpoint (nested too deeply or too large); {RETRAIN}") from None
    except Exception as error:  # noqa: BLE001 — whatever a damaged file makes the unpickler raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"{file} is not a readable rungefit checkpoint ({first[:120]}); {RETRAIN}") from None


def latest_named(runs_dir: Path) -> str | None:
    """The run name in runs_dir/latest; None without such a file, RunError when it is damaged."""
    path = runs_dir / LATEST
    advice = "delete it (eval and grad then take the newest run)"
    try:
        data = read_bounded(path, FILE_LIMITS[LATEST], advice)
    except FileNotFoundError:
        return None
    name = data.decode("ascii", errors="replace").removesuffix("\n")
    problem = name_problem(name)
    if problem:
        raise RunError(f"{path} is damaged: the run name in it, {quoted(name)}, {problem}; {advice}")
    return name
