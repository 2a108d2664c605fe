"""Measured-looking data in odd units (issue 23): rungefit's default training beside standard smoothers.

The script makes its own noisy sets (seeded, nothing downloaded): the Donoho-Johnstone functions
doppler, heavisine, bumps and blocks at n = 128 and 512 equispaced points with signal-to-noise 7,
x mapped into the thousands and y into 1e-3 units; a damped oscillation in ms and g (irregular
times, some repeated); a trend plus a seasonal wave over calendar years, monthly, in ppm; and 26
sunspot-like cycles over the years 1700-1988. Each is a two-column CSV with a header line.

For every split seed the rows of the CSV are shuffled with that seed before it is written: rungefit
holds out its test share as a function of the file's order, so each shuffle is another split. On
that file rungefit trains with its default settings (one seed, and a 5-seed ensemble) through the
Python API, and the peers fit the same training pool and are scored on the same held-out points:
scikit-learn's MLPRegressor (rungefit's hidden widths, tanh, standardized x and y, early stopping),
scipy's make_smoothing_spline (GCV) and scikit-learn's GaussianProcessRegressor (RBF + white
noise, normalized y, on standardized x). The score is held-out MSE / Var(y_test), in float64 (1:
no better than the test set's mean). The table gives each method's median over the split seeds,
the ratios of rungefit to the best peer, rungefit's optimizer steps and wall time, and the coverage
of the held-out points by the ensemble's ±2-spread band where the run offers one.

    pip install -e ".[bench]"                                       # scikit-learn, for the peers
    python tests/benchmarks/bench_data.py --quick                   # a smoke run (two sets, two splits)
    python tests/benchmarks/bench_data.py --write docs/data.md      # every set, 5 splits (minutes)
    python tests/benchmarks/bench_data.py --sets doppler-128,seasonal --splits 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import make_smoothing_spline

from rungefit import targets
from rungefit.api import data_config
from rungefit.config import (
    DATA_LR,
    DATA_NETWORKS,
    DATA_PATIENCE_STEPS,
    DATA_STEPS,
    FULL_BATCH_POINTS,
    TrainConfig,
)
from rungefit.errors import RungefitError, UsageError
from rungefit.runs import RunStore
from rungefit.training.train import fit

try:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError:  # pragma: no cover - a message, not a traceback
    sys.exit('bench_data.py needs scikit-learn for its peers: pip install -e ".[bench]"')

ENSEMBLE_SEEDS = (0, 1, 2, 3, 4)
SNR = 7.0  # Donoho-Johnstone sets: noise sd = sd(signal) / SNR
WITHIN = 1.1  # the goal: the default within this factor of the best peer's score
BAND = 2.0  # the band checked: ensemble mean ± BAND × spread
# Convergence: the default's validation MSE against a run LONGER times as long, on the first
# CONVERGENCE_SPLITS splits (the goal: within 2 %, median over the sets).
LONGER = 4
CONVERGENCE_SPLITS = 2
CONVERGED = 1.02  # the goal for that ratio
# The networks a data run chooses between (config.DATA_NETWORKS), each also scored on its own.
TANH_LAYERS, SINE_LAYERS = DATA_NETWORKS


# ---------------------------------------------------------------- the data sets


def doppler(t: np.ndarray) -> np.ndarray:
    return np.sqrt(t * (1 - t)) * np.sin(2 * np.pi * 1.05 / (t + 0.05))


def heavisine(t: np.ndarray) -> np.ndarray:
    return 4 * np.sin(4 * np.pi * t) - np.sign(t - 0.3) - np.sign(0.72 - t)


# Donoho & Johnstone (1994): the positions of the jumps and bumps, their heights and widths.
DJ_AT = np.array([0.1, 0.13, 0.15, 0.23, 0.25, 0.40, 0.44, 0.65, 0.76, 0.78, 0.81])
BLOCK_HEIGHTS = np.array([4, -5, 3, -4, 5, -4.2, 2.1, 4.3, -3.1, 2.1, -4.2])
BUMP_HEIGHTS = np.array([4, 5, 3, 4, 5, 4.2, 2.1, 4.3, 3.1, 5.1, 4.2])
BUMP_WIDTHS = np.array([0.005, 0.005, 0.006, 0.01, 0.01, 0.03, 0.01, 0.01, 0.005, 0.008, 0.005])


def bumps(t: np.ndarray) -> np.ndarray:
    return (BUMP_HEIGHTS * (1 + np.abs((t[:, None] - DJ_AT) / BUMP_WIDTHS)) ** -4).sum(axis=1)


def blocks(t: np.ndarray) -> np.ndarray:
    return (BLOCK_HEIGHTS * (1 + np.sign(t[:, None] - DJ_AT)) / 2).sum(axis=1)


DONOHO_JOHNSTONE = {"doppler": doppler, "heavisine": heavisine, "bumps": bumps, "blocks": blocks}


@dataclass(frozen=True)
class DataSet:
    name: str
    description: str  # what the set is; sets of one family share it
    header: str
    x: np.ndarray
    y: np.ndarray


def donoho_johnstone(name: str, n: int) -> DataSet:
    """f at t = i/n (i = 1…n), noise sd = sd(f)/SNR; x = 1000 + 4000 t, y in 1e-3 units."""
    t = np.arange(1, n + 1) / n
    signal = DONOHO_JOHNSTONE[name](t)
    noise = np.random.default_rng(1000 * n + len(name)).normal(0.0, signal.std() / SNR, n)
    return DataSet(
        f"{name}-{n}",
        "the Donoho-Johnstone functions f (doppler, heavisine, bumps, blocks) at n equispaced points t = i/n, "
        f"n = 128 or 512, Gaussian noise of sd sd(f)/{SNR:g}; x = 1000 + 4000 t, y = 1e-3 (f + noise)",
        "x,y", 1000 + 4000 * t, 1e-3 * (signal + noise),
    )


def oscillation() -> DataSet:
    """A damped oscillation after an impact at 14 ms: 133 irregular times in 2.4…57.6 ms (on a 0.2 ms
    clock, so some repeat), acceleration in g with amplitude near 100 and noise sd 12."""
    rng = np.random.default_rng(133)
    t = np.sort(np.round(np.concatenate([[2.4, 57.6], rng.uniform(2.4, 57.6, 131)]) / 0.2) * 0.2)
    after = np.clip(t - 14.0, 0.0, None)
    signal = -130.0 * np.exp(-after / 11.0) * np.sin(2 * np.pi * after / 19.0)
    return DataSet(
        "oscillation", "damped oscillation, 133 irregular times 2.4…57.6 ms (some repeated), acceleration in g, noise sd 12 g",
        "time_ms,accel_g", t, signal + rng.normal(0.0, 12.0, t.size),
    )


def seasonal() -> DataSet:
    """Monthly points 1958…1990 (calendar years): a quadratic trend from 315 to about 353 plus a
    yearly wave and its first harmonic, noise sd 0.3."""
    years = 1958 + (np.arange(33 * 12) + 0.5) / 12
    s = years - 1958
    signal = 315 + 0.8 * s + 0.012 * s**2 + 3.0 * np.sin(2 * np.pi * years) + 0.8 * np.sin(4 * np.pi * years + 1.0)
    noise = np.random.default_rng(1958).normal(0.0, 0.3, years.size)
    return DataSet(
        "seasonal", "trend plus a seasonal wave, monthly 1958…1990 in calendar years, y near 315…353 (a CO2-like series), noise sd 0.3",
        "year,co2_ppm", years, signal + noise,
    )


def cycles() -> DataSet:
    """Yearly counts 1700…1988 (289 points): 26 cycles of 11 years whose peaks swell and ebb over
    90 years, clipped at 0, noise sd 12: many oscillations over the domain, as sunspot numbers have."""
    years = np.arange(1700, 1989).astype(float)
    swell = 60 + 30 * np.sin(2 * np.pi * (years - 1700) / 90)
    signal = swell * (0.5 + 0.5 * np.sin(2 * np.pi * (years - 1700) / 11)) ** 1.5
    noise = np.random.default_rng(1700).normal(0.0, 12.0, years.size)
    return DataSet(
        "cycles", "26 eleven-year cycles of a sunspot-like count, yearly 1700…1988, y from 0 to about 110, noise sd 12",
        "year,count", years, np.maximum(0.0, signal + noise),
    )


def all_sets() -> dict[str, DataSet]:
    sets = [donoho_johnstone(name, n) for n in (128, 512) for name in DONOHO_JOHNSTONE]
    return {s.name: s for s in (*sets, oscillation(), seasonal(), cycles())}


QUICK_SETS = ("doppler-128", "oscillation")


def write_csv(path: Path, data: DataSet, split_seed: int) -> None:
    """The set's rows in the order of split seed `split_seed`, every float written so that it reads back exactly."""
    order = np.random.default_rng(split_seed).permutation(data.x.size)
    path.write_text("\n".join([data.header, *(f"{float(data.x[i])!r},{float(data.y[i])!r}" for i in order)]) + "\n")


