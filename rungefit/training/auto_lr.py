"""`train --lr auto`: a range test places a grid of rates, and a short stacked training at them
picks the rate whose worst seed does best (lr_rules.pick_auto_lr)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rungefit.config import RangeTestConfig, TrainConfig
from rungefit.errors import RungefitError
from rungefit.targets import Target
from rungefit.training.lr_find import Findings, Verification, run_range_test, verify
from rungefit.training.lr_rules import (
    AUTO_EPOCH_SHARE,
    AUTO_RATES,
    AUTO_SAFETY,
    AUTO_SEEDS,
    AUTO_STEP_DECADES,
    pick_auto_lr,
    pick_seeds,
    verification_rates,
)
from rungefit.training.train import EpochReport


@dataclass
class LrChoice:
    lr: float
    how: str  # one line for the final table and summary.json
    verification: Verification

    def to_json(self) -> dict:
        return {"lr": self.lr, "how": self.how, "short_verification": self.verification.to_json()}


def choose_lr(config: TrainConfig, target: Target, on_epoch: Callable[[EpochReport], None] | None = None) -> LrChoice:
    """A rate that trains on config: a range test places a grid, a short stacked training picks from it."""
    seeds = pick_seeds(config.seeds, AUTO_SEEDS)
    probe = replace(config, seeds=seeds)
    findings = Findings(probe, run_range_test(probe, target, RangeTestConfig()))
    rates = verification_rates(findings.top_lr(), AUTO_RATES, AUTO_STEP_DECADES)
    short = replace(probe, epochs=max(1, config.epochs // AUTO_EPOCH_SHARE))
    check = verify(short, target, rates, seeds, on_epoch=on_epoch)
    lr = pick_auto_lr(check.rates, check.val_mse)
    if lr is None:
        raise RungefitError(
            f"--lr auto: all {len(rates)} rates from {rates[0]:.2g} to {rates[-1]:.2g} diverged in "
            f"{short.epochs} epochs; give a rate with --lr, or run `rungefit lr-find --verify`"
        )
    how = (
        f"auto: best worst-seed val MSE of {len(rates)} rates × {len(seeds)} seeds × {short.epochs} "
        f"epochs, {lr * AUTO_SAFETY:.3g} ÷ {AUTO_SAFETY:g}"
    )
    return LrChoice(lr, how, check)
