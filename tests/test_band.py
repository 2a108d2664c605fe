"""How sure a stacked data run is: the ensemble mean and its band (training/band.py), through
Run.predict, `predict`, `eval`, `export` and fit_curves."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

import rungefit
from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.net.sequential import EnsembleMean
from rungefit.runs import RunStore
from rungefit.study.evaluate import fit_curves
from rungefit.targets import settings
from rungefit.training.band import noise_variance, spread
from rungefit.training.train import fit

from .helpers import runner

NOISE = 0.1
SEEDS = (0, 1, 2, 3, 4)


def law(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points of y = sin(3x) + N(0, NOISE²), x uniform on [-1, 1]."""
    x = rng.uniform(-1, 1, n)
    return x, np.sin(3 * x) + rng.normal(0, NOISE, n)


def write_csv(path, x, y) -> str:
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True)))
    return str(path)


@pytest.fixture(scope="module")
def noisy_runs(tmp_path_factory):
    """(runs_dir, the law's generator after the 200 points were drawn): a 5-member run "stack" and
    a 1-member run "single" on 200 noisy points of the law, with enough epochs for the members to
    reach the noise."""
    root = tmp_path_factory.mktemp("band")
    rng = np.random.default_rng(2024)
    source = write_csv(root / "noisy.csv", *law(rng, 200))
    runs_dir = root / "runs"
    runs_dir.mkdir()
    for name, seeds in (("stack", SEEDS), ("single", (0,))):
        config = TrainConfig(**settings(data=source).fields, epochs=1000, batch_size=39, seeds=seeds, workers=1)
        RunStore(runs_dir).save(fit(config), name=name)
    return runs_dir, rng


def invoke(runs_dir, *args, input=None):
    result = runner.invoke(app, [*args, "--runs-dir", str(runs_dir)], input=input)
    assert result.exit_code == 0, result.output
    return result


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_two_spread_band_covers_90_to_98_percent_of_fresh_points_of_a_law_with_known_noise(noisy_runs):
    runs_dir, rng = noisy_runs
    x, y = law(rng, 1000)
    band = rungefit.open_run("stack", runs_dir).predict(x)
    assert 0.90 <= band.coverage(y) <= 0.98, band.coverage(y)
    assert 0.7 * NOISE <= band.noise <= 1.3 * NOISE


def test_the_noise_is_the_validation_error_the_members_scatter_does_not_explain():
    truth = np.sin(np.linspace(-1, 1, 50))
    offsets = np.array([[-0.02], [0.0], [0.02]])  # members f + c_k: scatter 0.02² at every point
    val_mse = np.full(3, NOISE**2) + offsets[:, 0] ** 2  # each member's: noise + its own error
    noise2 = noise_variance(val_mse, truth + offsets)
    assert noise2 == pytest.approx(NOISE**2 + np.mean(offsets**2) - 0.02**2, rel=1e-12)
    assert np.allclose(spread(truth + offsets, noise2), np.sqrt(noise2 + 0.02**2 / 3))
    assert noise_variance(np.array([0.001]), truth[None, :]) == 0.001  # one member: its validation MSE
    assert noise_variance(np.array([1e-6, 1e-6, 1e-6]), truth + 10 * offsets) == 0.0  # floored at 0


def test_one_member_gives_its_prediction_and_the_root_of_its_validation_mse(noisy_runs):
    runs_dir, _ = noisy_runs
    run = rungefit.open_run("single", runs_dir)
    band = run.predict([0.1, 0.2])
    assert np.allclose(band.spread, np.sqrt(run.summary["members"][0]["val_mse"]), rtol=1e-12)
    assert band.members == (0,) and band.mean.shape == (2,)


def test_predict_on_a_stack_prints_the_mean_and_spread_and_member_k_prints_that_member(noisy_runs):
    runs_dir, _ = noisy_runs
    x = [-0.5, 0.0, 0.3]
    text = "".join(f"{v}\n" for v in x)
    ensemble = rows(invoke(runs_dir, "predict", "--run", "stack", input=text).stdout)
    assert list(ensemble[0]) == ["x", "y", "spread"]
    band = rungefit.open_run("stack", runs_dir).predict(x)
    assert [float(r["y"]) for r in ensemble] == band.mean.tolist()
    assert [float(r["spread"]) for r in ensemble] == band.spread.tolist()
    one = rows(invoke(runs_dir, "predict", "--run", "stack", "--member", "2", input=text).stdout)
    assert list(one[0]) == ["x", "y"]
    single = rows(invoke(runs_dir, "predict", "--run", "single", input=text).stdout)
    assert list(single[0]) == ["x", "y"]