# ---------------------------------------------------------------- rungefit


@dataclass
class Fitted:
    """rungefit's predictions at the test x, in data units: [K, n] members, and the run's mean and band."""

    members: np.ndarray
    mean: np.ndarray
    spread: np.ndarray


def rungefit_predictions(result, x: np.ndarray, store: Path, name: str) -> Fitted:
    """What a user gets from the run at x, in data units: the run is saved and reopened as
    `rungefit.open_run` gives it; each member's network (`Run.network(k)`, the module
    `rungefit.load` returns) is evaluated in its own dtype, and `Run.predict` gives the ensemble's
    mean and spread."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run that learned nothing may say so on loading
        store.mkdir(parents=True, exist_ok=True)
        runs = RunStore(store)
        run = runs.open(runs.save(result, name=name).name)
        members = np.stack([_module_prediction(run.network(k), x) for k in range(len(result.config.seeds))])
        band = run.predict(x)
    return Fitted(members, band.mean, band.spread)


def _module_prediction(network: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    dtype = next(iter(network.parameters()), None)
    dtype = torch.float32 if dtype is None else dtype.dtype
    with torch.no_grad():
        return network(torch.as_tensor(x, dtype=torch.float64).to(dtype).reshape(-1, 1)).double().reshape(-1).numpy()


@dataclass
class Outcome:
    """One rungefit training on one split: its score (inf when it failed), steps, wall time, verdict."""

    score: float = float("inf")
    steps: float = float("nan")
    wall: float = float("nan")
    verdict: str = ""
    coverage: float = float("nan")
    note: str = ""
    val: float = float("nan")  # the default member's validation MSE
    epochs: int = 0  # the epochs it ran
    layers: str = ""  # its network
    choice_s: float = 0.0  # the part of `wall` that chose the network (data_config)


def train_rungefit(
    path: Path, seeds: tuple[int, ...] | None, store: Path, name: str, epochs: int | None = None, layers: str | None = None,
) -> tuple[Outcome, np.ndarray, np.ndarray]:
    """rungefit's default training on the file (`seeds`: an ensemble; `epochs`: exactly that many, as
    an explicit --epochs runs them, no member stopping early; `layers`: that network), scored on its
    held-out points. Also the test and pool indices of the file's points, for the peers."""
    outcome = Outcome()
    try:
        given = {"seeds": seeds, "epochs": epochs, "layers": layers}
        options = {option: value for option, value in given.items() if value}
        chosen_at = time.perf_counter()
        config = data_config(path, **options)  # what `rungefit train --data` runs, its network chosen by validation
        choice_s = time.perf_counter() - chosen_at
        target = targets.resolve(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit(config, target)
    except (RungefitError, UsageError) as error:  # refused or diverged: the split is still the file's
        outcome.verdict, outcome.note = "failed", f"{type(error).__name__}: {str(error)[:160]}"
        chosen = targets.settings(data=str(path))
        split = targets.DataTarget(chosen.points, chosen.fields["domain"], chosen.fields["test_fraction"], str(path))
        return outcome, split.test_index, split.pool
    test, pool = target.test_index, target.pool
    x_test, y_test = target.points.x[test], target.points.y[test]
    summary = result.summary()
    fitted = rungefit_predictions(result, x_test, store, name)
    variance = y_test.var()
    members_mse = ((fitted.members - y_test) ** 2).mean(axis=1)
    reported = np.array([m["test_mse"] for m in summary["members"]], dtype=np.float64)
    if not np.allclose(members_mse, reported, rtol=1e-3, atol=1e-12 * variance):
        outcome.note = "the members' predictions disagree with the test MSE rungefit reports: adapt rungefit_predictions"
    # The default's score is rungefit's own test MSE; the ensemble's needs predictions in data units.
    mse = reported[0] if not seeds else ((fitted.mean - y_test) ** 2).mean()
    outcome.score, outcome.steps, outcome.wall, outcome.verdict = mse / variance, result.steps, choice_s + result.wall_time_s, summary["fit"]
    outcome.epochs, outcome.layers, outcome.choice_s = result.epochs_run, config.layers, choice_s
    outcome.val = result.members[0].val_mse
    outcome.coverage = float(np.mean(np.abs(y_test - fitted.mean) <= BAND * fitted.spread))
    return outcome, test, pool


# ---------------------------------------------------------------- the peers


def mlp(x: np.ndarray, y: np.ndarray, seed: int):
    model = TransformedTargetRegressor(
        regressor=make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(20, 10, 20, 10), activation="tanh", early_stopping=True, max_iter=2000, random_state=seed),
        ),
        transformer=StandardScaler(),
    )
    model.fit(x.reshape(-1, 1), y)
    return lambda at: model.predict(at.reshape(-1, 1))


