"""Training: TrainConfig, the stacked Adam loop, learning-rate schedules and fit() → TrainResult.

Every member of the stack has its own seed (initialisation, training points, shuffling) and its
own learning rate; the members never interact, because the loss is a sum of per-member losses and
Adam acts elementwise. So member k of a stacked run follows the trajectory of a single run with
the same seed and rate, and one loop serves `train`, `train --seeds` and `lr-find --verify`.
On the CPU, fit splits a large stack into contiguous groups of members, one per worker process
(workers.py, one per core), and drives them epoch by epoch as one stack.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial

import numpy as np
import torch

from rungefit import rng, workers
from rungefit.errors import RungefitError, UsageError
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
# Automatic worker processes give each at least this many members: a step on 4 members costs
# about 1.4× one on a single member, so smaller shares gain too little for a process each.
MIN_MEMBERS_PER_WORKER = 4
MAX_WORKERS = 256


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
    workers: int = 0  # CPU processes sharing the members; 0: one per core, ≥ MIN_MEMBERS_PER_WORKER members each

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work (by its CLI option)."""
        parse_layers(self.layers)
        _check([
            (2 <= self.points <= MAX_POINTS, f"--points must be between 2 and {MAX_POINTS}, got {self.points}"),
            (0 < self.val_fraction < 1, f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}"),
            (1 <= self.batch_size <= MAX_POINTS, f"--batch-size must be between 1 and {MAX_POINTS}, got {self.batch_size}"),
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
            (0 <= self.workers <= MAX_WORKERS, f"--workers must be between 0 (automatic) and {MAX_WORKERS}, got {self.workers}"),
            (self.workers <= 1 or self.device == "cpu", "--workers splits CPU training into processes; use --workers 0 or 1 with --device cuda"),
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
            raise UsageError(message)


def resolve_device(device: str) -> str:
    """Turn auto|cpu|cuda into a usable device, or raise RungefitError if CUDA is missing."""
    if device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
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
    raise UsageError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class StackedAdam:
    """Adam (as torch.optim.Adam, no weight decay) on the flat [K, P] buffer, member k at rate lrs[k].

    A step is torch's fused Adam kernel, one pass over parameters, gradients and both moments
    (the same update as torch.optim.Adam(fused=True)), called once per run of consecutive members
    that share a rate: once for `train`, a few times for lr-find --verify.
    """

    def __init__(self, model: StackedMLP, lrs: Sequence[float], betas=(0.9, 0.999), eps=1e-8):
        self.model = model
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.exp_avg = torch.zeros_like(model.params)
        self.exp_avg_sq = torch.zeros_like(model.params)
        # The fused kernel reads the step count from a float32 tensor, as torch.optim keeps it.
        self._step = torch.zeros((), dtype=torch.float32, device=model.device)
        self.lrs = lrs

    @property
    def lrs(self) -> list[float]:
        """The members' rates, [K]."""
        return [lr for start, stop, lr, _ in self._groups for _ in range(start, stop)]

    @lrs.setter
    def lrs(self, lrs: Sequence[float]) -> None:
        if len(lrs) != self.model.members:
            raise ValueError(f"{len(lrs)} learning rates for {self.model.members} members")
        buffers = (self.model.params, self.model.grads, self.exp_avg, self.exp_avg_sq)
        self._groups = [
            (start, stop, lr, [buffer[start:stop].view(-1) for buffer in buffers])
            for start, stop, lr in _runs_of_equal(lrs)
        ]

    def step(self, factor: float = 1.0) -> None:
        """One update of every member at factor × its rate; gradients are read from model.grads."""
        self.step_count += 1
        self._step.fill_(self.step_count)
        for _, _, lr, (params, grads, exp_avg, exp_avg_sq) in self._groups:
            torch._fused_adam_(
                [params], [grads], [exp_avg], [exp_avg_sq], [], [self._step], lr=lr * factor,
                beta1=self.beta1, beta2=self.beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False,
            )

    def state_dict(self) -> dict:
        return {"step": self.step_count, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])


def _runs_of_equal(values: Sequence[float]) -> list[tuple[int, int, float]]:
    """(start, stop, value) of each run of equal consecutive values."""
    runs: list[tuple[int, int, float]] = []
    for index, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1] = (runs[-1][0], index + 1, value)
        else:
            runs.append((index, index + 1, float(value)))
    return runs


