"""Adam on a stack's flat parameter buffer, member k at its own rate, and the learning-rate schedules.

StackedAdam is torch.optim.Adam (no weight decay) on the [K, P] buffer, with one parameter group
per run of consecutive members that share a rate. Its fast path calls the kernel behind
torch.optim.Adam(fused=True), torch._fused_adam_, directly, skipping the optimizer's per-step
bookkeeping, which costs as much as the update itself for these small networks. That op is
private, so the fast path is taken only after fused_adam_works() has run it once against Adam's
documented update; otherwise every step goes through torch.optim.Adam itself.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from rungefit.config import SCHEDULES
from rungefit.errors import UsageError, suggest


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
    raise UsageError(suggest(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}", schedule, SCHEDULES))


@functools.cache
def fused_adam_works(dtype: torch.dtype = torch.float32, device: str = "cpu") -> bool:
    """Whether torch._fused_adam_ exists and gives Adam's update as torch.optim.Adam documents it,
    checked once per process, dtype and device. (Against the documented formula, not an Adam
    instance: constructing torch.optim.Adam imports torch._dynamo, a second of every command.
    tests/test_optim.py checks the fast path against torch.optim.Adam itself.)"""
    if getattr(torch, "_fused_adam_", None) is None:
        return False
    generator = torch.Generator().manual_seed(0)
    start, grad = (torch.randn(2, 5, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device) for _ in range(2))
    lr, betas, eps = 0.1, (0.9, 0.999), 1e-8
    try:
        mine = ([start.clone()], [grad], [torch.zeros_like(start)], [torch.zeros_like(start)])
        step = torch.zeros((), dtype=torch.float32, device=device)
        for count in (1, 2):
            step.fill_(count)
            _fused_update(mine, step, lr, betas, eps)
        # Equal to rounding: the two order a few operations differently.
        return torch.allclose(mine[0][0], _documented_adam(start, grad, 2, lr, betas, eps), rtol=0, atol=100 * torch.finfo(dtype).eps)
    except (RuntimeError, TypeError, AttributeError, NotImplementedError):
        return False


def _documented_adam(start: torch.Tensor, grad: torch.Tensor, steps: int, lr: float, betas, eps: float) -> torch.Tensor:
    """`steps` Adam updates of `start` with the same gradient, by torch.optim.Adam's documented
    algorithm (no weight decay, no amsgrad, bias-corrected moments)."""
    param, avg, avg_sq = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t in range(1, steps + 1):
        avg = betas[0] * avg + (1 - betas[0]) * grad
        avg_sq = betas[1] * avg_sq + (1 - betas[1]) * grad * grad
        param = param - lr * (avg / (1 - betas[0] ** t)) / ((avg_sq / (1 - betas[1] ** t)).sqrt() + eps)
    return param


def _fused_update(tensors: tuple[list, list, list, list], step: torch.Tensor, lr: float, betas, eps: float) -> None:
    """The fast path: torch._fused_adam_ on (params, grads, exp_avg, exp_avg_sq) lists, as
    torch.optim.Adam(fused=True) calls it; the step count is a float32 tensor, as torch.optim keeps it."""
    torch._fused_adam_(
        *tensors, [], [step], lr=lr, beta1=betas[0], beta2=betas[1], weight_decay=0.0, eps=eps, amsgrad=False, maximize=False,
    )


class StackedAdam:
    """Adam (as torch.optim.Adam, no weight decay) on the flat [K, P] buffer, member k at rate lrs[k].

    The moments live in [K, P] buffers of their own, so that a stack's optimizer state can be
    saved, split among workers and joined again like its parameters.
    """

    def __init__(self, model, lrs: Sequence[float], betas=(0.9, 0.999), eps=1e-8, *, fast: bool | None = None):
        self.model = model
        self.betas, self.eps = tuple(betas), eps
        self.step_count = 0
        self.exp_avg = torch.zeros_like(model.params)
        self.exp_avg_sq = torch.zeros_like(model.params)
        self.fast = fused_adam_works(model.dtype, model.device.type) if fast is None else fast
        self.lrs = lrs

    @property
    def lrs(self) -> list[float]:
        """The members' rates, [K]."""
        return [lr for start, stop, lr in self._runs for _ in range(start, stop)]

    @lrs.setter
    def lrs(self, lrs: Sequence[float]) -> None:
        if len(lrs) != self.model.members:
            raise ValueError(f"{len(lrs)} learning rates for {self.model.members} members")
        self._runs = _runs_of_equal(lrs)
        self._build()

    def _build(self) -> None:
        """One update per run of equal rates, over views of the shared buffers."""
        views = [
            [buffer[start:stop].view(-1) for buffer in (self.model.params, self.model.grads, self.exp_avg, self.exp_avg_sq)]
            for start, stop, _ in self._runs
        ]
        if self.fast:
            self._step = torch.zeros((), dtype=torch.float32, device=self.model.device)
            self._fused = [([p], [g], [m], [v]) for p, g, m, v in views]
            return
        groups = [{"params": [p], "lr": lr} for (p, g, _, _), (_, _, lr) in zip(views, self._runs, strict=True)]
        self._public = torch.optim.Adam(groups, betas=self.betas, eps=self.eps)
        for p, g, m, v in views:
            p.grad = g  # the gradient buffer the kernels write
            # Adam's documented per-parameter state, pointed at the shared moment buffers.
            self._public.state[p] = {"step": torch.tensor(float(self.step_count)), "exp_avg": m, "exp_avg_sq": v}

    def step(self, factor: float = 1.0) -> None:
        """One update of every member at factor × its rate; gradients are read from model.grads."""
        self.step_count += 1
        if self.fast:
            self._step.fill_(self.step_count)
            for tensors, (_, _, lr) in zip(self._fused, self._runs, strict=True):
                _fused_update(tensors, self._step, lr * factor, self.betas, self.eps)
            return
        for group, (_, _, lr) in zip(self._public.param_groups, self._runs, strict=True):
            group["lr"] = lr * factor
        self._public.step()

    def state_dict(self) -> dict:
        return {"step": self.step_count, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self._build()


def _runs_of_equal(values: Sequence[float]) -> list[tuple[int, int, float]]:
    """(start, stop, value) of each run of equal consecutive values."""
    runs: list[tuple[int, int, float]] = []
    for index, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1] = (runs[-1][0], index + 1, value)
        else:
            runs.append((index, index + 1, float(value)))
    return runs
