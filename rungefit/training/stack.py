"""A stack of members trained together: in this process (Stack), or split among forked worker
processes and driven as one (ForkedStack, each worker holding a StackShare).

Every member of the stack has its own seed (initialisation, training points, shuffling) and its
own learning rate; the members never interact, because the loss is a sum of per-member losses and
Adam acts elementwise. So member k of a stacked run follows the trajectory of a single run with
the same seed and rate, and a stack can be cut into contiguous shares, one per worker process
(workers.py), that train independently between the parent's epoch barriers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import partial

import numpy as np
import torch

from rungefit import rng
from rungefit.config import TrainConfig
from rungefit.net.model import DTYPES, StackedMLP
from rungefit.net.optim import StackedAdam, lr_factors
from rungefit.targets import DataSplit, Target
from rungefit.training import workers
from rungefit.training.best import Best, keeps_best
from rungefit.training.memory import check_fits
from rungefit.training.metrics import standard_truth
from rungefit.training.polish import PolishProgress, PolishReport, levenberg_marquardt


@dataclass(frozen=True)
class EpochCurves:
    """One epoch of every member of a stack, [K] each: plain lists, which cross a pipe as they are."""

    train_mse: list[float]
    val_mse: list[float]
    lr: list[float]
    stopped: list[bool]  # the member trains no more (--patience): the run ends when all have

    @classmethod
    def join(cls, parts: Sequence[EpochCurves]) -> EpochCurves:
        """The curves of consecutive groups of members as those of the whole stack."""
        return cls(*([value for part in parts for value in getattr(part, f.name)] for f in fields(cls)))

    def in_data_units(self, maps) -> EpochCurves:
        """The losses, which the stack computes in standard coordinates, in the target's units
        (times y_scale²: exactly themselves under the identity)."""
        return EpochCurves([maps.mse_out(v) for v in self.train_mse], [maps.mse_out(v) for v in self.val_mse], self.lr, self.stopped)



def new_stack(config: TrainConfig, target: Target, lrs: Sequence[float] | None = None) -> tuple[StackedMLP, StackedAdam, DataSplit, torch.Tensor]:
    """A freshly initialised model, its optimizer (member k at rate lrs[k], default config.lr), the
    data drawn from the target and the seeds [K], as every fit starts."""
    check_fits(config)
    dtype, device = DTYPES[config.dtype], config.device
    seeds = torch.tensor(config.seeds, dtype=torch.int64, device=device)
    data = target.split(seeds, config.points, config.val_fraction, dtype=dtype, device=device)
    model = StackedMLP(config.hidden_layers, len(config.seeds), dtype=dtype, device=device)
    model.initialise(seeds)
    optimizer = StackedAdam(model, [config.lr] * len(config.seeds) if lrs is None else lrs, config.betas, config.eps)
    return model, optimizer, data, seeds


class EpochBatches:
    """The shuffled mini-batches of each epoch of one training set, every member its own order.

    The targets come computed (DataSplit), and each epoch is gathered into buffers that the next
    epoch reuses: fresh [K, n] tensors every epoch would cost more than the gathering itself.
    """

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor, seeds: torch.Tensor, batch_size: int):
        self.x_train, self.y_train, self.batch_size = x_train, y_train, batch_size
        self.seeds = seeds.to(x_train.device)
        self._order = torch.empty(x_train.shape, dtype=torch.int64, device=x_train.device)
        self._x, self._y = torch.empty_like(x_train), torch.empty_like(x_train)

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) mini-batches [K, ≤batch_size] of epoch `epoch`: views that the next epoch overwrites."""
        rng.permutations(self.seeds, rng.STREAM_SHUFFLE, self.x_train.shape[1], counter=epoch, out=self._order)
        torch.gather(self.x_train, 1, self._order, out=self._x)
        torch.gather(self.y_train, 1, self._order, out=self._y)
        return zip(self._x.split(self.batch_size, dim=1), self._y.split(self.batch_size, dim=1), strict=True)


@contextmanager
def open_stack(config: TrainConfig, target: Target, lrs: list[float], resume=None) -> Iterator[Stack | ForkedStack]:
    """The members of config as one stack in this process, or split over config.workers processes."""
    stack = Stack.start(config, target, lrs, resume)
    if config.workers == 1:
        yield stack
        return
    with ForkedStack(stack) as split:
        yield split