@dataclass
class History:
    """Per-epoch curves, [epochs_run, K] each."""

    train_mse: list[list[float]] = field(default_factory=list)  # mean mini-batch loss of the epoch
    val_mse: list[list[float]] = field(default_factory=list)  # validation set, end of the epoch
    lr: list[list[float]] = field(default_factory=list)  # learning rate of the epoch's last step

    def append(self, epoch: EpochCurves) -> None:
        self.train_mse.append(epoch.train_mse)
        self.val_mse.append(epoch.val_mse)
        self.lr.append(epoch.lr)


@dataclass(frozen=True)
class EpochCurves:
    """One epoch of every member of a stack, [K] each: plain lists, which cross a pipe as they are."""

    train_mse: list[float]
    val_mse: list[float]
    lr: list[float]

    @classmethod
    def join(cls, parts: Sequence[EpochCurves]) -> EpochCurves:
        """The curves of consecutive groups of members as those of the whole stack."""
        return cls(*([value for part in parts for value in getattr(part, f.name)] for f in fields(cls)))


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
            # All epochs done is a run stopped during its polish, which the resume runs again.
            (0 <= self.epochs_run < config.epochs or (self.epochs_run == config.epochs and config.polish != "none"), f"{self.epochs_run} of {config.epochs} epochs done, none left to train"),
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
        """The state after the last completed epoch, from which fit(resume=…) continues; a
        ValueError for a complete run (its model may be polished: a resume would polish it twice)."""
        if self.status == "complete":
            raise ValueError("a complete run has nothing to resume")
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
            "workers": self.config.workers,
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
    on_polish); an interrupted or diverged one is not. should_stop is asked after every LM
    iteration too: a yes there undoes the polish, and the result is interrupted with every epoch
    done (a resume runs the polish again). The result's config says how many worker
    processes trained the members (config.workers resolved by worker_count).
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
    lr_values = [float(lr) for lr in member_lrs] if member_lrs is not None else [config.lr] * len(config.seeds)
    config = replace(config, workers=worker_count(config))
    history, first_epoch, earlier_wall_time = History(), 0, 0.0
    if resume is not None:
        history, first_epoch, earlier_wall_time = copy.deepcopy(resume.history), resume.epochs_run, resume.wall_time_s
    status, polish = "complete", None
    with _open_stack(config, lr_values, resume) as stack:
        for epoch in range(first_epoch, config.epochs):
            curves = stack.train_epoch(epoch, should_stop)
            if curves is None:
                status = "interrupted"
                break
            if stop_on_divergence and not np.isfinite(curves.train_mse).all():
                stack.rewind(epoch)
                status = "diverged"
                break
            history.append(curves)
            if on_epoch is not None:
                on_epoch(EpochReport(epoch + 1, config.epochs, *(float(np.median(c)) for c in (curves.train_mse, curves.val_mse, curves.lr))))
        if status == "complete" and config.polish == "lm":
            polish = stack.polish(config.polish_iterations, on_polish, should_stop)
            if polish is None:
                status = "interrupted"
        model, optimizer, data = stack.finish()
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


