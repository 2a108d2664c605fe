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

from rungefit.config import MODES, RangeTestConfig, TrainConfig, VerifyConfig
from rungefit.errors import RungefitError, UsageError
from rungefit.model import StackedMLP
from rungefit.optim import StackedAdam
from rungefit.stack import EpochBatches, new_stack
from rungefit.target import DataSplit, target_of
from rungefit.train import EpochReport, fit, intra_op_threads

# A curve is informative only if its smoothed loss falls below this share of Var(y), i.e. the
# network learned more than the mean of f during the sweep.
INFORMATIVE_BELOW = 0.5
# A training "trains" when its validation MSE ends below this share of Var(y) (R² > 0.99); the
# failures on this problem sit at Var(y) itself, stuck at the mean.
TRAINED_BELOW = 0.01
SKIP_END = 5  # points dropped before the divergence: the blow-up itself says nothing


# ---------------------------------------------------------------- pure functions of the curve


def sweep(start_lr: float, end_lr: float, iters: int, mode: str = "exp") -> np.ndarray:
    """The rate of every step, [iters], evenly spaced (in log for exp), hitting both ends exactly."""
    if mode == "exp":
        return np.geomspace(start_lr, end_lr, iters)
    if mode == "linear":
        return np.linspace(start_lr, end_lr, iters)
    raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def ema_step(average: np.ndarray, loss: np.ndarray, beta: float, step: int) -> tuple[np.ndarray, np.ndarray]:
    """One update of the moving average; returns (new average, bias-corrected smoothed loss)."""
    average = beta * average + (1 - beta) * loss
    return average, average / (1 - beta ** (step + 1))


def is_diverged(raw: np.ndarray, smoothed: np.ndarray, best: np.ndarray, factor: float) -> np.ndarray:
    """Elementwise: the loss is non-finite, or the smoothed loss is above factor × its best so far."""
    return ~np.isfinite(raw) | ~np.isfinite(smoothed) | (smoothed > factor * best)


def trim(lrs: np.ndarray, losses: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of a recorded curve the rules read: finite, without the first tenth of the sweep
    (the average is still settling) and without the last SKIP_END points (the blow-up)."""
    finite = np.isfinite(losses)
    end = int(np.argmin(finite)) if not finite.all() else len(losses)
    start = iters // 10
    stop = max(end - SKIP_END, start)
    return lrs[start:stop], losses[start:stop]


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """The rate of the most negative slope of the loss against log10 lr."""
    if len(losses) < 3:
        return None
    slopes = np.gradient(losses, np.log10(lrs))
    return float(lrs[int(np.argmin(slopes))])


def valley(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """fastai's valley rule: about halfway into the longest decreasing stretch of the loss.

    As fastai.callback.schedule.valley: the longest strictly decreasing subsequence, then the point
    int(length/3) + int(length/6) steps after its start.
    """
    n = len(losses)
    if n < 2:
        return None
    run = [1] * n  # run[i]: longest decreasing subsequence ending at i
    best_start = best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[best_end] < run[i]:
                best_end = i
                best_start = best_end - run[best_end]
    sections = (best_end - best_start) / 3
    return float(lrs[best_start + int(sections) + int(sections / 2)])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """A tenth of the rate at the lowest loss."""
    if len(losses) == 0:
        return None
    return float(lrs[int(np.argmin(losses))]) / 10


RULE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "steepest": steepest,
    "valley": valley,
    "minimum": minimum,
}
RULES = tuple(RULE_FUNCTIONS)


def is_uninformative(losses: np.ndarray, mean_loss: float) -> bool:
    """True when the (trimmed, smoothed) loss never falls clearly below the mean-predictor loss Var(y)."""
    return losses.size == 0 or float(losses.min()) >= INFORMATIVE_BELOW * mean_loss


def log_median(values: list[float]) -> float:
    """Median in log space: rates are compared by ratios."""
    return float(10 ** np.median(np.log10(values)))


def spread_decades(values: list[float]) -> float:
    """How many decades the values span."""
    return float(np.log10(max(values) / min(values)))


def verification_rates(top_lr: float, count: int = 9, step_decades: float = 0.5) -> np.ndarray:
    """count rates spaced step_decades apart, ascending, the highest one step below top_lr."""
    return top_lr * 10.0 ** (-step_decades * np.arange(count, 0, -1))


def merge_rates(grid: np.ndarray, suggestions: dict[str, float | None]) -> tuple[np.ndarray, list[list[str]]]:
    """The grid plus every rule's suggestion, ascending, each with the rules that suggested it."""
    labelled: dict[float, list[str]] = {float(rate): [] for rate in grid}
    for rule, rate in suggestions.items():
        if rate is not None:
            labelled.setdefault(float(rate), []).append(rule)
    rates = sorted(labelled)
    return np.array(rates), [labelled[rate] for rate in rates]


def pick_seeds(seeds: tuple[int, ...], count: int) -> tuple[int, ...]:
    """The first `count` of seeds, continued with the next unused integers when there are fewer."""
    chosen = list(seeds[:count])
    candidate = max(seeds) + 1
    while len(chosen) < count:
        chosen.append(candidate)
        candidate += 1
    return tuple(chosen)


def finite_or_none(values) -> list[float | None]:
    """JSON has no inf or NaN: a diverged figure becomes null."""
    return [float(v) if v is not None and math.isfinite(v) else None for v in values]


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


def run_range_test(config: TrainConfig, test: RangeTestConfig) -> RangeTest:
    """The range test on a fresh stack of `train`'s model and data, one member per seed."""
    config.validate()
    with intra_op_threads(config):
        model, optimizer, data, seeds = new_stack(config)
        return range_test(model, optimizer, data, seeds, config.batch_size, test)


# ---------------------------------------------------------------- verification


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
        """[R, S]: did the member learn f, not just its mean?"""
        return self.val_mse < TRAINED_BELOW * self.mean_loss

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
    rates: np.ndarray,
    seeds: tuple[int, ...],
    labels: list[list[str]] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Verification:
    """Train every (rate, seed) pair for config.epochs as one stacked fit; member r·S + s has rate r, seed s."""
    rates = np.asarray(rates, dtype=np.float64)
    # The verification compares Adam at each rate; a polish would blur exactly that difference.
    stacked = replace(config, seeds=tuple(seeds) * len(rates), polish="none")
    result = fit(stacked, member_lrs=np.repeat(rates, len(seeds)).tolist(), on_epoch=on_epoch, stop_on_divergence=False)
    val = np.array([m.val_mse for m in result.members]).reshape(len(rates), len(seeds))
    val[~np.isfinite(val)] = np.inf
    split = target_of(config).split(torch.tensor(seeds), config.points, config.val_fraction, dtype=torch.float64)
    return Verification(
        rates=rates,
        labels=labels or [[] for _ in rates],
        seeds=tuple(seeds),
        val_mse=val,
        mean_loss=float(split.y_val.var(dim=1, correction=0).median()),
        epochs=config.epochs,
        wall_time_s=result.wall_time_s,
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
        return {"median": log_median(values), "spread_decades": spread_decades(values), "members": len(values)}

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
            "during the sweep, so the suggestions are guesses; check them with --verify"
        )

    def to_json(self) -> dict:
        test = self.test
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
            "suggestions": {name: self.rule(name) for name in RULES},
            "top_lr": self.top_lr(),
            "warning": self.warning(),
            "verification": None if self.verification is None else self.verification.to_json(),
        }


