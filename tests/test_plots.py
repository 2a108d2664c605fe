"""The figures, through their artists (legend labels, axis limits, line data), never their pixels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from rungefit.cli import figures as plots

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


X = np.linspace(-1, 1, 41)


def test_loss_figure_of_a_polished_run_shows_each_polish_iteration_beside_the_epochs():
    epochs = [[1e-2, 2e-2], [1e-3, 2e-3]]
    curves = np.array([[1e-5, 5e-6, 1e-7, np.nan], [2e-5, 1e-5, 1e-6, 4e-7]])  # member 0 stopped after 2 iterations
    adam, polish = plots.loss_figure(epochs, epochs, curves).axes
    assert "Levenberg-Marquardt" in polish.get_title() and polish.get_xlabel() == "iteration"
    (median,) = polish.get_lines()
    assert median.get_xdata().tolist() == [0, 1, 2, 3]
    # A member that stopped keeps its last MSE: the median of (1e-7, 4e-7) at the end.
    np.testing.assert_allclose(median.get_ydata(), [1.5e-5, 7.5e-6, 5.5e-7, 2.5e-7])
    assert adam.get_shared_y_axes().joined(adam, polish)
    assert len(plots.loss_figure(epochs, epochs).axes) == 1


def test_loss_figure_marks_each_members_kept_epoch_on_its_validation_curve():
    train, val = np.array([[1e-2, 2e-2], [1e-3, 2e-3], [5e-3, 1e-3]]), np.array([[3e-2, 4e-2], [2e-3, 5e-3], [4e-3, 3e-3]])
    (ax,) = plots.loss_figure(train, val, kept=[2, 3]).axes
    (marks,) = [line for line in ax.get_lines() if line.get_label().startswith("kept")]
    assert marks.get_xdata().tolist() == [2, 3] and marks.get_ydata().tolist() == [2e-3, 3e-3]
    (ax,) = plots.loss_figure(train, val, kept=[0, 0]).axes  # no finite validation MSE: nothing kept, nothing marked
    assert not [line for line in ax.get_lines() if line.get_label().startswith("kept")]


def members(val: bool) -> list[dict]:
    lrs = np.geomspace(1e-5, 1.0, 20).tolist()
    losses = np.linspace(0.1, 0.05, 20).tolist()
    return [
        {"seed": seed, "lr": lrs, "loss": losses, "smoothed": losses, "val_loss": losses if val else None, "stop": "complete", "mean_predictor_mse": 0.08}
        for seed in (0, 1)
    ]


def test_lr_find_figure_mentions_validation_only_when_it_was_recorded():
    suggestions = {"steepest": 1e-3, "valley": 1e-2, "minimum": 1e-1}
    (without,) = plots.lr_find_figure(members(val=False), suggestions).axes
    assert not any("validation" in text for text in [without.get_title(), *legend_labels(without)])
    (with_val,) = plots.lr_find_figure(members(val=True), suggestions).axes
    assert "validation loss" in legend_labels(with_val)
    validation = [line for line in with_val.get_lines() if line.get_gid() == "validation"]
    minimum = next(line for line in with_val.get_lines() if line.get_label().startswith("minimum"))
    assert len(validation) == 2
    assert {line.get_linestyle() for line in validation}.isdisjoint({minimum.get_linestyle()})


def test_eval_figure_cuts_off_a_blown_up_baseline_says_so_and_keeps_the_legend_off_the_curves():
    network = 1e-4 * np.sin(7 * X)
    errors = {"network": network, "equispaced, d = 40": 1e4 * X**40, "Chebyshev, d = 40": 1e-5 * np.cos(9 * X)}
    figure = plots.eval_figure(X, 1 / (1 + 25 * X**2), 1 / (1 + 25 * X**2) + network, errors)
    top, bottom = figure.axes
    low, high = bottom.get_ylim()
    assert high == pytest.approx(plots.ERROR_HEADROOM * np.abs(network).max()) and high < 1e4
    assert low <= np.abs(network).max() * 1e-3
    assert legend_labels(bottom) == ["network", "equispaced, d = 40 (cut off: up to 1.0e+04)", "Chebyshev, d = 40"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert bottom.get_legend().get_window_extent(renderer).x0 >= bottom.get_window_extent(renderer).x1


def test_eval_figure_without_baselines_cuts_nothing_off():
    network = 1e-4 * np.sin(7 * X)
    (_, bottom) = plots.eval_figure(X, 1 / (1 + 25 * X**2), 1 / (1 + 25 * X**2) + network, {"network": network}).axes
    assert bottom.get_ylim()[1] >= np.abs(network).max()


def test_fit_figure_labels_its_axes_and_with_several_networks_the_median_and_the_band():
    target = 1 / (1 + 25 * X**2)
    predictions = target + np.array([[1e-3], [-2e-3], [3e-3]]) * np.cos(X)
    top, bottom = plots.fit_figure(X, target, predictions).axes
    assert top.get_ylabel() and bottom.get_ylabel() and bottom.get_xlabel() == "x"
    assert legend_labels(top)[1:] == ["range of the 3 networks", "median of the 3 networks"]
    assert legend_labels(bottom) == ["range over the 3 networks", "median over the 3 networks"]
    top, _ = plots.fit_figure(X, target, predictions[:1]).axes
    assert top.get_ylabel() and legend_labels(top)[1:] == ["network"]


def test_grad_figure_writes_the_gradient_in_mathtext():
    figure = plots.grad_figure(X, np.cos(X), np.cos(X) + 1e-4, np.array([0.3]))
    top, bottom = figure.axes
    network_label = legend_labels(top)[1]
    assert network_label == r"$\nabla a^{[L]}(x)$, network"
    assert "$" in top.get_ylabel() and r"\nabla a^{[L]}" in bottom.get_ylabel()
    figure.canvas.draw()  # mathtext that does not parse fails here
    assert all("^[L]" not in text for text in (network_label, top.get_ylabel(), bottom.get_ylabel()))


@pytest.mark.real_png
def test_every_figure_renders_to_a_png():
    """What the other tests skip: matplotlib turning each figure into PNG bytes (mathtext included)."""
    curves = np.array([[1e-5, 5e-6, 1e-7]])
    members = [{"seed": 0, "lr": [1e-3, 1e-2, 1e-1], "loss": [0.1, 0.05, 0.2], "smoothed": [0.1, 0.08, 0.1],
                "val_loss": None, "stop": "complete", "mean_predictor_mse": 0.08}]
    pngs = [
        plots.fit_png(X, X**2, np.array([X**2 + 1e-3])),
        plots.loss_png([[1e-2], [1e-3]], [[1e-2], [1e-3]], curves),
        plots.grad_png(X, 2 * X, 2 * X + 1e-3, np.array([0.3])),
        plots.eval_png(X, X**2, X**2 + 1e-3, {"network": np.full_like(X, 1e-3), "Chebyshev, d = 10": np.full_like(X, 1e-5)}),
        plots.lr_find_png(members, {"steepest": 1e-2, "valley": None, "minimum": 1e-2}),
    ]
    assert all(png.startswith(b"\x89PNG\r\n") and len(png) > 1000 for png in pngs)


def drawn_alike(handle, line) -> bool:
    """Whether a legend entry's line is drawn as `line` is (colour, style, width, marker, alpha)."""
    looks = ("get_color", "get_linestyle", "get_linewidth", "get_marker")

    def opacity(artist) -> float:
        return 1.0 if artist.get_alpha() is None else artist.get_alpha()

    return all(getattr(handle, look)() == getattr(line, look)() for look in looks) and opacity(handle) == opacity(line)


