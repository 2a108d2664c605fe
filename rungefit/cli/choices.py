"""What `train` chooses before it trains, each a phase of its own: a data run's network by
validation, and --lr auto's rate."""

from __future__ import annotations

from dataclasses import replace

from rungefit.cli.options import report


def choose_network(config, target, quiet: bool):
    """A data run's network by validation (training/choose.py): the config with it, and the summary entry."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training.choose import choose_network

    if not quiet:
        report.note("choosing the network: training each candidate on seed 0…")
    choice = choose_network(config, target)
    if not quiet:
        report.note(f"network {choice.layers}: {choice.how}")
    return replace(config, layers=choice.layers), {"network_choice": {**choice.to_json(), "how": choice.how}}


def auto_lr(config, target, quiet: bool):
    """--lr auto: the config with the chosen rate, and the summary entries that say how it was chosen."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training.auto_lr import choose_lr

    if not quiet:
        report.note("--lr auto: choosing the rate with a range test and a short stacked training…")
    choice = choose_lr(config, target)
    if not quiet:
        report.note(f"--lr auto chose {choice.lr:.3g}: {choice.how}")
    return replace(config, lr=choice.lr), {"lr_choice": choice.how, "lr_auto": choice.to_json()}
