"""One member of a stack as a plain torch.nn.Sequential (Linear, activation, …, Linear), in the
target's units when given its maps, and back; the mean of several as one module (EnsembleMean)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rungefit.config import Layer, layer_shapes
from rungefit.errors import UsageError
from rungefit.net.model import StackedMLP


class Sine(torch.nn.Module):
    """sin(z) elementwise: the activation `sin` as a module (torch.nn has none)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)


# The torch.nn module of every activation in ACTIVATIONS, with the settings that match its fn.
TORCH_MODULES: dict[str, Callable[[], torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
    "softplus": torch.nn.Softplus,
    "identity": torch.nn.Identity,
    "sin": Sine,
}


# Folded into a float32 Linear, a map whose offset is large beside its scale (x in calendar years,
# y near 400 ± 10) would lose the digits that tell the points apart: such maps stay float64
# modules at the ends of the network.
FOLD_LIMIT = 1.0


class Float64Affine(torch.nn.Module):
    """(x − shift) · scale computed in float64, then cast to out_dtype: a map between data units
    and the network's standard coordinates, kept exact beside a float32 network."""

    def __init__(self, shift: float, scale: float, out_dtype: torch.dtype):
        super().__init__()
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.shift) * self.scale).to(self.out_dtype)


def _folds(model: StackedMLP, maps) -> bool:
    """Whether the maps fold into the Linear layers without losing precision in the model's dtype."""
    return model.dtype == torch.float64 or (abs(maps.x_centre) <= FOLD_LIMIT * maps.x_half and abs(maps.y_mean) <= FOLD_LIMIT * maps.y_scale)


