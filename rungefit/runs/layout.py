"""What a runs directory holds and what its entries may be called; RunError, and the words its messages share.

A runs directory holds a directory per run, `latest` (a text file naming the newest run) and
`lr-find/`. A run directory holds config.json, model.pt and summary.json (format.py says what
each holds), history.csv, figures, and any files of your own. Every other runs module builds on
this one, which imports no other.
"""

from __future__ import annotations

import string
from pathlib import Path

from rungefit.config import DATA_FILE
from rungefit.errors import RunError, UsageError

LATEST = "latest"
LR_FIND_DIR = "lr-find"  # lr-find's outputs live in this subdirectory of the runs directory
RESERVED_NAMES = (LATEST, LR_FIND_DIR)
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.csv"
MAX_NAME_LENGTH = 100
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-")
RETRAIN = "retrain with `rungefit train`"
# What eval, grad and export write into a run directory, from its network, by default.
EVAL_FIGURE, GRAD_FIGURE = "eval.png", "grad.png"
EXPORT_PREFIX = "member-"
ENSEMBLE_EXPORT = "ensemble"  # the stem of export's file of a stack's ensemble mean


def made_from_the_network(run_dir: Path, formats: tuple[str, ...]) -> list[str]:
    """The files in run_dir that eval, grad and export wrote from its network under their default
    names (exports: member-K.FORMAT for each of formats), sorted."""
    def derived(name: str) -> bool:
        stem, _, suffix = name.rpartition(".")
        export = stem == ENSEMBLE_EXPORT or (stem.startswith(EXPORT_PREFIX) and stem[len(EXPORT_PREFIX):].isdigit())
        return name in (EVAL_FIGURE, GRAD_FIGURE) or (export and suffix in formats)

    return sorted(entry.name for entry in run_dir.iterdir() if entry.is_file() and derived(entry.name))


# A run's own files: what a save writes and a load checks. Nothing made from a run may take their names.
RUN_FILES = (CONFIG_FILE, MODEL_FILE, SUMMARY_FILE, HISTORY_FILE, DATA_FILE)


def holds_a_run(directory: Path) -> bool:
    """Whether `directory` holds the files every saved run has: config.json, model.pt, summary.json."""
    return all((directory / file).is_file() for file in (CONFIG_FILE, MODEL_FILE, SUMMARY_FILE))


def check_derived_name(file_name: str) -> None:
    """UsageError unless `file_name` may name a file made from a run inside its directory: one
    visible path component, none of the run's own files."""
    if not file_name or file_name.startswith(".") or "/" in file_name or file_name in RUN_FILES:
        raise UsageError(f"{file_name!r} cannot be written into a run directory: it is a run's own file, hidden, or not a plain file name")


def damaged(file: Path, detail: str) -> RunError:
    return RunError(f"{file} is damaged or incomplete: {detail}; {RETRAIN}")


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
        raise UsageError(f"{option} {quoted(name)} is not a valid run name: it {problem}")


def quoted(name: str) -> str:
    """A name in quotes for a message, cut if long."""
    return repr(name) if len(name) <= 60 else repr(name[:57]) + "…"