class Stack:
    """Members trained together in this process, an epoch at a time: what fit drives, here or, as
    a share of a ForkedStack, in a worker process."""

    def __init__(self, config: TrainConfig, target: Target, model: StackedMLP, optimizer: StackedAdam, data: DataSplit, seeds: torch.Tensor, best: Best | None = None):
        self.config, self.target, self.model, self.optimizer, self.data, self.seeds = config, target, model, optimizer, data, seeds
        self.best = best if best is not None else Best.start(model.params)
        self.rates = optimizer.lrs  # each member's own; one that has stopped trains at 0
        self.batches = EpochBatches(data.x_train, data.y_train, seeds, config.batch_size)
        self.factors = lr_factors(config.schedule, config.total_steps)
        self._snapshots: dict[int, tuple[torch.Tensor, dict, Best]] = {}  # epoch → the state it started from

    @classmethod
    def start(cls, config: TrainConfig, target: Target, lrs: list[float], resume=None) -> Stack:
        """A fresh stack, or one continuing from `resume` (a train.TrainState)."""
        model, optimizer, data, seeds = new_stack(config, target, lrs)
        best = None
        if resume is not None:
            model.load_state_dict(resume.model_state)
            optimizer.load_state_dict(resume.optimizer_state)
            best = None if resume.best is None else resume.best.clone()
        return cls(config, target, model, optimizer, data, seeds, best)

    def select(self, start: int, stop: int) -> Stack:
        """Members start…stop-1 as a stack of their own (a copy), in the state they are in."""
        model = self.model.select(list(range(start, stop)))
        optimizer = StackedAdam(model, self.rates[start:stop], self.optimizer.betas, self.optimizer.eps)
        moments = {name: getattr(self.optimizer, name)[start:stop] for name in ("exp_avg", "exp_avg_sq")}
        optimizer.load_state_dict({"step": self.optimizer.step_count, **moments})
        data = self.data.select(start, stop)
        config = replace(self.config, seeds=self.config.seeds[start:stop], workers=1)
        return Stack(config, self.target, model, optimizer, data, self.seeds[start:stop], self.best.select(start, stop))

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] | None) -> EpochCurves | None:
        """Train one shuffled pass in mini-batches: the curves (the loss is the mean mini-batch
        loss), or None, with the epoch undone, if should_stop said yes after a step."""
        # The starts of this epoch and the one before: rewind may go back that far.
        self._snapshots = {e: s for e, s in self._snapshots.items() if e == epoch - 1}
        self._snapshots[epoch] = (self.model.params.clone(), self.optimizer.state_dict(), self.best.clone())
        self._hold_stopped(epoch)
        # A diverging member's inf and NaN are caught from its loss: NumPy's kernels need not warn.
        n = self.data.x_train.shape[1]
        loss = torch.zeros(self.model.members, dtype=self.model.dtype, device=self.model.device)
        with np.errstate(all="ignore"):
            for x, y in self.batches(epoch):
                loss.add_(self.model.mse_backward(x, y), alpha=x.shape[1] / n)
                self.optimizer.step(float(self.factors[self.optimizer.step_count]))
                # A Python call per step, no device sync: stop within one step of the request.
                if should_stop is not None and should_stop():
                    self.rewind(epoch)
                    return None
        val_mse = self.model.mse(self.data.x_val, self.data.y_val)
        self.best.update(epoch + 1, self.model.params, val_mse)
        factor = float(self.factors[self.optimizer.step_count - 1])
        stopped = self.best.stopped(epoch + 1, self.config.patience)
        return EpochCurves(loss.tolist(), val_mse.tolist(), [lr * factor for lr in self.optimizer.lrs], stopped.tolist())

    def _hold_stopped(self, epochs_done: int) -> None:
        """Members that have stopped (--patience) train at rate 0: Adam then leaves their weights
        bit for bit as they are, those of a run of the member alone, which would have ended there."""
        if self.config.patience == 0:
            return
        stopped = self.best.stopped(epochs_done, self.config.patience).tolist()
        rates = [0.0 if stop else rate for rate, stop in zip(self.rates, stopped, strict=True)]
        if rates != self.optimizer.lrs:
            self.optimizer.lrs = rates

    def rewind(self, epoch: int) -> None:
        """Back to the state epoch `epoch` started from: the last or the one before it."""
        params, optimizer_state, best = self._snapshots[epoch]
        with torch.no_grad():
            self.model.params.copy_(params)
        self.optimizer.load_state_dict(optimizer_state)
        self.best = best.clone()

    def polish(self, iterations: int, progress: Callable[[PolishProgress], None] | None, should_stop: Callable[[], bool] | None) -> PolishReport | None:
        """The LM polish; None, with the members as they were, if should_stop said yes. A run that
        keeps its best-validation weights keeps the polish only for members whose validation MSE
        it lowers: the polish fits the training points, noise and all."""
        y_train = standard_truth(self.target, self.data.x_train, self.data.y_train)
        validated = keeps_best(self.config, self.target)
        if validated:
            unpolished = self.model.params.clone()
            val_before = self.model.mse(self.data.x_val, self.data.y_val).double()
        report = levenberg_marquardt(self.model, self.data.x_train, y_train, iterations=iterations, progress=progress, should_stop=should_stop)
        if report is None or not validated:
            return report
        improved = (self.model.mse(self.data.x_val, self.data.y_val).double() < val_before).cpu()
        worse = ~improved.to(self.model.device)
        with torch.no_grad():
            self.model.params[worse] = unpolished[worse]
        return replace(report, kept=improved)

    def use_best(self) -> None:
        """Every member with a best epoch takes its best weights (before a polish that should start there)."""
        self.best.apply_to(self.model.params)

    def finish(self) -> tuple[StackedMLP, StackedAdam, DataSplit, Best]:
        return self.model, self.optimizer, self.data, self.best


