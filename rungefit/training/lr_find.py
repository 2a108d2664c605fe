"""Choosing the learning rate: the range test, its suggestion rules, the verification grid, `--lr auto`.

The range test (Smith 2017) raises the rate every mini-batch and records the loss; the rules
(`steepest`, `valley`, `minimum`) read a rate off that curve. On the Runge problem the curve is
nearly flat at the mean-predictor loss Var(y) for most of the sweep, because in a hundred steps the
network only learns the mean of f, so the rules are guesses. The verification grid is the evidence:
real trainings at a grid of rates, every (rate, seed) pair one member of a single stacked fit.

Everything numeric on a recorded curve is a pure function of NumPy arrays, so the tests feed them
synthetic curves; only range_test, verify and choose_lr touch a model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from rungefit.config import RangeTestConfig, TrainConfig, VerifyConfig
from rungefit.net.model import StackedMLP
from rungefit.net.optim import StackedAdam
from rungefit.targets import DataSplit, Target
from rungefit.training.lr_rules import (
    RULE_FUNCTIONS,
    RULES,
    ema_step,
    finite_or_none,
    is_diverged,
    is_uninformative,
    log_median,
    merge_rates,
    pick_seeds,
    spread_decades,
    sweep,
    trim,
    verification_rates,
)
from rungefit.training.metrics import FIT_NONE, FIT_OK, FIT_SOME, fit_verdict, members_learned
from rungefit.training.stack import EpochBatches, new_stack
from rungefit.training.train import EpochReport, fit, intra_op_threads

# ---------------------------------------------------------------- the range test


@dataclass
class RangeTest:
    """What the sweep recorded: rows are steps, columns are members, NaN once a member stopped."""

    config: RangeTestConfig
    seeds: tuple[int, ...]
    lrs: np.ndarray  # [n] the rate of each recorded step
    raw: np.ndarray  # [n, K] mini-batch loss, measured before the step
    smoothed: np.ndarray  # [n, K]
    val: np.ndarray | None  # [n, K] validation loss after the step, with config.val
    stops: list[int | None]  # per member: the step at which it diverged, None if it swept to the end
    mean_loss: np.ndarray  # [K] Var(y) of the training targets, the loss of predicting the mean

    def in_data_units(self, maps) -> RangeTest:
        """The losses (recorded in standard coordinates) in the target's units; the rates stay."""
        out = maps.mse_out
        return replace(self, raw=out(self.raw), smoothed=out(self.smoothed), val=None if self.val is None else out(self.val), mean_loss=out(self.mean_loss))

    def steps(self, member: int) -> int:
        """Recorded steps of one member, the divergence step included."""
        stop = self.stops[member]
        return len(self.lrs) if stop is None else stop + 1

    def stop_reason(self, member: int) -> str:
        stop = self.stops[member]
        if stop is None:
            return "complete"
        return "non-finite" if not math.isfinite(self.raw[stop, member]) else "diverged"

    def top_lr(self, member: int) -> float:
        """The rate where the member diverged, or the end of the sweep."""
        return float(self.lrs[self.steps(member) - 1])

    def trimmed(self, member: int) -> tuple[np.ndarray, np.ndarray]:
        """The member's (lrs, smoothed losses) as the rules read them."""
        n = self.steps(member)
        return trim(self.lrs[:n], self.smoothed[:n, member], self.config.iters)

    def suggestions(self, member: int) -> dict[str, float | None]:
        lrs, losses = self.trimmed(member)
        return {name: rule(lrs, losses) for name, rule in RULE_FUNCTIONS.items()}

    def uninformative(self, member: int) -> bool:
        return is_uninformative(self.trimmed(member)[1], float(self.mean_loss[member]))

    def csv(self) -> str:
        """One row per recorded step per member."""
        lines = ["step,member,seed,lr,loss,smoothed,val_loss"]
        for member, seed in enumerate(self.seeds):
            for step in range(self.steps(member)):
                val = "" if self.val is None else repr(float(self.val[step, member]))
                lines.append(
                    f"{step},{member},{seed},{float(self.lrs[step])!r},{float(self.raw[step, member])!r},"
                    f"{float(self.smoothed[step, member])!r},{val}"
                )
        return "\n".join(lines) + "\n"


