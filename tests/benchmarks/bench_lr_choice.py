"""How well does each way of choosing the learning rate do? The issue's acceptance check.

    python tests/benchmarks/bench_lr_choice.py [--seeds 10] [--threads 1]

On the default setup, for seeds 0…N-1:
1. `lr-find --verify --verify-seeds N`: the grid's best fixed rate is the yardstick;
2. each range-test rule, read off seed s's own curve, then a full training of seed s at that rate
   (all rules × seeds as one stacked fit);
3. `train --lr auto --seed s` through the CLI.
Prints, per way, how many seeds trained (val MSE < TRAINED_BELOW · Var(y)) and the median val MSE
against the best fixed rate's (target for auto: ≤ 3×, and every seed trains). Writes only under
a temporary directory. Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from typer.testing import CliRunner

from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.targets import resolve
from rungefit.training import lr_find as lr_find
from rungefit.training import lr_rules as lr_rules
from rungefit.training.metrics import learned
from rungefit.training.train import fit


def run(arguments: list[str]) -> dict:
    result = CliRunner().invoke(app, arguments)
    if result.exit_code != 0:
        raise SystemExit(f"rungefit {' '.join(arguments)} failed: {result.output}")
    return json.loads(result.stdout)


def rule_trainings(seeds: list[int]) -> dict[str, list[tuple[float, float]]]:
    """rule → [(its rate on seed s's curve, seed s's val MSE after training at it)] per seed."""
    picks = {rule: [] for rule in lr_rules.RULES}
    for seed in seeds:
        suggestions = lr_find.run_range_test(TrainConfig(seeds=(seed,)), resolve(TrainConfig()), lr_find.RangeTestConfig()).suggestions(0)
        for rule in lr_rules.RULES:
            picks[rule].append(suggestions[rule])
    members = [(rule, seed, lr) for rule in lr_rules.RULES for seed, lr in zip(seeds, picks[rule], strict=True) if lr is not None]
    result = fit(TrainConfig(seeds=tuple(m[1] for m in members)), member_lrs=[m[2] for m in members], stop_on_divergence=False)
    trained = {rule: [] for rule in lr_rules.RULES}
    for (rule, _, lr), metrics in zip(members, result.members, strict=True):
        trained[rule].append((lr, metrics.val_mse))
    return trained


def summary_row(name: str, picks: list[tuple[float, float]], best: dict, var_y: float, seeds: int) -> str:
    rates = np.array([lr for lr, _ in picks])
    val = np.array([v if np.isfinite(v) else np.inf for _, v in picks])
    ok = int(learned(val, var_y).sum())
    spread = np.log10(rates.max() / rates.min())
    ratio = np.median(val) / best["median"]
    return f"| {name} | {rates.min():.2g} … {rates.max():.2g} ({spread:.1f} decades) | {ok}/{seeds} | {np.median(val):.3e} | {ratio:.3g}× |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        grid = run(["lr-find", "--verify", "--verify-seeds", str(args.seeds), "--out", f"{scratch}/lr-find", "--json"])["verification"]
        grid_s = time.perf_counter() - started
        rules = rule_trainings(seeds)
        auto = []
        for seed in seeds:
            started = time.perf_counter()
            summary = run(["train", "--lr", "auto", "--seed", str(seed), "--runs-dir", f"{scratch}/runs", "--quiet", "--json"])
            member = summary["members"][0]
            auto.append((member["lr"], member["val_mse"], time.perf_counter() - started - summary["wall_time_s"], summary["wall_time_s"]))
    best = next(rate for rate in grid["rates"] if rate["lr"] == grid["best_lr"])
    var_y = grid["mean_predictor_mse"]
    print(f"verification grid: {len(grid['rates'])} rates × {args.seeds} seeds × {grid['epochs']} epochs as one stacked fit, {grid_s:.0f} s")
    print(f"best fixed rate {best['lr']:.3g}: median val MSE {best['median']:.3e}, {best['trained']}/{args.seeds} seeds trained\n")
    print("| way of choosing | rates chosen over the seeds | seeds trained | median val MSE | vs best fixed rate |")
    print("|---|---|---|---|---|")
    for rule in lr_rules.RULES:
        print(summary_row(f"{rule} (own seed's range test)", rules[rule], best, var_y, args.seeds))
    print(summary_row("`train --lr auto`", [(lr, val) for lr, val, _, _ in auto], best, var_y, args.seeds))
    print("\n| seed | auto lr | val MSE (auto) | val MSE (best fixed rate) | auto / best | choosing + training |")
    print("|---|---|---|---|---|---|")
    for seed, (lr, val, choose_s, train_s) in zip(seeds, auto, strict=True):
        fixed = best["val_mse"][seed]
        print(f"| {seed} | {lr:.3g} | {val:.3e} | {fixed:.3e} | {val / fixed:.2f} | {choose_s:.1f} s + {train_s:.1f} s |")


if __name__ == "__main__":
    main()
