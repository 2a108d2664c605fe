"""A stack's member as a plain torch.nn.Sequential, and a Sequential back into a stack."""

from __future__ import annotations

import pytest
import torch

from rungefit.config import parse_layers
from rungefit.errors import UsageError
from rungefit.net.model import ACTIVATIONS, StackedMLP
from rungefit.net.sequential import TORCH_MODULES, from_sequential, to_sequential

from .helpers import stacked

EVERY_ACTIVATION = "5:tanh,4:sigmoid,4:relu,3:gelu,3:silu,3:softplus,2:identity,2:sin"


def stack(spec: str = EVERY_ACTIVATION, members: int = 3, dtype=torch.float64) -> StackedMLP:
    return stacked(spec, tuple(range(11, 11 + members)), dtype)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_has_a_torch_module_computing_its_function(name):
    z = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    assert torch.allclose(TORCH_MODULES[name]()(z), ACTIVATIONS[name].fn(z), rtol=0, atol=1e-14)


def test_the_module_table_covers_the_activation_table():
    assert set(TORCH_MODULES) == set(ACTIVATIONS)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_each_members_sequential_computes_that_members_forward(dtype, tolerance):
    model = stack(dtype=dtype)
    x = torch.linspace(-1.5, 1.5, 301, dtype=dtype)
    expected = model.forward(x.expand(model.members, -1)).detach()
    for member in range(model.members):
        network = to_sequential(model, member)
        assert next(network.parameters()).dtype == dtype
        got = network(x.unsqueeze(1)).squeeze(1)
        assert (got - expected[member]).abs().max() <= tolerance * expected[member].abs().max()


def test_the_sequential_is_a_detached_eval_mode_copy():
    model = stack()
    network = to_sequential(model, 1)
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    before = model.params.clone()
    with torch.no_grad():
        next(network.parameters()).add_(1)
    assert torch.equal(model.params, before)


def test_to_sequential_leaves_the_global_random_state_alone():
    model = stack()
    state = torch.get_rng_state()
    to_sequential(model, 0)
    assert torch.equal(torch.get_rng_state(), state)


def test_from_sequential_inverts_to_sequential_exactly():
    model = stack(members=2)
    back = from_sequential(to_sequential(model, 1))
    assert back.members == 1 and back.layers == model.layers and back.dtype == model.dtype
    assert torch.equal(back.params[0], model.params[1])


def test_a_hand_built_sequential_loads_into_a_stack():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.GELU(), torch.nn.Linear(6, 3), torch.nn.ReLU(inplace=True), torch.nn.Linear(3, 1)).double()
    model = from_sequential(network)
    assert model.layers == parse_layers("6:gelu,3:relu")
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    assert torch.allclose(model.forward(x.unsqueeze(0))[0].detach(), network(x.unsqueeze(1)).squeeze(1).detach(), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "modules, message",
    [
        ([torch.nn.Linear(1, 4), torch.nn.Linear(4, 1)], "one activation between"),
        ([torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)], "1 input and 1 output"),
        ([torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(3, 1)], "takes 3 features"),
        ([torch.nn.Linear(1, 4), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(4, 1)], "differs from rungefit's gelu"),
        ([torch.nn.Linear(1, 4), torch.nn.Softplus(beta=2), torch.nn.Linear(4, 1)], "differs from rungefit's softplus"),
        ([torch.nn.Linear(1, 4), torch.nn.Dropout(), torch.nn.Linear(4, 1)], "Dropout is not one of"),
        ([torch.nn.Linear(1, 4).half(), torch.nn.Tanh(), torch.nn.Linear(4, 1).half()], "float32 or float64"),
        ([torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1).double()], "float32 or float64 parameters of one dtype"),
    ],
)
def test_sequentials_that_are_not_rungefit_networks_are_refused(modules, message):
    with pytest.raises(UsageError, match=message):
        from_sequential(torch.nn.Sequential(*modules))


def test_a_member_outside_the_stack_is_refused():
    with pytest.raises(UsageError, match="member 3 does not exist"):
        to_sequential(stack(members=3), 3)
