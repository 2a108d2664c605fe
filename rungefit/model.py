"""Layer specs, the activation table and the stacked MLP: K small networks in one set of tensors.

Member k maps x ↦ a^[L](x) through hidden layers Z^[l] = W^[l] a^[l-1] + b^[l], a^[l] = σ_l(Z^[l])
and a linear output layer. All members' parameters live in one flat buffer `params` [K, P]; the
per-layer weights and biases are views into it, so an optimizer step is a few operations on one
tensor however many layers there are, and gradients land in the matching buffer `grads`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from rungefit import rng

# The gradient views into the flat buffer are strided like their parameters, but not dense, which
# makes autograd warn on every backward although it accumulates into them in place as intended.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

DEFAULT_LAYERS = "20:tanh,10:sigmoid,20:tanh,10:sigmoid"
MAX_WIDTH = 4096


@dataclass(frozen=True)
class Activation:
    """σ and σ', both elementwise on tensors."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]


def _sigmoid_prime(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def _gelu_prime(z):
    # d/dz z Φ(z) = Φ(z) + z φ(z) for the exact (erf) GELU.
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _silu_prime(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "sigmoid": Activation(torch.sigmoid, _sigmoid_prime),
    "relu": Activation(torch.relu, lambda z: (z > 0).to(z.dtype)),
    "gelu": Activation(torch.nn.functional.gelu, _gelu_prime),
    "silu": Activation(torch.nn.functional.silu, _silu_prime),
    "softplus": Activation(torch.nn.functional.softplus, torch.sigmoid),
    "identity": Activation(lambda z: z, torch.ones_like),
}


@dataclass(frozen=True)
class Layer:
    """One hidden layer: its width and the name of its activation."""

    width: int
    activation: str


def parse_layers(spec: str) -> tuple[Layer, ...]:
    """Parse "20:tanh,10:sigmoid" into hidden layers; raise ValueError saying what is wrong."""
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise ValueError(
            f"--layers {spec!r} has an empty entry; expected WIDTH:ACTIVATION items separated by "
            f"commas, e.g. {DEFAULT_LAYERS!r}"
        )
    return tuple(_parse_layer(item) for item in items)


def _parse_layer(item: str) -> Layer:
    width_text, sep, name = item.partition(":")
    if not sep:
        raise ValueError(f"layer {item!r} is not WIDTH:ACTIVATION, e.g. '20:tanh'")
    name = name.strip().lower()
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r} in layer {item!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    try:
        width = int(width_text)
    except ValueError:
        raise ValueError(f"layer {item!r}: width {width_text.strip()!r} is not a whole number") from None
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"layer {item!r}: width must be between 1 and {MAX_WIDTH}, got {width}")
    return Layer(width, name)


def format_layers(layers: tuple[Layer, ...]) -> str:
    """The inverse of parse_layers."""
    return ",".join(f"{layer.width}:{layer.activation}" for layer in layers)


