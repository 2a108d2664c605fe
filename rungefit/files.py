"""Files written and read safely, wherever they live: atomic and durable writes, bounded
non-blocking reads of untrusted files, strict JSON text, and a failed file operation in words.

A write goes to a synced temporary file in the same directory and is renamed into place, so a
reader sees the old contents or the new; the directory is synced after, against power loss. It
replaces only a regular file: never a device, a FIFO, a symbolic link or a directory. A
read opens without blocking (a FIFO would wait forever) and checks on the descriptor that the
file is regular and small enough before a byte is read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from rungefit.errors import RunError


def describe(error: OSError) -> str:
    """What went wrong with a file operation, in words a user can act on."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if error.errno == errno.EROFS:
        return "the file system is read-only"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or str(error) or type(error).__name__


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


def umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sync_dir(path: Path) -> None:
    """Make the entries of directory `path` durable (a file's own sync does not cover its name).
    File systems that cannot sync a directory say EINVAL; there, nothing more can be done."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def existing_file(path: Path) -> bool:
    """Whether a regular file is at `path` (False: nothing is). Anything else there (a device, a
    FIFO, a symbolic link, a directory) raises FileExistsError, which says so: a write never
    replaces it, as renaming onto /dev/null would remove the device, and onto a link the link
    itself, not its target."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise FileExistsError(errno.EEXIST, f"it is {_kind(mode)}, not a regular file; rungefit replaces only regular files", str(path))
    return True


def write_synced(path: Path, data: bytes) -> None:
    """Write data to path via a synced temporary file in the same directory and os.replace; what
    is at path must be a regular file or nothing (existing_file)."""
    existing_file(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; a run is as shareable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        existing_file(path)  # again just before the rename: something may have taken its place meanwhile
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write path in one step (the old contents or the new, whatever happens), durably."""
    write_synced(path, data)
    sync_dir(path.parent)


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write every file into an existing directory, each atomically, and the directory durably."""
    for file_name, data in files.items():
        write_synced(directory / file_name, data)
    sync_dir(directory)


def open_regular(path: Path, limit: int, advice: str) -> int:
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
    kinds = (
        (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
    )
    return next((text for test, text in kinds if test(mode)), "not a file")


def read_open(fd: int, limit: int, path: Path) -> bytes:
    """All of an open file, refused if it grows past `limit` while being read."""
    chunks, size = [], 0
    while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RunError(f"{path} grew past {limit} bytes while being read; try again")
    return b"".join(chunks)


def read_bounded(path: Path, limit: int, advice: str) -> bytes:
    """All of `path`, a regular file of at most `limit` bytes (see open_regular); FileNotFoundError
    passes through, anything else is a RunError ending with `advice`."""
    fd = open_regular(path, limit, advice)
    try:
        return read_open(fd, limit, path)
    finally:
        os.close(fd)


def finite_or_null(value: Any) -> Any:
    """value with every NaN and ±inf float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def json_text(document: dict) -> str:
    """Strict JSON: a non-finite figure is written null (NaN and Infinity are not JSON, and strict
    parsers refuse them)."""
    return json.dumps(finite_or_null(document), indent=2, allow_nan=False)


def json_bytes(document: dict) -> bytes:
    return (json_text(document) + "\n").encode()
