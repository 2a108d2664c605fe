"""Measured data through the CLI: files that cannot be fitted are one-line usage errors that write
nothing; data in any units, with repeated x, train and are studied end to end; data runs read like
data (their columns' names on the axes and in the tables)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rungefit.cli.app import app
from rungefit.config import MAX_DATA_VALUE, MIN_DATA_POINTS
from rungefit.errors import UsageError
from rungefit.targets import read_points

from .helpers import runner

# Quick data runs: explicit --epochs, so no step floor makes the suite slow.
QUICK = ["--epochs", "2", "--batch-size", "8", "--quiet"]


def write_csv(path, x, y, header: str | None = None) -> str:
    lines = ([header] if header is not None else []) + [f"{float(a)!r},{float(b)!r}" for a, b in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def noisy(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n)
    return x, np.sin(6 * x) + 0.1 * rng.standard_normal(n)


def train(tmp_path, *args: str):
    return runner.invoke(app, ["train", *args, "--runs-dir", str(tmp_path / "runs")])


# ---------------------------------------------------------------- item 7: bad data


def bad_files(tmp_path) -> dict[str, tuple[str, list[str], str]]:
    """name: (file, extra options, what the one line must say)."""
    x, y = noisy()
    return {
        "huge x": (write_csv(tmp_path / "hx.csv", x * 1e300, y), [], f"x = {x[-1] * 1e300:g} is beyond ±{MAX_DATA_VALUE:g}"),
        "huge y": (write_csv(tmp_path / "hy.csv", x, np.where(y > 0, 1e300, -1e300)), [], "y = "),
        "huge named y": (write_csv(tmp_path / "hn.csv", x, y * 1e300, "t,volts"), [], "y (volts) = "),
        "no spread": (write_csv(tmp_path / "ns.csv", x * 1e-200, y), [], "x runs from 0 to 1e-200"),
        "constant y": (write_csv(tmp_path / "cy.csv", x, 0 * x + 2.5), [], "y is constant (2.5)"),
        "five rows": (write_csv(tmp_path / "five.csv", x[:5], y[:5]), [], f"has 5 points; rungefit needs at least {MIN_DATA_POINTS}"),
        "no test set": (write_csv(tmp_path / "t.csv", x[:30], y[:30]), ["--test-fraction", "0.04"], "use a larger --test-fraction"),
        "no pool": (write_csv(tmp_path / "p.csv", x[:30], y[:30]), ["--test-fraction", "0.99"], "use a smaller --test-fraction"),
    }


@pytest.mark.parametrize("case", ["huge x", "huge y", "huge named y", "no spread", "constant y", "five rows", "no test set", "no pool"])
def test_bad_data_is_one_line_exit_2_and_nothing_written(case, tmp_path):
    path, extra, text = bad_files(tmp_path)[case]
    result = train(tmp_path, "--data", path, *extra, *QUICK)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "test_points" not in result.stderr  # an internal name, not an option
    assert not (tmp_path / "runs").exists()


def test_a_data_file_over_the_size_limit_is_refused_with_the_limit(tmp_path, monkeypatch):
    from rungefit.targets import datafile

    monkeypatch.setattr(datafile, "MAX_DATA_BYTES", 2**20)
    path = tmp_path / "big.csv"
    path.write_text("x,y\n" + "0.5,0.25\n" * (2**20 // 9 + 1))
    result = train(tmp_path, "--data", str(path), *QUICK)
    assert result.exit_code == 2 and "may have at most 1048576 (1 MiB)" in result.stderr, result.output
    assert not (tmp_path / "runs").exists()


def test_train_help_states_the_data_limits():
    help_text = " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"}).stdout.split())
    assert f"at least {MIN_DATA_POINTS} points" in help_text and "64 MiB" in help_text and f"±{MAX_DATA_VALUE:g}" in help_text


@pytest.mark.parametrize(("x0", "scale"), [(1900.0, 100.0), (1e9, 1e9)], ids=["calendar years", "gigahertz"])
def test_data_are_not_held_to_the_formula_domain_limit(x0, scale, tmp_path):
    x, y = noisy()
    path = write_csv(tmp_path / "d.csv", x0 + scale * x, y)
    result = train(tmp_path, "--data", path, *QUICK, "--name", "d")
    assert result.exit_code in (0, 1), result.output  # trained and saved; short runs may learn nothing
    config = json.loads((tmp_path / "runs" / "d" / "config.json").read_text())
    assert config["domain"] == [x0, x0 + scale]
    # An explicit --domain beyond ±1e6 is accepted with data, and still refused for a formula.
    wide = f"{x0 - scale},{x0 + 2 * scale}"
    assert train(tmp_path, "--data", path, "--domain", wide, *QUICK).exit_code in (0, 1)
    if x0 + 2 * scale > 1e6:
        refused = train(tmp_path, "--target", "x", "--domain", wide, *QUICK)
        assert refused.exit_code == 2 and "within ±1e+06" in refused.stderr


def test_repeated_x_with_different_y_work_end_to_end(tmp_path):
    x, y = noisy(40)
    path = write_csv(tmp_path / "rep.csv", np.repeat(x, 3), np.repeat(y, 3) + np.tile([-0.05, 0.0, 0.05], 40))
    runs_dir = str(tmp_path / "runs")
    assert train(tmp_path, "--data", path, *QUICK, "--seeds", "2").exit_code in (0, 1)
    evaluation = runner.invoke(app, ["eval", "--runs-dir", runs_dir, "--baselines", "--json"])
    assert evaluation.exit_code == 0, evaluation.output
    names = [s["name"] for s in json.loads(evaluation.stdout)["scores"]]
    assert "smoothing spline (GCV)" in names and "Chebyshev LS, d = 20" in names
    assert all(np.isfinite(s["mse"]) for s in json.loads(evaluation.stdout)["scores"])
    assert runner.invoke(app, ["grad", "--runs-dir", runs_dir, "--x", "0.5"]).exit_code == 0
    predicted = runner.invoke(app, ["predict", "--runs-dir", runs_dir, "--grad"], input="0.5\n0.25\n")
    # A data stack predicts its ensemble mean with the band's spread (tests/test_band.py).
    assert predicted.exit_code == 0 and predicted.stdout.splitlines()[0] == "x,y,spread,dydx", predicted.output
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert {"fit.png", "loss.png", "eval.png", "grad.png"} <= {p.name for p in run_dir.iterdir()}


def test_a_quoted_number_is_a_number_and_a_header_names_the_columns(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('"time_ms", "accel_g"\n"0.1","1e3"\n0.2, "-2"\n0.3,4\n"0.4" "5"\n')
    points = read_points(path)
    assert points.x.tolist() == [0.1, 0.2, 0.3, 0.4] and points.y.tolist() == [1e3, -2.0, 4.0, 5.0]
    assert (points.x_name, points.y_name) == ("time_ms", "accel_g")
    path.write_text("0.1 1\n0.2 2\n")
    assert (read_points(path).x_name, read_points(path).y_name) == (None, None)


def test_semicolons_separate_cells_and_between_them_a_decimal_comma_is_a_point(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text('\ufeffZeit (ms);"Beschleunigung (g)"\r\n0,5;-1,25\r\n1;2,5e3\r\n"1,5"; 3.5\r\n')
    points = read_points(path)
    assert points.x.tolist() == [0.5, 1.0, 1.5] and points.y.tolist() == [-1.25, 2.5e3, 3.5]
    assert (points.x_name, points.y_name) == ("Zeit (ms)", "Beschleunigung (g)")
    path.write_text("x;y\n1,234,5;2\n")  # not a decimal comma: refused, never guessed
    with pytest.raises(UsageError, match="'1,234,5' is not a number"):
        read_points(path)


@pytest.mark.parametrize(("line", "says"), [("1|2", "one column; expected two columns x,y, separated by a comma, a semicolon, a tab or spaces"), ("1,2,3", "3 columns; expected two columns x,y: write the two to fit")])
def test_a_line_of_other_than_two_cells_says_how_to_make_two(tmp_path, line, says):
    path = tmp_path / "odd.csv"
    path.write_text(f"{line}\n")
    with pytest.raises(UsageError, match=re.escape(f"line 1: {says}")):
        read_points(path)


def test_the_smoothing_spline_baseline_fits_thousands_of_closely_spaced_points():
    from rungefit.study.evaluate import smoothing_spline

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, 5000)  # SciPy's GCV called this "ill-posed" in these units
    y = np.sin(8 * x) + 0.3 * rng.standard_normal(x.size)
    spline, parameters = smoothing_spline(np.concatenate([x, x[:100]]), np.concatenate([y, y[:100] + 0.1]))
    grid = np.linspace(0.0, 1.0, 101)
    assert parameters >= 5000 and np.sqrt(np.mean((spline(grid) - np.sin(8 * grid)) ** 2)) < 0.1


# ---------------------------------------------------------------- item 6: data runs read like data


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A two-member data run whose file names its columns, in a runs directory of its own."""
    root = tmp_path_factory.mktemp("named")
    x, y = noisy(80)
    path = write_csv(root / "accel.csv", 10 + 50 * x, y, header="time [ms],accel $g$")
    result = runner.invoke(app, ["train", "--data", path, *QUICK, "--seeds", "2", "--runs-dir", str(root / "runs"), "--name", "r"])
    assert result.exit_code in (0, 1), result.output
    return root / "runs"


