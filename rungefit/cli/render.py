"""Rich rendering: the consoles, the training progress bar, and one render function per result
(grad's and eval's are in render_study.py, which builds on this module's consoles and tables).

Functions here take plain results (dicts, floats, lists) and print; they never train anything.
Results go to stdout, progress and diagnostics to stderr. Rich reads `[...]` in text as markup,
so every text that comes from the user or from a file (names, paths, messages quoting a value)
is escaped before Rich sees it: `--name '[red]x'` prints as typed, and `[/]` cannot break a line.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rungefit.cli.tables import available_width, print_table
from rungefit.config import DATA_NETWORKS, DEFAULT_DOMAIN, DEFAULT_TARGET
from rungefit.files import json_text
from rungefit.targets import describe_domain

stdout = Console()
stderr = Console(stderr=True)


def fmt(value: float) -> str:
    """Scientific notation that keeps small errors readable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.3e}"


def print_json(document: dict) -> None:
    """Exactly one JSON document on stdout, nothing else; a non-finite figure is null."""
    print(json_text(document))


def error(message: str) -> None:
    # escape: a message may quote the user's text or a name such as rungefit[onnx], not Rich markup.
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    stderr.print(message, markup=False, highlight=False, soft_wrap=True)


def training_progress(epochs: int, quiet: bool):
    """A Rich progress display on stderr, and the on_epoch and on_polish callbacks that advance it.

    The polish task appears only when the first LM iteration reports.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=False,
    )
    train_task = progress.add_task("train ", total=epochs, info="")
    polish_task = None

    def on_epoch(report) -> None:
        info = f"train {fmt(report.train_mse)}  val {fmt(report.val_mse)}  lr {report.lr:.2e}"
        if report.stopped:
            info += f"  stopped {report.stopped}/{report.members}"
        # Every member stopped (--patience): the run ends here, and the bar with it.
        total = report.epoch if report.stopped == report.members else report.epochs
        progress.update(train_task, completed=report.epoch, total=total, info=info)

    def on_polish(step) -> None:
        nonlocal polish_task
        if polish_task is None:
            polish_task = progress.add_task("polish", total=None, info="")
        info = f"member {step.member}  train {fmt(step.mse)}  λ {step.damping:.1e}"
        progress.update(polish_task, completed=step.iteration, total=step.iterations, info=info)

    return progress, on_epoch, on_polish


STAT_LABELS = {"train_mse": "train MSE", "val_mse": "validation MSE", "test_mse": "test MSE", "test_max_abs_error": "max |error| (test grid)"}


def _polish_rows(polish: dict | None) -> list[tuple[str, str]]:
    """How the Levenberg-Marquardt polish changed the training MSE (median over members)."""
    if not polish:
        return []
    before, after = np.median(polish["train_mse_before"]), np.median(polish["train_mse_after"])
    iterations = int(np.max(polish["iterations"]))
    return [("polish (Levenberg-Marquardt)", f"train MSE {fmt(before)} → {fmt(after)}, {iterations} it.")]


def target_note(doc: dict) -> str:
    """", target abs on [-1, 1]" for a result's target and domain; "" for the default, which
    every output has always meant."""
    if doc["target"] == DEFAULT_TARGET and tuple(doc["domain"]) == DEFAULT_DOMAIN:
        return ""
    return f", target {doc['target']} on {describe_domain(doc['domain'])}"


def print_line(text: str, markup: bool = True) -> None:
    """Text on stdout, wrapped between words at the width tables take (tables.available_width);
    without a terminal or COLUMNS, unwrapped."""
    stdout.print(text, markup=markup, highlight=False, soft_wrap=available_width(stdout) is None)


def print_pairs(title: str, heading: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table (name, right-aligned value) on stdout."""
    table = Table(title=escape(title), title_justify="left")
    table.add_column(heading)
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(escape(name), escape(value))
    print_table(table, stdout)