def range_test(
    model: StackedMLP,
    optimizer: StackedAdam,
    data: DataSplit,
    seeds: torch.Tensor,
    batch_size: int,
    config: RangeTestConfig,
) -> RangeTest:
    """Sweep the rate over mini-batches of data; model, optimizer and torch's RNG come back as they were.

    Every member sweeps the same rates and stops on its own at divergence; the sweep ends when the
    last member stops or the rates run out.
    """
    config.validate()
    rates = sweep(config.start_lr, config.end_lr, config.iters, config.mode)
    saved = (model.params.clone(), model.grads.clone(), optimizer.state_dict(), optimizer.lrs)
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            optimizer.lrs = [1.0] * model.members  # so that a step's factor is its rate
            raw, smoothed, val, stops = _record(model, optimizer, data, seeds, batch_size, rates, config)
        finally:
            with torch.no_grad():
                model.params.copy_(saved[0])
                model.grads.copy_(saved[1])
            optimizer.load_state_dict(saved[2])
            optimizer.lrs = saved[3]
    return RangeTest(
        config=config,
        seeds=tuple(int(s) for s in seeds.tolist()),
        lrs=rates[: len(raw)],
        raw=raw,
        smoothed=smoothed,
        val=val,
        stops=[int(s) if s >= 0 else None for s in stops],
        mean_loss=data.y_train.var(dim=1, correction=0).double().cpu().numpy(),
    )


def _endless_batches(data: DataSplit, seeds: torch.Tensor, batch_size: int):
    """The mini-batches of `train`, epoch after epoch, for as long as the sweep needs."""
    batches = EpochBatches(data.x_train, data.y_train, seeds, batch_size)
    for epoch in itertools.count():
        yield from batches(epoch)


def _record(model, optimizer, data, seeds, batch_size, rates, config):
    """The sweep itself: (raw, smoothed, val, stops), arrays cut to the steps run, NaN past each stop."""
    members = model.members
    raw = np.full((len(rates), members), np.nan)
    smoothed = np.full_like(raw, np.nan)
    val = np.full_like(raw, np.nan) if config.val else None
    average, best = np.zeros(members), np.full(members, np.inf)
    stops = np.full(members, -1)
    batches = _endless_batches(data, seeds, batch_size)
    # A member that blew up keeps training (its rows are blanked below) and overflows harmlessly.
    with np.errstate(invalid="ignore", over="ignore"):
        for step, (x, y) in zip(range(len(rates)), batches, strict=False):
            raw[step] = model.mse_backward(x, y).double().cpu().numpy()
            optimizer.step(float(rates[step]))
            average, smoothed[step] = ema_step(average, raw[step], config.smooth, step)
            if val is not None:
                val[step] = model.mse(data.x_val, data.y_val).double().cpu().numpy()
            best = np.fmin(best, smoothed[step])
            stops[(stops < 0) & is_diverged(raw[step], smoothed[step], best, config.diverge)] = step
            if (stops >= 0).all():
                break
    curves = [raw[: step + 1], smoothed[: step + 1], None if val is None else val[: step + 1]]
    for member in np.flatnonzero(stops >= 0):
        for curve in curves:
            if curve is not None:
                curve[stops[member] + 1 :, member] = np.nan
    return (*curves, stops)


def run_range_test(config: TrainConfig, target: Target, test: RangeTestConfig) -> RangeTest:
    """The range test on a fresh stack of `train`'s model and data, one member per seed."""
    config.validate()
    with intra_op_threads(config):
        model, optimizer, data, seeds = new_stack(config, target)
        return range_test(model, optimizer, data, seeds, config.batch_size, test).in_data_units(target.maps)


# ---------------------------------------------------------------- verification

# A rule's pick is confirmed when every seed trained at its rate, contradicted when none did.
RULE_VERDICTS = {FIT_OK: "confirmed", FIT_SOME: "partly confirmed", FIT_NONE: "contradicted"}