def test_the_fit_figure_of_data_names_its_axes_and_shows_each_role_and_the_residuals_as_points(named_run):
    from rungefit.cli import figures as plots
    from rungefit.runs import RunStore
    from rungefit.study.evaluate import fit_curves

    run = RunStore(named_run).open("r")
    curves = fit_curves(run.model, run.target, config=run.config)
    assert (curves.x_label, curves.y_label) == ("time [ms]", "accel $g$")
    assert list(curves.points) == ["training", "validation", "test"]
    assert sum(len(px) for px, _, _ in curves.points.values()) == 80
    top, bottom = plots.fit_figure(curves.x, curves.target, curves.predictions, label=curves.label, points=curves.points, x_label=curves.x_label, y_label=curves.y_label).axes
    assert bottom.get_xlabel() == "time [ms]" and top.get_ylabel() == r"accel \$g\$"  # a $ is a dollar sign, not mathtext
    legend = [text.get_text() for text in top.get_legend().get_texts()]
    assert [entry.split(" (")[0] for entry in legend[:3]] == ["training", "validation", "test"]
    residuals = [line for line in bottom.get_lines() if line.get_linestyle() == "None"]
    assert len(residuals) == 3 and sum(len(line.get_xdata()) for line in residuals) == 80  # points, no line through them
    assert (named_run / "r" / "fit.png").stat().st_size > 0


