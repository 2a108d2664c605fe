"""Levenberg-Marquardt polish: a damped Gauss-Newton refinement of a trained StackedMLP.

After Adam the fit sits in a long, very ill-conditioned valley: the loss is a sum of squares of
n residuals r_i(p) = f_p(x_i) - y_i in only P = 691 parameters (the default network), and
first-order methods (Adam, even L-BFGS) crawl along it. Levenberg-Marquardt uses the least-squares
structure directly. With J = ∂r/∂p [n, P] it solves, per step,

    (JᵀJ + λ·s·I) δ = -Jᵀr,        s = mean(diag JᵀJ)

and accepts p + δ only if the training MSE falls; λ shrinks after a success (towards Gauss-Newton)
and grows after a failure (towards a short gradient step), by Nielsen's rule. JᵀJ is only [P, P],
so a step costs one Jacobian pass over the points (2·n·P² flops for JᵀJ) and a Cholesky
factorisation of a P × P matrix, all in float64: the ill-conditioning is exactly what float32
cannot resolve.

Members are polished one after another, each with its own λ, stopping rule and float64 copy of
its parameters, so member k's result depends only on member k's parameters and training points
(not on the stack around it), and every operation is deterministic on the CPU.

Usage:

    from rungefit.training.polish import levenberg_marquardt
    report = levenberg_marquardt(result.model, data.x_train, y_train)  # model updated in place
    report.initial_mse, report.final_mse                              # [K] each, training MSE
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from rungefit.net.model import StackedMLP

# Points per Jacobian chunk: bounds the float64 Jacobian held at once to CHUNK × P numbers
# (about 6 MB for the default network) however many training points there are.
CHUNK = 1024
# λ never falls below / rises above these (relative to the scale s); reaching MAX_DAMPING means
# that even a tiny gradient-like step no longer lowers the loss: the member has converged.
MIN_DAMPING, MAX_DAMPING = 1e-12, 1e8


@dataclass(frozen=True)
class PolishProgress:
    """What the progress callback receives after every LM iteration of a member."""

    member: int  # index in the stack
    iteration: int  # 1-based, accepted and rejected steps alike
    iterations: int  # the cap
    mse: float  # training MSE after this iteration (the best so far)
    damping: float  # λ for the next iteration
    accepted: bool  # whether this iteration's step was taken


@dataclass(frozen=True)
class PolishReport:
    initial_mse: torch.Tensor  # [K] training MSE before, float64
    final_mse: torch.Tensor  # [K] training MSE after, float64 (evaluated in float64)
    iterations: torch.Tensor  # [K] iterations run (int64)
    accepted: torch.Tensor  # [K] steps taken (int64)
    curves: torch.Tensor  # [K, iterations + 1] training MSE before and after each iteration (the best so far); NaN once a member stopped
    kept: torch.Tensor  # [K] bool: the member keeps its polished weights (with --keep best, only where validation improved)

    def in_data_units(self, maps) -> PolishReport:
        """The MSEs, which the polish computes in standard coordinates, in the target's units."""
        out = maps.mse_out
        return replace(self, initial_mse=out(self.initial_mse), final_mse=out(self.final_mse), curves=out(self.curves))


