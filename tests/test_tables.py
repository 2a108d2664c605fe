"""Every table the CLI prints, at 40, 60, 80 and 120 columns and without a terminal: no printed
number is ever shortened or split across lines, and nothing is wider than the terminal."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from rungefit.cli import figures as plots
from rungefit.cli import render as report
from rungefit.cli.app import app
from rungefit.cli.render_study import render_eval, render_grad
from rungefit.cli.tables import PIPE_WIDTH

from .helpers import QUICK_TRAIN, png_not_rendered, runner

# A word: what lies between blanks and table rules. A number is always one word, whole.
WORD = re.compile(r"[^\s│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈━─═]+")
# Wide enough never to narrow a table: what every narrower printing is compared with.
HUGE = 100_000


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """The --json documents of commands whose tables cover every kind the CLI prints: a polished
    3-member train, eval with baselines and --x (one outside the domain), grad --explain, and
    lr-find with --verify; their run's path is written as a user's would be, runs/t3."""
    root = tmp_path_factory.mktemp("tables")
    runs = str(root / "runs")

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--runs-dir", runs, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.replace(runs, "runs"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_png", png_not_rendered)
        return {
            "train": run("train", *QUICK_TRAIN, "--seeds", "3", "--polish", "lm", "--polish-iterations", "1", "--name", "t3"),
            "eval": run("eval", "--run", "t3", "--baselines", "--x", "0.95", "--x", "1.5"),
            "grad": run("grad", "--run", "t3", "--x", "0.3", "--explain"),
            "lr-find": run(
                "lr-find", "--points", "120", "--iters", "20", "--seeds", "2", "--verify", "--verify-rates", "2",
                "--verify-seeds", "2", "--verify-epochs", "2", "--out", str(root / "lr"),
            ),
        }


RENDERS = {
    "train": lambda doc: report.render_train(doc, "runs/t3"),
    "eval": render_eval,
    "grad": render_grad,
    "lr-find": lambda doc: report.render_lr_find(doc, "runs/lr-find/1"),
}


def printed(name: str, doc: dict, monkeypatch, columns: int | None, terminal_width: int = 80) -> str:
    """What `name`'s render prints with COLUMNS=columns (None: unset, and no terminal)."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    buffer = io.StringIO()
    monkeypatch.setattr(report, "stdout", Console(file=buffer, width=columns or terminal_width, no_color=True))
    monkeypatch.setattr(report, "sketch", lambda *args, **kwargs: "(sketch)")  # lr-find's text plot: tested apart
    RENDERS[name](doc)
    return buffer.getvalue()


def numbers(text: str) -> set[str]:
    return {word for word in WORD.findall(text) if any(character.isdigit() for character in word)}


@pytest.mark.parametrize("columns", [40, 60, 80, 120])
@pytest.mark.parametrize("name", sorted(RENDERS))
def test_no_number_is_cut_at_any_width(documents, monkeypatch, name, columns):
    whole = printed(name, documents[name], monkeypatch, HUGE)
    narrow = printed(name, documents[name], monkeypatch, columns)
    assert max(len(line) for line in narrow.splitlines()) <= columns, narrow
    assert numbers(narrow) == numbers(whole), narrow


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_without_a_terminal_or_columns_every_table_is_printed_whole(documents, monkeypatch, name):
    piped = printed(name, documents[name], monkeypatch, None)
    assert numbers(piped) == numbers(printed(name, documents[name], monkeypatch, HUGE)), piped
    assert "┏" in piped and "approximant ┃ params" not in piped.split("┏")[0]  # tables, not rows of "header: value"


def test_without_a_terminal_a_long_formula_wraps_instead_of_widening_every_row(documents, monkeypatch):
    formula = " + ".join(f"abs(sin({k}*x))" for k in range(15708, 15738))
    doc = {**documents["train"], "target": {**documents["train"]["target"], "target": formula}}
    piped = printed("train", doc, monkeypatch, None)
    assert max(len(line) for line in piped.splitlines()) <= PIPE_WIDTH, piped
    assert numbers(piped) == numbers(printed("train", doc, monkeypatch, HUGE))


def test_a_wide_table_is_split_into_tables_that_repeat_the_first_column(documents, monkeypatch):
    text = printed("eval", documents["eval"], monkeypatch, 80)
    assert text.count("┃ approximant") == 2
    assert [line.split("│")[1].strip() for line in text.splitlines() if "Chebyshev, d = 40" in line] == ["Chebyshev, d = 40"] * 2


def test_below_two_columns_side_by_side_each_row_is_lines_of_header_and_value(documents, monkeypatch):
    text = printed("grad", documents["grad"], monkeypatch, 30)
    assert "factor: W^[2]" in text and "  shape: 20×1" in text
    assert max(len(line) for line in text.splitlines()) <= 30


@pytest.mark.parametrize("columns", [60, 80])
def test_the_lr_find_sketch_narrows_with_the_terminal(documents, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    buffer = io.StringIO()
    monkeypatch.setattr(report, "stdout", Console(file=buffer, width=columns, no_color=True))
    report.render_lr_find(documents["lr-find"], "runs/lr-find/1")
    lines = buffer.getvalue().splitlines()
    top = next(i for i, line in enumerate(lines) if "┤" in line)
    axis = next(i for i, line in enumerate(lines) if i > top and "└" in line)
    assert all("┤" in line for line in lines[top:axis]), "a row of the plot was wrapped"
    assert max(len(line) for line in lines[top : axis + 3]) <= columns  # the rows, the axis, the marks and the ticks