def legend_lines_match_the_axes(figure) -> None:
    """Every line in a legend is drawn, just so, on its axes (not a stand-in of another colour)."""
    for ax in figure.axes:
        legend = ax.get_legend()
        drawn = [line for line in ax.get_lines() if len(line.get_xdata())]
        for handle, text in zip(legend.legend_handles if legend else [], legend.get_texts() if legend else []):
            if hasattr(handle, "get_linestyle") and hasattr(handle, "get_marker"):
                assert any(drawn_alike(handle, line) for line in drawn), f"{text.get_text()!r} is drawn unlike any line"


def lr_find_members(val: bool, diverged: tuple[int, ...] = ()) -> list[dict]:
    lrs = np.geomspace(1e-5, 1.0, 20).tolist()
    found = []
    for index, seed in enumerate((0, 3, 7)):
        losses = np.linspace(0.1, 0.05, 20).tolist()
        if index in diverged:
            losses[-2:] = [1.0, None]
        found.append({"seed": seed, "lr": lrs, "loss": losses, "smoothed": losses, "val_loss": losses if val else None,
                      "stop": "diverged" if index in diverged else "complete", "mean_predictor_mse": 0.08})
    return found


@pytest.mark.parametrize("seeds", [1, 3])
def test_lr_find_legend_draws_each_kind_of_curve_as_its_lines_are(seeds):
    suggestions = {"steepest": 1e-3, "valley": 1e-2, "minimum": 1e-1}
    figure = plots.lr_find_figure(lr_find_members(val=True)[:seeds], suggestions)
    legend_lines_match_the_axes(figure)
    (ax,) = figure.axes
    assert {"smoothed mini-batch loss", "raw mini-batch loss", "validation loss"} <= set(legend_labels(ax))


