"""∇a^[L](x), the network's derivative with respect to its input, computed three ways.

With Z^[1] = x, Z^[l] = W^[l] a^[l-1] + b^[l] and a^[l] = σ_l(Z^[l]) for l = 2…L, the chain rule gives

    ∇a^[L](x) = σ_L'(Z^[L]) · Π_{l=L..2} W^[l] diag(σ_{l-1}'(Z^[l-1]))

The input layer has no activation (a^[1] = x), so its factor diag(σ_1'(Z^[1])) is the identity, and
the output layer is linear (σ_L' = 1). The explicit product is built from the layer matrices and the
recorded pre-activations; autograd and a central finite difference check it, and f'(x) is the target:
autograd of the target's formula in float64, none where f is not differentiable, and none at all for
data. Everything runs in float64 whatever dtype the network was trained in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rungefit.config import PLOT_POINTS, parse_layers
from rungefit.errors import UsageError
from rungefit.net.model import StackedMLP
from rungefit.targets import DataTarget, FunctionTarget, Maps

# Central differences err by h²·|a'''|/6 from truncation and by ~ε/h from rounding; in float64
# (ε ≈ 1e-16) h = 1e-5 keeps both below 1e-8 for the curvatures a fitted Runge network has.
FD_STEP = 1e-5


def as_float64(model: StackedMLP, member: int) -> StackedMLP:
    """One member of the stack as a float64 network on the CPU."""
    return model.select([member]).to(dtype=torch.float64, device="cpu")


def untrained_model(layers: str, seed: int) -> StackedMLP:
    """A freshly initialised float64 network, exactly as `train` would start it with this seed."""
    model = StackedMLP(parse_layers(layers), 1, dtype=torch.float64)
    model.initialise(torch.tensor([seed]))
    return model


def explicit_gradient(model: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """∇a^[L] at x [K, B] by the chain-rule product, [K, B].

    The product is taken from the left, so each step is a row vector times a matrix: σ_L' = 1 starts
    the row, each W^[l] multiplies it, and each diag(σ'(Z)) scales it elementwise.
    """
    with torch.no_grad():
        preacts = model.forward_with_preacts(x).preacts  # Z^[2..L], each [K, B, width]
        row = torch.ones_like(preacts[-1])  # σ_L'(Z^[L]) = 1: the output layer is linear
        for index in range(len(preacts) - 1, -1, -1):
            row = torch.bmm(row, model.weight(index))  # [K, B, fan_out] · [K, fan_out, fan_in]
            if index > 0:  # index 0 is W^[2]; its right factor σ_1'(Z^[1]) is the identity
                row = row * model.activations[index - 1].derivative(preacts[index - 1])
        return row.squeeze(-1)


def autograd_gradient(model: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """∇a^[L] at x [K, B] by torch.autograd.grad, [K, B].

    Each output depends only on its own input, so the gradient of the sum is the pointwise derivative.
    """
    x = x.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model.forward(x).sum(), x)
    return gradient


def finite_difference_gradient(model: StackedMLP, x: torch.Tensor, step: float = FD_STEP) -> torch.Tensor:
    """∇a^[L] at x [K, B] by the central difference (a(x+h) − a(x−h)) / 2h, [K, B]."""
    with torch.no_grad():
        return (model.forward(x + step) - model.forward(x - step)) / (2 * step)


@dataclass(frozen=True)
class GradientCheck:
    """One member's derivative at points x [n], three ways, beside f and f' (all float64; NaN where
    there is no truth: f' where f is not differentiable, f and f' for data)."""

    x: np.ndarray
    output: np.ndarray  # a^[L](x)
    target: np.ndarray  # f(x)
    explicit: np.ndarray  # the chain-rule product
    autograd: np.ndarray
    finite_difference: np.ndarray
    true: np.ndarray  # f'(x)
    fd_step: float
    differentiable: np.ndarray  # [n] bool: f has a derivative at x (always True for data: it has none anywhere)

    @property
    def product_vs_autograd(self) -> np.ndarray:
        return np.abs(self.explicit - self.autograd)

    @property
    def fd_vs_autograd(self) -> np.ndarray:
        return np.abs(self.finite_difference - self.autograd)

    @property
    def network_vs_true(self) -> np.ndarray:
        return np.abs(self.explicit - self.true)

    def points(self) -> list[dict]:
        """One JSON-ready record per x; a figure without a truth is None."""
        columns = {
            "x": self.x, "output": self.output, "target": self.target, "explicit": self.explicit,
            "autograd": self.autograd, "finite_difference": self.finite_difference, "true": self.true,
            "product_vs_autograd": self.product_vs_autograd, "fd_vs_autograd": self.fd_vs_autograd,
            "network_vs_true": self.network_vs_true,
        }
        return [
            {**{name: _number_or_none(values[i]) for name, values in columns.items()}, "differentiable": bool(self.differentiable[i])}
            for i in range(len(self.x))
        ]

    def maxima(self) -> dict:
        """The largest discrepancies over all points, and where the network's derivative errs most
        (over the points where f' exists; None when it exists at none)."""
        known = np.isfinite(self.network_vs_true)
        worst = int(np.argmax(np.where(known, self.network_vs_true, -np.inf)))
        with np.errstate(over="ignore"):  # a diverged network's derivative: an RMS beyond float64 is inf
            rms = float(np.sqrt(np.mean(self.network_vs_true[known] ** 2))) if known.any() else None
        return {
            "points": len(self.x),
            "max_product_vs_autograd": float(self.product_vs_autograd.max()),
            "max_fd_vs_autograd": float(self.fd_vs_autograd.max()),
            "max_network_vs_true": float(self.network_vs_true[worst]) if known.any() else None,
            "max_network_vs_true_at": float(self.x[worst]) if known.any() else None,
            "rms_network_vs_true": rms,
            "not_differentiable_at": [float(v) for v in self.x[~self.differentiable]],
        }


def _number_or_none(value: float) -> float | None:
    """JSON has no NaN: a figure without a truth (or of a diverged network) is null."""
    return None if np.isnan(value) else float(value)


def data_unit_autograd(model: StackedMLP, maps: Maps, x: torch.Tensor) -> torch.Tensor:
    """d/dx of the network as a function of data units, y = y_out(a^[L](x_in(x))), by autograd at
    x [K, B] (data units): the maps' chain factor comes out of autograd itself, not out of the product."""
    x = x.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(maps.y_out(model.forward(maps.x_in(x))).sum(), x)
    return gradient


def check_gradient(model: StackedMLP, target: FunctionTarget | DataTarget, x: np.ndarray, step: float = FD_STEP) -> GradientCheck:
    """Compare the three derivatives of a one-member float64 model (see as_float64) at points x, in
    data units: the product and the finite difference (step in standard coordinates) are taken in
    the network's standard coordinates and times the maps' chain factor σ_y/σ_x, autograd is of the
    data-unit function itself."""
    if model.members != 1 or model.dtype != torch.float64:
        raise ValueError("check_gradient needs one float64 member; pass it through as_float64 first")
    maps = target.maps
    points = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, -1)
    standard = maps.x_in(points)
    with torch.no_grad():
        output = maps.y_out(model.forward(standard))
    x = _row(points)
    true = target.derivative(x)  # NaN where f is not differentiable
    return GradientCheck(
        x=x,
        output=_row(output),
        target=target(x) if target.has_function else np.full(x.shape, np.nan),
        explicit=_row(explicit_gradient(model, standard) * maps.slope),
        autograd=_row(data_unit_autograd(model, maps, points)),
        finite_difference=_row(finite_difference_gradient(model, standard, step) * maps.slope),
        true=true,
        fd_step=step,
        differentiable=target.differentiable(x, true),
    )


def _row(tensor: torch.Tensor) -> np.ndarray:
    """The one member's values, [1, n] → [n]."""
    return tensor[0].detach().numpy()


@dataclass(frozen=True)
class ChainFactor:
    """One matrix of the product, with the product of it and everything to its left."""

    name: str  # e.g. "W^[3]" or "diag σ_2'(Z^[2])"
    kind: str  # output | weight | activation | input
    matrix: np.ndarray  # the factor, [rows, cols]
    running: np.ndarray  # σ_L' · … · this factor, a row vector [1, cols]
    note: str

    def as_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "shape": list(self.matrix.shape),
            "matrix": self.matrix.tolist(), "running": self.running[0].tolist(), "note": self.note,
        }


