"""Matplotlib figures as PNG bytes (Agg backend, imported only when a figure is drawn).

Each *_figure function takes plain arrays and draws a figure; its *_png twin returns the PNG, so
the caller decides where it is written (atomically, in the run directory). Every figure is titled
the same way (title(): the run, its target, which of its networks), and every line it marks is in
its legend, drawn as it is drawn on the axes.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A character the font lacks (a data column named in CJK, an emoji) is drawn as the font's
        # missing-glyph box; matplotlib would also print a warning with its source line.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


# Finite values beyond this are drawn at it: an axis reaching towards float64's largest number
# (a diverged run's last finite state may) overflows matplotlib's limit and tick arithmetic.
PLOT_LIMIT = 1e100


def _drawable(value):
    """value with every finite float beyond ±PLOT_LIMIT, in arrays however nested in dicts,
    lists and tuples, set to ±PLOT_LIMIT (NaN and ±inf, which matplotlib leaves out, stay)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return np.where(np.isfinite(value), np.clip(value, -PLOT_LIMIT, PLOT_LIMIT), value)
    if isinstance(value, dict):
        return {key: _drawable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_drawable(item) for item in value)
    return value


# The network's derivative as the docs write it, ∇a^[L], in matplotlib's mathtext (inside $…$).
GRADIENT = r"\nabla a^{[L]}"


def title(run: str, target: str, shown: str) -> str:
    """Every figure's title: the run's name, its target, and which of its networks the figure
    shows: shown(), or "ensemble of N" for a stack's mean."""
    return f"{run} · {target} · {shown}"


def shown(members) -> str:
    """"member 3"; "members 0-9" for consecutive members; else "members 0, 2, 7"."""
    members = list(members)
    if len(members) == 1:
        return f"member {members[0]}"
    if members == list(range(members[0], members[0] + len(members))):
        return f"members {members[0]}-{members[-1]}"
    return "members " + ", ".join(map(str, members))


def _title(fig, text: str) -> None:
    if text:
        fig.suptitle(_plain(text))


def _as_png(figure: Callable[..., Figure]) -> Callable[..., bytes]:
    """The PNG-bytes twin of a function that draws a figure (tests look at the figure itself)."""

    @functools.wraps(figure)
    def png(*args, **kwargs) -> bytes:
        return _png(figure(*_drawable(args), **_drawable(kwargs)))

    return png


def fit_figure(
    x: np.ndarray, target: np.ndarray | None, predictions: np.ndarray, title: str = "", label: str = "f(x) = 1/(1+25x²)",
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None, x_label: str = "x", y_label: str = "y",
    band: tuple[np.ndarray, np.ndarray] | None = None,
) -> Figure:
    """f and the network(s) on the top panel, |error| (log scale) below; predictions is [K, n].
    For data (target None), points = {role: (x, y, the predictions there [K, m])}: the points of
    each role (training, validation, test) apart on top, and their residuals below, as points; a
    stack's band (lower, upper: the ensemble mean ± 2 spreads) is shaded around the ensemble mean."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    if target is None:
        _data_fit(top, bottom, x, predictions, points, label, _plain(y_label), band)
        _title(fig, title)
        top.set_ylabel(_plain(y_label))
        bottom.set_xlabel(_plain(x_label))
        return fig
    top.plot(x, target, color="black", lw=2, label=label)
    error_x, errors = x, np.abs(predictions - target)
    members = len(predictions)
    if members == 1:
        top.plot(x, predictions[0], "--", color="tab:red", label="network")
        bottom.semilogy(error_x, errors[0], color="tab:red")
    else:
        top.fill_between(x, predictions.min(0), predictions.max(0), color="tab:red", alpha=0.3, label=f"range of the {members} networks")
        top.plot(x, np.median(predictions, 0), "--", color="tab:red", label=f"median of the {members} networks")
        bottom.fill_between(error_x, np.maximum(errors.min(0), 1e-16), errors.max(0), color="tab:red", alpha=0.3, label=f"range over the {members} networks")
        bottom.semilogy(error_x, np.median(errors, 0), color="tab:red", label=f"median over the {members} networks")
        bottom.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.legend()
    _title(fig, title)
    top.set_ylabel("y")
    bottom.set_xlabel("x")
    bottom.set_ylabel("|network − f|")
    return fig


# How each role of a data set's points is drawn: the test points, which no member trained on,
# stand out; the training points recede.
ROLE_STYLES = {
    "training": {"marker": "o", "color": "tab:blue", "alpha": 0.55},
    "training and validation": {"marker": "o", "color": "tab:blue", "alpha": 0.55},
    "validation": {"marker": "s", "color": "tab:orange", "alpha": 0.8},
    "test": {"marker": "^", "color": "tab:green", "alpha": 0.9},
}


def _data_fit(top, bottom, x: np.ndarray, predictions: np.ndarray, points: dict, label: str, y: str, band=None) -> None:
    """The network over the grid with each role's points on top; below, each point's residual
    y − network (the members' median for a stack) on a linear scale around 0. The legend, titled
    with the data's name, stands beside the panels."""
    members = len(predictions)
    cloud = _cloud(sum(len(px) for px, _, _ in points.values()))
    for role, (px, py, at) in points.items():
        style = {**ROLE_STYLES[role], "ls": "none", **cloud}
        whose = ", member 0's split" if members > 1 and role in ("training", "validation") else ""
        top.plot(px, py, label=f"{role} ({len(px)}{whose})", **style)
        bottom.plot(px, py - (at.mean(0) if band is not None else np.median(at, 0)), **style)
    if members == 1:
        top.plot(x, predictions[0], color="tab:red", lw=1.8, label="network")
    elif band is not None:
        top.fill_between(x, band[0], band[1], color="tab:red", alpha=0.18, lw=0, label="±2 spread: members and noise")
        top.plot(x, predictions.mean(0), color="tab:red", lw=1.8, label=f"mean of the {members} networks")
    else:
        top.fill_between(x, predictions.min(0), predictions.max(0), color="tab:red", alpha=0.25, label=f"range of the {members} networks")
        top.plot(x, np.median(predictions, 0), color="tab:red", lw=1.8, label=f"median of the {members} networks")
    bottom.axhline(0.0, color="tab:red", lw=1)
    centre = "mean" if band is not None else "median"
    bottom.set_ylabel(f"residual, {y} − network" if members == 1 else f"{y} − {centre} network")
    _opaque(top.legend(title=_plain(label), fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0)))


