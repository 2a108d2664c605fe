"""Matplotlib figures as PNG bytes (Agg backend, imported only when a figure is drawn).

Each function takes plain arrays and returns the PNG, so the caller decides where it is written
(atomically, in the run directory).
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def fit_png(x: np.ndarray, target: np.ndarray, predictions: np.ndarray, title: str = "") -> bytes:
    """f and the network(s) on the top panel, |error| (log scale) below; predictions is [K, n]."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    top.plot(x, target, color="black", lw=2, label="f(x) = 1/(1+25x²)")
    errors = np.abs(predictions - target)
    if len(predictions) == 1:
        top.plot(x, predictions[0], "--", color="tab:red", label="network")
        bottom.semilogy(x, errors[0], color="tab:red")
    else:
        top.fill_between(x, predictions.min(0), predictions.max(0), color="tab:red", alpha=0.3, label=f"{len(predictions)} networks (range)")
        top.plot(x, np.median(predictions, 0), "--", color="tab:red", label="median network")
        bottom.fill_between(x, np.maximum(errors.min(0), 1e-16), errors.max(0), color="tab:red", alpha=0.3)
        bottom.semilogy(x, np.median(errors, 0), color="tab:red")
    top.legend()
    top.set_title(title)
    bottom.set_xlabel("x")
    bottom.set_ylabel("|network − f|")
    return _png(fig)


def loss_png(train_mse: np.ndarray, val_mse: np.ndarray) -> bytes:
    """Train and validation MSE per epoch, [epochs, K] each, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(train_mse) + 1)
    for index, (curve, label, color) in enumerate(((train_mse, "train", "tab:blue"), (val_mse, "validation", "tab:orange"))):
        curve = np.asarray(curve)
        ax.semilogy(epochs, np.median(curve, 1), color=color, label=f"{label} (median)" if curve.shape[1] > 1 else label)
        if curve.shape[1] > 1:
            ax.fill_between(epochs, curve.min(1), curve.max(1), color=color, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.legend()
    return _png(fig)
