"""The activation table and the stacked MLP: K small networks in one set of tensors.

Member k maps x ↦ a^[L](x) through hidden layers Z^[l] = W^[l] a^[l-1] + b^[l], a^[l] = σ_l(Z^[l])
and a linear output layer (the equations, forward and backward, are in kernels.py). All members'
parameters live in one flat buffer `params` [K, P]; the per-layer weights and biases are views
into it, so an optimizer step is a few operations on one tensor however many layers there are, and
gradients land in the matching buffer `grads`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from rungefit import rng
from rungefit.config import DTYPE_NAMES, SINE_FIRST_SCALE, Layer, layer_shapes, parameter_count
from rungefit.net.kernels import BackwardPass, ForwardPass, block_views

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # --dtype's names, as torch dtypes

# The most that the reusable buffers of one chunk of an evaluation pass (StackedMLP._predict) take:
# on the CPU what stays in cache; on a GPU what keeps its kernels large.
FORWARD_CHUNK_BYTES = 4 << 20
FORWARD_CHUNK_BYTES_GPU = 256 << 20


@dataclass(frozen=True)
class Activation:
    """σ and σ', both elementwise on tensors.

    fn(z, out=buffer) writes σ(z) into a preallocated buffer (the training forward's). The
    hand-written backward uses output_derivative(a, out=buffer), σ' expressed through a = σ(z),
    where one exists: it is a cheaper formula, and the backward has a at hand anyway. numpy_fn is
    a NumPy ufunc computing σ, used by the CPU training step where it is faster than torch.
    """

    fn: Callable[..., torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    output_derivative: Callable[..., torch.Tensor] | None = None
    numpy_fn: np.ufunc | None = None


def _copying(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """fn with an `out=` argument, for the activations whose torch function has none."""

    def apply(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return fn(z) if out is None else out.copy_(fn(z))

    return apply


def _one_minus_square(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """1 - a², tanh' through its output, in one pass."""
    return torch.addcmul(_unit(a.dtype, a.device), a, a, value=-1, out=out)


@cache
def _unit(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor 1, made once: a fresh one every training step costs more than the addcmul."""
    return torch.ones((), dtype=dtype, device=device)


def _sigmoid_output_prime(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """σ(1 - σ) = a - a·a in one pass."""
    return torch.addcmul(a, a, a, value=-1, out=out)


def _relu_output_prime(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return (a > 0).to(a.dtype) if out is None else torch.gt(a, 0, out=out)


def _softplus_output_prime(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """softplus' = sigmoid(z) = 1 - e^(-a)."""
    return torch.expm1(-a, out=out).neg_()


def _ones(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ones_like(a) if out is None else out.fill_(1)


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
    # The CPU training passes use NumPy's tanh, which is vectorised where torch's is not.
    "tanh": Activation(torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, _one_minus_square, np.tanh),
    "sigmoid": Activation(torch.sigmoid, _sigmoid_prime, _sigmoid_output_prime),
    "relu": Activation(_copying(torch.relu), lambda z: (z > 0).to(z.dtype), _relu_output_prime),
    "gelu": Activation(_copying(torch.nn.functional.gelu), _gelu_prime),
    "silu": Activation(_copying(torch.nn.functional.silu), _silu_prime),
    "softplus": Activation(_copying(torch.nn.functional.softplus), torch.sigmoid, _softplus_output_prime),
    "identity": Activation(_copying(lambda z: z), torch.ones_like, _ones),
    "sin": Activation(torch.sin, torch.cos, None, np.sin),
}


@dataclass(frozen=True)
class Trace:
    """A forward pass of every member on points x [K, B], with its intermediate values."""

    output: torch.Tensor  # a^[L], [K, B]
    preacts: list[torch.Tensor]  # Z^[2], …, Z^[L], each [K, B, width]
    inputs: list[torch.Tensor]  # a^[1] = x, …, a^[L-1]: each affine map's input, [K, B, fan_in]


class StackedMLP:
    """K independent MLPs with the same layer spec, evaluated together by batched matmuls."""

    def __init__(self, layers: tuple[Layer, ...], members: int, *, dtype=torch.float32, device="cpu"):
        self.layers = tuple(layers)
        self.members = members
        self.activations = [ACTIVATIONS[layer.activation] for layer in self.layers]
        self.params = torch.zeros(members, parameter_count(self.layers), dtype=dtype, device=device)
        self.grads = torch.zeros_like(self.params)
        # Each affine map is one block [W^T; b], [K, fan_in + 1, fan_out], in params.
        # weights_t[l]: [K, fan_in, fan_out] (transposed, so a @ W^T is a plain batched matmul);
        # biases[l]: [K, 1, fan_out]. Both are leaf views into params with gradients in grads.
        self._blocks = block_views(self.params, layer_shapes(self.layers))
        grad_blocks = block_views(self.grads, layer_shapes(self.layers))
        self.weights_t = [_leaf(block[:, :-1], grad[:, :-1]) for block, grad in zip(self._blocks, grad_blocks, strict=True)]
        self.biases = [_leaf(block[:, -1:], grad[:, -1:]) for block, grad in zip(self._blocks, grad_blocks, strict=True)]
        self._backprops: dict[int, BackwardPass] = {}
        self._forwards: dict[int, ForwardPass] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.params.dtype

    @property
    def device(self) -> torch.device:
        return self.params.device

    def initialise(self, seeds: torch.Tensor) -> None:
        """PyTorch's nn.Linear default, U(-1/√fan_in, 1/√fan_in) for W and b, drawn per seed (a
        first sin layer's × SINE_FIRST_SCALE)."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=self.device)
        u = rng.uniform(seeds, rng.STREAM_INIT, self.params.shape[1], dtype=torch.float64)
        scales = [SINE_FIRST_SCALE if self.layers[0].activation == "sin" else 1.0] + [1.0] * len(self.layers)
        bounds = torch.cat(
            [
                torch.full((fan_in * fan_out + fan_out,), scale / math.sqrt(fan_in), dtype=torch.float64)
                for (fan_in, fan_out), scale in zip(layer_shapes(self.layers), scales, strict=True)
            ]
        ).to(self.device)
        with torch.no_grad():
            self.params.copy_((2 * u - 1) * bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B] → a^[L] [K, B]."""
        return self.forward_with_preacts(x).output

    def forward_with_preacts(self, x: torch.Tensor) -> Trace:
        """The reference forward pass (torch ops, autograd-able) with what the chain rule needs."""
        a = x.unsqueeze(-1)
        inputs, preacts = [], []
        last = len(self.weights_t) - 1
        for index, (w_t, b) in enumerate(zip(self.weights_t, self.biases, strict=True)):
            inputs.append(a)
            z = torch.baddbmm(b, a, w_t)
            preacts.append(z)
            a = z if index == last else self.activations[index].fn(z)
        return Trace(a.squeeze(-1), preacts, inputs)

    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error per member, [K], without building a graph (inf or NaN for a member
        that diverged: NumPy's kernels are told not to warn about it)."""
        with torch.no_grad(), np.errstate(all="ignore"):
            return ((self._predict(x) - y) ** 2).mean(dim=1)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x) for evaluation, in chunks of points through reusable buffers of at most
        FORWARD_CHUNK_BYTES: on the CPU they stay in cache, which halves the cost of fit's
        validation pass every epoch against one pass through fresh tensors."""
        budget = FORWARD_CHUNK_BYTES if x.is_cpu else FORWARD_CHUNK_BYTES_GPU
        chunks = math.ceil(x.shape[1] / max(1, budget // ForwardPass.size_bytes(self, 1)))
        out = torch.empty_like(x)
        for part, x_part in zip(out.tensor_split(chunks, dim=1), x.tensor_split(chunks, dim=1), strict=True):
            part.copy_(self._forward_pass(x_part.shape[1])(x_part))
        return out

    def _forward_pass(self, batch: int) -> ForwardPass:
        """Buffers for passes over `batch` points, kept for the next call with the same sizes."""
        if batch not in self._forwards:
            if len(self._forwards) >= 2:  # a chunk size and the remainder's: no more are needed at once
                self._forwards.clear()
            self._forwards[batch] = ForwardPass(self, batch)
        return self._forwards[batch]

    def mse_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mini-batch MSE per member [K] for x, y [K, B]; its gradient overwrites `grads`.

        A hand-written backward pass (see BackwardPass), checked against autograd in
        tests/test_stacking.py: at this size autograd's bookkeeping costs more than the maths.
        """
        batch = x.shape[1]
        if batch not in self._backprops:
            self._backprops[batch] = BackwardPass(self, batch)
        return self._backprops[batch].mse_backward(x, y)

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
            for index, (w_t, b) in enumerate(zip(self.weights_t, self.biases, strict=True)):
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

    def select(self, members: list[int]) -> StackedMLP:
        """A new stacked model holding copies of the chosen members."""
        picked = StackedMLP(self.layers, len(members), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            picked.params.copy_(self.params[members])
        return picked

    def to(self, *, dtype=None, device=None) -> StackedMLP:
        """A copy in another dtype or on another device."""
        moved = StackedMLP(
            self.layers, self.members, dtype=dtype or self.dtype, device=device or self.device
        )
        with torch.no_grad():
            moved.params.copy_(self.params)
        return moved


def _leaf(view: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A parameter view that autograd treats as a leaf, accumulating its gradient into `grad`."""
    view.requires_grad_(True)
    view.grad = grad
    return view