def worker_count(config: TrainConfig) -> int:
    """How many processes train config's members: config.workers (at most one per member), or
    for 0 one per CPU core, each with at least MIN_MEMBERS_PER_WORKER members. Always 1 where
    worker processes cannot be forked (not Linux, or a daemonic process): a run saved with
    several, resumed there, goes on in one."""
    members = len(config.seeds)
    if config.device != "cpu" or not workers.available():
        return 1
    if config.workers:
        return min(config.workers, members)
    return max(1, min(workers.cpu_count(), members // MIN_MEMBERS_PER_WORKER))


@contextmanager
def _open_stack(config: TrainConfig, lrs: list[float], resume: TrainState | None) -> Iterator[_Stack | _WorkerStacks]:
    """The members of config as one stack in this process, or split over config.workers processes."""
    stack = _Stack.start(config, lrs, resume)
    if config.workers == 1:
        yield stack
        return
    with _WorkerStacks(stack) as split:
        yield split


class _Stack:
    """Members trained together in this process, an epoch at a time: what fit drives, here or in
    a worker process (_WorkerStacks)."""

    def __init__(self, config: TrainConfig, model: StackedMLP, optimizer: StackedAdam, data: DataSplit, seeds: torch.Tensor):
        self.config, self.model, self.optimizer, self.data, self.seeds = config, model, optimizer, data, seeds
        self.y_val = runge(data.x_val)
        self.batches = EpochBatches(data.x_train, seeds, config.batch_size)
        self.factors = lr_factors(config.schedule, config.total_steps)
        self._snapshots: dict[int, tuple[torch.Tensor, dict]] = {}  # epoch → the state it started from

    @classmethod
    def start(cls, config: TrainConfig, lrs: list[float], resume: TrainState | None) -> _Stack:
        """A fresh stack, or one continuing from `resume`."""
        model, optimizer, data, seeds = new_stack(config, lrs)
        if resume is not None:
            model.load_state_dict(resume.model_state)
            optimizer.load_state_dict(resume.optimizer_state)
        return cls(config, model, optimizer, data, seeds)

    def select(self, start: int, stop: int) -> _Stack:
        """Members start…stop-1 as a stack of their own (a copy), in the state they are in."""
        model = self.model.select(list(range(start, stop)))
        optimizer = StackedAdam(model, self.optimizer.lrs[start:stop], (self.optimizer.beta1, self.optimizer.beta2), self.optimizer.eps)
        moments = {name: getattr(self.optimizer, name)[start:stop] for name in ("exp_avg", "exp_avg_sq")}
        optimizer.load_state_dict({"step": self.optimizer.step_count, **moments})
        data = DataSplit(self.data.x_train[start:stop], self.data.x_val[start:stop])
        config = replace(self.config, seeds=self.config.seeds[start:stop], workers=1)
        return _Stack(config, model, optimizer, data, self.seeds[start:stop])

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] | None) -> EpochCurves | None:
        """Train one epoch; None, with the epoch undone, if should_stop said yes after a step."""
        # The starts of this epoch and the one before: rewind may go back that far.
        self._snapshots = {e: s for e, s in self._snapshots.items() if e == epoch - 1}
        self._snapshots[epoch] = (self.model.params.clone(), self.optimizer.state_dict())
        # A diverging member's inf and NaN are caught from its loss: NumPy's kernels need not warn.
        with np.errstate(all="ignore"):
            loss = _train_epoch(self.model, self.optimizer, self.batches, epoch, self.factors, should_stop)
        if loss is None:
            self.rewind(epoch)
            return None
        val_mse = self.model.mse(self.data.x_val, self.y_val)
        factor = float(self.factors[self.optimizer.step_count - 1])
        return EpochCurves(loss.tolist(), val_mse.tolist(), [lr * factor for lr in self.optimizer.lrs])

    def rewind(self, epoch: int) -> None:
        """Back to the state epoch `epoch` started from: the last or the one before it."""
        params, optimizer_state = self._snapshots[epoch]
        with torch.no_grad():
            self.model.params.copy_(params)
        self.optimizer.load_state_dict(optimizer_state)

    def polish(self, iterations: int, progress: Callable[[PolishProgress], None] | None, should_stop: Callable[[], bool] | None) -> PolishReport | None:
        """The LM polish; None, with the members as they were, if should_stop said yes."""
        return levenberg_marquardt(self.model, self.data.x_train, iterations=iterations, progress=progress, should_stop=should_stop)

    def finish(self) -> tuple[StackedMLP, StackedAdam, DataSplit]:
        return self.model, self.optimizer, self.data


