"""House rules that a reviewer would otherwise have to remember: measured figures live in docs/ and
benchmark output, never in the code's comments, docstrings or --help; modules stay small."""

import io
import re
import tokenize
from pathlib import Path

import pytest
import typer

from rungefit.cli.app import app

PACKAGE = Path(__file__).resolve().parent.parent / "rungefit"
# A duration ("3.5 ns", "0.15 s", "16 ms") or a speed-up ("1.1× faster", "2× slower").
MEASURED = re.compile(r"\b\d+(\.\d+)? ?(ns|µs|us|ms|s)\b(?! \w+ =)|\b\d+(\.\d+)?× (faster|slower)")
MAX_MODULE_LINES = 420  # "about 400": past it, a module is doing more than one job


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring-like string of a module."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and token.string.startswith(('"""', "'''"))):
            found.append((token.start[0], token.string))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_measured_timing_in_comments_or_docstrings(path):
    hits = [(line, match.group(0)) for line, text in prose(path) for match in MEASURED.finditer(text)]
    assert hits == [], f"{path.name}: measured figures belong in docs/ or benchmark output: {hits}"


def test_no_measured_timing_in_help():
    click_app = typer.main.get_command(app)
    texts = [click_app.help or ""]
    for command in click_app.commands.values():
        texts += [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    hits = [match.group(0) for text in texts for match in MEASURED.finditer(text)]
    assert hits == []


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it by job"