def spline(x: np.ndarray, y: np.ndarray, seed: int):
    """make_smoothing_spline with GCV; y averaged over repeated x (weighted by the count), as it needs x strictly increasing."""
    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    fitted = make_smoothing_spline(unique, means, w=counts.astype(np.float64), lam=None)
    return lambda at: fitted(at)


def gaussian_process(x: np.ndarray, y: np.ndarray, seed: int):
    scaler = StandardScaler().fit(x.reshape(-1, 1))
    kernel = ConstantKernel() * RBF() + WhiteKernel()
    model = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed)
    model.fit(scaler.transform(x.reshape(-1, 1)), y)
    return lambda at: model.predict(scaler.transform(at.reshape(-1, 1)))


PEERS = {"MLPRegressor": mlp, "smoothing spline": spline, "GP": gaussian_process}


def peer_score(method, x, y, x_test, y_test, seed: int) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            predict = method(x, y, seed)
        return float(np.mean((predict(x_test) - y_test) ** 2) / y_test.var())
    except (ValueError, np.linalg.LinAlgError):
        return float("inf")


# ---------------------------------------------------------------- one set


@dataclass
class Row:
    data: DataSet
    default: list[Outcome] = field(default_factory=list)
    ensemble: list[Outcome] = field(default_factory=list)
    peers: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PEERS})
    converged: list[float] = field(default_factory=list)  # validation MSE over that of a run LONGER times as long
    tanh: list[Outcome] = field(default_factory=list)  # the default with --layers TANH_LAYERS
    sine: list[Outcome] = field(default_factory=list)  # the default with --layers SINE_LAYERS