def explain_chain(model: StackedMLP, x: float, maps: Maps = Maps()) -> list[ChainFactor]:
    """The product for one member at one x (data units), factor by factor, left (output) to right (input).

    Unlike explicit_gradient this materialises every diag(σ') as a matrix, so the result is the
    formula written out; its last running product equals ∇a^[L](x). With maps other than the
    identity, their chain factor σ_y/σ_x stands first, on its own.
    """
    if model.members != 1 or model.dtype != torch.float64:
        raise ValueError("explain_chain needs one float64 member; pass it through as_float64 first")
    with torch.no_grad():
        preacts = model.forward_with_preacts(maps.x_in(torch.tensor([[float(x)]], dtype=torch.float64))).preacts
    last = len(preacts) + 1  # L: the input layer is 1, the hidden layers 2…L-1
    factors = [] if maps.identity else [(
        "σ_y / σ_x", "units", np.array([[maps.slope]]),
        f"data units: y = {maps.y_scale:.6g}·a^[L] + {maps.y_mean:.6g} and x_std = (x − {maps.x_centre:.6g}) / {maps.x_half:.6g}",
    )]
    factors.append((f"σ_{last}'(Z^[{last}])", "output", np.ones((1, 1)), f"the output layer (L = {last}) is linear"))
    for index in range(len(preacts) - 1, -1, -1):
        layer = index + 2
        factors.append((f"W^[{layer}]", "weight", model.weight(index)[0].numpy(), "the same for every x"))
        if index > 0:
            activation = model.layers[index - 1].activation
            slopes = model.activations[index - 1].derivative(preacts[index - 1])[0, 0].numpy()
            factors.append((f"diag σ_{layer - 1}'(Z^[{layer - 1}])", "activation", np.diag(slopes), f"{activation}'"))
    factors.append((
        "diag σ_1'(Z^[1])", "input", np.ones((1, 1)),
        "the input layer has no activation: a^[1] = x",
    ))
    chain, running = [], np.ones((1, 1))
    for name, kind, matrix, note in factors:
        running = running @ matrix
        chain.append(ChainFactor(name, kind, matrix, running, note))
    return chain


