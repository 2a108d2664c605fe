"""House rules that a reviewer would otherwise have to remember: measured figures live in docs/ and
benchmark output, never in the code's comments, docstrings or --help; modules stay small."""

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import typer

from rungefit.cli.app import app

PACKAGE = Path(__file__).resolve().parent.parent / "rungefit"
# A duration ("3.5 ns", "0.15 s", "16 ms") or a speed-up ("1.1× faster", "2× slower").
MEASURED = re.compile(r"\b\d+(\.\d+)? ?(ns|µs|us|ms|s)\b(?! \w+ =)|\b\d+(\.\d+)?× (faster|slower)")
MAX_MODULE_LINES = 420  # "about 400": past it, a module is doing more than one job
MODULES = sorted(PACKAGE.rglob("*.py"))


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring-like string of a module."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and token.string.startswith(('"""', "'''"))):
            found.append((token.start[0], token.string))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it by job"


def test_the_import_rule_holds():
    """docs/development.md's layers, faces and forbidden imports, as import-linter checks them."""
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def own_imports(path: Path):
    """(node, function or None) of every import of rungefit's own code in a module."""
    tree = ast.parse(path.read_text())
    owner = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                owner.setdefault(inner, node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rungefit"):
            yield node, owner.get(node)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_name(path):
    private = [f"{node.module}.{alias.name}" for node, _ in own_imports(path) for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    assert private == [], f"{path}: imports private names {private}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_function_level_import_of_our_own_code_says_why(path):
    """Such an import keeps torch or NumPy off the way of --help and TAB completion; never a way
    around a circle. The reason stands beside it: a comment on its line, or on the line before
    the function's first such import."""
    lines = path.read_text().splitlines()
    by_function: dict = {}
    for node, function in own_imports(path):
        if function is not None:
            by_function.setdefault(function, []).append(node)
    silent = []
    for function, nodes in by_function.items():
        above = min(node.lineno for node in nodes) - 2  # the line before the first, then up through the import block
        while lines[above].strip() == "" or lines[above].lstrip().startswith(("import ", "from ")):
            above -= 1
        commented = lines[above].strip().startswith("#") or any("#" in lines[node.lineno - 1] for node in nodes)
        if not commented:
            silent.append(f"{function.name} (line {function.lineno})")
    assert silent == [], f"{path}: function-level imports of rungefit without a reason: {silent}"