def render_train(summary: dict, run_dir: str) -> None:
    """Final figures of a training run: per-member rows when there are several members."""
    members = summary["members"]
    stats = summary["stats"]
    if len(members) == 1:
        member = members[0]
        rows = [("train MSE", fmt(member["train_mse"])), ("validation MSE", fmt(member["val_mse"])), ("test MSE", fmt(member["test_mse"])), ("max |error| (test grid)", fmt(member["test_max_abs_error"]))]
    else:
        rows = [(f"{STAT_LABELS[name]}: median [min … max]", f"{fmt(s['median'])} [{fmt(s['min'])} … {fmt(s['max'])}]") for name, s in stats.items()]
    lrs = sorted({m["lr"] for m in members})
    note = target_note(summary["target"])
    rows += [
        *([("target", note.removeprefix(", target "))] if note else []),
        *_network_rows(summary.get("network_choice")),
        ("members (seeds)", f"{len(members)} ({', '.join(str(m['seed']) for m in members[:8])}{' …' if len(members) > 8 else ''})"),
        ("epochs", str(summary["epochs"])),
        *_stopped_rows(summary.get("stopped")),
        *([("kept weights: best validation, epoch", _numbers(kept["epochs"]))] if (kept := summary.get("kept")) else []),
        ("optimizer steps", str(summary["steps"])),
        ("learning rate", ", ".join(f"{lr:.3g}" for lr in lrs[:4]) + (f" ({summary['lr_choice']})" if summary.get("lr_choice") else "")),
        ("schedule", summary.get("schedule", "")),
        *_polish_rows(summary.get("polish")),
        *_time_rows(summary["times_s"], summary.get("workers", 1)),
        ("status", summary["status"]),
        ("fit", _fit_text(summary)),
    ]
    print_pairs(f"rungefit train → {run_dir}", "metric", rows)
    if len(members) > 1:
        per_member = Table(title="per member", title_justify="left")
        for column in ("member", "seed", "train MSE", "val MSE", "test MSE", "max |error|", "learned"):
            per_member.add_column(column, justify="right")
        for index, m in enumerate(members):
            per_member.add_row(str(index), str(m["seed"]), fmt(m["train_mse"]), fmt(m["val_mse"]), fmt(m["test_mse"]), fmt(m["test_max_abs_error"]), "yes" if m["learned"] else "no")
        print_table(per_member, stdout)


def _network_rows(choice: dict | None) -> list[tuple[str, str]]:
    """A data run's network and the validation MSEs that chose it (training/choose.py)."""
    if choice is None:
        return []
    chosen, scores = choice["chosen"], choice["val_mse"]
    others = "; ".join(f"{layers}: {fmt(value)}" for layers, value in scores.items() if layers != chosen)
    return [(f"network (by validation, seed {_numbers(choice['probe_seeds'])})", f"{chosen}: val MSE {fmt(scores[chosen])} ({others})")]


def _stopped_rows(stopped: dict | None) -> list[tuple[str, str]]:
    """When each member stopped under --patience ("–": it trained to the last epoch)."""
    if stopped is None:
        return []
    epochs = ["–" if epoch is None else str(epoch) for epoch in stopped["epochs"]]
    return [(f"stopped after epoch (--patience {stopped['patience']})", _numbers(epochs))]


PHASE_LABELS = {
    "start_up": "start-up (imports, set-up)",
    "network_search": "network choice (--data)",
    "rate_search": "rate search (--lr auto)",
    "training": "training",
    "polish": "polish",
    "saving_and_plots": "saving and plots",
    "total": "total",
}


def _time_rows(times: dict, workers: int) -> list[tuple[str, str]]:
    """One row per phase that ran, then the total."""
    rows = []
    for phase, label in PHASE_LABELS.items():
        if times.get(phase) is not None:
            processes = f" ({workers} processes)" if phase == "training" and workers > 1 else ""
            rows.append((f"time: {label}", f"{times[phase]:.1f} s{processes}"))
    return rows


def _unlearned(summary: dict) -> list[int]:
    return [index for index, member in enumerate(summary["members"]) if not member["learned"]]


def _numbers(values: list, most: int = 8) -> str:
    return ", ".join(str(v) for v in values[:most]) + (" …" if len(values) > most else "")


def _fit_text(summary: dict) -> str:
    """The run's verdict, and with several members which learned nothing."""
    failed = _unlearned(summary)
    if not failed or len(summary["members"]) == 1:
        return summary["fit"]
    return f"{summary['fit']}: member{'s' if len(failed) > 1 else ''} {_numbers(failed)}"


def nothing_learned(summary: dict, share: float) -> str:
    """Which members learned nothing by the yardstick (validation MSE below share × Var(y)), the
    likely causes and what to try, in one line."""
    members, failed = summary["members"], _unlearned(summary)
    below = "significantly below" if "yardstick" in summary else f"below {share:.0%} of"
    if len(members) == 1:
        member = members[0]
        who = (
            f"the network learned nothing: its validation MSE {fmt(member['val_mse'])} is not {below} "
            f"Var(y) = {fmt(member['val_var'])}, the MSE of predicting the mean"
        )
    else:
        seeds = [members[index]["seed"] for index in failed]
        who = (
            f"{len(failed)} of {len(members)} members learned nothing (member{'s' if len(failed) > 1 else ''} {_numbers(failed)}, "
            f"seed{'s' if len(failed) > 1 else ''} {_numbers(seeds)}): validation MSE not {below} Var(y), the MSE of predicting the mean"
        )
    if "yardstick" in summary:
        return _data_nothing_learned(summary, who)
    rate = "run `rungefit lr-find --verify`" if summary.get("lr_choice") else "try `--lr auto`, or run `rungefit lr-find --verify`"
    return f"{who}. The learning rate is probably too high (the network sticks at the mean) or too low, or there were too few epochs: {rate} to choose a rate, or train for more --epochs"


