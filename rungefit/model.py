"""Layer specs, the activation table and the stacked MLP: K small networks in one set of tensors.

Member k maps x ↦ a^[L](x) through hidden layers Z^[l] = W^[l] a^[l-1] + b^[l], a^[l] = σ_l(Z^[l])
and a linear output layer. All members' parameters live in one flat buffer `params` [K, P]; the
per-layer weights and biases are views into it, so an optimizer step is a few operations on one
tensor however many layers there are, and gradients land in the matching buffer `grads`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import torch

from rungefit import rng
from rungefit.errors import UsageError

# The gradient views into the flat buffer are strided like their parameters, but not dense, which
# makes autograd warn on every backward although it accumulates into them in place as intended.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

DEFAULT_LAYERS = "20:tanh,10:sigmoid,20:tanh,10:sigmoid"
MAX_WIDTH = 4096
# Whether CPU passes use NumPy's kernels (_Forward); False runs torch's everywhere, as on a GPU,
# which tests use to check that path without one.
NUMPY_ON_CPU = True
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


def _tanh(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tanh(z), on the CPU as 2σ(2z) - 1, into `out` if given.

    On CPU torch.tanh is scalar code: 3.5 ns/element here against 1.4 for this, which halves
    the cost of a tanh layer at K = 64. It differs from torch.tanh by at most 2e-7 in float32
    (about 1e-16 in float64), far below the fit's error.
    """
    if not z.is_cpu:
        return torch.tanh(z, out=out)
    if out is None:
        return torch.sigmoid(z + z).mul(2).sub(1)
    torch.add(z, z, out=out)
    return torch.sigmoid(out, out=out).add_(out).sub_(1)


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
    # NumPy's tanh is vectorised (torch's is scalar code on the CPU): 9 µs for [32, 20, 39] here
    # against 23 for _tanh.
    "tanh": Activation(_tanh, lambda z: 1 - _tanh(z) ** 2, _one_minus_square, np.tanh),
    "sigmoid": Activation(torch.sigmoid, _sigmoid_prime, _sigmoid_output_prime),
    "relu": Activation(_copying(torch.relu), lambda z: (z > 0).to(z.dtype), _relu_output_prime),
    "gelu": Activation(_copying(torch.nn.functional.gelu), _gelu_prime),
    "silu": Activation(_copying(torch.nn.functional.silu), _silu_prime),
    "softplus": Activation(_copying(torch.nn.functional.softplus), torch.sigmoid, _softplus_output_prime),
    "identity": Activation(_copying(lambda z: z), torch.ones_like, _ones),
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
        raise UsageError(
            f"--layers {spec!r} has an empty entry; expected WIDTH:ACTIVATION items separated by "
            f"commas, e.g. {DEFAULT_LAYERS!r}"
        )
    return tuple(_parse_layer(item) for item in items)


