"""Start-up latency: `rungefit --help` and one TAB completion against `python -c pass`.

Each command is timed best-of-N as a fresh process, in the same run, and reported as seconds and
as a ratio to the bare interpreter. The target is under 0.3 s for both on the development
machines (2 cores).

    python tests/benchmarks/bench_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ([sys.executable, "-c", "pass"], {}),
    "rungefit --help": ([sys.executable, "-m", "rungefit", "--help"], {}),
    "TAB: rungefit train --device <TAB>": (
        [sys.executable, "-m", "rungefit"],
        {"_RUNGEFIT_COMPLETE": "complete_bash", "COMP_WORDS": "rungefit train --device ", "COMP_CWORD": "3"},
    ),
}


def best_of(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    baseline = None
    for name, (argv, env) in COMMANDS.items():
        seconds = best_of(argv, env, args.repeat)
        baseline = baseline or seconds
        print(f"{name:40s} {seconds * 1000:7.1f} ms   ×{seconds / baseline:5.1f} of python -c pass", flush=True)


if __name__ == "__main__":
    main()