def levenberg_marquardt(
    model: StackedMLP,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    iterations: int = 30,
    damping: float = 1e-3,
    rtol: float = 1e-6,
    patience: int = 5,
    progress: Callable[[PolishProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PolishReport | None:
    """Polish every member of `model` on its training points x_train [K, n] and their targets
    y_train [K, n] (float64: the target's own values, not rounded to a float32 run's dtype);
    update the model in place.

    iterations: the most LM iterations per member (each solves one P × P system; docs/accuracy.md
        shows what more iterations buy).
    damping: the starting λ.
    rtol, patience: stop a member early once `patience` iterations in a row lowered its MSE by
        less than a factor (1 - rtol), or once λ reaches MAX_DAMPING.
    progress: called with a PolishProgress after each iteration of each member.
    should_stop: asked after each iteration; once it says yes, the polish stops there and returns
        None, with every member as it was before (a polish is quick to run again, where half of
        one would be a result no uninterrupted run has).

    The work is in float64 whatever the model's dtype; the result is written back in its dtype.
    """
    if x_train.dim() != 2 or x_train.shape[0] != model.members or y_train.shape != x_train.shape:
        raise ValueError(f"x_train and y_train must be [K={model.members}, n], got {tuple(x_train.shape)} and {tuple(y_train.shape)}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    initial, final = [], []
    counts, taken, curves = [], [], []
    unpolished = model.params.detach().clone()
    for k in range(model.members):
        params = model.params[k].detach().to(torch.float64)
        if not bool(torch.isfinite(params).all()):
            # A diverged member: nothing to polish; it is left as it is.
            initial.append(float("nan"))
            final.append(float("nan"))
            counts.append(0)
            taken.append(0)
            curves.append([])
            continue
        x = x_train[k].detach().to(device=params.device, dtype=torch.float64)
        y = y_train[k].detach().to(device=params.device, dtype=torch.float64)
        member = _MemberLM(model, params, x, y, damping)
        initial.append(member.mse)
        curves.append([member.mse])
        best, stalled, run = member.mse, 0, 0
        for iteration in range(1, iterations + 1):
            run = iteration
            accepted = member.step()
            curves[-1].append(member.mse)
            if progress is not None:
                progress(PolishProgress(k, iteration, iterations, member.mse, member.damping, accepted))
            if should_stop is not None and should_stop():
                with torch.no_grad():
                    model.params.copy_(unpolished)
                return None
            if member.damping >= MAX_DAMPING:
                break
            if accepted:
                stalled = stalled + 1 if member.mse > best * (1 - rtol) else 0
                best = min(best, member.mse)
                if stalled >= patience:
                    break
        with torch.no_grad():
            model.params[k].copy_(member.params.to(model.dtype))
        final.append(member.mse)
        counts.append(run)
        taken.append(member.accepted)
    return PolishReport(
        initial_mse=torch.tensor(initial, dtype=torch.float64),
        final_mse=torch.tensor(final, dtype=torch.float64),
        iterations=torch.tensor(counts, dtype=torch.int64),
        accepted=torch.tensor(taken, dtype=torch.int64),
        curves=torch.tensor([curve + [float("nan")] * (iterations + 1 - len(curve)) for curve in curves], dtype=torch.float64),
        kept=torch.ones(len(final), dtype=torch.bool),
    )


class _MemberLM:
    """The LM state of one member: float64 parameters, λ, and the normal equations at params."""

    def __init__(self, model: StackedMLP, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, damping: float):
        # One float64 member whose parameters are set to each point LM evaluates: the model's own
        # forward pass, never a copy of it.
        self.net = StackedMLP(model.layers, 1, dtype=torch.float64, device=params.device)
        self.x, self.y = x, y
        self.params = params.clone()
        self.damping = damping
        self._growth = 2.0  # Nielsen's ν: λ's factor after the next failed step
        self.accepted = 0
        self.mse = self._mse(self.params)
        self._normal_equations()

    def step(self) -> bool:
        """One LM iteration: try p + δ(λ) and keep it if the training MSE falls.

        λ follows Nielsen's rule (H. B. Nielsen, "Damping parameter in Marquardt's method", 1999),
        driven by the gain ratio ρ = actual / predicted decrease of the MSE: after a success
        λ ← λ·max(1/3, 1 - (2ρ - 1)³), after a failure λ ← λ·ν with ν doubling on every failure
        in a row. On this problem it accepts almost every step.
        """
        # λ multiplies the mean curvature mean(diag JᵀJ): λ is dimensionless, the damping term is
        # isotropic. (Marquardt's per-parameter scaling λ·diag(JᵀJ) needed up to 6× as many
        # iterations to reach an MSE of 1e-8 on the default run: it damps the stiff directions,
        # whose diagonal is large, hardest, and the flat ones hardly at all.)
        scale = float(self.jtj.diagonal().mean())
        system = self.jtj + torch.diag(self.jtj.new_full((self.jtr.shape[0],), self.damping * scale))
        factor, info = torch.linalg.cholesky_ex(system)
        if int(info) == 0:
            delta = torch.cholesky_solve(-self.jtr.unsqueeze(1), factor).squeeze(1)
            candidate = self.params + delta
            mse = self._mse(candidate)
            # Decrease of n·MSE = ‖r‖² predicted by the linear model r + Jδ: -2δᵀJᵀr - δᵀJᵀJδ,
            # which with (JᵀJ + λ·s·I)δ = -Jᵀr is -δᵀJᵀr + λ·s·δᵀδ (positive).
            predicted = float(-(delta @ self.jtr) + self.damping * scale * (delta @ delta)) / self.x.shape[0]
            if mse < self.mse and predicted > 0:  # False for NaN too
                gain = (self.mse - mse) / predicted
                self.params, self.mse = candidate, mse
                self.accepted += 1
                self.damping = max(self.damping * max(1 / 3, 1 - (2 * gain - 1) ** 3), MIN_DAMPING)
                self._growth = 2.0
                self._normal_equations()
                return True
        self.damping = min(self.damping * self._growth, MAX_DAMPING)
        self._growth *= 2
        return False

    def _mse(self, params: torch.Tensor) -> float:
        return float(((self._trace(params, self.x).output[0] - self.y) ** 2).mean())

    def _normal_equations(self) -> None:
        """JᵀJ [P, P] and Jᵀr [P] at self.params, accumulated over chunks of points."""
        size = self.params.shape[0]
        self.jtj = torch.zeros(size, size, dtype=torch.float64, device=self.params.device)
        self.jtr = torch.zeros(size, dtype=torch.float64, device=self.params.device)
        for start in range(0, self.x.shape[0], CHUNK):
            x, y = self.x[start : start + CHUNK], self.y[start : start + CHUNK]
            jacobian, residual = self._jacobian(x, y)
            self.jtj.addmm_(jacobian.T, jacobian)
            self.jtr.addmv_(jacobian.T, residual)

    def _trace(self, params: torch.Tensor, x: torch.Tensor):
        """The member's forward pass at `params` on points x [B]."""
        with torch.no_grad():
            self.net.params.copy_(params)
            return self.net.forward_with_preacts(x.unsqueeze(0))

    def _jacobian(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """∂f/∂p [B, P] for a chunk of points, and the residuals f - y [B].

        The backward equations of kernels.py per point, with δ^[L] = 1 at the linear output; the
        Jacobian row of block l is the outer product [a^[l-1]; 1] ⊗ δ^[l], flattened row-major
        like the block [W^T; b] itself.
        """
        trace = self._trace(self.params, x)
        delta = x.new_ones(x.shape[0], 1)
        pieces = []
        for index in reversed(range(len(trace.inputs))):
            a = trace.inputs[index][0]
            augmented = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
            pieces.append((augmented.unsqueeze(2) * delta.unsqueeze(1)).reshape(x.shape[0], -1))
            if index:
                delta = delta @ self.net.weight(index)[0]
                activation = self.net.activations[index - 1]
                if activation.output_derivative is not None:
                    delta = delta * activation.output_derivative(a)
                else:
                    delta = delta * activation.derivative(trace.preacts[index - 1][0])
        return torch.cat(pieces[::-1], dim=1), trace.output[0] - y
