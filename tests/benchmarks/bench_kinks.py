"""grad on a formula with many kinks against grad on the default target (issue 25, item 7).

A 989-character formula, 50 terms of abs(sin(k*x)) with k from 15708 to 15757, passes every
formula limit and has about half a million kinks on [-1, 1]. grad's check of which grid points lie
too near a kink must cost at most grid plus kinks, not their product: this script times
`grad --grid N` on a one-epoch run of that formula and on a one-epoch run of the default target,
each as a fresh process in the same run, and prints the ratio (the kink-free default as 1).

    python tests/benchmarks/bench_kinks.py [--grid 100001] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

KINKY = " + ".join(f"abs(sin({k}*x))" for k in range(15708, 15758))
TARGETS = {"default (runge)": None, "50 terms of abs(sin(k*x))": KINKY}


def rungefit(*args: str, runs_dir: str) -> None:
    argv = [sys.executable, "-m", "rungefit", *args, "--runs-dir", runs_dir]
    subprocess.run(argv, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def best_of(repeat: int, *args: str, runs_dir: str) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        rungefit(*args, runs_dir=runs_dir)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=100_001)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs_dir:
        baseline = None
        for name, target in TARGETS.items():
            run = "kinky" if target else "plain"
            rungefit("train", "--epochs", "1", "--points", "200", "--name", run, "--quiet", *(["--target", target] if target else []), runs_dir=runs_dir)
            seconds = best_of(args.repeat, "grad", "--run", run, "--grid", str(args.grid), runs_dir=runs_dir)
            baseline = baseline or seconds
            print(f"grad --grid {args.grid} on {name:28s} {seconds:7.2f} s   ×{seconds / baseline:5.1f} of the default", flush=True)


if __name__ == "__main__":
    main()
