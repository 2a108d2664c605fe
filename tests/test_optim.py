"""StackedAdam against torch.optim.Adam, on both of its paths, and the learning-rate schedules."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from rungefit.config import TrainConfig
from rungefit.net.optim import StackedAdam, fused_adam_works, lr_factors
from rungefit.training.train import fit

from .helpers import fresh_interpreter_env, stacked

F64 = torch.float64


@pytest.mark.parametrize("fast", [True, False], ids=["fused-op", "torch.optim.Adam"])
def test_stacked_adam_matches_torch_adam_per_member(fast):
    lrs = [1e-1, 3e-3, 3e-3, 2e-2]  # two members share a rate: one group for both
    model = stacked("6:tanh,4:sigmoid", [0, 1, 2, 3])
    optimizer = StackedAdam(model, lrs, betas=(0.8, 0.99), eps=1e-6, fast=fast)
    singles = [model.params[k].clone().requires_grad_() for k in range(len(lrs))]
    references = [torch.optim.Adam([p], lr=lr, betas=(0.8, 0.99), eps=1e-6) for p, lr in zip(singles, lrs, strict=True)]
    generator = torch.Generator().manual_seed(1)
    for step in range(25):
        factor = 1 - step / 25  # a schedule: the rate of every group changes each step
        gradients = torch.randn(model.params.shape, dtype=F64, generator=generator)
        model.grads.copy_(gradients)
        optimizer.step(factor)
        for k, (p, reference) in enumerate(zip(singles, references, strict=True)):
            p.grad = gradients[k].clone()
            reference.param_groups[0]["lr"] = lrs[k] * factor
            reference.step()
    for k, p in enumerate(singles):
        assert torch.allclose(model.params[k], p.detach(), rtol=0, atol=1e-12)
        assert torch.allclose(optimizer.exp_avg_sq[k], references[k].state[p]["exp_avg_sq"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("fast", [True, False], ids=["fused-op", "torch.optim.Adam"])
def test_adam_state_round_trips_and_continues_the_same(fast):
    model, twin = stacked("3:tanh", [0]), stacked("3:tanh", [0])
    optimizer = StackedAdam(model, [1e-2], fast=fast)
    for _ in range(3):
        model.grads.fill_(0.5)
        optimizer.step()
    other = StackedAdam(twin, [1e-2], fast=not fast)  # state saved by one path, loaded by the other
    twin.params.copy_(model.params)
    other.load_state_dict(optimizer.state_dict())
    assert other.step_count == 3 and torch.equal(other.exp_avg, optimizer.exp_avg)
    for net, opt in ((model, optimizer), (twin, other)):
        net.grads.fill_(-0.25)
        opt.step()
    assert torch.allclose(model.params, twin.params, rtol=0, atol=1e-15)


def test_the_fast_path_is_taken_only_where_the_private_op_behaves(monkeypatch):
    assert fused_adam_works(torch.float32, "cpu")  # torch 2.13 has it, and it behaves
    fused_adam_works.cache_clear()
    monkeypatch.setattr(torch, "_fused_adam_", lambda *args, **kwargs: None)  # present, but does nothing
    assert not fused_adam_works(torch.float32, "cpu")
    fused_adam_works.cache_clear()
    monkeypatch.setattr(torch, "_fused_adam_", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("changed signature")))
    assert not fused_adam_works(torch.float32, "cpu")
    assert not StackedAdam(stacked("3:tanh", [0]), [1e-2]).fast
    fused_adam_works.cache_clear()


def test_training_works_with_the_private_op_deleted_and_ends_at_the_fast_paths_numbers(monkeypatch):
    config = TrainConfig(points=120, epochs=4, seeds=(0, 1), dtype="float64")
    fast = fit(config)
    fused_adam_works.cache_clear()
    monkeypatch.delattr(torch, "_fused_adam_")
    try:
        public = fit(config)
        assert not fused_adam_works(torch.float64, "cpu")
    finally:
        fused_adam_works.cache_clear()
    assert public.status == "complete"
    torch.testing.assert_close(public.model.params, fast.model.params, rtol=1e-10, atol=1e-13)


def test_schedules_start_at_the_peak_rate_and_decay():
    steps = 1000
    constant, cosine, onecycle = (lr_factors(name, steps) for name in ("constant", "cosine", "onecycle"))
    assert np.all(constant == 1)
    assert cosine[0] == 1 and cosine[-1] < 1e-4 and np.all(np.diff(cosine) <= 0)
    assert onecycle[0] == pytest.approx(1 / 25)
    assert onecycle.max() == pytest.approx(1)
    assert onecycle.argmax() == pytest.approx(0.3 * steps, abs=2)
    assert onecycle[-1] == pytest.approx(1 / 25e4)


def test_a_training_on_the_fast_path_does_not_import_torch_dynamo():
    # Constructing torch.optim.Adam imports torch._dynamo, most of a second of every command: the
    # fast path's check compares with Adam's documented update instead.
    code = (
        "import sys\nfrom rungefit import TrainConfig, fit\nfrom rungefit.net.optim import fused_adam_works\n"
        "fit(TrainConfig(points=60, epochs=1))\nprint(fused_adam_works(), 'torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=fresh_interpreter_env(), timeout=100)
    assert result.stdout.split() == ["True", "False"], result.stderr
