"""Shell completion scripts for bash, zsh and fish, generated from the CLI's Typer machinery.

The committed copies in completions/ are regenerated with `python -m rungefit.completions` and a
test fails when they are stale. Each script calls back into `rungefit` with _RUNGEFIT_COMPLETE
set, so commands, options, choice values and run names always come from the installed CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROG_NAME = "rungefit"
COMPLETE_VAR = "_RUNGEFIT_COMPLETE"
FILES = {"bash": "rungefit.bash", "zsh": "_rungefit", "fish": "rungefit.fish"}


def completion_script(shell: str) -> str:
    """The completion script Typer installs for `shell`, as text."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell).rstrip("\n") + "\n"


def write_all(directory: Path) -> list[Path]:
    """(Re)write every shell's script into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        path = directory / name
        path.write_text(completion_script(shell))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        print(path)
