"""The hand-written forward and backward passes of a StackedMLP: one pass over all K members.

For each member, on a mini-batch of B points x with targets y (L layers; a^[1] = x):

    forward     Z^[l] = W^[l] a^[l-1] + b^[l]                         l = 2 … L
                a^[l] = σ_l(Z^[l])  for hidden l,    a^[L] = Z^[L]      (linear output)
    loss        E = (1/B) Σ_i (a^[L]_i − y_i)²
    backward    δ^[L] = ∂E/∂Z^[L] = (2/B) (a^[L] − y)
                ∂E/∂W^[l] = δ^[l] (a^[l-1])ᵀ,   ∂E/∂b^[l] = δ^[l] 1         (one product with [a^[l-1]; 1])
                δ^[l-1] = (W^[l]ᵀ δ^[l]) ⊙ σ_{l-1}'(Z^[l-1])

σ' is taken from the layer's output where a formula exists (tanh' = 1 − a², σ' = a − a²),
which the backward has at hand. The same chain with δ^[L] = 1 for a single point gives the
network's derivative ∇a^[L](x) (grad.py) and a row of the Jacobian ∂a^[L]/∂p (polish.py).

StackedMLP.forward_with_preacts is the plain reference (torch ops, autograd-able); ForwardPass and
BackwardPass are the fast path that training runs, checked against autograd in float64 in
tests/test_stacking.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np
import torch

from rungefit.config import Layer, layer_shapes


class Stacked(Protocol):
    """What the passes read of a stack (model.StackedMLP): its shape and its flat buffers."""

    layers: tuple[Layer, ...]
    members: int
    params: torch.Tensor  # [K, P]
    grads: torch.Tensor  # [K, P]
    activations: list

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

# Whether CPU passes use NumPy's kernels (ForwardPass); False runs torch's everywhere, as on a GPU,
# which tests use to check that path without one.
NUMPY_ON_CPU = True


def block_views(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """[W^T; b] of every affine map, [K, fan_in + 1, fan_out]: adjacent in the flat buffer [K, P]."""
    blocks, offset = [], 0
    for fan_in, fan_out in shapes:
        size = (fan_in + 1) * fan_out
        blocks.append(flat[:, offset : offset + size].view(flat.shape[0], fan_in + 1, fan_out))
        offset += size
    return blocks


class ForwardPass:
    """forward(x) for one batch size B, through buffers allocated once.

    Buffers are feature-major, [width, K, B]: a layer's rows of all members are one dense block,
    so the activations run over contiguous memory (in member-major buffers the row of ones would
    split every member off), while the matmuls see each member's [width, B] matrix through a
    strided view. Every kernel is prepared here with its operands bound, so a pass is a flat loop
    of calls that allocates nothing. On the CPU the batched matrix products run in NumPy on views
    of the same memory: its OpenBLAS has small-matrix kernels, faster than torch.bmm (MKL) for the
    [K, ≤21, ≤39] products of a training step (docs/speed.md).
    """

    def __init__(self, model: Stacked, batch: int):
        shapes = layer_shapes(model.layers)
        members, options = model.members, {"dtype": model.dtype, "device": model.device}
        self.use_numpy = NUMPY_ON_CPU and model.device.type == "cpu"
        self.activations = model.activations
        # inputs[l]: a^[l-1] over a row of ones, [fan_in + 1, K, B]: one matmul with the block
        # [W^T; b] applies W and b, and one matmul with δ^[l] gives the gradients of both.
        self.inputs = [torch.ones(fan_in + 1, members, batch, **options) for fan_in, _ in shapes]
        self.x = self.inputs[0][0]
        self.activated = [inputs[:-1] for inputs in self.inputs[1:]]
        self.preacts = [torch.empty(fan_out, members, batch, **options) for _, fan_out in shapes]
        self.output = self.preacts[-1][0]
        self.blocks = block_views(model.params, shapes)
        self.forward_ops: list[Callable[[], object]] = []
        for index, block in enumerate(self.blocks):
            self.forward_ops.append(self._matmul(block.transpose(1, 2), _per_member(self.inputs[index]), _per_member(self.preacts[index])))
            if index < len(model.layers):
                self.forward_ops.append(self._activate(index))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """a^[L] [K, B] for x [K, B]: a view into a buffer that the next pass overwrites."""
        self.x.copy_(x)
        for op in self.forward_ops:
            op()
        return self.output

    @staticmethod
    def size_bytes(model: Stacked, batch: int) -> int:
        """What the buffers of a pass over `batch` points take."""
        rows = sum(fan_in + 1 + fan_out for fan_in, fan_out in layer_shapes(model.layers))
        return model.members * rows * batch * model.params.element_size()

    def _matmul(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> Callable[[], object]:
        """out = a @ b for every member, [K, m, k] @ [K, k, n] → [K, m, n], as a prepared call."""
        if self.use_numpy:
            return partial(np.matmul, a.numpy(), b.numpy(), out=out.numpy())
        return partial(torch.bmm, a, b, out=out)

    def _activate(self, index: int) -> Callable[[], object]:
        """a^[l] = σ(Z^[l]) for hidden layer `index`, into the rows above the ones of inputs[l+1]."""
        activation, z, a = self.activations[index], self.preacts[index], self.activated[index]
        if self.use_numpy and activation.numpy_fn is not None:
            return partial(activation.numpy_fn, z.numpy(), out=a.numpy())
        return partial(activation.fn, z, out=a)


def _per_member(buffer: torch.Tensor) -> torch.Tensor:
    """[width, K, B] as each member's matrix, [K, width, B] (a view)."""
    return buffer.transpose(0, 1)


