"""What `train` chooses before it trains, each a phase of its own: a data run's network by
validation, and --lr auto's rate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rungefit.cli.options import report


def choose_network(config, target, quiet: bool):
    """A data run's network by validation (training/choose.py): the config with it, and the summary entry."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training import choose

    choice = _announced(
        lambda: choose.choose_network(config, target), "choosing the network: training each candidate on seed 0…",
        lambda c: f"network {c.layers}: {c.how}", quiet,
    )
    return replace(config, layers=choice.layers), {"network_choice": {**choice.to_json(), "how": choice.how}}


def auto_lr(config, target, quiet: bool):
    """--lr auto: the config with the chosen rate, and the summary entries that say how it was chosen."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training.auto_lr import choose_lr

    choice = _announced(
        lambda: choose_lr(config, target), "--lr auto: choosing the rate with a range test and a short stacked training…",
        lambda c: f"--lr auto chose {c.lr:.3g}: {c.how}", quiet,
    )
    return replace(config, lr=choice.lr), {"lr_choice": choice.how, "lr_auto": choice.to_json()}


def _announced(choose: Callable, before: str, after: Callable[..., str], quiet: bool):
    """choose(), with a note before it starts and one naming its choice (none when quiet)."""
    if not quiet:
        report.note(before)
    choice = choose()
    if not quiet:
        report.note(after(choice))
    return choice