def measure(data: DataSet, splits: int, work: Path) -> Row:
    row = Row(data)
    for split in range(splits):
        path = work / f"{data.name}-split{split}.csv"
        write_csv(path, data, split)
        store = work / "runs"
        default, test, pool = train_rungefit(path, None, store, f"{data.name}-{split}-default")
        # The ensemble chooses as the default does (on the same probe seed): its network is given here, not chosen again.
        chosen = default.layers or None
        ensemble, _, _ = train_rungefit(path, ENSEMBLE_SEEDS, store, f"{data.name}-{split}-ensemble", layers=chosen)
        ensemble.wall += default.choice_s  # `train --seeds 5` chooses as the default did, and waits as long
        row.default.append(default)
        row.ensemble.append(ensemble)
        row.tanh.append(train_rungefit(path, None, store, f"{data.name}-{split}-tanh", layers=TANH_LAYERS)[0])
        row.sine.append(train_rungefit(path, None, store, f"{data.name}-{split}-sine", layers=SINE_LAYERS)[0])
        if split < CONVERGENCE_SPLITS:
            longer, _, _ = train_rungefit(path, None, store, f"{data.name}-{split}-longer", LONGER * default.epochs, layers=chosen)
            row.converged.append(default.val / longer.val)
        points = targets.read_points(path)
        for name, method in PEERS.items():
            row.peers[name].append(peer_score(method, points.x[pool], points.y[pool], points.x[test], points.y[test], split))
    return row


