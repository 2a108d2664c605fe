"""fit(config) → TrainResult: the epoch loop over a stack, divergence, Ctrl-C, resume, the polish.

One loop serves `train`, `train --seeds` and `lr-find --verify`: each is a stack of members
(stack.py), member k with its own seed and rate. From fit to the kernels: fit → Stack.train_epoch
→ StackedMLP.mse_backward (kernels.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from rungefit import targets
from rungefit.config import DEVICES, TrainConfig, parameter_count, require
from rungefit.errors import RungefitError, UsageError, suggest
from rungefit.net.model import StackedMLP
from rungefit.net.optim import StackedAdam
from rungefit.targets import Target
from rungefit.training.best import Best, training_done
from rungefit.training.best import keeps_best as keeps_best_weights
from rungefit.training.metrics import fit_verdict, float64_mse, float64_truth, grid_errors, members_learned
from rungefit.training.polish import PolishProgress, PolishReport
from rungefit.training.stack import EpochCurves, open_stack
from rungefit.training.workers import worker_count

# Hidden activations per step (members × batch × hidden units) from which CPU training uses
# torch's intra-op threads; below it one thread is faster (see intra_op_threads).
PARALLEL_MIN_ACTIVATIONS = 1 << 22


class DivergedError(RungefitError):
    """Training produced a non-finite loss; carries the last finite state."""

    def __init__(self, message: str, result: TrainResult):
        super().__init__(message)
        self.result = result


def resolve_device(device: str) -> str:
    """Turn auto|cpu|cuda into a usable device, or raise RungefitError if CUDA is missing."""
    if device not in DEVICES:
        raise UsageError(suggest(f"device must be one of {', '.join(DEVICES)}, got {device!r}", device, DEVICES))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RungefitError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return device


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
    best: Best | None = None  # each member's best-validation weights so far (None: from here on)

    def training_done(self, config: TrainConfig) -> bool:
        """Whether only the polish is left (every epoch done, or every member stopped)."""
        return training_done(config, self.epochs_run, self.best)

    def check(self, config: TrainConfig) -> None:
        """Raise ValueError unless this state can continue a run of config."""
        members, size = len(config.seeds), parameter_count(config.hidden_layers)
        moments = [self.optimizer_state["exp_avg"], self.optimizer_state["exp_avg_sq"]]
        require([
            # All epochs done is a run stopped during its polish, which the resume runs again.
            (0 <= self.epochs_run <= config.epochs and (not self.training_done(config) or config.polish != "none"), f"{self.epochs_run} of {config.epochs} epochs done, none left to train"),
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
    val_var: float  # Var(y) of the validation targets: the MSE of predicting their mean


@dataclass
class TrainResult:
    config: TrainConfig
    target: Target
    model: StackedMLP
    optimizer: StackedAdam
    history: History
    members: list[MemberMetrics]
    epochs_run: int
    steps: int
    wall_time_s: float
    status: str = "complete"  # complete | diverged | interrupted
    polish: PolishReport | None = None  # the LM refinement, when config.polish == "lm"
    polish_time_s: float = 0.0  # the part of wall_time_s the polish took
    last_state: dict | None = None  # the last epoch's weights, where a resume goes on, when `model` holds others
    best: Best | None = None  # each member's best-validation weights, epoch and validation MSE

    @property
    def keeps_best(self) -> bool:
        """`model` holds each member's best-validation weights (--keep best, or auto on data)."""
        return keeps_best_weights(self.config, self.target)

    @property
    def training_done(self) -> bool:
        """Whether the Adam epochs are over: all done, or every member stopped (--patience)."""
        return training_done(self.config, self.epochs_run, self.best)

    def stopped(self) -> dict | None:
        """What summary.json says of --patience: the epoch after which each member stopped."""
        if self.config.patience == 0:
            return None
        return {
            "patience": self.config.patience,
            "epochs": self.best.stop_epochs(self.epochs_run, self.config.patience),
            "why": (
                f"a member stops once its validation MSE has not improved for {self.config.patience} epochs and for half the "
                "epochs to its best (null: it trained to the last epoch); the run ends when every member has"
            ),
        }

    def state(self) -> TrainState:
        """The state after the last completed epoch, from which fit(resume=…) continues; a
        ValueError for a complete run (its model may be polished: a resume would polish it twice)."""
        if self.status == "complete":
            raise ValueError("a complete run has nothing to resume")
        last = self.last_state if self.last_state is not None else self.model.state_dict()
        return TrainState(last, self.optimizer.state_dict(), self.epochs_run, self.history, self.wall_time_s, self.best)

    def kept(self) -> dict | None:
        """What summary.json says of the kept weights, for --keep best: which epoch each member's
        weights are from, and why."""
        if not self.keeps_best:
            return None
        return {
            "weights": "best validation",
            "epochs": self.best.epoch.tolist(),
            "why": "each member keeps the weights of its epoch of lowest validation MSE: later epochs fit more of the noise (--keep last keeps the last epoch)",
        }

    def summary(self) -> dict:
        """JSON-ready final figures: per member and their median / min / max."""
        fields = ("train_mse", "val_mse", "test_mse", "test_max_abs_error")
        stats = {}
        for name in fields:
            values = np.array([getattr(m, name) for m in self.members])
            stats[name] = {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
        n_val = self.config.n_val
        learned = members_learned([m.val_mse for m in self.members], [m.val_var for m in self.members], n_val, not self.target.has_function)
        return {
            "status": self.status,
            "fit": fit_verdict(learned),
            "members": [{**asdict(m), "learned": bool(ok)} for m, ok in zip(self.members, learned, strict=True)],
            "stats": stats,
            "epochs": self.epochs_run,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "workers": self.config.workers,
            "polish": self._polish_summary(),
            "target": {"target": self.target.name, "domain": list(self.config.domain)},
            **({"kept": kept} if (kept := self.kept()) else {}),
            **({"stopped": stopped} if (stopped := self.stopped()) else {}),
            **({} if self.target.has_function else {"yardstick": self._data_yardstick(n_val)}),
        }

    def _data_yardstick(self, n_val: int) -> dict:
        """How a data run's members are judged, with the evidence a message about them needs."""
        return {
            "test": "validation MSE significantly below Var(y) of the validation points (one-sided, 1 %)",
            "validation_points": n_val,
            "x_range": [float(self.target.points.x.min()), float(self.target.points.x.max())],
            "y_range": [float(self.target.points.y.min()), float(self.target.points.y.max())],
        }

    def _polish_summary(self) -> dict | None:
        if self.polish is None:
            return None
        return {
            "method": self.config.polish,
            "train_mse_before": self.polish.initial_mse.tolist(),
            "train_mse_after": [m.train_mse for m in self.members],  # the saved network's, as the table shows it
            "iterations": self.polish.iterations.tolist(),
            "accepted_steps": self.polish.accepted.tolist(),
            **({"kept": self.polish.kept.tolist()} if self.keeps_best else {}),
        }


@dataclass(frozen=True)
class EpochReport:
    """What the progress display gets after each epoch (plain floats, median over members)."""

    epoch: int
    epochs: int
    train_mse: float
    val_mse: float
    lr: float
    stopped: int = 0  # members that have stopped (--patience)
    members: int = 1

    @classmethod
    def of(cls, epoch: int, epochs: int, curves: EpochCurves) -> EpochReport:
        training = [lr for lr, stopped in zip(curves.lr, curves.stopped, strict=True) if not stopped]  # a stopped member's 0 is no rate
        medians = (float(np.median(c)) for c in (curves.train_mse, curves.val_mse, training or curves.lr))
        return cls(epoch, epochs, *medians, stopped=sum(curves.stopped), members=len(curves.stopped))


def fit(
    config: TrainConfig,
    target: Target | None = None,
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

    `target` is config's target as targets.resolve made it; None resolves it here (a caller that
    has it already passes it, so that a command resolves its target once).
    """
    config.validate(member_lrs)
    if target is None:
        target = targets.resolve(config)
    keeps_best = keeps_best_weights(config, target)
    if resume is not None:
        resume.check(config)
    started = time.perf_counter()
    lrs = [float(lr) for lr in member_lrs] if member_lrs is not None else [config.lr] * len(config.seeds)
    config = replace(config, workers=worker_count(config))
    history = copy.deepcopy(resume.history) if resume is not None else History()
    status, polish, polish_time = "complete", None, 0.0
    done = resume is not None and resume.training_done(config)
    with intra_op_threads(config), open_stack(config, target, lrs, resume) as stack:
        for epoch in range(len(history.val_mse), config.epochs):
            if done:  # every member has stopped (--patience)
                break
            curves = stack.train_epoch(epoch, should_stop)
            if curves is None:
                status = "interrupted"
                break
            if stop_on_divergence and not np.isfinite(curves.train_mse).all():
                stack.rewind(epoch)
                status = "diverged"
                break
            curves = curves.in_data_units(target.maps)
            history.append(curves)
            done = all(curves.stopped)
            if on_epoch is not None:
                on_epoch(EpochReport.of(epoch + 1, config.epochs, curves))
        if status == "complete" and config.polish == "lm":
            if keeps_best:  # the polish refines the kept weights
                stack.use_best()
            polish_started = time.perf_counter()
            polish = stack.polish(config.polish_iterations, on_polish, should_stop)
            polish_time = time.perf_counter() - polish_started
            status = "complete" if polish is not None else "interrupted"
            polish = polish and polish.in_data_units(target.maps)
        model, optimizer, data, best = stack.finish()
        last_state = None
        if keeps_best and polish is None:
            last_state = model.state_dict()  # the stack keeps the last weights; the result's model is a copy
            model = _with_best(model, best)
        # Still on the training's threads: the final metrics are small passes too.
        result = TrainResult(
            config=config,
            target=target,
            model=model,
            optimizer=optimizer,
            history=history,
            members=final_metrics(model, config, target, data, lrs),
            epochs_run=len(history.val_mse),
            steps=optimizer.step_count,
            wall_time_s=(resume.wall_time_s if resume is not None else 0.0) + time.perf_counter() - started,
            status=status,
            polish=polish,
            polish_time_s=polish_time,
            last_state=last_state,
            best=best,
        )
    if status == "diverged":
        raise DivergedError(
            f"the loss became non-finite in epoch {result.epochs_run + 1} (lr {config.lr:g}); "
            "try a lower --lr, or run `rungefit lr-find` to choose one",
            result,
        )
    return result


def _with_best(model: StackedMLP, best: Best) -> StackedMLP:
    """A copy of the stack in which every member with a best epoch has its best weights."""
    kept = model.to()
    best.apply_to(kept.params)
    return kept


@contextmanager
def intra_op_threads(config: TrainConfig) -> Iterator[None]:
    """Train a small stack on one CPU thread, then restore torch's setting.

    A step on a small stack is a string of tiny kernels; a second intra-op thread adds only
    synchronisation, and when another process holds the other core it waits for the scheduler
    (docs/speed.md).
    """
    previous = torch.get_num_threads()
    hidden_units = sum(layer.width for layer in config.hidden_layers)
    if config.device == "cpu" and len(config.seeds) * config.batch_size * hidden_units < PARALLEL_MIN_ACTIVATIONS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def final_metrics(model: StackedMLP, config: TrainConfig, target: Target, data, lrs: list[float]) -> list[MemberMetrics]:
    """Full-set MSEs per member, and the test set's MSE and max |error| (as `eval` computes them),
    all in float64 from the network's outputs; and Var(y) of each validation set."""
    test = grid_errors(model, target, config.test_points)
    train_mse = float64_mse(model, target, data.x_train, data.y_train).tolist()
    val_mse = float64_mse(model, target, data.x_val, data.y_val).tolist()
    val_var = float64_truth(target, data.x_val, data.y_val).var(dim=1, correction=0).tolist()
    return [
        MemberMetrics(seed, lr, tr, va, te, mx, var)
        for seed, lr, tr, va, te, mx, var in zip(config.seeds, lrs, train_mse, val_mse, test.mse.tolist(), test.max_abs_error.tolist(), val_var, strict=True)
    ]
