"""rungefit's training against the plain PyTorch loop, side by side in one process, same data.

    python tests/benchmarks/bench_train.py            # 300 epochs, best of 3 (a few minutes)
    python tests/benchmarks/bench_train.py --quick    # 20 epochs, best of 2: a smoke run
    python tests/benchmarks/bench_train.py --device cuda --members 1024,16384

Prints steps/s per case and a final line with the ratios of issue 5: a single model must train at
least 3× faster than the plain loop, one K = 64 stacked run must take at most 4× the wall time of a
K = 1 run, and the K = 64 run's peak memory must stay under 1 GiB. fit() picks its worker processes
as `train` does (on 2 cores: K = 64 as 2 processes of 32 members). The memory is measured on a
fresh process running that fit, sampled every 20 ms: the largest RSS of one process, and the sum
of the proportional set sizes (PSS, shared pages split between the processes sharing them) of it
and its workers, which is what the run takes. Cases run interleaved and each keeps its best time,
because the machine is shared. Whole `rungefit train` commands (start-up, torch import, plots and
saving included) are timed too, as a user waits for them; the ratios come last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_loop import train_plain  # noqa: E402

from rungefit.config import TrainConfig  # noqa: E402
from rungefit.targets import resolve  # noqa: E402
from rungefit.training.train import fit  # noqa: E402

STACK = 64
RSS_LIMIT_MIB = 1024
MEMORY_CHILD = """
import sys
from rungefit.config import TrainConfig
from rungefit.training.train import fit
fit(TrainConfig(epochs=int(sys.argv[1]), seeds=tuple(range(int(sys.argv[2]))), device=sys.argv[3]))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 epochs, best of 2")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 300, --quick 20)")
    parser.add_argument("--repeats", type=int, help="runs per case, best kept (default 3, --quick 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where rungefit trains")
    parser.add_argument("--members", default="", help="extra stack sizes for a throughput table, e.g. 1024,16384")
    parser.add_argument(
        "--plain-threads",
        type=int,
        default=1,
        help="intra-op threads of the plain loop (default 1, as rungefit uses for small stacks; "
        "torch's default of all cores is far slower on a busy machine)",
    )
    args = parser.parse_args()
    args.epochs = args.epochs or (20 if args.quick else 300)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_plain(epochs: int, threads: int) -> tuple[float, int]:
    """Wall time and steps of the plain loop on the data set rungefit's default run with seed 0 uses."""
    config = TrainConfig()
    data = resolve(config).split(torch.tensor([0]), config.points, config.val_fraction)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        _, steps = train_plain(data.x_train[0], data.x_val[0], epochs=epochs)
        return time.perf_counter() - started, steps
    finally:
        torch.set_num_threads(previous)


def time_rungefit(epochs: int, members: int, device: str) -> tuple[float, int, int]:
    """Wall time, steps and worker processes of one stacked fit() with seeds 0 … members-1."""
    config = TrainConfig(epochs=epochs, seeds=tuple(range(members)), device=device)
    synchronize(device)
    started = time.perf_counter()
    result = fit(config)
    synchronize(device)
    return time.perf_counter() - started, result.steps, result.config.workers


def time_command(epochs: int, members: int, device: str) -> float:
    """Wall time of a whole `rungefit train --seeds MEMBERS` command, in a fresh process."""
    with tempfile.TemporaryDirectory() as runs_dir:
        command = [sys.executable, "-m", "rungefit", "train", "--seeds", str(members), "--epochs", str(epochs)]
        started = time.perf_counter()
        subprocess.run([*command, "--device", device, "--quiet", "--runs-dir", runs_dir], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def peak_memory_mib(epochs: int, members: int, device: str) -> tuple[float, float]:
    """(largest RSS of one process, largest sum of PSS over the process tree) of a fresh process
    running one stacked fit(), in MiB, sampled every 20 ms."""
    child = subprocess.Popen([sys.executable, "-c", MEMORY_CHILD, str(epochs), str(members), device])
    rss = pss = 0.0
    while child.poll() is None:
        samples = [_memory_kib(pid) for pid in [child.pid, *_descendants(child.pid)]]
        rss = max([rss, *(sample[0] for sample in samples)])
        pss = max(pss, sum(sample[1] for sample in samples))
        time.sleep(0.02)
    if child.returncode:
        raise SystemExit(f"the memory probe failed with exit code {child.returncode}")
    return rss / 1024, pss / 1024


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except OSError:
        return []
    return [grandchild for child in children for grandchild in (child, *_descendants(child))]


def _memory_kib(pid: int) -> tuple[float, float]:
    """(Rss, Pss) of a process in KiB, from /proc/PID/smaps_rollup; zeros once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    fields = {line.split(":")[0]: float(line.split()[1]) for line in lines[1:]}
    return fields.get("Rss", 0.0), fields.get("Pss", 0.0)


def best_times(args: argparse.Namespace) -> dict[str, tuple[float, int, int]]:
    cases = {
        "plain loop, K=1": lambda: (*time_plain(args.epochs, args.plain_threads), 1),
        "rungefit, K=1": lambda: time_rungefit(args.epochs, 1, args.device),
        f"rungefit, K={STACK}": lambda: time_rungefit(args.epochs, STACK, args.device),
    }
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.repeats):
        for name, run in cases.items():
            seconds, steps, workers = run()
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, steps, workers)
    return best


def print_case(name: str, seconds: float, steps: int, members: int, workers: int) -> None:
    print(
        f"{name:<22} {seconds:8.2f} s  {steps / seconds:9.0f} steps/s  "
        f"{members * steps / seconds:11.0f} member-steps/s  {workers} process{'es' if workers > 1 else ''}"
    )


def main() -> None:
    args = parse_args()
    print(
        f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"{args.epochs} epochs, best of {args.repeats}, plain loop on {args.plain_threads} thread(s)"
    )
    best = best_times(args)
    for name, (seconds, steps, workers) in best.items():
        print_case(name, seconds, steps, STACK if name.endswith(f"K={STACK}") else 1, workers)
    for members in filter(None, args.members.split(",")):
        print_case(f"rungefit, K={members}", *time_rungefit(min(args.epochs, 3), int(members), args.device)[:2], int(members), 1)
    commands = [[time_command(args.epochs, members, args.device) for members in (1, STACK)] for _ in range(args.repeats)]
    single_command, stacked_command = (min(times) for times in zip(*commands, strict=True))
    print(
        f"end to end: `rungefit train` {single_command:.1f} s, `rungefit train --seeds {STACK}` {stacked_command:.1f} s: "
        f"{stacked_command / single_command:.1f}× (best of {args.repeats})"
    )
    rss, pss = peak_memory_mib(args.epochs, STACK, args.device)
    plain, single, stacked = (best[name][0] for name in best)
    checks = [
        (f"single model {plain / single:.1f}× faster than the plain loop (need ≥ 3)", plain / single >= 3),
        (f"K={STACK} takes {stacked / single:.1f}× the time of K=1 (need ≤ 4)", stacked / single <= 4),
        (f"K={STACK} peak memory {pss:.0f} MiB in all, {rss:.0f} MiB RSS in the largest process (need < {RSS_LIMIT_MIB})", pss < RSS_LIMIT_MIB),
    ]
    print("ratios: " + "; ".join(f"{text} {'ok' if ok else 'MISSED'}" for text, ok in checks))


if __name__ == "__main__":
    main()