class BackwardPass(ForwardPass):
    """The forward and backward pass of StackedMLP.mse_backward for one batch size B.

    Like the forward, the backward is a flat loop of prepared calls into buffers allocated once;
    on the CPU, NumPy's matmul writes the gradients straight into the strided blocks of `grads`
    (bmm would fill a contiguous buffer to be copied over).
    """

    def __init__(self, model: Stacked, batch: int):
        super().__init__(model, batch)
        shapes = layer_shapes(model.layers)
        members, options = model.members, {"dtype": model.dtype, "device": model.device}
        self.deltas = [torch.empty(fan_out, members, batch, **options) for _, fan_out in shapes]
        self.slopes = [torch.empty(fan_out, members, batch, **options) for _, fan_out in shapes[:-1]]
        self.output_delta = self.deltas[-1][0]
        self.error = torch.empty(members, batch, **options)
        self.scale = torch.tensor(2 / batch, **options)  # ∂ mean(error²) / ∂error = 2 error / B
        grad_blocks = block_views(model.grads, shapes)
        self.backward_ops: list[Callable[[], object]] = []
        for index in reversed(range(len(self.blocks))):
            # ∂loss/∂[W^T; b] = [a; 1] δ^T: [K, fan_in + 1, B] @ [K, B, fan_out].
            inputs, deltas = _per_member(self.inputs[index]), _per_member(self.deltas[index])
            self.backward_ops.append(self._matmul(inputs, deltas.transpose(1, 2), grad_blocks[index]))
            if index:
                self.backward_ops += [self._propagate(index, self.blocks[index]), *self._apply_slope(index - 1)]

    def mse_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        torch.sub(self(x), y, out=self.error)
        torch.mul(self.error, self.scale, out=self.output_delta)
        for op in self.backward_ops:
            op()
        return torch.linalg.vecdot(self.error, self.error).div_(self.error.shape[1])

    def _apply_slope(self, index: int) -> list[Callable[[], object]]:
        """δ^[l] ⊙= σ'(Z^[l]) for hidden layer `index`, [width, K, B], via a preallocated σ'."""
        activation, slope, delta = self.activations[index], self.slopes[index], self.deltas[index]
        if activation.output_derivative is not None:
            derivative = partial(activation.output_derivative, self.activated[index], out=slope)
        else:
            z = self.preacts[index]

            def derivative() -> None:
                slope.copy_(activation.derivative(z))

        return [derivative, partial(torch.mul, delta, slope, out=delta)]

    def _propagate(self, index: int, block: torch.Tensor) -> Callable[[], object]:
        """W^T δ^[l] into deltas[l-1]: [K, fan_in, fan_out] @ [K, fan_out, B] per member."""
        weights_t, delta, out = block[:, :-1], self.deltas[index], self.deltas[index - 1]
        if block.shape[2] == 1:
            # fan_out = 1 (the output layer): a broadcast product, [fan_in, K, 1] ⊙ [1, K, B];
            # a matmul with a contraction of length 1 takes the libraries' slow paths.
            return partial(torch.mul, weights_t.transpose(0, 1), delta, out=out)
        return self._matmul(weights_t, _per_member(delta), _per_member(out))
