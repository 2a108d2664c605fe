"""Speed of lr-find against plain training, measured in the same run on the default setup.

    python tests/benchmarks/bench_lr_find.py [--threads 1] [--repeats 5]

Prints two ratios with their targets: the range test (100 steps, with smoothing, divergence checks
and the state restored) against 100 plain `train` steps (≤ 2×), and the verification grid (every
rate × seed one member of one stacked fit) against one single-model `train` (≤ 5×).
Not collected by pytest (the file is not named test_*.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rungefit.config import TrainConfig
from rungefit.targets import resolve
from rungefit.training import lr_find as lr_find
from rungefit.training.stack import EpochBatches
from rungefit.training.train import fit


def plain_steps(config: TrainConfig, steps: int) -> None:
    """What the range test is compared with: a fresh stack and `steps` ordinary Adam steps."""
    model, optimizer, data, seeds = lr_find.new_stack(config, resolve(config))
    done, epoch = 0, 0
    while done < steps:
        for x, y in EpochBatches(data.x_train, data.y_train, seeds, config.batch_size)(epoch):
            model.mse_backward(x, y)
            optimizer.step()
            done += 1
            if done == steps:
                return
        epoch += 1


def timed(functions: list, repeats: int) -> list[float]:
    """Median wall time of each function over `repeats` calls, after one warm-up call each.

    The calls alternate, so a neighbour's load on a shared machine hits every function alike.
    """
    times: list[list[float]] = [[] for _ in functions]
    for round_ in range(repeats + 1):
        for function, spent in zip(functions, times, strict=True):
            started = time.perf_counter()
            function()
            if round_:
                spent.append(time.perf_counter() - started)
    return [statistics.median(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of the range test and the plain steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig()
    test = lr_find.RangeTestConfig()

    steps_s, range_s = timed([lambda: plain_steps(config, test.iters), lambda: lr_find.run_range_test(config, resolve(config), test)], args.repeats)
    print(f"100 plain train steps      {steps_s * 1e3:8.1f} ms")
    print(f"range test, {test.iters} steps      {range_s * 1e3:8.1f} ms   ratio {range_s / steps_s:.2f}×  (target ≤ 2×)")

    (train_s,) = timed([lambda: fit(config)], 1)
    findings = lr_find.lr_find(config, resolve(config), test, lr_find.VerifyConfig())
    check = findings.verification
    grid_s = check.wall_time_s
    members = check.val_mse.size
    print(f"one train, {config.epochs} epochs      {train_s:8.2f} s")
    print(f"verification, {members} members  {grid_s:8.2f} s    ratio {grid_s / train_s:.2f}×  (target ≤ 5×)")


if __name__ == "__main__":
    main()
