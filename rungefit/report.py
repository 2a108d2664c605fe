"""Rich rendering: the consoles, the training progress bar, and one render function per result.

Functions here take plain results (dicts, floats, lists) and print; they never train anything.
Results go to stdout, progress and diagnostics to stderr.
"""

from __future__ import annotations

import json
import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def fmt(value: float) -> str:
    """Scientific notation that keeps small errors readable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.3e}"


def print_json(document: dict) -> None:
    """Exactly one JSON document on stdout, nothing else."""
    print(json.dumps(document, indent=2, allow_nan=True))


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    stderr.print(message, highlight=False, soft_wrap=True)


def training_progress(epochs: int, quiet: bool):
    """A Rich progress bar on stderr and the on_epoch callback that advances it."""
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("train {task.fields[train]}  val {task.fields[val]}  lr {task.fields[lr]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task("epochs", total=epochs, train="-", val="-", lr="-")

    def on_epoch(report) -> None:
        progress.update(task, completed=report.epoch, train=fmt(report.train_mse), val=fmt(report.val_mse), lr=f"{report.lr:.2e}")

    return progress, on_epoch


def render_train(summary: dict, run_dir: str) -> None:
    """Final figures of a training run: per-member rows when there are several members."""
    members = summary["members"]
    stats = summary["stats"]
    table = Table(title=f"rungefit train → {run_dir}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if len(members) == 1:
        member = members[0]
        rows = [("train MSE", fmt(member["train_mse"])), ("validation MSE", fmt(member["val_mse"])), ("test MSE", fmt(member["test_mse"])), ("max |error| (test grid)", fmt(member["test_max_abs_error"]))]
    else:
        rows = [(f"{name} median [min … max]", f"{fmt(s['median'])} [{fmt(s['min'])} … {fmt(s['max'])}]") for name, s in stats.items()]
    lrs = sorted({m["lr"] for m in members})
    rows += [
        ("members (seeds)", f"{len(members)} ({', '.join(str(m['seed']) for m in members[:8])}{' …' if len(members) > 8 else ''})"),
        ("epochs", str(summary["epochs"])),
        ("optimizer steps", str(summary["steps"])),
        ("learning rate", ", ".join(f"{lr:.3g}" for lr in lrs[:4]) + (f" ({summary['lr_choice']})" if summary.get("lr_choice") else "")),
        ("schedule", summary.get("schedule", "")),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
        ("status", summary["status"]),
    ]
    for name, value in rows:
        table.add_row(name, value)
    stdout.print(table)
    if len(members) > 1:
        per_member = Table(title="per member", title_justify="left")
        for column in ("member", "seed", "train MSE", "val MSE", "test MSE", "max |error|"):
            per_member.add_column(column, justify="right")
        for index, m in enumerate(members):
            per_member.add_row(str(index), str(m["seed"]), fmt(m["train_mse"]), fmt(m["val_mse"]), fmt(m["test_mse"]), fmt(m["test_max_abs_error"]))
        stdout.print(per_member)
