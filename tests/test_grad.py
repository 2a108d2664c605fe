"""The chain-rule product against autograd and finite differences, and a trained network against f'."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rungefit.config import DEFAULT_LAYERS, TrainConfig, parse_layers
from rungefit.net.model import ACTIVATIONS, StackedMLP
from rungefit.study import grad as grad
from rungefit.targets import resolve
from rungefit.training.train import fit

from .helpers import runge_prime, stacked

RUNGE = resolve(TrainConfig())

SPECS = [DEFAULT_LAYERS, "8:relu,8:gelu", "5:silu,3:softplus,4:identity", "1:tanh", "7:sigmoid,7:sigmoid,7:sigmoid", "6:sin,4:tanh"]


def points(model: StackedMLP, n: int = 41, span: float = 1.5) -> torch.Tensor:
    """The same n points for every member, [K, n], reaching beyond [-1, 1]."""
    return torch.linspace(-span, span, n, dtype=torch.float64).expand(model.members, -1)


@pytest.mark.parametrize("spec", SPECS)
def test_explicit_product_equals_autograd(spec):
    model = stacked(spec)
    x = points(model)
    difference = grad.explicit_gradient(model, x) - grad.autograd_gradient(model, x)
    assert difference.abs().max().item() < 1e-12


# relu is left out: a central difference straddling a kink is not a derivative.
@pytest.mark.parametrize("spec", [spec for spec in SPECS if "relu" not in spec])
def test_finite_difference_agrees_with_autograd(spec):
    model = stacked(spec)
    x = points(model)
    difference = grad.finite_difference_gradient(model, x) - grad.autograd_gradient(model, x)
    assert difference.abs().max().item() < 1e-6


layer = st.tuples(st.integers(1, 12), st.sampled_from(sorted(ACTIVATIONS)))


@settings(max_examples=40, deadline=None)
@given(
    layers=st.lists(layer, min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
    x=st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=5),
)
def test_product_equals_autograd_for_random_networks(layers, seed, x):
    model = stacked(",".join(f"{width}:{name}" for width, name in layers), seeds=(seed,))
    inputs = torch.tensor([x], dtype=torch.float64)
    difference = grad.explicit_gradient(model, inputs) - grad.autograd_gradient(model, inputs)
    assert difference.abs().max().item() < 1e-12


def linear_network(w: float, b: float) -> StackedMLP:
    """x ↦ w x + b: one affine map, with the hidden identity layer and the output map set to 1 and 0."""
    model = StackedMLP(parse_layers("1:identity"), 1, dtype=torch.float64)
    model.load_state_dict({
        "layers.0.weight": torch.tensor([[[w]]], dtype=torch.float64),
        "layers.0.bias": torch.tensor([[b]], dtype=torch.float64),
        "layers.1.weight": torch.ones(1, 1, 1, dtype=torch.float64),
        "layers.1.bias": torch.zeros(1, 1, dtype=torch.float64),
    })
    return model


def test_one_layer_linear_network_gives_exactly_w():
    model = linear_network(w=-0.7318, b=0.25)
    check = grad.check_gradient(model, RUNGE, np.array([-1.0, -0.2, 0.0, 0.3, 1.0]))
    assert (check.explicit == -0.7318).all()
    assert (check.autograd == -0.7318).all()
    assert grad.explain_chain(model, 0.3)[-1].running[0, 0] == -0.7318


def test_identity_layers_give_the_product_of_the_weights():
    model = stacked("4:identity,3:identity", seeds=(5,))
    w2, w3, w4 = (model.weight(i)[0].numpy() for i in range(3))
    expected = (w4 @ w3 @ w2).item()
    check = grad.check_gradient(model, RUNGE, np.array([-0.5, 0.9]))
    np.testing.assert_allclose(check.explicit, expected, rtol=0, atol=1e-15)


def test_explain_writes_out_the_formula_with_identity_for_the_input_layer():
    model = grad.untrained_model(DEFAULT_LAYERS, seed=3)
    chain = grad.explain_chain(model, 0.3)
    shapes = [factor.matrix.shape for factor in chain]
    assert shapes == [(1, 1), (1, 10), (10, 10), (10, 20), (20, 20), (20, 10), (10, 10), (10, 20), (20, 20), (20, 1), (1, 1)]
    assert [factor.kind for factor in chain[:2]] == ["output", "weight"]
    assert chain[0].matrix[0, 0] == 1.0
    assert chain[-1].kind == "input" and chain[-1].matrix[0, 0] == 1.0 and "no activation" in chain[-1].note
    explicit = grad.explicit_gradient(model, torch.tensor([[0.3]], dtype=torch.float64)).item()
    assert abs(chain[-1].running[0, 0] - explicit) < 1e-15
    assert all(factor.running.shape == (1, factor.matrix.shape[1]) for factor in chain)


def test_check_gradient_runs_in_float64_on_one_member():
    model = stacked(DEFAULT_LAYERS, seeds=(0, 1), dtype=torch.float32)
    with pytest.raises(ValueError, match="as_float64"):
        grad.check_gradient(model, RUNGE, np.array([0.3]))
    member = grad.as_float64(model, 1)
    assert member.members == 1 and member.dtype == torch.float64
    assert torch.equal(member.params[0], model.params[1].double())


def test_study_reports_points_grid_and_chains_as_json():
    model = grad.untrained_model("6:tanh,4:sigmoid", seed=1)
    study = grad.study_gradient(model, RUNGE, [0.3, -1.5], grid_points=11, explain=True)
    doc = json.loads(json.dumps(study.as_dict()))
    assert [p["x"] for p in doc["points"]] == [0.3, -1.5]
    assert doc["grid"]["points"] == 11 and doc["grid"]["max_product_vs_autograd"] < 1e-12
    assert [chain["x"] for chain in doc["explain"]] == [0.3, -1.5]
    assert len(study.curve.x) == 11
    assert len(grad.study_gradient(model, RUNGE, [0.3]).curve.x) == grad.PLOT_POINTS
    with pytest.raises(ValueError, match="--grid"):
        grad.study_gradient(model, RUNGE, [], grid_points=1)


def test_true_derivative_column_is_f_prime():
    check = grad.check_gradient(grad.untrained_model("3:tanh", seed=0), RUNGE, np.array([0.3]))
    assert check.true[0] == pytest.approx(runge_prime(0.3), rel=1e-15)


@pytest.fixture(scope="session")
def trained_model():
    """A shortened default run with the LM polish (`rungefit train --polish lm`), once per session.

    Adam alone fits f's values far better than its slope; the polish fits the slope too.
    """
    return fit(TrainConfig(points=1000, epochs=200, polish="lm", polish_iterations=15)).model


def test_trained_network_derivative_is_close_to_f_prime(trained_model):
    assert trained_model.dtype == torch.float32
    check = grad.check_gradient(grad.as_float64(trained_model, 0), RUNGE, np.array([0.3]))
    assert check.network_vs_true[0] < 1e-2
    assert check.product_vs_autograd[0] < 1e-12