@dataclass(frozen=True)
class GradientStudy:
    """Everything `rungefit grad` reports for one float64 member."""

    at_x: GradientCheck  # the requested points (possibly none)
    grid: GradientCheck | None  # N equally spaced points, when asked for
    curve: GradientCheck  # what grad.png draws: the grid, or PLOT_POINTS points without one
    chains: list[tuple[float, list[ChainFactor]]]  # x → its factors, when asked for

    def as_dict(self) -> dict:
        return {
            "fd_step": self.at_x.fd_step,
            "points": self.at_x.points(),
            "grid": self.grid.maxima() if self.grid is not None else None,
            "explain": [{"x": x, "factors": [factor.as_dict() for factor in chain]} for x, chain in self.chains],
        }


def study_gradient(
    model: StackedMLP, target: FunctionTarget | DataTarget, x_values: list[float], grid_points: int | None = None, explain: bool = False
) -> GradientStudy:
    """Check the gradient at x_values and on a grid of grid_points over the target's domain; with
    explain, the chain of every x_values point. `model` is one float64 member (see as_float64)."""
    if grid_points is not None and grid_points < 2:
        raise UsageError(f"--grid needs at least 2 points, got {grid_points}")
    grid = check_gradient(model, target, np.linspace(*target.domain, grid_points)) if grid_points is not None else None
    return GradientStudy(
        at_x=check_gradient(model, target, np.array(x_values, dtype=np.float64)),
        grid=grid,
        curve=grid if grid is not None else check_gradient(model, target, np.linspace(*target.domain, PLOT_POINTS)),
        chains=[(x, explain_chain(model, x, target.maps)) for x in x_values] if explain else [],
    )
