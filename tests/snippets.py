"""The command outputs README.md and docs/*.md show: regenerate them, or check that they are current.

Each output block on a page follows a marker naming its command line:

    <!-- snippet: rungefit grad --x 0.3 --explain --run reference -->
    ```
    …what the command printed…
    ```

`python -m tests.snippets` runs every snippet command in order in a fresh working directory (so
`runs/` starts empty and later commands can use the runs made by earlier ones) with COLUMNS=100,
and rewrites the blocks on every page. tests/test_readme.py reruns the FAST ones and compares their
words, with every number masked: what a float32 training run ends with differs from one CPU to
another (MKL and the vector units round differently), and so does every figure derived from it;
the slow ones are only checked to parse. Each command is shown on exactly one page, once. The test
runs the fast ones in its own process (run_here), sparing a torch import per command.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- snippet: (?P<command>.+?) -->\n```\n(?P<output>.*?)```\n", re.S)

# In the order they run: later commands read the runs earlier ones made. FAST holds one training;
# every other fast command reads its run.
FAST = [
    "rungefit train --name reference",
    "rungefit grad --grid 201 --run reference",
    "rungefit grad --x 0.3 --explain --run reference",
    "rungefit eval --run reference",
    "rungefit eval --baselines --run reference",
    "rungefit train --data tests/data/accel_ms.csv --name measured",
    "rungefit eval --run measured",
]
SLOW = [
    "rungefit train --seeds 10 --name seeds",
    "rungefit train --lr auto --name auto",
    "rungefit lr-find",
    "rungefit lr-find --seeds 5 --verify",
]
# Pictures the pages show, copied from the runs the snippets made.
FIGURES = {"runs/seeds/fit.png": "docs/fit.png"}
# Words are what lies between blanks and table rules, so that a table drawn to other widths, or
# a cell wrapped at another place, has the same words; in them every number reads "#".
WORD = re.compile(r"[^\s│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈━─═]+")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")


def prepare(workdir: Path) -> None:
    """What the commands read besides the runs they make: the data files under tests/data/."""
    shutil.copytree(ROOT / "tests" / "data", workdir / "tests" / "data", ignore=shutil.ignore_patterns("runs"))


def pages() -> list[Path]:
    """README.md and every docs/*.md: the pages whose command outputs are generated."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def run(command: str, workdir: Path) -> str:
    """What `command` prints to stdout, plus its warnings from stderr."""
    argv = shlex.split(command)
    assert argv[0] == "rungefit"
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "rungefit", *argv[1:]], cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()}")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    return "\n".join([result.stdout.rstrip("\n"), *warnings]).rstrip("\n") + "\n"


def run_here(command: str, workdir: Path) -> str:
    """As run, in this process (no torch import per command): the suite checks FAST this way.

    The consoles are drawn as a subprocess with COLUMNS=100 and NO_COLOR draws them.
    """
    from rich.console import Console

    from rungefit.cli import render as report
    from rungefit.cli.app import app

    from .helpers import runner

    argv = shlex.split(command)
    assert argv[0] == "rungefit"
    saved, cwd = (report.stdout, report.stderr), os.getcwd()
    report.stdout, report.stderr = Console(width=100, no_color=True), Console(width=100, no_color=True, stderr=True)
    try:
        os.chdir(workdir)
        result = runner.invoke(app, argv[1:], env={"COLUMNS": "100"})  # tables take COLUMNS where there is no terminal
    finally:
        os.chdir(cwd)
        report.stdout, report.stderr = saved
    if result.exit_code != 0:
        raise RuntimeError(f"{command} failed ({result.exit_code}): {result.stderr.strip()}")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    return "\n".join([result.stdout.rstrip("\n"), *warnings]).rstrip("\n") + "\n"


def words(text: str) -> collections.Counter:
    """The words of an output, numbers masked, and how often each occurs."""
    return collections.Counter(NUMBER.sub("#", word) for word in WORD.findall(text))


def shown_snippets() -> list[tuple[str, str]]:
    """(command, output) of every block on every page, in page order, repeats included."""
    return [(match["command"], match["output"]) for page in pages() for match in MARKER.finditer(page.read_text())]


def regenerate(commands: list[str]) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        prepare(Path(workdir))
        outputs = {}
        for command in commands:
            print(f"$ {command}", file=sys.stderr, flush=True)
            outputs[command] = run(command, Path(workdir))
        for source, target in FIGURES.items():
            shutil.copyfile(Path(workdir) / source, ROOT / target)

    def replace(match: re.Match) -> str:
        command = match["command"]
        output = outputs.get(command, match["output"])
        return f"<!-- snippet: {command} -->\n```\n{output}```\n"

    for page in pages():
        text = page.read_text()
        page.write_text(MARKER.sub(replace, text))


if __name__ == "__main__":
    regenerate(FAST + SLOW)
