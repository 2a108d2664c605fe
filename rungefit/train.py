"""Training: TrainConfig, the stacked Adam loop, learning-rate schedules and fit() → TrainResult.

Every member of the stack has its own seed (initialisation, training points, shuffling) and its
own learning rate; the members never interact, because the loss is a sum of per-member losses and
Adam acts elementwise. So member k of a stacked run follows the trajectory of a single run with
the same seed and rate, and one loop serves `train`, `train --seeds` and `lr-find --verify`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from rungefit import rng
from rungefit.errors import RungefitError
from rungefit.evaluate import grid_errors
from rungefit.model import DEFAULT_LAYERS, StackedMLP, parameter_count, parse_layers
from rungefit.polish import PolishProgress, PolishReport, levenberg_marquardt
from rungefit.runge import DataSplit, runge, sample_split, validation_size

SCHEDULES = ("constant", "cosine", "onecycle")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")
# Hidden activations per step (members × batch × hidden units) from which CPU training uses
# torch's intra-op threads; below it one thread is faster (see intra_op_threads). K = 1024
# of the default network is 2.4 M.
PARALLEL_MIN_ACTIVATIONS = 1 << 22
# Upper bounds that turn absurd sizes into a clear error instead of an allocation failure.
MAX_POINTS = 10_000_000  # per member
MAX_MEMBERS = 100_000
MAX_STEPS = 100_000_000  # optimizer steps of one run: lr_factors holds one float64 per step
MAX_TEST_POINTS = 1_000_000
# rng.py keys on the low 32 bits of a seed, so a larger seed would silently repeat a smaller one.
MAX_SEED = 2**32 - 1
POLISHES = ("none", "lm")
MAX_POLISH_ITERATIONS = 10_000


class DivergedError(RungefitError):
    """Training produced a non-finite loss; carries the last finite state."""

    def __init__(self, message: str, result: TrainResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class TrainConfig:
    layers: str = DEFAULT_LAYERS  # hidden layers, "WIDTH:ACTIVATION,…"; the output is linear
    points: int = 4000  # training points per member, validation included (more points = more steps)
    val_fraction: float = 0.3  # share of the points held out for validation
    batch_size: int = 39  # mini-batch size (the last batch of an epoch may be smaller)
    epochs: int = 300  # passes over the training set
    lr: float = 3e-2  # peak Adam learning rate
    schedule: str = "cosine"  # constant | cosine | onecycle, applied per optimizer step
    seeds: tuple[int, ...] = (0,)  # one member per seed: init, data and shuffling
    dtype: str = "float32"  # float32 | float64
    device: str = "cpu"  # cpu | cuda (resolved, never "auto")
    test_points: int = 100  # size of the equally spaced test grid
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's denominator guard
    polish: str = "none"  # none | lm: Levenberg-Marquardt refinement on the training set after Adam
    polish_iterations: int = 30  # LM iterations per member (each solves one P × P system)

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work (by its CLI option)."""
        parse_layers(self.layers)
        _check([
            (2 <= self.points <= MAX_POINTS, f"--points must be between 2 and {MAX_POINTS}, got {self.points}"),
            (0 < self.val_fraction < 1, f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive finite number, got {self.lr}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (1 <= len(self.seeds) <= MAX_MEMBERS, f"--seeds: between 1 and {MAX_MEMBERS} seeds, got {len(self.seeds)}"),
            (all(0 <= s <= MAX_SEED for s in self.seeds), f"--seed, --seeds: seeds must be whole numbers in 0…{MAX_SEED}"),
            (self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device!r}"),
            (2 <= self.test_points <= MAX_TEST_POINTS, f"test_points must be between 2 and {MAX_TEST_POINTS}, got {self.test_points}"),
            (self.polish in POLISHES, f"--polish must be one of {', '.join(POLISHES)}, got {self.polish!r}"),
            (0 <= self.polish_iterations <= MAX_POLISH_ITERATIONS, f"--polish-iterations must be between 0 and {MAX_POLISH_ITERATIONS}, got {self.polish_iterations}"),
        ])
        validation_size(self.points, self.val_fraction)
        _check([
            (
                self.total_steps <= MAX_STEPS,
                f"--epochs {self.epochs} × {self.steps_per_epoch} steps per epoch is more than {MAX_STEPS:.0e} "
                "optimizer steps; use fewer --epochs or a larger --batch-size",
            )
        ])

    @property
    def n_train(self) -> int:
        return self.points - validation_size(self.points, self.val_fraction)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def _check(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def resolve_device(device: str) -> str:
    """Turn auto|cpu|cuda into a usable device, or raise RungefitError if CUDA is missing."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RungefitError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return device


def lr_factors(schedule: str, total_steps: int) -> np.ndarray:
    """The multiplier of the peak learning rate at each optimizer step, [total_steps].

    cosine: from 1 down to 0 over the run. onecycle: as torch's OneCycleLR (30 % cosine warm-up
    from 1/25, then cosine annealing to 1/25e4).
    """
    t = np.arange(total_steps, dtype=np.float64)
    if schedule == "constant":
        return np.ones(total_steps)
    if schedule == "cosine":
        return 0.5 * (1 + np.cos(np.pi * t / total_steps))
    if schedule == "onecycle":
        peak = max(round(0.3 * total_steps) - 1, 1)
        start, end = 1 / 25, 1 / 25e4
        up = start + (1 - start) * 0.5 * (1 - np.cos(np.pi * np.minimum(t / peak, 1)))
        frac = np.clip((t - peak) / max(total_steps - 1 - peak, 1), 0, 1)
        down = end + (1 - end) * 0.5 * (1 + np.cos(np.pi * frac))
        return np.where(t <= peak, up, down)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class StackedAdam:
    """Adam (as torch.optim.Adam, no weight decay) on the flat [K, P] buffer, one lr per member."""

    def __init__(self, model: StackedMLP, betas=(0.9, 0.999), eps=1e-8):
        self.model = model
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.exp_avg = torch.zeros_like(model.params)
        self.exp_avg_sq = torch.zeros_like(model.params)
        self._denom = torch.empty_like(model.params)
        self._update = torch.empty_like(model.params)

    def step(self, lr: torch.Tensor) -> None:
        """One update with lr [K, 1]; gradients are read from model.grads.

        torch.optim.Adam's p -= lr/c1 · m / (√v/√c2 + ε), written as p -= √c2/c1 · lr·m / (√v + ε√c2)
        (c1, c2 the bias corrections) to save one pass over the buffer.
        """
        self.step_count += 1
        grads, params = self.model.grads, self.model.params
        correction1 = 1 - self.beta1**self.step_count
        correction2_sqrt = math.sqrt(1 - self.beta2**self.step_count)
        self.exp_avg.lerp_(grads, 1 - self.beta1)
        self.exp_avg_sq.lerp_(torch.mul(grads, grads, out=self._update), 1 - self.beta2)
        torch.sqrt(self.exp_avg_sq, out=self._denom).add_(self.eps * correction2_sqrt)
        torch.mul(self.exp_avg, lr, out=self._update)
        with torch.no_grad():
            params.addcdiv_(self._update, self._denom, value=-correction2_sqrt / correction1)

    def state_dict(self) -> dict:
        return {"step": self.step_count, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])


@dataclass
class History:
    """Per-epoch curves, [epochs_run, K] each."""

    train_mse: list[list[float]] = field(default_factory=list)  # mean mini-batch loss of the epoch
    val_mse: list[list[float]] = field(default_factory=list)  # validation set, end of the epoch
    lr: list[list[float]] = field(default_factory=list)  # learning rate of the epoch's last step


@dataclass
class TrainState:
    """Where a run stands after its last completed epoch: enough to continue it exactly.

    No random-number state is needed: every draw is a pure function of (seed, stream, counter)
    (rng.py), the data and the initialisation depend on the seed alone and the shuffle of epoch e
    on (seed, e), so the number of completed epochs is the whole RNG state.
    """

    model_state: dict  # StackedMLP.state_dict()
    optimizer_state: dict  # StackedAdam.state_dict(): step, exp_avg, exp_avg_sq
    epochs_run: int
    history: History
    wall_time_s: float = 0.0  # training time already spent, carried into the final figures

    def check(self, config: TrainConfig) -> None:
        """Raise ValueError unless this state can continue a run of config."""
        members, size = len(config.seeds), parameter_count(parse_layers(config.layers))
        moments = [self.optimizer_state["exp_avg"], self.optimizer_state["exp_avg_sq"]]
        _check([
            (0 <= self.epochs_run < config.epochs, f"{self.epochs_run} of {config.epochs} epochs done, none left to train"),
            (all(len(curve) == self.epochs_run for curve in asdict(self.history).values()), "the history does not cover the epochs done"),
            (int(self.optimizer_state["step"]) == self.epochs_run * config.steps_per_epoch, "the optimizer's step count does not match the epochs done"),
            (all(tuple(m.shape) == (members, size) for m in moments), "the optimizer state does not fit the network"),
        ])


@dataclass
class MemberMetrics:
    """Final figures of one member."""

    seed: int
    lr: float
    train_mse: float
    val_mse: float
    test_mse: float
    test_max_abs_error: float


@dataclass
class TrainResult:
    config: TrainConfig
    model: StackedMLP
    optimizer: StackedAdam
    history: History
    members: list[MemberMetrics]
    epochs_run: int
    steps: int
    wall_time_s: float
    status: str = "complete"  # complete | diverged | interrupted
    polish: PolishReport | None = None  # the LM refinement, when config.polish == "lm"

    def state(self) -> TrainState:
        """The state after the last completed epoch, from which fit(resume=…) continues."""
        return TrainState(self.model.state_dict(), self.optimizer.state_dict(), self.epochs_run, self.history, self.wall_time_s)

    def summary(self) -> dict:
        """JSON-ready final figures: per member and their median / min / max."""
        fields = ("train_mse", "val_mse", "test_mse", "test_max_abs_error")
        stats = {}
        for name in fields:
            values = np.array([getattr(m, name) for m in self.members])
            stats[name] = {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
        return {
            "status": self.status,
            "members": [asdict(m) for m in self.members],
            "stats": stats,
            "epochs": self.epochs_run,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "polish": self._polish_summary(),
        }

    def _polish_summary(self) -> dict | None:
        if self.polish is None:
            return None
        return {
            "method": self.config.polish,
            "train_mse_before": self.polish.initial_mse.tolist(),
            "train_mse_after": self.polish.final_mse.tolist(),
            "iterations": self.polish.iterations.tolist(),
            "accepted_steps": self.polish.accepted.tolist(),
        }


@dataclass(frozen=True)
class EpochReport:
    """What the progress display gets after each epoch (plain floats, median over members)."""

    epoch: int
    epochs: int
    train_mse: float
    val_mse: float
    lr: float


def fit(
    config: TrainConfig,
    *,
    member_lrs: Sequence[float] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    stop_on_divergence: bool = True,
    should_stop: Callable[[], bool] | None = None,
    resume: TrainState | None = None,
    on_polish: Callable[[PolishProgress], None] | None = None,
) -> TrainResult:
    """Train one member per seed (member k with lr member_lrs[k], else config.lr).

    Raises DivergedError (holding the last finite state) when a loss turns non-finite and
    stop_on_divergence is set; otherwise diverged members simply end with non-finite metrics.
    should_stop is asked after every optimizer step; once it says yes, the unfinished epoch is
    dropped and the result (status "interrupted") holds the last completed epoch. resume continues
    from such a state, and ends with exactly the numbers of an uninterrupted run. With
    config.polish == "lm", a completed Adam run is refined by Levenberg-Marquardt (progress to
    on_polish); an interrupted or diverged one is not.
    """
    config.validate()
    if resume is not None:
        resume.check(config)
    with intra_op_threads(config):
        return _fit(config, member_lrs, on_epoch, stop_on_divergence, should_stop, resume, on_polish)


@contextmanager
def intra_op_threads(config: TrainConfig) -> Iterator[None]:
    """Train a small stack on one CPU thread, then restore torch's setting.

    A step on a small stack is a string of tiny kernels; a second intra-op thread adds only
    synchronisation, and when another process holds the other core it waits for the scheduler:
    on a shared 2-core machine K = 1 and K = 64 ran 4-100× slower with two threads than with one.
    """
    previous = torch.get_num_threads()
    hidden_units = sum(layer.width for layer in parse_layers(config.layers))
    if config.device == "cpu" and len(config.seeds) * config.batch_size * hidden_units < PARALLEL_MIN_ACTIVATIONS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(
    config: TrainConfig,
    member_lrs: Sequence[float] | None,
    on_epoch: Callable[[EpochReport], None] | None,
    stop_on_divergence: bool,
    should_stop: Callable[[], bool] | None,
    resume: TrainState | None,
    on_polish: Callable[[PolishProgress], None] | None,
) -> TrainResult:
    started = time.perf_counter()
    dtype, device = DTYPES[config.dtype], config.device
    lr_values = [float(lr) for lr in member_lrs] if member_lrs is not None else [config.lr] * len(config.seeds)
    if len(lr_values) != len(config.seeds):
        raise ValueError(f"{len(lr_values)} learning rates for {len(config.seeds)} members")
    lrs = torch.tensor(lr_values, dtype=dtype, device=device)
    model, optimizer, data, seeds = new_stack(config)
    y_val = runge(data.x_val)
    factors = torch.tensor(lr_factors(config.schedule, config.total_steps), dtype=dtype, device=device)
    history, first_epoch, earlier_wall_time = History(), 0, 0.0
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        history, first_epoch, earlier_wall_time = copy.deepcopy(resume.history), resume.epochs_run, resume.wall_time_s
    status = "complete"
    for epoch in range(first_epoch, config.epochs):
        snapshot = (model.params.clone(), optimizer.state_dict())
        epoch_loss = _train_epoch(model, optimizer, data.x_train, seeds, epoch, config.batch_size, lrs, factors, should_stop)
        if epoch_loss is None:
            _restore(model, optimizer, snapshot)
            status = "interrupted"
            break
        val_mse = model.mse(data.x_val, y_val)
        epoch_lr = lrs * factors[optimizer.step_count - 1]
        history.train_mse.append(epoch_loss.tolist())
        history.val_mse.append(val_mse.tolist())
        history.lr.append(epoch_lr.tolist())
        if stop_on_divergence and not bool(torch.isfinite(epoch_loss).all()):
            _restore(model, optimizer, snapshot)
            for curve in (history.train_mse, history.val_mse, history.lr):
                curve.pop()
            status = "diverged"
            break
        if on_epoch is not None:
            on_epoch(EpochReport(epoch + 1, config.epochs, float(np.median(history.train_mse[-1])), float(np.median(history.val_mse[-1])), float(np.median(history.lr[-1]))))
    polish = None
    if status == "complete" and config.polish == "lm":
        polish = levenberg_marquardt(model, data.x_train, iterations=config.polish_iterations, progress=on_polish)
    result = TrainResult(
        config=config,
        model=model,
        optimizer=optimizer,
        history=history,
        members=final_metrics(model, config, data, lr_values),
        epochs_run=len(history.val_mse),
        steps=optimizer.step_count,
        wall_time_s=earlier_wall_time + time.perf_counter() - started,
        status=status,
        polish=polish,
    )
    if status == "diverged":
        raise DivergedError(
            f"the loss became non-finite in epoch {result.epochs_run + 1} (lr {config.lr:g}); "
            "try a lower --lr, or run `rungefit lr-find` to choose one",
            result,
        )
    return result


def new_stack(config: TrainConfig) -> tuple[StackedMLP, StackedAdam, DataSplit, torch.Tensor]:
    """A freshly initialised model, its optimizer, the data and the seeds [K], as every fit starts."""
    dtype, device = DTYPES[config.dtype], config.device
    seeds = torch.tensor(config.seeds, dtype=torch.int64, device=device)
    data = sample_split(seeds, config.points, config.val_fraction, dtype=dtype, device=device)
    model = StackedMLP(parse_layers(config.layers), len(config.seeds), dtype=dtype, device=device)
    model.initialise(seeds)
    return model, StackedAdam(model, config.betas, config.eps), data, seeds


def epoch_batches(x_train: torch.Tensor, seeds: torch.Tensor, epoch: int, batch_size: int):
    """Yield (x, y) mini-batches [K, ≤batch_size] of one shuffled pass, each member its own order."""
    order = rng.permutations(seeds, rng.STREAM_SHUFFLE, x_train.shape[1], counter=epoch).to(x_train.device)
    x_epoch = torch.gather(x_train, 1, order)
    y_epoch = runge(x_epoch)
    for start in range(0, x_epoch.shape[1], batch_size):
        yield x_epoch[:, start : start + batch_size], y_epoch[:, start : start + batch_size]


def train_step(model: StackedMLP, optimizer: StackedAdam, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """One Adam step on the mini-batch MSE of every member with lr [K, 1]; returns the losses [K]."""
    loss = model.mse_backward(x, y)
    optimizer.step(lr)
    return loss


def _train_epoch(model, optimizer, x_train, seeds, epoch, batch_size, lrs, factors, should_stop=None) -> torch.Tensor | None:
    """One shuffled pass in mini-batches; returns the mean mini-batch loss per member, [K], or None
    when should_stop said yes after a step (a Python call per step: no device sync)."""
    n = x_train.shape[1]
    total = torch.zeros_like(lrs)
    batches = list(epoch_batches(x_train, seeds, epoch, batch_size))
    first = optimizer.step_count
    # The epoch's learning rates [steps, K, 1], made at once rather than three small ops a step.
    rates = torch.outer(factors[first : first + len(batches)], lrs).unsqueeze(2).unbind(0)
    for (x, y), lr in zip(batches, rates, strict=True):
        loss = train_step(model, optimizer, x, y, lr)
        total.add_(loss, alpha=x.shape[1] / n)
        if should_stop is not None and should_stop():
            return None
    return total


def _restore(model: StackedMLP, optimizer: StackedAdam, snapshot) -> None:
    params, optimizer_state = snapshot
    with torch.no_grad():
        model.params.copy_(params)
    optimizer.load_state_dict(optimizer_state)


def final_metrics(model: StackedMLP, config: TrainConfig, data, lrs: list[float]) -> list[MemberMetrics]:
    """Full-set MSEs per member, and the test grid's MSE and max |error| (as `eval` computes them)."""
    test = grid_errors(model, config.test_points)
    train_mse = model.mse(data.x_train, runge(data.x_train)).tolist()
    val_mse = model.mse(data.x_val, runge(data.x_val)).tolist()
    return [
        MemberMetrics(seed, lr, tr, va, te, mx)
        for seed, lr, tr, va, te, mx in zip(config.seeds, lrs, train_mse, val_mse, test.mse.tolist(), test.max_abs_error.tolist(), strict=True)
    ]
