import pytest
import torch

from rungefit.config import (
    DEFAULT_LAYERS,
    SINE_FIRST_SCALE,
    Layer,
    format_layers,
    layer_shapes,
    parameter_count,
    parse_layers,
)
from rungefit.net.model import ACTIVATIONS, StackedMLP


def test_default_spec_is_the_reference_network():
    layers = parse_layers(DEFAULT_LAYERS)
    assert layers == (Layer(20, "tanh"), Layer(10, "sigmoid"), Layer(20, "tanh"), Layer(10, "sigmoid"))
    assert layer_shapes(layers) == [(1, 20), (20, 10), (10, 20), (20, 10), (10, 1)]
    assert parameter_count(layers) == 40 + 210 + 220 + 210 + 11
    assert format_layers(layers) == DEFAULT_LAYERS


def test_spec_parsing_tolerates_spaces_and_case():
    assert parse_layers(" 8:TANH , 4:relu ") == (Layer(8, "tanh"), Layer(4, "relu"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty entry"),
        ("20:tanh,", "empty entry"),
        ("20", "WIDTH:ACTIVATION"),
        ("20:foo", "unknown activation 'foo'"),
        ("x:tanh", "not a whole number"),
        ("0:tanh", "between 1 and"),
        ("-3:tanh", "between 1 and"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_layers(spec)


def test_shapes_of_forward_and_preactivations():
    model = StackedMLP(parse_layers(DEFAULT_LAYERS), 3)
    model.initialise(torch.tensor([0, 1, 2]))
    trace = model.forward_with_preacts(torch.zeros(3, 7))
    assert trace.output.shape == (3, 7)
    assert [tuple(z.shape) for z in trace.preacts] == [(3, 7, 20), (3, 7, 10), (3, 7, 20), (3, 7, 10), (3, 7, 1)]
    assert [tuple(a.shape) for a in trace.inputs] == [(3, 7, 1), (3, 7, 20), (3, 7, 10), (3, 7, 20), (3, 7, 10)]
    assert model.weight(1).shape == (3, 10, 20) and model.bias(1).shape == (3, 10)


def test_initialisation_follows_nn_linear_bounds_per_seed():
    model = StackedMLP(parse_layers(DEFAULT_LAYERS), 2, dtype=torch.float64)
    model.initialise(torch.tensor([5, 6]))
    for index, (fan_in, _) in enumerate(layer_shapes(model.layers)):
        bound = fan_in**-0.5
        assert model.weight(index).abs().max() <= bound and model.bias(index).abs().max() <= bound
    alone = StackedMLP(model.layers, 1, dtype=torch.float64)
    alone.initialise(torch.tensor([6]))
    assert torch.equal(alone.params[0], model.params[1])


def test_a_first_sin_layer_starts_at_sine_first_scale_times_the_default_and_the_rest_as_usual():
    seeds = torch.tensor([5, 6])
    sine, plain = (StackedMLP(parse_layers(f"16:{first},8:sin"), 2, dtype=torch.float64) for first in ("sin", "tanh"))
    for model in (sine, plain):
        model.initialise(seeds)
    assert torch.equal(sine.weight(0), SINE_FIRST_SCALE * plain.weight(0)) and torch.equal(sine.bias(0), SINE_FIRST_SCALE * plain.bias(0))
    assert sine.weight(0).abs().max() > 1  # frequencies beyond the default's from the start
    for index in (1, 2):  # a later sin layer, and the output, keep nn.Linear's bounds
        assert torch.equal(sine.weight(index), plain.weight(index)) and torch.equal(sine.bias(index), plain.bias(index))


def test_state_dict_round_trip_and_shape_check():
    layers = parse_layers("4:tanh,3:relu")
    model = StackedMLP(layers, 2)
    model.initialise(torch.tensor([0, 1]))
    copy = StackedMLP(layers, 2)
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy.params, model.params)
    with pytest.raises(ValueError, match="shape"):
        StackedMLP(parse_layers("5:tanh,3:relu"), 2).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="do not match"):
        StackedMLP(parse_layers("4:tanh"), 2).load_state_dict(model.state_dict())


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivatives_match_autograd(name):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_()
    activation = ACTIVATIONS[name]
    (grad,) = torch.autograd.grad(activation.fn(z).sum(), z)
    keep = z.detach().abs() > 1e-9  # relu has a kink at 0
    assert torch.allclose(activation.derivative(z.detach())[keep], grad[keep], atol=1e-12)