def test_grad_on_a_stack_is_the_derivative_of_the_mean(noisy_runs):
    runs_dir, _ = noisy_runs
    text = "-0.4\n0.25\n"
    ensemble = json.loads(invoke(runs_dir, "predict", "--run", "stack", "--grad", "--json", input=text).stdout)
    assert ensemble["member"] is None and ensemble["members"] == 5 and len(ensemble["spread"]) == 2
    members = [json.loads(invoke(runs_dir, "predict", "--run", "stack", "--grad", "--json", "--member", str(k), input=text).stdout)["dydx"] for k in SEEDS]
    assert np.allclose(ensemble["dydx"], np.mean(members, axis=0), rtol=1e-10)


def test_eval_scores_the_band_on_the_test_points_of_a_stack_only(noisy_runs):
    runs_dir, _ = noisy_runs
    doc = json.loads(invoke(runs_dir, "eval", "--run", "stack", "--json").stdout)
    run = rungefit.open_run("stack", runs_dir)
    x, y = (values.numpy() for values in run.target.test_set(dtype=torch.float64))
    band = run.predict(x)
    assert doc["band"]["coverage"] == band.coverage(y) and doc["band"]["points"] == len(x) == doc["points"]
    assert doc["band"]["mean_spread"] == pytest.approx(float(np.mean(band.spread)), rel=1e-12)
    table = invoke(runs_dir, "eval", "--run", "stack").stdout
    assert "ensemble of 5: test points within ±2 spread" in table
    assert "band" not in json.loads(invoke(runs_dir, "eval", "--run", "single", "--json").stdout)
    assert "ensemble" not in invoke(runs_dir, "eval", "--run", "single").stdout


def test_a_function_stack_keeps_the_best_member(spec_runs):
    runs_dir, name, _ = next(iter(spec_runs.values()))
    assert list(rows(invoke(runs_dir, "predict", "--run", name, input="0.5\n").stdout)[0]) == ["x", "y"]
    assert "band" not in json.loads(invoke(runs_dir, "eval", "--run", name, "--json").stdout)


def test_fit_curves_carry_the_band_of_a_data_stack(noisy_runs, spec_runs):
    runs_dir, _ = noisy_runs
    run = rungefit.open_run("stack", runs_dir)
    val_mse = [m["val_mse"] for m in run.summary["members"]]
    curves = fit_curves(run.model, run.target, 50, val_mse=val_mse)
    band = run.predict(curves.x)
    assert np.array_equal(curves.band[0], band.lower) and np.array_equal(curves.band[1], band.upper)
    assert fit_curves(run.model, run.target, 50).band is None
    single = rungefit.open_run("single", runs_dir)
    assert fit_curves(single.model, single.target, 50, val_mse=[single.summary["members"][0]["val_mse"]]).band is None


@pytest.mark.parametrize("file_format", ["pt2", "onnx", "safetensors"])
def test_export_of_a_stack_is_the_ensemble_mean_in_every_format(noisy_runs, tmp_path, file_format):
    if file_format == "onnx":
        pytest.importorskip("onnxscript")
        onnx = pytest.importorskip("onnx")
    runs_dir, _ = noisy_runs
    out = tmp_path / f"mean.{file_format}"
    text = invoke(runs_dir, "export", "--run", "stack", "--format", file_format, "--out", str(out)).stdout
    assert "the ensemble mean of 5 members" in text
    run = rungefit.open_run("stack", runs_dir)
    x = np.linspace(*run.target.domain, 41)
    inputs = torch.as_tensor(x, dtype=torch.float32).unsqueeze(1)
    if file_format == "pt2":
        extra = {"rungefit.json": ""}
        got = torch.export.load(str(out), extra_files=extra).module()(inputs)
        assert json.loads(extra["rungefit.json"])["format"] == "rungefit-ensemble-mean"
    elif file_format == "onnx":
        from onnx.reference import ReferenceEvaluator

        got = torch.from_numpy(ReferenceEvaluator(str(out)).run(None, {"x": inputs.numpy()})[0])
        assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["members"] == "0,1,2,3,4"
    else:
        from safetensors.torch import load_file

        module = EnsembleMean([rungefit.load("stack", runs_dir, member=k) for k in SEEDS])
        module.load_state_dict(load_file(str(out)))
        with torch.no_grad():
            got = module(inputs)
    gap = np.abs(got.squeeze(1).double().numpy() - run.predict(inputs.squeeze(1).double().numpy()).mean).max()
    assert gap <= 1e-5 * float(np.std(run.target.points.y))


def test_export_member_k_of_a_stack_says_so(noisy_runs, tmp_path):
    runs_dir, _ = noisy_runs
    doc = json.loads(invoke(runs_dir, "export", "--run", "stack", "--format", "safetensors", "--member", "2", "--out", str(tmp_path / "m.st"), "--json").stdout)
    assert doc["member"] == 2 and doc["metadata"]["member"] == "2" and doc["metadata"]["format"] == "rungefit-member"
    assert "member 2" in doc["source"]
