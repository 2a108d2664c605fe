"""Rich tables that never cut a printed number.

Rich fits a table to the console by narrowing its columns below their longest word, which
ellipsizes numbers (`1.718e…`) or splits them across lines, and without a terminal it assumes 80
columns. print_table instead:

- takes the terminal's width, or COLUMNS when it is set; with neither (a pipe, a file, CI)
  PIPE_WIDTH, or more where a table needs more to keep every word whole: a log holds every table
  whole, and a long formula wraps instead of widening every row;
- keeps every column at least as wide as its longest word (a number is one word): headers and
  text wrap between words, numbers never;
- when that is still too wide, splits the columns over several tables, each repeating the first
  column (what names the row), the title on the first and the caption on the last;
- when not even the first column and one other fit side by side, prints each row as lines of
  "header: value".
"""

from __future__ import annotations

import copy
import dataclasses
import os

from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Column, Table

# Wide enough to measure any cell on one line.
UNLIMITED = 1_000_000
PIPE_WIDTH = 100  # a table's width without a terminal or COLUMNS, where its words allow


def available_width(console: Console) -> int | None:
    """The columns a table may take: the terminal's, or COLUMNS when set; None (no limit) with neither."""
    if console.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return console.width
    return None


def print_table(table: Table, console: Console) -> None:
    """`table` on `console`, as wide as it may be (available_width), no word of it cut."""
    width = available_width(console) or max(PIPE_WIDTH, narrowest(console, table))
    whole = fitted(console, table, width)
    parts = [whole] if whole is not None else split_columns(console, table, width)
    if parts is None:
        print_stacked(table, console)
        return
    for part in parts:
        console.print(part, crop=False)


def fitted(console: Console, table: Table, width: int) -> Table | None:
    """`table` laid out to print at most `width` wide with every column at least as wide as its longest word; None when those widths do not fit.
    Where Rich's own layout keeps every word whole, it is that layout."""
    spans = [_measure(console, column) for column in table.columns]
    laid = _with_columns(table, [dataclasses.replace(column, min_width=span.minimum) for column, span in zip(table.columns, spans)])
    full = Measurement.get(console, console.options.update_width(UNLIMITED), laid).maximum
    rendered = Segment.split_lines(console.render(laid, console.options.update_width(width)))  # uncropped
    if max(Segment.get_line_length(line) for line in rendered) <= width:
        return laid
    widths = [span.maximum for span in spans]
    extra = full - sum(widths)  # rules and padding
    while sum(widths) + extra > width:
        give = [index for index, span in enumerate(spans) if widths[index] > span.minimum]
        if not give:
            return None
        widths[max(give, key=lambda index: widths[index])] -= 1
    laid.columns = [dataclasses.replace(column, width=w) for column, w in zip(laid.columns, widths)]
    return laid


def narrowest(console: Console, table: Table) -> int:
    """The width `table` takes with every column as wide as its longest word."""
    spans = [_measure(console, column) for column in table.columns]
    full = Measurement.get(console, console.options.update_width(UNLIMITED), table).maximum
    return full - sum(span.maximum for span in spans) + sum(span.minimum for span in spans)


def split_columns(console: Console, table: Table, width: int) -> list[Table] | None:
    """`table` as the fewest tables that fit `width`, each with the first column and a run of the
    others, as even in width as may be; None when the first column and one other do not fit."""
    first, *rest = table.columns
    widths = [_measure(console, column).minimum for column in rest]
    for count in range(2, len(rest) + 1):
        runs = _even_runs(rest, count, widths)
        parts = [fitted(console, _with_columns(table, [first, *run], index, len(runs)), width) for index, run in enumerate(runs)]
        if None not in parts:
            return parts
    return None


def print_stacked(table: Table, console: Console) -> None:
    """Each row as lines of "header: value" under its first cell, wrapped between words."""
    headers = [column.header for column in table.columns]
    rows = list(zip(*(column.cells for column in table.columns)))
    lines = [table.title] if table.title else []
    for cells in rows:
        lines += [f"{headers[0]}: {cells[0]}", *(f"  {header}: {cell}" for header, cell in zip(headers[1:], cells[1:]))]
    lines += [table.caption] if table.caption else []
    for line in lines:
        console.print(line, highlight=False)


def _measure(console: Console, column: Column) -> Measurement:
    """The column's content: (its longest word, its longest line), header included."""
    options = console.options.update_width(UNLIMITED)
    spans = [Measurement.get(console, options, cell) for cell in (column.header, *column.cells)]
    longest = max(span.maximum for span in spans)
    return Measurement(longest if column.no_wrap else max(span.minimum for span in spans), longest)


def _even_runs(columns: list[Column], count: int, widths: list[int]) -> list[list[Column]]:
    """`columns` cut into `count` consecutive runs of about equal total width."""
    total, runs, run, filled = sum(widths), [], [], 0
    for column, width in zip(columns, widths):
        if run and len(runs) < count - 1 and filled + width / 2 > total * (len(runs) + 1) / count:
            runs.append(run)
            run = []
        run.append(column)
        filled += width
    return [*runs, run]


def _with_columns(table: Table, columns: list[Column], index: int = 0, count: int = 1) -> Table:
    """A copy of `table` with these columns, as part `index` of `count`: the title on the first
    part, the caption on the last."""
    part = copy.copy(table)
    part.columns = [dataclasses.replace(column) for column in columns]
    part.title = table.title if index == 0 else None
    part.caption = table.caption if index == count - 1 else None
    return part
