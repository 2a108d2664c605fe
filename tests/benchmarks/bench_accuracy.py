"""Accuracy study (issue 6): test MSE over seeds 0…9 for each configuration, all in one run.

Every configuration trains its ten seeds as one stacked run (the members never interact, so
member k is exactly the single run with seed k). Prints configuration → median / min / max of
test MSE, the median train and validation MSE (to tell optimisation from generalisation
limits) and the wall time.

    python tests/benchmarks/bench_accuracy.py            # all configurations (several minutes)
    python tests/benchmarks/bench_accuracy.py --only default,reference
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rungefit.config import TrainConfig
from rungefit.training.train import fit

SEEDS = tuple(range(10))

# name → (what changes from the reference experiment, TrainConfig overrides)
CONFIGURATIONS = {
    "reference": ("200 points, Adam's default lr 1e-3, constant", dict(points=200, lr=1e-3, schedule="constant")),
    "reference lr 1e-2": ("200 points, lr 1e-2, constant", dict(points=200, lr=1e-2, schedule="constant")),
    "1000 points": ("1000 points, lr 1e-2, constant", dict(points=1000, lr=1e-2, schedule="constant")),
    "1000 cosine": ("1000 points, lr 3e-2, cosine", dict(points=1000, lr=3e-2, schedule="cosine")),
    "1000 onecycle": ("1000 points, lr 3e-2, one-cycle", dict(points=1000, lr=3e-2, schedule="onecycle")),
    "1000 cosine f64": ("1000 points, lr 3e-2, cosine, float64", dict(points=1000, lr=3e-2, schedule="cosine", dtype="float64")),
    "2000 cosine": ("2000 points, lr 3e-2, cosine", dict(points=2000, lr=3e-2, schedule="cosine")),
    "4000 cosine (default)": ("4000 points, lr 3e-2, cosine: the default", dict()),
    "4000 cosine 1e-2": ("4000 points, lr 1e-2, cosine", dict(points=4000, lr=1e-2, schedule="cosine")),
    "8000 cosine": ("8000 points, lr 3e-2, cosine", dict(points=8000, lr=3e-2, schedule="cosine")),
    "default + LM": ("the default, then --polish lm (30 Levenberg-Marquardt iterations)", dict(polish="lm")),
}


def measure(overrides: dict) -> dict:
    started = time.perf_counter()
    result = fit(TrainConfig(seeds=SEEDS, **overrides), stop_on_divergence=False)
    wall = time.perf_counter() - started
    column = lambda name: np.array([getattr(m, name) for m in result.members])  # noqa: E731
    test = column("test_mse")
    return {
        "median": np.median(test), "min": test.min(), "max": test.max(),
        "train": np.median(column("train_mse")), "val": np.median(column("val_mse")), "wall": wall,
    }


def main() -> None:
    torch.set_num_threads(1)  # as fit() does for stacks this small; the LM polish follows suit
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated configuration names")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGURATIONS)
    print("| configuration | test MSE median | min | max | train MSE median | val MSE median | wall time (10 seeds, stacked) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        description, overrides = CONFIGURATIONS[name]
        row = measure(overrides)
        print(
            f"| {name}: {description} | {row['median']:.2e} | {row['min']:.2e} | {row['max']:.2e} | "
            f"{row['train']:.2e} | {row['val']:.2e} | {row['wall']:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