def _cloud(count: int, size: float = 3.5) -> dict:
    """Markers for `count` points: beyond a thousand, small and faint, so that a large set reads
    as a cloud whose density shows, not as a blot of the colour drawn last."""
    return {"ms": size} if count <= 1000 else {"ms": 1.2, "alpha": 0.2}


def _opaque(legend) -> None:
    """A legend's markers fully drawn and at least 4 points wide, however faint the cloud."""
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
        if hasattr(handle, "get_markersize") and handle.get_markersize() < 4:
            handle.set_markersize(4)


def _plain(text: str) -> str:
    """A name from a file as matplotlib prints it: never as mathtext (a $ is a dollar sign)."""
    return text.replace("$", r"\$")


def loss_figure(train_mse: np.ndarray, val_mse: np.ndarray, polish: np.ndarray | None = None, val_var=None, title: str = "", kept=None) -> Figure:
    """Train and validation MSE per epoch, [epochs, K] each, log scale; with `polish` ([K,
    iterations + 1], NaN once a member stopped), the Levenberg-Marquardt iterations on a panel
    to the right, on the same scale. `val_var` (each member's Var(y) of its validation points, the
    MSE of predicting their mean) is marked as a line: a curve that stays on it learned nothing.
    `kept`: each member's kept (best-validation) epoch, marked on its validation MSE (0: none)."""
    plt = _pyplot()
    if polish is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig, (ax, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True, width_ratios=[2, 1])
    _title(fig, title)
    epochs = np.arange(1, len(train_mse) + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    if not len(epochs):  # a run that diverged in its first epoch has no curve to draw
        ax.text(0.5, 0.5, "no completed epoch", transform=ax.transAxes, ha="center")
        return fig
    for curve, label, color in ((train_mse, "train", "tab:blue"), (val_mse, "validation", "tab:orange")):
        _median_and_band(ax, epochs, np.asarray(curve), label, color)
    variances = np.asarray([] if val_var is None else val_var, dtype=float)
    if np.isfinite(variances).any():
        level = float(np.median(variances[np.isfinite(variances)]))
        which = "Var(y)" if len(variances) == 1 else "median Var(y)"
        ax.axhline(level, color="gray", ls="--", lw=1, label=f"{which} = {level:.3g}, the mean's MSE")
    marked = [(epoch, np.asarray(val_mse)[epoch - 1, k]) for k, epoch in enumerate([] if kept is None else kept) if epoch > 0]
    if marked:
        ax.plot(*zip(*marked, strict=True), "v", color="black", ms=6, label="kept weights (best validation)")
    ax.legend()
    if polish is not None:
        ax.set_title("Adam")
        _polish_panel(right, np.asarray(polish, dtype=float))
    return fig


def _median_and_band(ax, x: np.ndarray, curve: np.ndarray, label: str, color: str) -> None:
    """curve [len(x), K]: the line itself for one member; the median and the min-max band for several."""
    several = curve.shape[1] > 1
    ax.semilogy(x, np.median(curve, 1), color=color, label=f"{label} (median)" if several else label)
    if several:
        ax.fill_between(x, curve.min(1), curve.max(1), color=color, alpha=0.2)


def _polish_panel(ax, curves: np.ndarray) -> None:
    """The training MSE per LM iteration, [K, iterations + 1]; a member that stopped early keeps
    its last MSE, a member that was never polished (diverged) is left out."""
    polished = curves[np.isfinite(curves).any(axis=1)]
    if not len(polished):
        return
    columns = np.arange(polished.shape[1])
    last_finite = np.maximum.accumulate(np.where(np.isfinite(polished), columns, 0), axis=1)
    held = np.take_along_axis(polished, last_finite, axis=1)
    _median_and_band(ax, columns, held.T, "train", "tab:green")
    ax.set_title("Levenberg-Marquardt polish")
    ax.set_xlabel("iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")


def grad_figure(
    x: np.ndarray, true: np.ndarray, network: np.ndarray, marked: np.ndarray, title: str = "", label: str = "f'(x) = −50x/(1+25x²)²",
    x_label: str = "x",
) -> Figure:
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
    top.plot(x, network, "--", color="tab:red", label=rf"${GRADIENT}(x)$, network")
    for index, value in enumerate(marked):
        for ax in (top, bottom):
            named = index == 0 and ax is top  # one legend entry for every --x
            ax.axvline(value, color="grey", lw=0.8, ls=":", label=f"--x = {', '.join(f'{v:g}' for v in marked)}" if named else None)
    top.legend()
    _title(fig, title)
    top.set_ylabel(rf"$f'(x)$, ${GRADIENT}(x)$")
    bottom.set_xlabel(_plain(x_label))
    bottom.set_ylabel(rf"$|{GRADIENT} - f'|$")
    return fig


# The error panel of eval.png reaches at most this factor above the network's largest error; an
# approximant beyond it (the equispaced interpolant's Runge blow-up) is cut off, and says so.
ERROR_HEADROOM = 1e3
# Interpolants are exact at their nodes; a floor keeps those dips from stretching the axis.
ERROR_FLOOR = 1e-10
# Markers of the network and the baselines at a data set's test points (no line joins them).
ERROR_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def eval_figure(
    x: np.ndarray, target: np.ndarray | None, prediction: np.ndarray, errors: dict[str, np.ndarray], title: str = "",
    label: str = "f(x) = 1/(1+25x²)", error_x: np.ndarray | None = None, points: tuple[np.ndarray, np.ndarray] | None = None,
    x_label: str = "x", y_label: str = "y",
) -> Figure:
    """f and the network on top; below, |error| (log scale) of the network and of each baseline in
    `errors` at error_x (default x), the axis fitted to the errors it shows: at most up to
    ERROR_HEADROOM × the network's largest error, at least down to ERROR_FLOOR; the legend beside
    the panel. For data (target None), the test `points` are drawn instead of f, and the errors at
    them are points, not lines; the axes carry the columns' names."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    data = target is None
    if not data:
        top.plot(x, target, color="black", lw=2, label=label)
        top.plot(x, prediction, "--", color="tab:red", label="network")
    else:
        top.plot(*points, ls="none", label=f"test points ({len(points[0])})", **{**ROLE_STYLES["test"], **_cloud(len(points[0]), 4)})
        top.plot(x, prediction, color="tab:red", lw=1.8, label="network")
    ceiling = ERROR_HEADROOM * float(np.abs(errors["network"]).max())
    shown = []
    for index, (name, error) in enumerate(errors.items()):
        style = {"color": "tab:red", "lw": 1.5, "zorder": 3} if name == "network" else {"lw": 1, "alpha": 0.8}
        if data:
            style = {**style, "ls": "none", "marker": ERROR_MARKERS[index % len(ERROR_MARKERS)], **_cloud(len(error), 4)}
        worst = float(np.abs(error).max())
        entry = f"{name} (cut off: up to {worst:.1e})" if worst > ceiling else name
        values = np.maximum(np.abs(error), ERROR_FLOOR)
        bottom.semilogy(x if error_x is None else error_x, values, label=entry, **style)
        shown.append(np.minimum(values, ceiling))
    bottom.set_ylim(*_fitted(np.concatenate(shown), ERROR_FLOOR, ceiling))
    _opaque(top.legend(**({"title": _plain(label)} if data else {})))
    _title(fig, title)
    if data:
        top.set_ylabel(_plain(y_label))
    bottom.set_xlabel(_plain(x_label))
    bottom.set_ylabel("|approximant − f|" if not data else f"|approximant − {_plain(y_label)}|")
    if len(errors) > 1:
        bottom.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _fitted(values: np.ndarray, floor: float, ceiling: float, pad: float = 0.05) -> tuple[float, float]:
    """Log-axis limits around positive values, padded by `pad` of their span in decades (at least
    a tenth of a decade); a limit the values reach (the floor, the ceiling) is the limit itself."""
    low, high = float(values.min()), float(values.max())
    margin = 10 ** max(0.1, pad * np.log10(high / low))
    return (floor if low <= floor else low / margin), (ceiling if high >= ceiling else high * margin)


RULE_STYLES = {"steepest": "--", "valley": "-.", "minimum": ":"}  # black lines: the seeds have the colours
# The range test's curves of one seed, in its colour: none of them dashed or dotted like a rule.
CURVE_STYLES = {
    "smoothed": {"lw": 1.8},
    "raw": {"lw": 0.8, "alpha": 0.25},
    "validation": {"ls": "-", "lw": 0.6, "marker": ".", "ms": 3},
}
CURVE_LABELS = {"smoothed": "smoothed mini-batch loss", "raw": "raw mini-batch loss", "validation": "validation loss"}


def _as_float(values: list) -> np.ndarray:
    """JSON lists use None for a non-finite figure; NaN keeps them off the plot."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def lr_find_figure(members: list[dict], suggestions: dict[str, float | None], title: str = "") -> Figure:
    """Raw and smoothed range-test loss against lr (log-log) per seed, the validation loss when it
    was recorded, with Var(y), the divergence points and each rule's median suggestion marked.
    members: lr-find's JSON per-seed entries. The legend stands beside the axes: a seed's colour,
    then each kind of curve drawn as its lines are, in every seed's colour."""
    from matplotlib.legend_handler import HandlerTuple

    plt = _pyplot()
    mean_loss = float(np.median([member["mean_predictor_mse"] for member in members]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _title(fig, title)
    curves: dict[str, list] = {kind: [] for kind in CURVE_STYLES}
    stops = []  # where the seeds that diverged stopped
    for index, member in enumerate(members):
        colour = f"C{index % 10}"
        lrs, raw, smoothed = np.array(member["lr"]), _as_float(member["loss"]), _as_float(member["smoothed"])
        curves["raw"] += ax.loglog(lrs, raw, color=colour, **CURVE_STYLES["raw"])
        curves["smoothed"] += ax.loglog(lrs, smoothed, color=colour, label=f"seed {member['seed']}", **CURVE_STYLES["smoothed"])
        if member["val_loss"] is not None:
            curves["validation"] += ax.loglog(lrs, _as_float(member["val_loss"]), color=colour, gid="validation", **CURVE_STYLES["validation"])
        if member["stop"] != "complete":
            finite = np.isfinite(smoothed)
            stops.append((lrs[finite][-1], smoothed[finite][-1]))
    if stops:
        ax.plot(*zip(*stops), "x", ls="none", color="black", ms=9, mew=2, label="divergence")
    ax.axhline(mean_loss, color="gray", ls="--", lw=1, label=f"Var(y) = {mean_loss:.3g} (predicting the mean)")
    for rule, lr in suggestions.items():
        if lr is not None:
            ax.axvline(lr, color="black", ls=RULE_STYLES[rule], lw=1.2, label=f"{rule}: {lr:.3g}")
    handles, labels = ax.get_legend_handles_labels()  # the seeds first, as drawn
    kinds = [(tuple(lines), CURVE_LABELS[kind]) for kind, lines in curves.items() if lines]
    handles[len(members) : len(members)] = [handle for handle, _ in kinds]
    labels[len(members) : len(members)] = [label for _, label in kinds]
    ax.set_xlabel("learning rate")
    ax.set_ylabel("MSE")
    ax.set_title("learning-rate range test")
    ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, handlelength=3, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def lr_verify_figure(verification: dict, title: str = "") -> Figure:
    """Final validation MSE against lr: every seed, the median, the best rate and each suggestion.

    verification: lr-find's JSON verification entry (diverged trainings are null and left out).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _title(fig, title)
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
    return fig


fit_png = _as_png(fit_figure)
loss_png = _as_png(loss_figure)
grad_png = _as_png(grad_figure)
eval_png = _as_png(eval_figure)
lr_find_png = _as_png(lr_find_figure)
lr_verify_png = _as_png(lr_verify_figure)
