"""Training speed of two source trees of rungefit, interleaved in one sitting: a change's cost.

    git worktree add /tmp/before <commit>
    python tests/benchmarks/bench_compare.py /tmp/before .            # K = 1 and K = 64, 5 rounds
    python tests/benchmarks/bench_compare.py /tmp/before . --rounds 7 --epochs 100

Each round times one default fit (300 epochs) of K = 1 and of K = 64 members in a fresh process per
tree, the trees alternating, so that a neighbour's load hits both alike. It prints every time, the
medians and the ratio after / before (above 1: the second tree is slower).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

# The same fit in either tree: TrainConfig moved from train.py to config.py in the house split.
CHILD = """
import sys, time
try:
    from rungefit.config import TrainConfig
except ImportError:
    from rungefit.training.train import TrainConfig
from rungefit.training.train import fit
members, epochs = int(sys.argv[1]), int(sys.argv[2])
fit(TrainConfig(epochs=1, seeds=tuple(range(members))))  # warm-up: first calls, page faults
started = time.perf_counter()
fit(TrainConfig(epochs=epochs, seeds=tuple(range(members))))
print(time.perf_counter() - started)
"""


def timed_fit(tree: Path, members: int, epochs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    output = subprocess.run([sys.executable, "-c", CHILD, str(members), str(epochs)], env=env, capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="source tree of the baseline (holds rungefit/)")
    parser.add_argument("after", type=Path, help="source tree of the change")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs per fit (default 300)")
    parser.add_argument("--members", default="1,64", help="stack sizes (default 1,64)")
    args = parser.parse_args()
    sizes = [int(k) for k in args.members.split(",")]
    times = {(tree, k): [] for tree in ("before", "after") for k in sizes}
    for round_ in range(args.rounds):
        for k in sizes:
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                seconds = timed_fit(getattr(args, name), k, args.epochs)
                times[name, k].append(seconds)
                print(f"round {round_ + 1}  K={k:<4} {name:<6} {seconds:7.3f} s", flush=True)
    print(f"\nmedian of {args.rounds} interleaved rounds, {args.epochs} epochs:")
    for k in sizes:
        before, after = (statistics.median(times[name, k]) for name in ("before", "after"))
        print(f"K={k:<4} before {before:7.3f} s   after {after:7.3f} s   after/before {after / before:.3f}")


if __name__ == "__main__":
    main()