class StackShare:
    """Members start…stop-1 of a Stack, in a worker process, stopping when the parent says so. It
    answers in NumPy arrays and lists: torch tensors would cross the pipe through shared memory."""

    def __init__(self, stack: Stack, start: int, stop: int, should_stop: Callable[[], bool]):
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

    def use_best(self) -> None:
        self.stack.use_best()

    def state(self) -> dict:
        optimizer = self.stack.optimizer
        tensors = {"params": self.stack.model.params, "exp_avg": optimizer.exp_avg, "exp_avg_sq": optimizer.exp_avg_sq}
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in tensors.items()}
        return {"step": optimizer.step_count, **arrays, "best": self.stack.best.as_arrays()}


class ForkedStack:
    """A Stack split into contiguous shares of members, one per worker process, driven as one.

    The workers are forked after the whole stack is set up here, so each starts from its slice of
    the same data and state. Member k trains exactly as in one process (in float64 to rounding;
    float32 results depend a little on the size of the stack around a member, as kernels round
    differently).
    """

    def __init__(self, stack: Stack):
        self.stack = stack
        self.bounds = _split(len(stack.config.seeds), stack.config.workers)
        self._running: int | None = None  # the epoch the workers were started on ahead
        self.workers = workers.Workers([partial(StackShare, stack, start, stop) for start, stop in self.bounds])

    def __enter__(self) -> ForkedStack:
        return self

    def __exit__(self, *exc_info) -> None:
        self.workers.close()

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] | None) -> EpochCurves | None:
        """As Stack.train_epoch. The workers stop after their current step once should_stop says
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
        curves = EpochCurves.join(parts)
        if epoch + 1 < self.stack.config.epochs and not all(curves.stopped):  # else fit ends here
            self.workers.start("train_epoch", epoch + 1)
            self._running = epoch + 1
        return curves

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

    def use_best(self) -> None:
        self.workers.call("use_best")

    def finish(self) -> tuple[StackedMLP, StackedAdam, DataSplit, Best]:
        """The whole stack in this process, as the workers left it."""
        states = self.workers.call("state")
        joined = {name: torch.from_numpy(np.concatenate([state[name] for state in states])) for name in ("params", "exp_avg", "exp_avg_sq")}
        with torch.no_grad():
            self.stack.model.params.copy_(joined.pop("params"))
        self.stack.optimizer.load_state_dict({"step": states[0]["step"], **joined})
        self.stack.best = Best.join([state["best"] for state in states], self.stack.model.params)
        return self.stack.finish()


def _split(members: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of `parts` contiguous groups of members whose sizes differ by at most one."""
    edges = [round(members * part / parts) for part in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))
