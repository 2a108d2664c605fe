"""The default training on every preset target (issue 15), beside classical approximants.

For each preset: the test MSE of the default training over seeds 0…N-1 (median, min, max; the
seeds train as one stacked run, and member k is exactly the single run with seed k), the Chebyshev
interpolant with as many coefficients as the network has parameters, and the baselines of
`rungefit eval --baselines`, all on the same 100-point test grid. Then what the network does at the
kink of `abs` and the jump of `step`, measured on a fine grid, beside that Chebyshev interpolant.
Prints markdown (docs/targets.md shows the output and the command that made it).

    python tests/benchmarks/bench_targets.py --seeds 5              # every preset (a few minutes)
    python tests/benchmarks/bench_targets.py --only abs,step --epochs 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from numpy.polynomial.chebyshev import Chebyshev

from rungefit.config import PRESETS, TrainConfig, parameter_count, parse_layers
from rungefit.study.evaluate import BASELINE_DEGREES, BASELINES, baseline_scores, member_prediction
from rungefit.targets import resolve
from rungefit.training.train import fit

FINE = np.linspace(-1.0, 1.0, 20_001)  # where the kink and the jump are measured
NEAR = np.abs(FINE) <= 0.5  # the turn and the rise are looked for here, away from the ends


def chebyshev_mse(target, coefficients: int, n: int) -> tuple[float, Chebyshev]:
    """The Chebyshev interpolant with `coefficients` coefficients, and its MSE on the n-point test grid."""
    interpolant = Chebyshev.interpolate(target, coefficients - 1, domain=list(target.domain))
    x = target.test_grid(n, dtype=torch.float64).numpy()
    return float(np.mean((interpolant(x) - target(x)) ** 2)), interpolant


def width(values: np.ndarray, low: float, high: float) -> float:
    """How far apart, within NEAR, the last point at or below `low` and the first at or above `high` after it are."""
    x, v = FINE[NEAR], values[NEAR]
    start = np.flatnonzero(v <= low)[-1]
    return float(x[start + np.argmax(v[start:] >= high)] - x[start])


def shape(values: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """The value at 0, the MSE and max |error| on the fine grid, and the overshoot past f's range."""
    error = values - f
    return {
        "at 0": float(values[len(FINE) // 2]), "mse": float(np.mean(error**2)), "max": float(np.abs(error).max()),
        "overshoot": float(max(values.max() - f.max(), f.min() - values.min(), 0.0)),
    }


def corner(values: np.ndarray) -> dict[str, float]:
    """At the kink of |x|: the shape, and the width over which the slope turns from -0.9 to 0.9."""
    return {**shape(values, np.abs(FINE)), "width": width(np.gradient(values, FINE), -0.9, 0.9)}


def jump(values: np.ndarray) -> dict[str, float]:
    """At the jump of the step: the shape, and the width over which it rises from 0.1 to 0.9."""
    return {**shape(values, (FINE >= 0).astype(float)), "width": width(values, 0.1, 0.9)}


SHAPES = {"abs": corner, "step": jump}


def measure(name: str, seeds: int, epochs: int | None) -> dict:
    config = TrainConfig(target=name, seeds=tuple(range(seeds)), **({"epochs": epochs} if epochs else {}))
    started = time.perf_counter()
    result = fit(config, stop_on_divergence=False)
    wall = time.perf_counter() - started
    target = resolve(config)
    test = np.array([member.test_mse for member in result.members])
    size = parameter_count(parse_layers(config.layers))
    chebyshev, interpolant = chebyshev_mse(target, size, config.test_points)
    row = {
        "name": name, "formula": PRESETS[name].formula, "median": np.median(test), "min": test.min(), "max": test.max(),
        "chebyshev": chebyshev, "parameters": size, "wall": wall,
        "baselines": {s.name: s.mse for s in baseline_scores(target, config.test_points, BASELINE_DEGREES)},
    }
    if name in SHAPES:
        shapes = [SHAPES[name](member_prediction(result.model, result.target, k, FINE)) for k in range(seeds)]
        row["shape"] = {key: float(np.median([s[key] for s in shapes])) for key in shapes[0]}
        row["shape_chebyshev"] = SHAPES[name](interpolant(FINE))
    return row


def main() -> None:
    torch.set_num_threads(1)  # as fit() does for stacks this small
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0…N-1, one stacked run per preset")
    parser.add_argument("--only", help="comma-separated preset names (default: all)")
    parser.add_argument("--epochs", type=int, help="override the default 300 epochs (a quick look only)")
    args = parser.parse_args()
    rows = [measure(name, args.seeds, args.epochs) for name in (args.only.split(",") if args.only else PRESETS)]

    print(f"| target | f | network: test MSE median [min … max], {args.seeds} seeds | Chebyshev interpolant, {rows[0]['parameters']} coefficients | best baseline of `eval --baselines` | training (stacked) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        best = min(row["baselines"], key=row["baselines"].get)
        print(
            f"| {row['name']} | `{row['formula']}` | {row['median']:.2e} [{row['min']:.1e} … {row['max']:.1e}] | "
            f"{row['chebyshev']:.2e} | {row['baselines'][best]:.2e} ({best}) | {row['wall']:.1f} s |"
        )
    names = [f"{kind}, d = {degree}" for kind in BASELINES for degree in BASELINE_DEGREES]
    print(f"\nThe baselines of `eval --baselines` (test MSE on the same grid):\n\n| target | {' | '.join(names)} |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        print(f"| {row['name']} | " + " | ".join(f"{row['baselines'][name]:.1e}" for name in names) + " |")
    shaped = [row for row in rows if "shape" in row]
    if shaped:
        print("\nAt the kink and the jump, on 20,001 equally spaced points of [-1, 1] (the network: median over the seeds):\n")
        print("| target | approximant | MSE | max \\|error\\| | value at 0 (f(0) = 0, 1) | width of the turn (slope −0.9 → 0.9) or rise (0.1 → 0.9) | overshoot |")
        print("|---|---|---|---|---|---|---|")
        for row in shaped:
            for label, found in (("network", row["shape"]), (f"Chebyshev, {row['parameters']} coefficients", row["shape_chebyshev"])):
                print(
                    f"| {row['name']} | {label} | {found['mse']:.2e} | {found['max']:.3f} | {found['at 0']:.4f} | "
                    f"{found['width']:.4f} | {found['overshoot']:.4f} |"
                )


if __name__ == "__main__":
    main()