def warm_up(data: DataSet, work: Path) -> None:
    """One untimed training first, so that no timed one carries the process's one-time costs."""
    path = work / "warm-up.csv"
    write_csv(path, data, 0)
    train_rungefit(path, None, work / "warm-up-runs", "warm-up")


def median(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else float("nan")


def summarize(row: Row) -> dict:
    peers = {name: median(scores) for name, scores in row.peers.items()}
    best = min(peers, key=peers.get)
    default, ensemble = median(o.score for o in row.default), median(o.score for o in row.ensemble)
    verdicts = [o.verdict for o in row.default]
    return {
        "name": row.data.name, "n": row.data.x.size, "default": default, "ensemble": ensemble, "peers": peers, "best": best,
        "default_ratio": default / peers[best], "ensemble_ratio": ensemble / peers[best],
        "steps": median(o.steps for o in row.default), "wall": median(o.wall for o in row.default),
        "ensemble_wall": median(o.wall for o in row.ensemble),
        "coverage": median(o.coverage for o in row.ensemble),
        "converged": median(row.converged),
        "tanh": median(o.score for o in row.tanh),
        "sine": median(o.score for o in row.sine),
        "chosen": {layers: [o.layers for o in row.default].count(layers) for layers in DATA_NETWORKS},
        "verdicts": {v: verdicts.count(v) for v in dict.fromkeys(verdicts)},
        "failed": sum(o.verdict == "failed" for o in row.default + row.ensemble),
        "notes": sorted({o.note for o in row.default + row.ensemble if o.note}),
    }


# ---------------------------------------------------------------- output


def number(value: float, digits: int = 3) -> str:
    if np.isnan(value):
        return "n/a"
    if np.isinf(value):
        return "failed"
    return f"{value:.{digits}g}"


def table(rows: list[dict], splits: int) -> str:
    peers = " | ".join(PEERS)
    lines = [
        f"| set | n | rungefit default | rungefit 5-seed ensemble | {peers} | best peer | default / best | ensemble / best "
        f"| steps (default) | val MSE / val MSE of {LONGER}× as many | wall (default) | wall (ensemble) | ±2-spread band coverage | rungefit's verdict ({splits} splits) |",
        "|---|---|" + "---|" * (len(PEERS) + 11),
    ]
    for r in rows:
        verdicts = ", ".join(f"{verdict} ×{count}" for verdict, count in r["verdicts"].items())
        coverage = "n/a" if np.isnan(r["coverage"]) else f"{100 * r['coverage']:.0f} %"
        lines.append(
            f"| {r['name']} | {r['n']} | {number(r['default'])} | {number(r['ensemble'])} | "
            + " | ".join(number(r["peers"][name]) for name in PEERS)
            + f" | {r['best']} | {number(r['default_ratio'])} | {number(r['ensemble_ratio'])} | {number(r['steps'], 4)} | {number(r['converged'])} | "
            f"{r['wall']:.2g} s | {r['ensemble_wall']:.2g} s | {coverage} | {verdicts} |"
        )
    return "\n".join(lines)


def convergence(rows: list[dict]) -> str:
    """The median over the sets of the convergence column, in words."""
    ratios = [r["converged"] for r in rows if np.isfinite(r["converged"])]
    if not ratios:
        return ""
    value = float(np.median(ratios))
    verdict = "within" if value <= CONVERGED else "not within"
    return f"Median over the sets of the validation MSE against {LONGER}× as many steps: {value:.3g}, {verdict} the goal of {CONVERGED}. "


def findings(rows: list[dict]) -> str:
    """Where rungefit is not within WITHIN of the best peer, and where the ensemble is not ahead, from the numbers alone."""
    behind = [r for r in rows if not r["default_ratio"] <= WITHIN]
    not_ahead = [r for r in rows if not r["ensemble_ratio"] < 1.0]
    text = []
    if behind:
        listed = "; ".join(f"{r['name']} ({number(r['default_ratio'])}× the {r['best']}'s score)" for r in behind)
        text.append(f"The default run is not within {WITHIN}× of the best peer on {len(behind)} of {len(rows)} sets: {listed}.")
        near_mean = [r["name"] for r in behind if 0.9 <= r["default"] <= 1.1]
        if near_mean:
            text.append(
                f"On {', '.join(near_mean)} its held-out MSE is within 10 % of Var(y_test) (score 0.9 to 1.1): it predicts "
                "little more than the mean of y."
            )
        far = [f"{r['name']} ({number(r['default'])})" for r in behind if r["default"] > 1.1]
        if far:
            text.append(f"On {', '.join(far)} its score is above 1: worse than predicting the test set's mean.")
        failed = [f"{r['name']} ({r['failed']})" for r in rows if r["failed"]]
        if failed:
            text.append(f"Trainings that failed (refused or diverged; scored as failed): {', '.join(failed)}.")
        nothing = [r["name"] for r in behind if "nothing learned" in r["verdicts"]]
        if nothing:
            text.append(f"rungefit's own verdict on the default run is \"nothing learned\" on at least one split of {', '.join(nothing)}.")
        still = [f"{r['name']} ({number(r['converged'])})" for r in behind if r["converged"] > CONVERGED]
        if still:
            text.append(
                f"On {', '.join(still)} the default's validation MSE is more than {CONVERGED - 1:.0%} above that of a run "
                f"of {LONGER}× the steps (the ratio in brackets): the default stopped where its validation MSE had "
                "stalled for the patience, and it fell again later."
            )
        done = [r["name"] for r in behind if r["converged"] <= CONVERGED]
        if done:
            text.append(
                f"On {', '.join(done)} the default had converged ({LONGER}× the steps are within {CONVERGED - 1:.0%}): more "
                "steps would not close the gap, which lies in the fit the network converges to, not in the training's length."
            )
    else:
        text.append(f"The default run is within {WITHIN}× of the best peer on every set.")
    if not_ahead:
        listed = "; ".join(f"{r['name']} ({number(r['ensemble_ratio'])}×)" for r in not_ahead)
        text.append(f"The 5-seed ensemble is not ahead of the best peer on {len(not_ahead)} of {len(rows)} sets: {listed}.")
    else:
        text.append("The 5-seed ensemble is ahead of the best peer on every set.")
    return " ".join(text)


def machine() -> str:
    """The machine in words: the cores this process may use, the CPU model, the software."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    model = names[0] if names else platform.processor() or "CPU model unknown"
    return f"{cores} cores ({model}), {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}"


def commit() -> str:
    """The last commit that changed the rungefit package this script imports (where it is a git checkout)."""
    package = Path(targets.__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = subprocess.run(["git", "log", "-1", "--format=%h", "--", "."], cwd=package, capture_output=True, text=True, check=True)
        return found.stdout.strip() or "unknown"
    return "unknown"


HOW = f"""## How rungefit fits measured data

- **Units never matter.** The network trains in standard coordinates: x mapped from the domain
  onto [−1, 1] (where the activations bend) and y shifted and divided by the mean and standard
  deviation of the data's non-test points. The maps come from data no seed draws, are applied in
  float64 before the cast to the run's dtype, and are kept in model.pt; everything shown (tables,
  `--json`, history.csv, figures, eval, predict, grad, exports) is in the data's units. `--scale`
  chooses: `auto` (the default) scales x always and y for data or for a function far from unit size,
  which leaves the Runge default exactly as before; `xy`, `x`, `none`.