FEW_VALIDATION_POINTS = 10  # below it the significance test has little power: say so


def _data_nothing_learned(summary: dict, who: str) -> str:
    """The data run's version: its yardstick, the evidence (ranges, steps) and what to try."""
    test, x, y = summary["yardstick"], summary["yardstick"]["x_range"], summary["yardstick"]["y_range"]
    stopped = summary.get("stopped")
    longer = "a larger --patience (every member stopped on a plateau)" if stopped and None not in stopped["epochs"] else "more --epochs"
    few = f", a larger --val-fraction (a test over {test['validation_points']} points can only find large effects)" if test["validation_points"] < FEW_VALIDATION_POINTS else ""
    # Without the network choice (--layers or --epochs given), the sine network was not tried.
    sine = "" if "network_choice" in summary else f", for a signal of many cycles a first sin layer (--layers {DATA_NETWORKS[1]}),"
    return (
        f"{who} (a one-sided test at 1 % over {test['validation_points']} validation points), after {summary['steps']} "
        f"optimizer steps on x in [{x[0]:g}, {x[1]:g}] and y in [{y[0]:g}, {y[1]:g}]. Try {longer}, an ensemble "
        f"(--seeds 5){few}{sine} or `--lr auto`; if y is mostly noise at this sample size, more points"
    )


RULE_LETTERS = {"steepest": "s", "valley": "v", "minimum": "m"}


