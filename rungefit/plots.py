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


def fit_png(
    x: np.ndarray, target: np.ndarray | None, predictions: np.ndarray, title: str = "", label: str = "f(x) = 1/(1+25x²)",
    points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """f and the network(s) on the top panel, |error| (log scale) below; predictions is [K, n].
    For data (target None), points = (x, y, the predictions there [K, m]): the points on top, and
    the errors at them below."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    if target is not None:
        top.plot(x, target, color="black", lw=2, label=label)
        error_x, errors = x, np.abs(predictions - target)
    else:
        point_x, point_y, at_points = points
        order = np.argsort(point_x, kind="stable")
        top.plot(point_x, point_y, ".", color="black", ms=3, label=label)
        error_x, errors = point_x[order], np.abs(at_points - point_y)[:, order]
    if len(predictions) == 1:
        top.plot(x, predictions[0], "--", color="tab:red", label="network")
        bottom.semilogy(error_x, errors[0], color="tab:red")
    else:
        top.fill_between(x, predictions.min(0), predictions.max(0), color="tab:red", alpha=0.3, label=f"{len(predictions)} networks (range)")
        top.plot(x, np.median(predictions, 0), "--", color="tab:red", label="median network")
        bottom.fill_between(error_x, np.maximum(errors.min(0), 1e-16), errors.max(0), color="tab:red", alpha=0.3)
        bottom.semilogy(error_x, np.median(errors, 0), color="tab:red")
    top.legend()
    top.set_title(title)
    bottom.set_xlabel("x")
    bottom.set_ylabel("|network − f|" if target is not None else "|network − y|")
    return _png(fig)


def loss_png(train_mse: np.ndarray, val_mse: np.ndarray) -> bytes:
    """Train and validation MSE per epoch, [epochs, K] each, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(train_mse) + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    if not len(epochs):  # a run that diverged in its first epoch has no curve to draw
        ax.text(0.5, 0.5, "no completed epoch", transform=ax.transAxes, ha="center")
        return _png(fig)
    for curve, label, color in ((train_mse, "train", "tab:blue"), (val_mse, "validation", "tab:orange")):
        curve = np.asarray(curve)
        ax.semilogy(epochs, np.median(curve, 1), color=color, label=f"{label} (median)" if curve.shape[1] > 1 else label)
        if curve.shape[1] > 1:
            ax.fill_between(epochs, curve.min(1), curve.max(1), color=color, alpha=0.2)
    ax.legend()
    return _png(fig)


def grad_png(
    x: np.ndarray, true: np.ndarray, network: np.ndarray, marked: np.ndarray, title: str = "", label: str = "f'(x) = −50x/(1+25x²)²"
) -> bytes:
    """f' and the network's derivative over x on top, |∇a − f'| (log scale) below; `marked` x are the
    points asked for with --x, drawn as ticks. f' is NaN where it does not exist (a kink, a jump),
    and everywhere for data, which has no f' to draw."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    if np.isfinite(true).any():
        top.plot(x, true, color="black", lw=2, label=label)
        bottom.semilogy(x, np.maximum(np.abs(network - true), 1e-16), color="tab:red")
    else:
        bottom.text(0.5, 0.5, "data: no true derivative to compare with", transform=bottom.transAxes, ha="center")
    top.plot(x, network, "--", color="tab:red", label="∇a^[L](x), network")
    for value in marked:
        for ax in (top, bottom):
            ax.axvline(value, color="grey", lw=0.8, ls=":")
    top.legend()
    top.set_title(title)
    bottom.set_xlabel("x")
    bottom.set_ylabel("|∇a^[L] − f'|")
    return _png(fig)


def eval_png(
    x: np.ndarray, target: np.ndarray | None, prediction: np.ndarray, errors: dict[str, np.ndarray], title: str = "",
    label: str = "f(x) = 1/(1+25x²)", error_x: np.ndarray | None = None, points: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """f and the network on top; below, |error| (log scale) of the network and of each baseline in
    `errors`, at error_x (default x). For data (target None), `points` are drawn instead of f, and
    the errors are those at the test points."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    if target is not None:
        top.plot(x, target, color="black", lw=2, label=label)
    else:
        top.plot(*points, ".", color="black", ms=4, label=label)
    top.plot(x, prediction, "--", color="tab:red", label="network")
    # Interpolants are exact at their nodes; a floor keeps those dips from stretching the axis.
    floor = 1e-10
    marker = "." if target is None else ""
    for name, error in errors.items():
        style = {"color": "tab:red", "lw": 1.5} if name == "network" else {"lw": 1, "alpha": 0.8}
        bottom.semilogy(x if error_x is None else error_x, np.maximum(np.abs(error), floor), marker=marker, label=name, **style)
    top.legend()
    top.set_title(title)
    bottom.set_xlabel("x")
    bottom.set_ylabel("|approximant − f|" if target is not None else "|approximant − y|")
    bottom.set_ylim(bottom=floor)
    if len(errors) > 1:
        bottom.legend(fontsize="small", ncol=2, loc="upper center")
    return _png(fig)


RULE_STYLES = {"steepest": "--", "valley": "-.", "minimum": ":"}  # black lines: the seeds have the colours


def _as_float(values: list) -> np.ndarray:
    """JSON lists use None for a non-finite figure; NaN keeps them off the plot."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def lr_find_png(members: list[dict], suggestions: dict[str, float | None]) -> bytes:
    """Raw and smoothed range-test loss against lr (log-log) per seed, with Var(y), the divergence
    points and each rule's median suggestion marked. members: lr-find's JSON per-seed entries."""
    plt = _pyplot()
    mean_loss = float(np.median([member["mean_predictor_mse"] for member in members]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for index, member in enumerate(members):
        lrs, raw, smoothed = np.array(member["lr"]), _as_float(member["loss"]), _as_float(member["smoothed"])
        ax.loglog(lrs, raw, color=f"C{index % 10}", alpha=0.25, lw=0.8)
        ax.loglog(lrs, smoothed, color=f"C{index % 10}", lw=1.8, label=f"seed {member['seed']}")
        if member["val_loss"] is not None:
            ax.loglog(lrs, _as_float(member["val_loss"]), ":", color=f"C{index % 10}", lw=1.2)
        if member["stop"] != "complete":
            finite = np.isfinite(smoothed)
            ax.plot(lrs[finite][-1], smoothed[finite][-1], "x", color="black", ms=9, mew=2, label="divergence" if index == 0 else None)
    ax.axhline(mean_loss, color="gray", ls="--", lw=1, label=f"Var(y) = {mean_loss:.3g} (predicting the mean)")
    for rule, lr in suggestions.items():
        if lr is not None:
            ax.axvline(lr, color="black", ls=RULE_STYLES[rule], lw=1.2, label=f"{rule}: {lr:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("mini-batch MSE")
    ax.set_title("learning-rate range test (thick: smoothed, faint: raw, dotted: validation)")
    ax.legend(fontsize="small", loc="upper left")
    return _png(fig)


def lr_verify_png(verification: dict) -> bytes:
    """Final validation MSE against lr: every seed, the median, the best rate and each suggestion.

    verification: lr-find's JSON verification entry (diverged trainings are null and left out).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rates = np.array([r["lr"] for r in verification["rates"]])
    values = np.array([_as_float(r["val_mse"]) for r in verification["rates"]])
    for column in range(values.shape[1]):
        ax.loglog(rates, values[:, column], "o", color="tab:blue", alpha=0.4, ms=4, label="one seed" if column == 0 else None)
    ax.loglog(rates, _as_float([r["median"] for r in verification["rates"]]), "-", color="tab:blue", label="median over seeds")
    best = next(r for r in verification["rates"] if r["lr"] == verification["best_lr"])
    ax.plot(best["lr"], best["median"], "*", color="gold", mec="black", ms=16, label=f"best: {best['lr']:.3g}")
    for rate in verification["rates"]:
        for rule in rate["rules"]:
            ax.axvline(rate["lr"], color="black", ls=RULE_STYLES[rule], lw=1.2, label=f"{rule}: {rate['lr']:.3g}")
    ax.axhline(verification["mean_predictor_mse"], color="gray", ls="--", lw=1, label="Var(y) (predicting the mean)")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(f"validation MSE after {verification['epochs']} epochs")
    ax.set_title("verification: real trainings, one stacked fit")
    ax.legend(fontsize="small")
    return _png(fig)