- **Small data trains enough.** Where the options are not given, a data run trains a two-layer
  network of 64 units each (a tanh or a sine network, chosen by validation: see the last section)
  at a constant lr {DATA_LR:g}, on the whole training set up to {FULL_BATCH_POINTS:,} points and on
  batches of about that size beyond, until each member's validation MSE has not improved for
  {DATA_PATIENCE_STEPS:,} steps and for half the steps to its best (`--patience`), or for at most {DATA_STEPS:,} steps
  (the reference network, at its rate and 300 epochs of mini-batches, stops far short on these
  sets). A member that has stopped trains at rate 0, so that its weights are those of the member
  trained alone, and the run ends when every member has stopped; summary.json's `steps_why` and
  `stopped` say so. Given options are obeyed; an explicit `--epochs` runs every epoch. From
  Python, `rungefit.data_config(path, **options)` is the TrainConfig that `train --data` runs.
- **Noise is not fitted.** Each member keeps the weights of its epoch of lowest validation MSE
  (`--keep best`, the default for data); summary.json's `kept` names the epochs. model.pt keeps the
  last epoch's weights too, so that `--resume` ends bit for bit as an uninterrupted run. `--polish
  lm` starts from the kept weights and stays only for members whose validation MSE it lowers.
- **How sure.** A stack (`--seeds 5`) predicts the ensemble mean with a spread: noise² + s(x)²/K,
  where s(x)² is the members' variance at x and noise² the members' mean validation MSE less their
  mean variance over the data (the derivation is in `rungefit/training/band.py`). `predict` prints
  `x,y,spread`, `eval` reports the ±2-spread band's coverage of the held-out points,
  `rungefit.open_run(...).predict(x)` returns mean and spread, and fit.png shades the band.
- **What was learned.** On data, a member has learned when its validation MSE is significantly
  below Var(y) of its validation points: one-sided at 1 %, taking n · MSE / Var(y) over n points to
  follow a chi-square distribution with n degrees of freedom when the network predicts no better
  than the mean (it has learned below that distribution's 1st percentile). A run where no member
  has is "nothing learned" (exit 1), and `eval`, `grad`, `predict`, `export` and `rungefit.load` say so
  when such a run is used.
"""


def page(rows: list[dict], sets: list[DataSet], splits: int, command: str, seconds: float) -> str:
    families = {s.description: [t for t in sets if t.description == s.description] for s in sets}
    described = "\n".join(
        f"- **{', '.join(s.name for s in members)}**: {description}; header `{members[0].header}`."
        for description, members in families.items()
    )
    return f"""# Measured data: rungefit beside standard smoothers

[← README](../README.md)

What `rungefit train --data` makes of small noisy data sets in odd units, beside the tools a
scientist would otherwise reach for. The benchmark, `tests/benchmarks/bench_data.py`, generates its
own sets (seeded, nothing downloaded) and writes each as a two-column CSV with a header line:

{described}

For each split seed the CSV's rows are shuffled with that seed before the file is written; rungefit
holds out its test share ({TrainConfig.test_fraction:g}) as a function of the file's order, so each
shuffle is another train/test split. rungefit trains with its default settings through the Python
API, once with one seed and once as a 5-seed ensemble (scored by the mean of its members'
predictions). The peers fit the same training pool and are scored on the same held-out points:
scikit-learn's `MLPRegressor` (hidden widths 20, 10, 20, 10, tanh, standardized x and y, early
stopping), scipy's `make_smoothing_spline` (smoothing chosen by GCV; y averaged over repeated x)
and scikit-learn's `GaussianProcessRegressor` (constant × RBF + white noise, normalized y,
standardized x, two optimizer restarts).

The score is the held-out MSE / Var(y_test), computed in float64 (1 is what predicting the test
set's mean scores; lower is better). Each entry is the median over {splits} split seeds. "default /
best" and "ensemble / best" divide rungefit's median by the best peer's; the goal is a default
within {WITHIN}× of the best peer on every set and an ensemble ahead of it (below 1) on most. The
optimizer steps are the default run's (it stops by `--patience`), the wall times rungefit's own (`wall_time_s`, plus the network choice) for the
default run and the ensemble, medians over the splits; the band coverage is the share of held-out points
within ±{BAND:g} spreads of the ensemble's mean, where the run gives a band ("n/a": it does not).
"val MSE / val MSE of {LONGER}× as many" compares the default member's (kept) validation MSE with that
of the same training run continued to {LONGER} times the epochs the default ran (an explicit
`epochs`, so no member stops early), median over the first {CONVERGENCE_SPLITS} splits: near 1 (the goal: within
{CONVERGED}, median over the sets), more steps would not help.
A training that raised an error counts as "failed".

{HOW}
## How to run it

```
pip install -e ".[bench]"
{command}
```

This page is that command's output, generated with rungefit's code as of commit `{commit()}`, on
{machine()}, shared with other work; the whole benchmark took {seconds / 60:.1f} minutes of wall
time there.

## Results

{table(rows, splits)}

## Where rungefit is not within {WITHIN}× of the best peer

{convergence(rows)}{findings(rows)}

## The network a data run chooses

Where neither `--layers` nor `--epochs` is given, a data run trains `{TANH_LAYERS}` and
`{SINE_LAYERS}` on seed 0 and keeps the one of lower validation MSE (`network_choice` in
summary.json). The sine network's first layer starts at frequencies up to 10 radians per unit of
the standardized x (SINE_FIRST_SCALE in rungefit/config.py): a signal of many cycles over the domain
is within reach from the start, where a tanh network must first grow its slopes, about one learning
rate per step; on smooth signals it does worse. Each network on its own, the same splits, one seed:

{sine_table(rows)}

{sine_findings(rows)}
"""


def sine_table(rows: list[dict]) -> str:
    lines = [
        f"| set | chosen (splits) | rungefit default (chosen) | `--layers {TANH_LAYERS}` | `--layers {SINE_LAYERS}` | default / best peer |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = ", ".join(f"{'sine' if layers == SINE_LAYERS else 'tanh'} ×{count}" for layers, count in r["chosen"].items() if count)
        lines.append(f"| {r['name']} | {chosen} | {number(r['default'])} | {number(r['tanh'])} | {number(r['sine'])} | {number(r['default_ratio'])} |")
    return "\n".join(lines)


def sine_findings(rows: list[dict]) -> str:
    """Where the choice does better or worse than the better of the two networks, from the numbers alone."""
    worse = [f"{r['name']} ({number(r['default'] / min(r['tanh'], r['sine']))}×)" for r in rows if r["default"] > 1.1 * min(r["tanh"], r["sine"])]
    sine = [r["name"] for r in rows if r["sine"] < r["tanh"] / 1.1]
    text = [f"The sine network scores better than the tanh network by more than a tenth on {', '.join(sine) or 'no set'}."]
    if worse:
        text.append(f"The choice scores more than a tenth worse than the better of the two on {', '.join(worse)} (over it, in brackets): validation on few points can pick the other.")
    else:
        text.append("On every set the choice scores within a tenth of the better of the two.")
    return " ".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", help=f"comma-separated set names (default: all of {', '.join(all_sets())})")
    parser.add_argument("--splits", type=int, default=5, help="split seeds 0…N-1 per set (default 5)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {', '.join(QUICK_SETS)} (unless --sets), 2 splits")
    parser.add_argument("--write", type=Path, metavar="PATH", help="also write the markdown page (docs/data.md) there")
    args = parser.parse_args()
    sets = all_sets()
    names = args.sets.split(",") if args.sets else list(QUICK_SETS if args.quick else sets)
    unknown = [name for name in names if name not in sets]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(sets)}")
    splits = 2 if args.quick and args.splits == parser.get_default("splits") else args.splits
    if splits < 1:
        parser.error("--splits must be at least 1")
    torch.set_num_threads(1)  # as fit() does for stacks this small
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as work:
        warm_up(sets[names[0]], Path(work))
        for name in names:
            row = summarize(measure(sets[name], splits, Path(work)))
            rows.append(row)
            print(f"{name}: default {number(row['default'])}, ensemble {number(row['ensemble'])}, best peer {row['best']} "
                  f"{number(row['peers'][row['best']])} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            for note in row["notes"]:
                print(f"  {name}: {note}", file=sys.stderr)
    seconds = time.perf_counter() - started
    print(table(rows, splits))
    print()
    print(findings(rows))
    if args.write:
        command = " ".join(["python", "tests/benchmarks/bench_data.py", *sys.argv[1:]])
        args.write.write_text(page(rows, [sets[name] for name in names], splits, command, seconds))
        print(f"\nwrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