def test_lr_find_marks_a_divergence_in_the_legend_whichever_seed_diverged():
    (ax,) = plots.lr_find_figure(lr_find_members(val=False, diverged=(1, 2)), {"steepest": None, "valley": None, "minimum": None}).axes
    assert legend_labels(ax).count("divergence") == 1
    (marks,) = [line for line in ax.get_lines() if line.get_label() == "divergence"]
    assert len(marks.get_xdata()) == 2


def test_grad_figure_names_the_points_asked_for_in_its_legend():
    top, bottom = plots.grad_figure(X, np.cos(X), np.cos(X) + 1e-4, np.array([0.3, -0.5])).axes
    dotted = [line for line in top.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 2 and "--x = 0.3, -0.5" in legend_labels(top)
    legend_lines_match_the_axes(top.figure)


def test_every_other_figures_legend_matches_its_lines():
    target = 1 / (1 + 25 * X**2)
    three = target + np.array([[1e-3], [-2e-3], [3e-3]]) * np.cos(X)
    epochs = np.array([[1e-2, 2e-2], [1e-3, 2e-3]])
    verification = {
        "rates": [{"lr": lr, "val_mse": [1e-3, 2e-3], "median": 1.5e-3, "rules": rules} for lr, rules in ((1e-3, ["valley"]), (1e-2, []))],
        "best_lr": 1e-3, "mean_predictor_mse": 0.08, "epochs": 5,
    }
    for figure in (
        plots.fit_figure(X, target, three), plots.fit_figure(X, target, three[:1]),
        plots.loss_figure(epochs, epochs, np.array([[1e-5, 5e-6], [2e-5, 1e-5]]), val_var=[0.08, 0.07]),
        plots.loss_figure(epochs, epochs, kept=[2, 1]),
        plots.eval_figure(X, target, three[0], {"network": three[0] - target, "Chebyshev, d = 10": 1e-5 * np.cos(X)}),
        plots.lr_verify_figure(verification),
    ):
        legend_lines_match_the_axes(figure)


def test_which_members_a_figure_shows_is_said_one_way():
    assert plots.shown([3]) == "member 3"
    assert plots.shown(range(10)) == "members 0-9"
    assert plots.shown([0, 2, 7]) == "members 0, 2, 7"
    assert plots.title("reference", "runge", "member 0") == "reference · runge · member 0"


def titles_for_pngs(fig) -> bytes:
    """In place of figures._png: the figure's title, as the bytes of the file it is written to."""
    plots._pyplot().close(fig)
    return fig.get_suptitle().encode()


def test_every_figure_is_titled_with_its_run_its_target_and_its_members(tmp_path, monkeypatch):
    from rungefit.cli.app import app

    from .helpers import DATA, QUICK_TRAIN, runner

    monkeypatch.setattr(plots, "_png", titles_for_pngs)
    runs = tmp_path / "runs"
    for args in (
        ["train", *QUICK_TRAIN, "--seeds", "2", "--name", "pair"],
        ["eval", "--run", "pair", "--member", "1"],
        ["grad", "--run", "pair", "--member", "1", "--x", "0.3"],
        ["train", "--data", str(DATA), "--seeds", "2", "--epochs", "3", "--quiet", "--name", "measured"],  # learns little: exit 1, saved
        ["train", *QUICK_TRAIN],  # named by a timestamp
        ["lr-find", "--points", "60", "--iters", "10", "--verify", "--verify-rates", "2", "--verify-seeds", "1", "--verify-epochs", "1", "--out", str(tmp_path / "lr")],
    ):
        result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
        assert result.exit_code in (0, 1), result.output
    titles = {path.relative_to(tmp_path).as_posix(): path.read_text() for path in tmp_path.rglob("*.png")}
    (stamp,) = {path.parent.name for path in runs.glob("*/fit.png")} - {"pair", "measured"}
    verify = titles.pop("lr/lr_verify.png")
    assert verify.startswith("lr-find · runge · members 0-") and verify.endswith(" rates × 1 seed"), verify
    assert titles == {
        "runs/pair/fit.png": "pair · runge · members 0-1",
        "runs/pair/loss.png": "pair · runge · members 0-1",
        "runs/pair/eval.png": "pair · runge · member 1",
        "runs/pair/grad.png": "pair · runge · member 1",
        "runs/measured/fit.png": f"measured · data {DATA.name} · ensemble of 2",
        "runs/measured/loss.png": f"measured · data {DATA.name} · members 0-1",
        f"runs/{stamp}/fit.png": f"{stamp} · runge · member 0",
        f"runs/{stamp}/loss.png": f"{stamp} · runge · member 0",
        "lr/lr_find.png": "lr-find · runge · member 0",
    }