def to_sequential(model: StackedMLP, member: int = 0, maps=None) -> torch.nn.Sequential:
    """Member `member` of a stack as a torch.nn.Sequential: Linear, activation, …, Linear.

    It is a copy in the stack's dtype on the CPU, in eval mode, with parameters that do not require
    grad; its state_dict keys ("0.weight", "0.bias", "2.weight", …) are nn.Sequential's own. With
    `maps` (a run target's targets.Maps), it works in the target's units: x_std = (x − x_centre) /
    x_half is folded into the first Linear and y = y_scale · a + y_mean into the last, in float64
    before the cast to the stack's dtype; where that would lose precision (a float32 stack whose
    maps have large offsets), they stay Float64Affine modules at the ends instead, and the module
    takes and returns float64.
    """
    if not 0 <= member < model.members:
        raise UsageError(f"member {member} does not exist; the stack has members 0…{model.members - 1}")
    if maps is not None and not _folds(model, maps):
        inner = to_sequential(model, member)
        ends = (Float64Affine(maps.x_centre, 1.0 / maps.x_half, model.dtype), Float64Affine(-maps.y_mean / maps.y_scale, maps.y_scale, torch.float64))
        return torch.nn.Sequential(ends[0], *inner, ends[1]).eval().requires_grad_(False)
    shapes = layer_shapes(model.layers)
    modules: list[torch.nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(shapes):
        weight, bias = model.weight(index)[member].double(), model.bias(index)[member].double()
        if maps is not None and index == 0:
            weight, bias = weight / maps.x_half, bias - weight[:, 0] * (maps.x_centre / maps.x_half)
        if maps is not None and index == len(shapes) - 1:
            weight, bias = weight * maps.y_scale, bias * maps.y_scale + maps.y_mean
        # skip_init: nn.Linear's own initialisation would draw from the caller's global RNG.
        linear = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out, dtype=model.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules.append(linear)
        if index < len(model.layers):
            modules.append(TORCH_MODULES[model.layers[index].activation]())
    return torch.nn.Sequential(*modules).eval().requires_grad_(False)


def sequential_layers(network: torch.nn.Sequential) -> tuple[Layer, ...]:
    """The hidden layers of a Sequential that to_sequential could have made; ValueError otherwise."""
    modules = _without_maps(network)
    linears, activations = modules[0::2], modules[1::2]
    if not linears or len(linears) != len(activations) + 1 or not all(isinstance(m, torch.nn.Linear) for m in linears):
        raise UsageError("expected a torch.nn.Sequential of Linear layers with one activation between each two")
    if linears[0].in_features != 1 or linears[-1].out_features != 1:
        raise UsageError(f"expected 1 input and 1 output feature, got {linears[0].in_features} and {linears[-1].out_features}")
    layers = []
    for index, (linear, module) in enumerate(zip(linears, activations, strict=False)):
        if linears[index + 1].in_features != linear.out_features:
            raise UsageError(f"Linear {index + 1} takes {linears[index + 1].in_features} features, its input has {linear.out_features}")
        layers.append(Layer(linear.out_features, _activation_name(module)))
    return tuple(layers)


def _activation_name(module: torch.nn.Module) -> str:
    """The ACTIVATIONS name of a module, which must compute what TORCH_MODULES' module does."""
    for name, make in TORCH_MODULES.items():
        if type(module) is make:
            if _settings(module) != _settings(make()):
                raise UsageError(f"{module!r} differs from rungefit's {name}, {make()!r}")
            return name
    raise UsageError(f"{type(module).__name__} is not one of rungefit's activations ({', '.join(TORCH_MODULES)})")


def _settings(module: torch.nn.Module) -> dict:
    """What an activation module computes with (GELU's approximation, Softplus' beta and threshold)."""
    return {key: value for key, value in vars(module).items() if not key.startswith("_") and key not in ("training", "inplace")}


def _without_maps(network: torch.nn.Sequential) -> list[torch.nn.Module]:
    """The modules of a Sequential without the Float64Affine maps at its ends."""
    modules = list(network)
    if len(modules) > 2 and isinstance(modules[0], Float64Affine) and isinstance(modules[-1], Float64Affine):
        return modules[1:-1]
    return modules


def from_sequential(network: torch.nn.Sequential) -> StackedMLP:
    """A one-member stack holding a copy of `network` (the inverse of to_sequential), in its dtype.
    Float64Affine maps at its ends are folded into the first and last Linear (in that dtype)."""
    layers = sequential_layers(network)
    modules, inner = list(network), _without_maps(network)
    linears = inner[0::2]
    if len(inner) != len(modules):  # maps at the ends: fold them, as to_sequential does where it can
        linears[0] = _affine_into(linears[0], modules[0], before=True)
        linears[-1] = _affine_into(linears[-1], modules[-1], before=False)
    dtypes = {parameter.dtype for parameter in network.parameters()}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
        raise UsageError(f"expected float32 or float64 parameters of one dtype, got {sorted(map(str, dtypes))}")
    model = StackedMLP(layers, 1, dtype=dtypes.pop())
    state = {}
    for index, linear in enumerate(linears):
        state[f"layers.{index}.weight"] = linear.weight.detach().cpu().unsqueeze(0)
        state[f"layers.{index}.bias"] = linear.bias.detach().cpu().unsqueeze(0)
    model.load_state_dict(state)
    return model


def _affine_into(linear: torch.nn.Linear, affine: Float64Affine, *, before: bool) -> torch.nn.Linear:
    """A copy of `linear` with the map folded in: applied to its input (before) or to its output."""
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    if before:  # W (x − s) k + b
        weight, bias = weight * affine.scale, bias - weight[:, 0] * affine.shift * affine.scale
    else:  # (W a + b − s) k
        weight, bias = weight * affine.scale, (bias - affine.shift) * affine.scale
    folded = torch.nn.utils.skip_init(torch.nn.Linear, linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


class EnsembleMean(torch.nn.Module):
    """The mean of the members' outputs: input x [batch, 1], output y [batch, 1], in the members'
    dtype. Its state_dict holds each member's under members.I. (members.0.0.weight, …)."""

    def __init__(self, members: list[torch.nn.Sequential]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