class _StackWorker:
    """A share of a _Stack, in a worker process, stopping when the parent says so. It answers in
    NumPy arrays and lists: torch tensors would cross the pipe through shared memory."""

    def __init__(self, stack: _Stack, start: int, stop: int, should_stop: Callable[[], bool]):
        torch.set_num_threads(1)  # one process per core already
        self.stack, self.should_stop = stack.select(start, stop), should_stop

    def train_epoch(self, epoch: int) -> EpochCurves | None:
        return self.stack.train_epoch(epoch, self.should_stop)

    def rewind(self, epoch: int) -> None:
        self.stack.rewind(epoch)

    def polish(self, iterations: int, note: Callable[[PolishProgress], None] | None = None) -> dict | None:
        self._unpolished = self.stack.model.params.clone()
        report = self.stack.polish(iterations, note, self.should_stop)
        return None if report is None else {f.name: getattr(report, f.name).numpy() for f in fields(report)}

    def undo_polish(self) -> None:
        with torch.no_grad():
            self.stack.model.params.copy_(self._unpolished)

    def state(self) -> dict:
        optimizer = self.stack.optimizer
        tensors = {"params": self.stack.model.params, "exp_avg": optimizer.exp_avg, "exp_avg_sq": optimizer.exp_avg_sq}
        return {"step": optimizer.step_count, **{name: tensor.detach().cpu().numpy() for name, tensor in tensors.items()}}


class _WorkerStacks:
    """A _Stack split into contiguous groups of members, one per worker process, driven as one.

    The workers are forked after the whole stack is set up here, so each starts from its slice of
    the same data and state. Member k trains exactly as in one process (in float64 to rounding;
    float32 results depend a little on the size of the stack around a member, as kernels round
    differently).
    """

    def __init__(self, stack: _Stack):
        self.stack = stack
        self.bounds = _split(len(stack.config.seeds), stack.config.workers)
        self._running: int | None = None  # the epoch the workers were started on ahead
        self.workers = workers.Workers([partial(_StackWorker, stack, start, stop) for start, stop in self.bounds])

    def __enter__(self) -> _WorkerStacks:
        return self

    def __exit__(self, *exc_info) -> None:
        self.workers.close()

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] | None) -> EpochCurves | None:
        """As _Stack.train_epoch. The workers stop after their current step once should_stop says
        yes, and start the next epoch before this one's curves are returned: they need not idle
        while the caller looks at them (rewind undoes that epoch too)."""
        poll = self._stop_relay(should_stop)
        poll()
        if self._running != epoch:
            self.workers.start("train_epoch", epoch)
        parts = self.workers.results(poll=poll)
        self._running = None
        if any(part is None for part in parts):
            self.workers.call("rewind", epoch)  # some workers finished before the stop reached them
            return None
        if epoch + 1 < self.stack.config.epochs:
            self.workers.start("train_epoch", epoch + 1)
            self._running = epoch + 1
        return EpochCurves.join(parts)

    def _stop_relay(self, should_stop: Callable[[], bool] | None) -> Callable[[], None]:
        """A poll that passes should_stop's yes on to the workers (they read it after each step)."""

        def poll() -> None:
            if should_stop is not None and should_stop():
                self.workers.request_stop()

        return poll

    def rewind(self, epoch: int) -> None:
        if self._running is not None:
            self.workers.request_stop()  # the next epoch is undone too: cut it short
            self.workers.results()
            self._running = None
        self.workers.call("rewind", epoch)

    def polish(self, iterations: int, progress: Callable[[PolishProgress], None] | None, should_stop: Callable[[], bool] | None) -> PolishReport | None:
        def relay(worker: int, step: PolishProgress) -> None:
            progress(replace(step, member=step.member + self.bounds[worker][0]))

        poll = self._stop_relay(should_stop)
        poll()
        parts = self.workers.call("polish", iterations, poll=poll, on_note=relay if progress is not None else None)
        if any(part is None for part in parts):
            self.workers.call("undo_polish")  # some workers finished before the stop reached them
            return None
        return PolishReport(**{f.name: torch.cat([torch.from_numpy(part[f.name]) for part in parts]) for f in fields(PolishReport)})

    def finish(self) -> tuple[StackedMLP, StackedAdam, DataSplit]:
        """The whole stack in this process, as the workers left it."""
        states = self.workers.call("state")
        joined = {name: torch.from_numpy(np.concatenate([state[name] for state in states])) for name in ("params", "exp_avg", "exp_avg_sq")}
        with torch.no_grad():
            self.stack.model.params.copy_(joined.pop("params"))
        self.stack.optimizer.load_state_dict({"step": states[0]["step"], **joined})
        return self.stack.finish()