def lr_find(
    config: TrainConfig,
    test: RangeTestConfig,
    verify_config: VerifyConfig | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Findings:
    """The range test over config.seeds, the rules, and with verify_config the verification grid:
    verify_config.rates rates below the divergence point plus each rule's median suggestion, each
    trained for config.epochs on verify_config.seeds seeds."""
    if verify_config is not None:
        verify_config.validate()
    findings = Findings(config, run_range_test(config, test))
    if verify_config is not None:
        grid = verification_rates(findings.top_lr(), verify_config.rates)
        rates, labels = merge_rates(grid, findings.medians())
        findings.verification = verify(config, rates, pick_seeds(config.seeds, verify_config.seeds), labels, on_epoch)
    return findings


# ---------------------------------------------------------------- train --lr auto

AUTO_SEEDS = 3  # seeds of the short verification
AUTO_EPOCH_SHARE = 10  # it trains for epochs // AUTO_EPOCH_SHARE
AUTO_RATES = 14  # rates a quarter of a decade apart below the divergence point
AUTO_STEP_DECADES = 0.25
# Short runs favour high rates, and just above the best rate lies a cliff where training sticks at
# the mean, while below it the loss rises slowly: so step down from the short runs' best.
AUTO_SAFETY = 2.0


@dataclass
class LrChoice:
    lr: float
    how: str  # one line for the final table and summary.json
    verification: Verification

    def to_json(self) -> dict:
        return {"lr": self.lr, "how": self.how, "short_verification": self.verification.to_json()}


def pick_auto_lr(rates: np.ndarray, val_mse: np.ndarray) -> float | None:
    """The rate whose worst seed reached the lowest validation MSE, ÷ AUTO_SAFETY; None if all diverged.

    The worst seed rather than the median: a rate at which one seed in three sticks at the mean is
    a rate that fails some users, and the worst seed needs no threshold for "trained".
    """
    worst = val_mse.max(axis=1)
    if not np.isfinite(worst).any():
        return None
    return float(rates[int(np.argmin(worst))]) / AUTO_SAFETY


def choose_lr(config: TrainConfig, on_epoch: Callable[[EpochReport], None] | None = None) -> LrChoice:
    """A rate that trains on config: a range test places a grid, a short stacked training picks from it."""
    seeds = pick_seeds(config.seeds, AUTO_SEEDS)
    probe = replace(config, seeds=seeds)
    findings = Findings(probe, run_range_test(probe, RangeTestConfig()))
    rates = verification_rates(findings.top_lr(), AUTO_RATES, AUTO_STEP_DECADES)
    short = replace(probe, epochs=max(1, config.epochs // AUTO_EPOCH_SHARE))
    check = verify(short, rates, seeds, on_epoch=on_epoch)
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