@dataclass
class Verification:
    """Final validation MSE of real trainings, one (rate, seed) pair per member of one stacked fit."""

    rates: np.ndarray  # [R] ascending
    labels: list[list[str]]  # [R] the rules that suggested each rate
    seeds: tuple[int, ...]
    val_mse: np.ndarray  # [R, S]; inf where the member diverged
    mean_loss: float  # median Var(y) of the validation targets: the loss of predicting the mean
    epochs: int
    wall_time_s: float
    n_val: int = 0  # validation points per member, for data's yardstick
    data: bool = False  # measured data: trained means significantly below Var(y) (metrics.members_learned)

    @property
    def medians(self) -> np.ndarray:
        return np.median(self.val_mse, axis=1)

    @property
    def best(self) -> int:
        """Index of the empirically best rate: the lowest median validation MSE."""
        return int(np.argmin(self.medians))

    def ratios(self) -> np.ndarray:
        """Each rate's median validation MSE over the best one's."""
        return self.medians / self.medians[self.best]

    def trained(self) -> np.ndarray:
        """[R, S]: did the member learn f, not just its mean? (train's yardstick)"""
        return members_learned(self.val_mse, self.mean_loss, self.n_val, self.data)

    def rule_checks(self) -> dict[str, dict]:
        """What the trainings say of each rule's pick: its rate, the seeds that trained there, its
        ratio to the best rate, and RULE_VERDICTS' word for it."""
        checks = {}
        for rate, labels, ok, ratio in zip(self.rates, self.labels, self.trained(), finite_or_none(self.ratios()), strict=True):
            check = {"lr": float(rate), "trained": int(ok.sum()), "seeds": len(ok), "ratio_to_best": ratio, "verdict": RULE_VERDICTS[fit_verdict(ok)]}
            checks.update(dict.fromkeys(labels, check))
        return checks

    def to_json(self) -> dict:
        trained = self.trained()
        return {
            "epochs": self.epochs,
            "seeds": list(self.seeds),
            "mean_predictor_mse": self.mean_loss,
            "best_lr": float(self.rates[self.best]),
            "wall_time_s": self.wall_time_s,
            "rates": [
                {
                    "lr": float(rate),
                    "rules": labels,
                    "val_mse": finite_or_none(row),
                    "median": finite_or_none([np.median(row)])[0],
                    "min": finite_or_none([row.min()])[0],
                    "max": finite_or_none([row.max()])[0],
                    "ratio_to_best": finite_or_none([ratio])[0],
                    "trained": int(ok.sum()),
                }
                for rate, labels, row, ratio, ok in zip(self.rates, self.labels, self.val_mse, self.ratios(), trained, strict=True)
            ],
        }