def test_the_loss_figure_marks_var_y_the_mean_s_score():
    from rungefit.cli import figures as plots

    curve = np.exp(-np.arange(20.0))[:, None] * np.ones((1, 2))
    (ax,) = plots.loss_figure(curve, curve, val_var=[0.5, 0.7]).axes
    level = [line for line in ax.get_lines() if "Var(y)" in line.get_label()]
    assert len(level) == 1 and set(level[0].get_ydata()) == {0.6} and "0.6" in level[0].get_label()
    (ax,) = plots.loss_figure(curve, curve).axes  # without Var(y): as before
    assert not [line for line in ax.get_lines() if "Var(y)" in line.get_label()]


def test_the_error_axis_of_a_data_eval_fits_the_errors_it_shows():
    from rungefit.cli import figures as plots

    x = np.linspace(0.0, 1.0, 30)
    errors = {"network": 0.1 + 0.05 * np.sin(9 * x), "spline": 0.08 + 0.02 * np.cos(7 * x)}
    figure = plots.eval_figure(x, None, 0 * x, errors, label="data d.csv", error_x=x, points=(x, x), x_label="t", y_label="v")
    _, bottom = figure.axes
    low, high = bottom.get_ylim()
    assert 0.01 < low < 0.05 and 0.15 < high < 0.3  # not down to 1e-10, nor 1e3 times above
    assert bottom.get_xlabel() == "t" and all(line.get_linestyle() == "None" for line in bottom.get_lines())


def test_eval_names_a_data_run_s_columns_and_a_function_run_s_output_is_unchanged(named_run):
    result = runner.invoke(app, ["eval", "--runs-dir", str(named_run), "--run", "r", "--baselines", "--x", "30"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "at time [ms] = " in result.stdout and "|time [ms] − 35| > 20" in result.stdout
    assert "the network at the requested time [ms]" in result.stdout and "accel $g$" in result.stdout
    doc = json.loads(runner.invoke(app, ["eval", "--runs-dir", str(named_run), "--run", "r", "--json"]).stdout)
    assert (doc["x_label"], doc["y_label"]) == ("time [ms]", "accel $g$")
    assert doc["regions"]["ends"] == "|time [ms] − 35| > 20"


def test_a_function_run_s_eval_keeps_its_json_keys_and_region_texts(tmp_path):
    result = runner.invoke(app, ["train", "--points", "120", "--epochs", "1", "--quiet", "--runs-dir", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output
    doc = json.loads(runner.invoke(app, ["eval", "--runs-dir", str(tmp_path), "--json"]).stdout)
    assert "x_label" not in doc and doc["regions"] == {"ends": "|x| > 0.8", "middle": "|x| ≤ 0.8"}