def _split(members: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of `parts` contiguous groups of members whose sizes differ by at most one."""
    edges = [round(members * part / parts) for part in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def new_stack(config: TrainConfig, lrs: Sequence[float] | None = None) -> tuple[StackedMLP, StackedAdam, DataSplit, torch.Tensor]:
    """A freshly initialised model, its optimizer (member k at rate lrs[k], default config.lr), the
    data and the seeds [K], as every fit starts."""
    dtype, device = DTYPES[config.dtype], config.device
    seeds = torch.tensor(config.seeds, dtype=torch.int64, device=device)
    data = sample_split(seeds, config.points, config.val_fraction, dtype=dtype, device=device)
    model = StackedMLP(parse_layers(config.layers), len(config.seeds), dtype=dtype, device=device)
    model.initialise(seeds)
    optimizer = StackedAdam(model, [config.lr] * len(config.seeds) if lrs is None else lrs, config.betas, config.eps)
    return model, optimizer, data, seeds


class EpochBatches:
    """The shuffled mini-batches of each epoch of one training set, every member its own order.

    The targets are computed once, and each epoch is gathered into buffers that the next epoch
    reuses: at K = 32 fresh [K, n] tensors every epoch cost twice as much as the gathering itself.
    """

    def __init__(self, x_train: torch.Tensor, seeds: torch.Tensor, batch_size: int):
        self.x_train, self.y_train, self.batch_size = x_train, runge(x_train), batch_size
        self.seeds = seeds.to(x_train.device)
        self._order = torch.empty(x_train.shape, dtype=torch.int64, device=x_train.device)
        self._x, self._y = torch.empty_like(x_train), torch.empty_like(x_train)

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) mini-batches [K, ≤batch_size] of epoch `epoch`: views that the next epoch overwrites."""
        rng.permutations(self.seeds, rng.STREAM_SHUFFLE, self.x_train.shape[1], counter=epoch, out=self._order)
        torch.gather(self.x_train, 1, self._order, out=self._x)
        torch.gather(self.y_train, 1, self._order, out=self._y)
        return zip(self._x.split(self.batch_size, dim=1), self._y.split(self.batch_size, dim=1), strict=True)


def epoch_batches(x_train: torch.Tensor, seeds: torch.Tensor, epoch: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The mini-batches of one epoch (as EpochBatches, in buffers of their own)."""
    return EpochBatches(x_train, seeds, batch_size)(epoch)


def train_step(model: StackedMLP, optimizer: StackedAdam, x: torch.Tensor, y: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """One Adam step on the mini-batch MSE of every member, at factor × each member's rate;
    returns the losses [K]."""
    loss = model.mse_backward(x, y)
    optimizer.step(factor)
    return loss


def _train_epoch(model, optimizer, batches: EpochBatches, epoch, factors, should_stop=None) -> torch.Tensor | None:
    """One shuffled pass in mini-batches; returns the mean mini-batch loss per member, [K], or None
    when should_stop said yes after a step (a Python call per step: no device sync)."""
    n = batches.x_train.shape[1]
    total = torch.zeros(model.members, dtype=model.dtype, device=model.device)
    for x, y in batches(epoch):
        loss = train_step(model, optimizer, x, y, float(factors[optimizer.step_count]))
        total.add_(loss, alpha=x.shape[1] / n)
        if should_stop is not None and should_stop():
            return None
    return total


def final_metrics(model: StackedMLP, config: TrainConfig, data, lrs: list[float]) -> list[MemberMetrics]:
    """Full-set MSEs per member, and the test grid's MSE and max |error| (as `eval` computes them)."""
    test = grid_errors(model, config.test_points)
    train_mse = model.mse(data.x_train, runge(data.x_train)).tolist()
    val_mse = model.mse(data.x_val, runge(data.x_val)).tolist()
    return [
        MemberMetrics(seed, lr, tr, va, te, mx)
        for seed, lr, tr, va, te, mx in zip(config.seeds, lrs, train_mse, val_mse, test.mse.tolist(), test.max_abs_error.tolist(), strict=True)
    ]