def _parse_layer(item: str) -> Layer:
    width_text, sep, name = item.partition(":")
    if not sep:
        raise UsageError(f"layer {item!r} is not WIDTH:ACTIVATION, e.g. '20:tanh'")
    name = name.strip().lower()
    if name not in ACTIVATIONS:
        raise UsageError(
            f"unknown activation {name!r} in layer {item!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    try:
        digits = width_text.strip().lstrip("+-")
        if not (digits.isascii() and digits.isdigit()):  # int() takes '２０' and '2_0'
            raise ValueError
        width = int(width_text)
    except ValueError:
        raise UsageError(f"layer {item!r}: width {width_text.strip()!r} is not a whole number") from None
    if not 1 <= width <= MAX_WIDTH:
        raise UsageError(f"layer {item!r}: width must be between 1 and {MAX_WIDTH}, got {width}")
    return Layer(width, name)


def format_layers(layers: tuple[Layer, ...]) -> str:
    """The inverse of parse_layers."""
    return ",".join(f"{layer.width}:{layer.activation}" for layer in layers)


def layer_shapes(layers: tuple[Layer, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every affine map, input layer to output layer."""
    widths = [1, *(layer.width for layer in layers), 1]
    return list(zip(widths[:-1], widths[1:], strict=True))


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
        # Each affine map is one block [W^T; b], [K, fan_in + 1, fan_out], in params.
        # weights_t[l]: [K, fan_in, fan_out] (transposed, so a @ W^T is a plain batched matmul);
        # biases[l]: [K, 1, fan_out]. Both are leaf views into params with gradients in grads.
        self._blocks = block_views(self.params, layer_shapes(self.layers))
        grad_blocks = block_views(self.grads, layer_shapes(self.layers))
        self.weights_t = [_leaf(block[:, :-1], grad[:, :-1]) for block, grad in zip(self._blocks, grad_blocks, strict=True)]
        self.biases = [_leaf(block[:, -1:], grad[:, -1:]) for block, grad in zip(self._blocks, grad_blocks, strict=True)]
        self._backprops: dict[int, _Backprop] = {}
        self._forwards: dict[int, _Forward] = {}

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
        for index, (w_t, b) in enumerate(zip(self.weights_t, self.biases, strict=True)):
            z = torch.baddbmm(b, a, w_t)
            preacts.append(z)
            a = z if index == last else self.activations[index].fn(z)
        return a.squeeze(-1), preacts

    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error per member, [K], without building a graph (inf or NaN for a member
        that diverged: NumPy's kernels are told not to warn about it)."""
        with torch.no_grad(), np.errstate(all="ignore"):
            return ((self._predict(x) - y) ** 2).mean(dim=1)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x) for evaluation, in chunks of points through reusable buffers of at most
        FORWARD_CHUNK_BYTES: on the CPU they stay in cache (fit's validation set every epoch,
        K = 32: 1.6 ms against 3.2 in one pass through fresh tensors)."""
        budget = FORWARD_CHUNK_BYTES if x.is_cpu else FORWARD_CHUNK_BYTES_GPU
        chunks = math.ceil(x.shape[1] / max(1, budget // _Forward.size_bytes(self, 1)))
        out = torch.empty_like(x)
        for part, x_part in zip(out.tensor_split(chunks, dim=1), x.tensor_split(chunks, dim=1), strict=True):
            part.copy_(self._forward_pass(x_part.shape[1])(x_part))
        return out

    def _forward_pass(self, batch: int) -> _Forward:
        """Buffers for passes over `batch` points, kept for the next call with the same sizes."""
        if batch not in self._forwards:
            if len(self._forwards) >= 2:  # a chunk size and the remainder's: no more are needed at once
                self._forwards.clear()
            self._forwards[batch] = _Forward(self, batch)
        return self._forwards[batch]

    def mse_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mini-batch MSE per member [K] for x, y [K, B]; its gradient overwrites `grads`.

        A hand-written backward pass (see _Backprop), checked against autograd in
        tests/test_stacking.py: at this size autograd's bookkeeping costs more than the maths.
        """
        batch = x.shape[1]
        if batch not in self._backprops:
            self._backprops[batch] = _Backprop(self, batch)
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


def block_views(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """[W^T; b] of every affine map, [K, fan_in + 1, fan_out]: adjacent in the flat buffer [K, P]."""
    blocks, offset = [], 0
    for fan_in, fan_out in shapes:
        size = (fan_in + 1) * fan_out
        blocks.append(flat[:, offset : offset + size].view(flat.shape[0], fan_in + 1, fan_out))
        offset += size
    return blocks


class _Forward:
    """forward(x) for one batch size B, through buffers allocated once.

    Buffers are feature-major, [width, K, B]: a layer's rows of all members are one dense block,
    so the activations run over contiguous memory (NumPy's tanh over member-major buffers, where
    the row of ones splits every member off, was 30 % slower at K = 32), while the matmuls see
    each member's [width, B] matrix through a strided view. Every kernel is prepared here with its
    operands bound, so a pass is a flat loop of calls that allocates nothing. On the CPU the
    batched matrix products run in NumPy on views of the same memory: its OpenBLAS has
    small-matrix kernels, about twice as fast here as torch.bmm (MKL) for the [K, ≤21, ≤39]
    products of a training step.
    """

    def __init__(self, model: StackedMLP, batch: int):
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
    def size_bytes(model: StackedMLP, batch: int) -> int:
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


class _Backprop(_Forward):
    """The forward and backward pass of StackedMLP.mse_backward for one batch size B.

    Like the forward, the backward is a flat loop of prepared calls into buffers allocated once;
    on the CPU, NumPy's matmul writes the gradients straight into the strided blocks of `grads`
    (bmm would fill a contiguous buffer to be copied over).
    """

    def __init__(self, model: StackedMLP, batch: int):
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
