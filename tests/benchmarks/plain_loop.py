"""The baseline: the plain PyTorch loop the reference experiment most likely was.

nn.Sequential + TensorDataset + DataLoader(batch_size=39, shuffle=True) + torch.optim.Adam +
nn.MSELoss, float32 on the CPU, with the validation MSE once per epoch as rungefit computes it.
Written once and deliberately ordinary: it is what rungefit's speed is measured against.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ACTIVATION_MODULES = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def plain_network(spec: str = "20:tanh,10:sigmoid,20:tanh,10:sigmoid") -> nn.Sequential:
    modules: list[nn.Module] = []
    fan_in = 1
    for item in spec.split(","):
        width, activation = item.split(":")
        modules += [nn.Linear(fan_in, int(width)), ACTIVATION_MODULES[activation]()]
        fan_in = int(width)
    return nn.Sequential(*modules, nn.Linear(fan_in, 1))


def train_plain(
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    *,
    epochs: int = 300,
    lr: float = 3e-2,
    batch_size: int = 39,
    seed: int = 0,
) -> tuple[nn.Sequential, int]:
    """Train on points x_train [n] with targets f(x); returns the network and the step count."""
    torch.manual_seed(seed)
    model = plain_network()
    loader = DataLoader(TensorDataset(x_train.unsqueeze(1), runge(x_train).unsqueeze(1)), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    steps = 0
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            loss_fn(model(x_val.unsqueeze(1)), runge(x_val).unsqueeze(1)).item()
    return model, steps


def runge(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + 25.0 * x * x)