def verify(
    config: TrainConfig,
    target: Target,
    rates: np.ndarray,
    seeds: tuple[int, ...],
    labels: list[list[str]] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Verification:
    """Train every (rate, seed) pair for config.epochs as one stacked fit; member r·S + s has rate r, seed s."""
    rates = np.asarray(rates, dtype=np.float64)
    # The verification compares Adam at each rate; a polish would blur exactly that difference.
    stacked = replace(config, seeds=tuple(seeds) * len(rates), polish="none")
    result = fit(stacked, target, member_lrs=np.repeat(rates, len(seeds)).tolist(), on_epoch=on_epoch, stop_on_divergence=False)
    val = np.array([m.val_mse for m in result.members]).reshape(len(rates), len(seeds))
    val[~np.isfinite(val)] = np.inf
    split = target.split(torch.tensor(seeds), config.points, config.val_fraction, dtype=torch.float64)
    return Verification(
        rates=rates,
        labels=labels or [[] for _ in rates],
        seeds=tuple(seeds),
        val_mse=val,
        mean_loss=target.maps.mse_out(float(split.y_val.var(dim=1, correction=0).median())),  # in data units, as val_mse
        epochs=config.epochs,
        wall_time_s=result.wall_time_s,
        n_val=config.n_val,
        data=not target.has_function,
    )


# ---------------------------------------------------------------- lr-find


@dataclass
class Findings:
    """Everything lr-find reports: the range test, each rule per member and overall, the evidence."""

    train_config: TrainConfig
    test: RangeTest
    verification: Verification | None = None
    per_member: list[dict[str, float | None]] = field(init=False)

    def __post_init__(self) -> None:
        self.per_member = [self.test.suggestions(k) for k in range(len(self.test.seeds))]

    def rule(self, name: str) -> dict:
        """A rule's median suggestion over the seeds and its spread in decades."""
        values = [s[name] for s in self.per_member if s[name] is not None]
        if not values:
            return {"median": None, "spread_decades": None, "members": 0}
        # One seed has no spread to speak of.
        spread = spread_decades(values) if len(values) > 1 else None
        return {"median": log_median(values), "spread_decades": spread, "members": len(values)}

    def medians(self) -> dict[str, float | None]:
        return {name: self.rule(name)["median"] for name in RULES}

    def top_lr(self) -> float:
        """Median rate at which the members diverged (or the end of the sweep)."""
        return log_median([self.test.top_lr(k) for k in range(len(self.test.seeds))])

    def uninformative(self) -> list[bool]:
        return [self.test.uninformative(k) for k in range(len(self.test.seeds))]

    def warning(self) -> str | None:
        """Say so when the curve cannot support the rules, instead of pretending they are reliable."""
        flat = self.uninformative()
        if not any(flat):
            return None
        lowest = [float(losses.min()) for _, losses in map(self.test.trimmed, range(len(flat))) if losses.size]
        return (
            f"the range-test loss never fell clearly below the mean-predictor loss Var(y) ≈ "
            f"{np.median(self.test.mean_loss):.3g} ({sum(flat)} of {len(flat)} seeds; lowest smoothed loss "
            f"{min(lowest, default=math.nan):.3g}): the network learned little more than the mean of f "
            "during the sweep, so the suggestions are guesses; "
            + ("the verification below says which rates train" if self.verification is not None else "check them with --verify")
        )

    def to_json(self) -> dict:
        test = self.test
        checks = {} if self.verification is None else self.verification.rule_checks()
        return {
            "range_test": {
                **asdict(test.config),
                "members": [
                    {
                        "seed": seed,
                        "stop": test.stop_reason(k),
                        "steps": test.steps(k),
                        "top_lr": test.top_lr(k),
                        "mean_predictor_mse": float(test.mean_loss[k]),
                        "uninformative": test.uninformative(k),
                        "suggestions": self.per_member[k],
                        "lr": test.lrs[: test.steps(k)].tolist(),
                        "loss": finite_or_none(test.raw[: test.steps(k), k]),
                        "smoothed": finite_or_none(test.smoothed[: test.steps(k), k]),
                        "val_loss": None if test.val is None else finite_or_none(test.val[: test.steps(k), k]),
                    }
                    for k, seed in enumerate(test.seeds)
                ],
            },
            "suggestions": {name: {**self.rule(name), "verified": checks.get(name)} for name in RULES},
            "top_lr": self.top_lr(),
            "warning": self.warning(),
            "verification": None if self.verification is None else self.verification.to_json(),
        }


def lr_find(
    config: TrainConfig,
    target: Target,
    test: RangeTestConfig,
    verify_config: VerifyConfig | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Findings:
    """The range test over config.seeds, the rules, and with verify_config the verification grid:
    verify_config.rates rates below the divergence point plus each rule's median suggestion, each
    trained for config.epochs on verify_config.seeds seeds."""
    if verify_config is not None:
        verify_config.validate()
    findings = Findings(config, run_range_test(config, target, test))
    if verify_config is not None:
        grid = verification_rates(findings.top_lr(), verify_config.rates)
        rates, labels = merge_rates(grid, findings.medians())
        findings.verification = verify(config, target, rates, pick_seeds(config.seeds, verify_config.seeds), labels, on_epoch)
    return findings
