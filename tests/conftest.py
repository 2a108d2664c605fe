"""Fixtures and hooks only (what tests share besides, they import from tests/helpers.py): a small
trained run, made once per session under a temporary directory, and the like."""

from __future__ import annotations

import os

# pytest-xdist's workers inherit COLUMNS=80, and Rich fixes a console's width from COLUMNS when the
# console is made (rungefit.cli.render's, at import): a test that sets COLUMNS would go unheard.
# Each test that cares sets its width itself.
os.environ.pop("COLUMNS", None)

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from rungefit.cli.app import app  # noqa: E402

from .helpers import QUICK_TRAIN, SPECS, png_not_rendered, runner, save_run  # noqa: E402


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """(runs_dir, run_dir, summary) of a short default-architecture run."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "quick", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return runs_dir, runs_dir / "quick", summary


@pytest.fixture()
def one_thread():
    """For tests that call the core below fit(), which otherwise picks one thread for small stacks:
    the networks are tiny, and a second intra-op thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def spec_runs(tmp_path_factory):
    """{(layers, dtype): (runs_dir, name, summary)}: a short two-member run of each of SPECS in float32
    and float64, saved as `train` saves it but without its figures (drawing them is most of the time)."""
    from rungefit.config import TrainConfig
    from rungefit.training.train import fit

    runs_dir = tmp_path_factory.mktemp("spec-runs")
    made = {}
    for index, layers in enumerate(SPECS):
        for dtype in ("float32", "float64"):
            name = f"s{index}-{dtype}"
            result = fit(TrainConfig(layers=layers, points=120, epochs=4, seeds=(0, 1), dtype=dtype, workers=1))
            save_run(runs_dir, result, name, summary_extra={"schedule": result.config.schedule})
            made[layers, dtype] = (runs_dir, name, result.summary())
    return made


@pytest.fixture(autouse=True)
def figures_not_rendered(request, monkeypatch):
    """Figures are drawn but not rendered to PNG, which would cost most of a short command's time.

    Session- and module-scoped runs (quick_run, …) render theirs, and tests marked `real_png`
    render everything; test_plots checks every figure's artists, and renders each once.
    """
    if request.node.get_closest_marker("real_png"):
        return
    from rungefit.cli import figures as plots

    monkeypatch.setattr(plots, "_png", png_not_rendered)