def layer_shapes(layers: tuple[Layer, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every affine map, input layer to output layer."""
    widths = [1, *(layer.width for layer in layers), 1]
    return list(zip(widths[:-1], widths[1:]))


def parameter_count(layers: tuple[Layer, ...]) -> int:
    """Number of parameters of one member."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in layer_shapes(layers))


class StackedMLP:
    """K independent MLPs with the same layer spec, evaluated together by batched matmuls."""

    def __init__(self, layers: tuple[Layer, ...], members: int, *, dtype=torch.float32, device="cpu"):
        self.layers = tuple(layers)
        self.members = members
        self.activations = [ACTIVATIONS[layer.activation] for layer in self.layers]
        self.params = torch.zeros(members, parameter_count(self.layers), dtype=dtype, device=device)
        self.grads = torch.zeros_like(self.params)
        # weights_t[l]: [K, fan_in, fan_out] (transposed, so a @ W^T is a plain batched matmul);
        # biases[l]: [K, 1, fan_out]. Both are leaf views into params with gradients in grads.
        self.weights_t: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        offset = 0
        for fan_in, fan_out in layer_shapes(self.layers):
            for shape, target in (((fan_in, fan_out), self.weights_t), ((1, fan_out), self.biases)):
                size = shape[0] * shape[1]
                view = self.params[:, offset : offset + size].view(members, *shape)
                view.requires_grad_(True)
                view.grad = self.grads[:, offset : offset + size].view(members, *shape)
                target.append(view)
                offset += size

    @property
    def dtype(self) -> torch.dtype:
        return self.params.dtype

    @property
    def device(self) -> torch.device:
        return self.params.device

    def initialise(self, seeds: torch.Tensor) -> None:
        """PyTorch's nn.Linear default, U(-1/√fan_in, 1/√fan_in) for W and b, drawn per seed."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=self.device)
        u = rng.uniform(seeds, rng.STREAM_INIT, self.params.shape[1], dtype=torch.float64)
        bounds = torch.cat(
            [
                torch.full((fan_in * fan_out + fan_out,), 1 / math.sqrt(fan_in), dtype=torch.float64)
                for fan_in, fan_out in layer_shapes(self.layers)
            ]
        ).to(self.device)
        with torch.no_grad():
            self.params.copy_((2 * u - 1) * bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B] → a^[L] [K, B]."""
        return self.forward_with_preacts(x)[0]

    def forward_with_preacts(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [K, B] → (a^[L] [K, B], [Z^[2], …, Z^[L]] each [K, B, width])."""
        a = x.unsqueeze(-1)
        preacts = []
        last = len(self.weights_t) - 1
        for index, (w_t, b) in enumerate(zip(self.weights_t, self.biases)):
            z = torch.baddbmm(b, a, w_t)
            preacts.append(z)
            a = z if index == last else self.activations[index].fn(z)
        return a.squeeze(-1), preacts

    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error per member, [K], without building a graph."""
        with torch.no_grad():
            return ((self.forward(x) - y) ** 2).mean(dim=1)

    def weight(self, index: int) -> torch.Tensor:
        """W of affine map `index` in the usual [K, fan_out, fan_in] orientation."""
        return self.weights_t[index].detach().transpose(1, 2)

    def bias(self, index: int) -> torch.Tensor:
        """b of affine map `index`, [K, fan_out]."""
        return self.biases[index].detach().squeeze(1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Per-layer tensors in nn.Linear's orientation, with a leading member dimension."""
        state = {}
        for index in range(len(self.weights_t)):
            state[f"layers.{index}.weight"] = self.weight(index).clone()
            state[f"layers.{index}.bias"] = self.bias(index).clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy tensors saved by state_dict back in; raise ValueError if they do not fit."""
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ValueError(
                f"checkpoint tensors {sorted(state)} do not match this network's {sorted(expected)}"
            )
        with torch.no_grad():
            for index, (w_t, b) in enumerate(zip(self.weights_t, self.biases)):
                weight, bias = state[f"layers.{index}.weight"], state[f"layers.{index}.bias"]
                if weight.shape != expected[f"layers.{index}.weight"].shape or bias.shape != expected[
                    f"layers.{index}.bias"
                ].shape:
                    raise ValueError(
                        f"checkpoint layer {index} has shape {tuple(weight.shape)}, this network "
                        f"expects {tuple(expected[f'layers.{index}.weight'].shape)}"
                    )
                w_t.copy_(weight.transpose(1, 2))
                b.copy_(bias.unsqueeze(1))

    def select(self, members: list[int]) -> "StackedMLP":
        """A new stacked model holding copies of the chosen members."""
        picked = StackedMLP(self.layers, len(members), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            picked.params.copy_(self.params[members])
        return picked

    def to(self, *, dtype=None, device=None) -> "StackedMLP":
        """A copy in another dtype or on another device."""
        moved = StackedMLP(
            self.layers, self.members, dtype=dtype or self.dtype, device=device or self.device
        )
        with torch.no_grad():
            moved.params.copy_(self.params)
        return moved
