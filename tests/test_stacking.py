"""The stacked core against its references: single runs, torch.optim.Adam, autograd, nn.Sequential.

All in float64, where a disagreement beyond rounding is a bug rather than noise.
"""

import pytest
import torch
from torch import nn

from rungefit.config import DEFAULT_LAYERS, TrainConfig, layer_shapes
from rungefit.net import kernels as kernels
from rungefit.net import model as model_module
from rungefit.net.kernels import BackwardPass
from rungefit.net.model import ACTIVATIONS
from rungefit.training.train import fit

from .helpers import runge, stacked

F64 = torch.float64
# A width-1 hidden layer takes the hand-written pass's broadcast path, as the output layer does.
SPECS = [DEFAULT_LAYERS, "5:relu,3:gelu", "4:silu,1:softplus,3:identity", "1:tanh,6:sigmoid", "7:tanh", "6:sin,3:tanh"]
MODULES = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
    "sin": lambda: Lambda(torch.sin),  # torch.nn has no sine module
}


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z):
        return self.fn(z)


def batch(members: int, size: int = 13, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(members, size, dtype=F64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x, runge(x)


def test_member_k_follows_the_single_run_with_seed_k():
    config = TrainConfig(points=150, epochs=5, dtype="float64", seeds=(4, 0, 9))
    together = fit(config, member_lrs=[3e-2, 1e-2, 5e-3])
    for k, (seed, lr) in enumerate(zip(config.seeds, [3e-2, 1e-2, 5e-3], strict=True)):
        alone = fit(TrainConfig(points=150, epochs=5, dtype="float64", seeds=(seed,), lr=lr))
        assert torch.allclose(together.model.params[k], alone.model.params[0], rtol=0, atol=1e-9)
        assert together.history.val_mse[-1][k] == pytest.approx(alone.history.val_mse[-1][0], rel=1e-9)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("use_numpy", [True, False], ids=["numpy-kernels", "torch-kernels"])
def test_hand_written_backward_matches_autograd(spec, members, use_numpy, monkeypatch):
    # The torch kernels are the GPU's; here they run on the CPU.
    monkeypatch.setattr(kernels, "NUMPY_ON_CPU", use_numpy)
    model = stacked(spec, list(range(members)))
    x, y = batch(members)
    loss = BackwardPass(model, x.shape[1]).mse_backward(x, y)
    grads = model.grads.clone()
    model.grads.zero_()
    reference = ((model.forward(x) - y) ** 2).mean(dim=1)
    reference.sum().backward()
    assert torch.allclose(loss, reference.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(grads, model.grads, rtol=0, atol=1e-12)


def test_evaluation_in_chunks_matches_the_autograd_forward(monkeypatch):
    monkeypatch.setattr(model_module, "FORWARD_CHUNK_BYTES", 40_000)  # 13 points a chunk: 76 chunks of 13, one of 12
    model = stacked(DEFAULT_LAYERS, [0, 1, 2])
    x, y = batch(3, size=1000)
    expected = ((model.forward(x) - y) ** 2).mean(dim=1).detach()
    for _ in range(2):  # the second time through the kept buffers
        assert torch.allclose(model.mse(x, y), expected, rtol=0, atol=1e-12)
    assert sorted(model._forwards) == [12, 13]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_output_derivatives_agree_with_the_derivative(name):
    activation = ACTIVATIONS[name]
    if activation.output_derivative is None:
        pytest.skip(f"{name} has no derivative through its output")
    z = torch.linspace(-4, 4, 81, dtype=F64)
    z = z[z.abs() > 1e-9]  # relu's kink
    assert torch.allclose(activation.output_derivative(activation.fn(z)), activation.derivative(z), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_write_into_a_strided_buffer(name):
    z = torch.linspace(-4, 4, 24, dtype=F64).view(2, 3, 4)
    buffer = torch.zeros(2, 4, 4, dtype=F64)
    ACTIVATIONS[name].fn(z, out=buffer[:, :3])
    # Not bit-equal: ATen computes tails of vectorised loops with scalar code.
    assert torch.allclose(buffer[:, :3], ACTIVATIONS[name].fn(z), rtol=0, atol=1e-15)
    assert not buffer[:, 3].any()


@pytest.mark.parametrize("spec", SPECS)
def test_member_k_is_an_nn_sequential_with_its_state_dict(spec):
    model = stacked(spec, [5, 6, 7])
    x = torch.linspace(-1, 1, 50, dtype=F64).expand(3, -1)
    state = model.state_dict()
    for k in range(3):
        modules = []
        for index, (fan_in, fan_out) in enumerate(layer_shapes(model.layers)):
            linear = nn.Linear(fan_in, fan_out, dtype=F64)
            linear.load_state_dict({"weight": state[f"layers.{index}.weight"][k], "bias": state[f"layers.{index}.bias"][k]})
            modules.append(linear)
            if index < len(model.layers):
                modules.append(MODULES[model.layers[index].activation]())
        with torch.no_grad():
            expected = nn.Sequential(*modules)(x[k].unsqueeze(1)).squeeze(1)
        assert torch.allclose(model.forward(x)[k].detach(), expected, rtol=0, atol=1e-12)
        assert model.mse(x, runge(x))[k] == pytest.approx(((expected - runge(x[k])) ** 2).mean().item(), rel=1e-12)


def test_changing_batch_sizes_reuse_nothing_stale():
    model = stacked(DEFAULT_LAYERS, [0, 1])
    for size in (13, 5, 13):
        x, y = batch(2, size, seed=size)
        loss = model.mse_backward(x, y)
        assert torch.allclose(loss, model.mse(x, y), rtol=0, atol=1e-12)


def test_a_fit_with_torch_kernels_matches_the_numpy_kernels(monkeypatch):
    # torch's kernels are what a GPU runs: here the whole CPU fit runs on them, against NumPy's.
    config = TrainConfig(points=150, epochs=3, dtype="float64", seeds=(4, 0), workers=1)
    numpy_kernels = fit(config)
    monkeypatch.setattr(kernels, "NUMPY_ON_CPU", False)
    torch_kernels = fit(config)
    assert all(p.use_numpy for p in numpy_kernels.model._backprops.values())
    assert not any(p.use_numpy for p in torch_kernels.model._backprops.values())
    assert torch.allclose(numpy_kernels.model.params, torch_kernels.model.params, rtol=0, atol=1e-10)
    assert numpy_kernels.members[1].val_mse == pytest.approx(torch_kernels.members[1].val_mse, rel=1e-9)