def sketch(lrs: list[float], series: dict[str, list[float | None]], level: float, marks: dict[str, float | None], width: int = 64, height: int = 12) -> str:
    """A text plot of losses against log10 lr for terminals without a display.

    series: symbol → losses per lr (None where not recorded); level: a horizontal reference drawn
    with '-' (the mean-predictor loss); marks: letter → lr, written under the axis. Log-log.
    """
    points = [(symbol, math.log10(lr), math.log10(loss)) for symbol, losses in series.items() for lr, loss in zip(lrs, losses, strict=True) if loss is not None and 0 < loss < math.inf]
    if not points:
        return "(no finite loss recorded)"
    x_lo, x_hi = math.log10(min(lrs)), math.log10(max(lrs))
    y_lo = min(min(p[2] for p in points), math.log10(level))
    y_hi = max(max(p[2] for p in points), math.log10(level))

    def column(x: float) -> int:
        return min(max(round((x - x_lo) / ((x_hi - x_lo) or 1) * (width - 1)), 0), width - 1)

    def row(y: float) -> int:
        return round((y_hi - y) / ((y_hi - y_lo) or 1) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    grid[row(math.log10(level))] = ["-"] * width
    for symbol, x, y in points:
        grid[row(y)][column(x)] = symbol
    labels = {0: y_hi, height - 1: y_lo, row(math.log10(level)): math.log10(level)}
    lines = [f"{f'{10 ** labels[r]:.2g}' if r in labels else '':>8} ┤{''.join(cells)}" for r, cells in enumerate(grid)]
    lines.append(" " * 9 + "└" + "─" * width)
    under = [" "] * width
    for letter, lr in marks.items():
        if lr is not None:
            under[column(math.log10(lr))] = letter
    ticks = [" "] * (width + 8)
    for decade in range(math.ceil(x_lo), math.floor(x_hi) + 1, max(1, math.ceil((x_hi - x_lo) / 6))):
        ticks[column(decade) : column(decade) + len(f"1e{decade}")] = f"1e{decade}"
    lines += [" " * 10 + "".join(under).rstrip(), " " * 10 + "".join(ticks).rstrip()]
    return "\n".join(lines)


def _median_over_seeds(members: list[dict], key: str) -> list[float | None]:
    """Per step, the median of the seeds still recording (the curves stop at divergence)."""
    steps = max(len(m[key]) for m in members)
    medians = []
    for step in range(steps):
        values = sorted(m[key][step] for m in members if step < len(m[key]) and m[key][step] is not None)
        medians.append(values[len(values) // 2] if values else None)
    return medians


def render_lr_find(doc: dict, out_dir: str) -> None:
    """The rules' suggestions, the warning, a sketch of the curve, and the verification table."""
    test = doc["range_test"]
    members = test["members"]
    table = Table(title=f"rungefit lr-find → {escape(out_dir)}", title_justify="left")
    verified = doc["verification"] is not None
    columns = (("rule", "left"), ("suggested lr (median)", "right"), ("spread", "right"), ("per seed", "left"), *((("verification", "left"),) if verified else ()))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for rule, summary in doc["suggestions"].items():
        per_seed = ", ".join("-" if m["suggestions"][rule] is None else f"{m['suggestions'][rule]:.2g}" for m in members[:6])
        spread = "—" if summary["spread_decades"] is None else f"{summary['spread_decades']:.1f} decades"
        cells = [f"{rule} ({RULE_LETTERS[rule]})", "-" if summary["median"] is None else f"{summary['median']:.3g}", spread, per_seed + (" …" if len(members) > 6 else "")]
        check = summary["verified"]
        style = "red" if check and check["verdict"] == "contradicted" else None
        table.add_row(*cells, *([_rule_check(check)] if verified else []), style=style)
    print_table(table, stdout)
    stops = "; ".join(f"seed {m['seed']} {m['stop']} at {m['top_lr']:.3g}" for m in members[:6])
    print_line(f"sweep {test['start_lr']:g} → {test['end_lr']:g} in {test['iters']} steps ({test['mode']}): {stops}")
    longest = max(members, key=lambda m: len(m["lr"]))
    series = {"•": _median_over_seeds(members, "smoothed")}
    if test["val"]:
        series["∘"] = _median_over_seeds(members, "val_loss")
    level = sorted(m["mean_predictor_mse"] for m in members)[len(members) // 2]
    marks = {RULE_LETTERS[rule]: s["median"] for rule, s in doc["suggestions"].items()}
    print_line(sketch(longest["lr"], series, level, {**marks, "x": doc["top_lr"]}, width=_sketch_width()), markup=False)
    legend = "• smoothed loss" + (", ∘ validation loss" if test["val"] else "") + " (median over seeds)"
    print_line(f"{legend}; - Var(y), the loss of predicting the mean; s v m the rules; x divergence")
    if doc["warning"]:
        warning(doc["warning"])
    if doc["verification"]:
        render_lr_verify(doc["verification"])


def _sketch_width(most: int = 64, least: int = 24) -> int:
    """The sketch's plot width: `most`, less where the terminal is narrower (its labels take 16)."""
    width = available_width(stdout)
    return most if width is None else max(least, min(most, width - 16))


def _rule_check(check: dict | None) -> str:
    """What the verification says of a rule's pick, in a table cell."""
    if check is None:
        return "-"
    ratio = "" if check["ratio_to_best"] is None else f", {check['ratio_to_best']:.3g}× best"
    return f"{check['verdict']}: {check['trained']}/{check['seeds']} trained{ratio}"


def render_lr_verify(verification: dict) -> None:
    """lr → final validation MSE over the seeds, the best rate and each suggestion's ratio to it."""
    seeds = len(verification["seeds"])
    table = Table(title=f"verification: {verification['epochs']} epochs × {seeds} seeds per rate, one stacked fit ({verification['wall_time_s']:.0f} s)", title_justify="left")
    for column in ("lr", "val MSE median", "min", "max", "trained", "× best", ""):
        table.add_column(column, justify="right" if column else "left")
    for rate in verification["rates"]:
        best = rate["lr"] == verification["best_lr"]
        note = ", ".join((["best"] if best else []) + rate["rules"])
        ratio = "-" if rate["ratio_to_best"] is None else f"{rate['ratio_to_best']:.3g}"
        style = "bold green" if best else ("yellow" if rate["rules"] else None)
        table.add_row(f"{rate['lr']:.3g}", _mse_or_diverged(rate["median"]), _mse_or_diverged(rate["min"]), _mse_or_diverged(rate["max"]), f"{rate['trained']}/{seeds}", ratio, note, style=style)
    print_table(table, stdout)
    for rate in verification["rates"]:
        for rule in rate["rules"]:
            ratio = rate["ratio_to_best"]
            verdict = "diverged" if ratio is None else f"{ratio:.3g}× the best rate's validation MSE"
            print_line(f"{rule} suggests {rate['lr']:.3g}: {verdict}, {rate['trained']}/{seeds} seeds trained (best {verification['best_lr']:.3g})")


def _mse_or_diverged(value: float | None) -> str:
    """A verification figure; None stands for a diverged training."""
    return "diverged" if value is None else fmt(value)


def print_plain(text: str) -> None:
    """text on stdout as it is (CSV for a pipeline); a reader that stops early (`| head`) ends it quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit; point stdout at nothing instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def render_export(doc: dict) -> None:
    """Where `rungefit export` wrote which network."""
    stdout.print(escape(f"rungefit export: {doc['source']} → {doc['out']} ({doc['format']}, {doc['bytes']} bytes)"), highlight=False, soft_wrap=True)
