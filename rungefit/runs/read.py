"""Reading a run's files as untrusted input.

Every file read from a run is opened without blocking, must be a regular file of bounded size,
and is read no further than that bound; JSON is parsed, and model.pt unpickled as data only.
What the contents must then be, runformat.py checks.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rungefit.runs.layout import (
    CONFIG_FILE,
    LATEST,
    MODEL_FILE,
    RETRAIN,
    SUMMARY_FILE,
    RunError,
    damaged,
    describe,
    name_problem,
    quoted,
)

# The most bytes each file may hold: far above what any run writes (a checkpoint of the largest
# stack is a few GB), and a bound on what a damaged or hostile file can make rungefit read.
FILE_LIMITS = {LATEST: 1024, CONFIG_FILE: 16 << 20, SUMMARY_FILE: 256 << 20, MODEL_FILE: 64 << 30}


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


def read_bounded(path: Path, limit: int, advice: str = f"the run is damaged: {RETRAIN}") -> bytes:
    """All of `path`, a regular file of at most `limit` bytes (see _open_regular); FileNotFoundError
    passes through, anything else is a RunError ending with `advice`."""
    fd = _open_regular(path, limit, advice)
    try:
        return _read(fd, limit, path)
    finally:
        os.close(fd)


@contextmanager
def opened(run_dir: Path, file: str) -> Iterator[int]:
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


def read_json(fd: int, file: Path) -> Any:
    data = _read(fd, FILE_LIMITS[file.name], file)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise damaged(file, "not JSON that rungefit wrote (nested too deeply)") from None
    except ValueError as error:
        raise damaged(file, f"not valid JSON ({str(error).splitlines()[0][:100]})") from None


def read_checkpoint(fd: int, file: Path) -> Any:
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
