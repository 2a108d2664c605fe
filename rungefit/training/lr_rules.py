"""The learning-rate finder's numerics: pure functions of NumPy arrays and plain numbers.

The range test records a loss curve; the rules (`steepest`, `valley`, `minimum`) read a rate off
it; the verification grid and `--lr auto` pick rates from trainings' validation errors. Nothing
here touches a model, so the tests feed these functions synthetic curves (nanoGPT's get_lr is the
model: a schedule is a function, not a side effect of plotting).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rungefit.config import MODES
from rungefit.errors import UsageError

# A curve is informative only if its smoothed loss falls below this share of Var(y), i.e. the
# network learned more than the mean of f during the sweep.
INFORMATIVE_BELOW = 0.5
SKIP_END = 5  # points dropped before the divergence: the blow-up itself says nothing


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


AUTO_SEEDS = 3  # seeds of the short verification
AUTO_EPOCH_SHARE = 10  # it trains for epochs // AUTO_EPOCH_SHARE
AUTO_RATES = 14  # rates a quarter of a decade apart below the divergence point
AUTO_STEP_DECADES = 0.25
# Short runs favour high rates, and just above the best rate lies a cliff where training sticks at
# the mean, while below it the loss rises slowly: so step down from the short runs' best.
AUTO_SAFETY = 2.0


def pick_auto_lr(rates: np.ndarray, val_mse: np.ndarray) -> float | None:
    """The rate whose worst seed reached the lowest validation MSE, ÷ AUTO_SAFETY; None if all diverged.

    The worst seed rather than the median: a rate at which one seed in three sticks at the mean is
    a rate that fails some users, and the worst seed needs no threshold for "trained".
    """
    worst = val_mse.max(axis=1)
    if not np.isfinite(worst).any():
        return None
    return float(rates[int(np.argmin(worst))]) / AUTO_SAFETY
