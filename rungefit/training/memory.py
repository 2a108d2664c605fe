"""What a training needs in memory and what the machine holds, compared before anything is
allocated: a network too large for the machine is refused in one line (a UsageError stating both),
not ended by the kernel's out-of-memory killer after minutes of work.

The need (docs/files-and-safety.md explains it), in bytes of the run's dtype unless said otherwise:

- the parameters, K members × P each, STATE_COPIES times: the weights, their gradients and Adam's
  two moments; the best epoch's weights; the start of the current and of the last epoch (weights,
  moments, best), which a divergence or Ctrl-C goes back to; the copy the best weights are taken
  through; and one copy for what this count leaves out (the validation pass, the allocator's
  rounding). With worker processes the parent keeps PARENT_COPIES beside the workers' shares. The
  initialisation comes before the epochs' copies and takes INIT_TEMPORARIES eight-byte values per
  parameter (its int64 hash keys and float64 draws) beside the weights and gradients; a
  parameter costs the larger of the two.
- the activations of a training step: K × B × Σ(fan_in + 1 + 3·fan_out) over the affine maps
  (each map's input with its row of ones, its pre-activations, their deltas and slopes), for the
  batch and for the shorter last batch of an epoch;
- the points: K × points × (4 values in the run's dtype: x and y and the epoch's shuffled copy of
  them; 8 bytes of that copy's order; POINT_BYTES_FLOAT64 of the float64 values they are made from);
- with --polish lm, one member at a time in float64: POLISH_SYSTEMS P × P matrices (JᵀJ, the
  damped system, its factor, and the next JᵀJ) and a Jacobian chunk of polish.CHUNK × P, twice.

The limit is what the machine can hold: its physical memory, or less where this process is held to
less (RLIMIT_AS or RLIMIT_DATA, a cgroup's memory.max); for --device cuda, the GPU's memory. Both
are fixed for a given machine and run, so the same request is always refused or always allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from rungefit.config import TrainConfig, layer_shapes, parameter_count
from rungefit.errors import UsageError
from rungefit.training.polish import CHUNK
from rungefit.training.workers import worker_count

STATE_COPIES = 15  # 4 (weights, gradients, moments) + 1 (best) + 2 × 4 (two epochs' starts) + 1 (a temporary) + 1
PARENT_COPIES = 5  # a parent's weights, gradients, moments and best, beside its workers
INIT_TEMPORARIES = 6  # eight-byte values per parameter while rng hashes and draws the initial weights
POINT_BYTES_FLOAT64 = 32  # per point and member: the float64 values the points are drawn and scaled in
POLISH_SYSTEMS = 5
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def training_bytes(config: TrainConfig) -> dict[str, int]:
    """What training `config` needs, in bytes, by part (parameters, activations, points, polish)."""
    item = 8 if config.dtype == "float64" else 4
    members, size = len(config.seeds), parameter_count(config.hidden_layers)
    copies = STATE_COPIES + (PARENT_COPIES if worker_count(config) > 1 else 0)
    per_parameter = max(copies * item, 2 * item + 8 * INIT_TEMPORARIES)
    rows = sum(fan_in + 1 + 3 * fan_out for fan_in, fan_out in layer_shapes(config.hidden_layers))
    batch = min(config.batch_size, config.n_train)
    batches = batch + config.n_train % batch  # a batch and the last, shorter one
    return {
        "parameters": members * size * per_parameter,
        "activations": members * batches * rows * item,
        "points": members * config.points * (4 * item + 8 + POINT_BYTES_FLOAT64),
        "polish": 8 * (POLISH_SYSTEMS * size * size + 2 * CHUNK * size) if config.polish == "lm" else 0,
    }


def memory_limit(device: str) -> tuple[int, str] | None:
    """(bytes, the words that say so, with {} for the size): the most a training here can hold, or
    None where the system does not tell."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():  # torch says so itself when the training starts
            return None
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory, "the GPU has {} of memory"
    limits = []
    try:
        limits.append((os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine has {} of memory"))
    except (ValueError, OSError, AttributeError):  # a system without these names
        pass
    try:
        import resource  # POSIX only

        for name in ("RLIMIT_AS", "RLIMIT_DATA"):
            soft = resource.getrlimit(getattr(resource, name))[0]
            if soft != resource.RLIM_INFINITY:
                limits.append((soft, f"this process may hold at most {{}} ({name})"))
    except (ImportError, AttributeError, OSError):
        pass
    try:
        text = CGROUP_LIMIT.read_text().strip()
        if text.isdigit():
            limits.append((int(text), "this container may hold at most {} (cgroup memory.max)"))
    except OSError:
        pass
    return min(limits) if limits else None


ADVICE = {
    "parameters": "fewer or narrower --layers, or fewer --seeds",
    "activations": "a smaller --batch-size, or fewer or narrower --layers",
    "points": "fewer --points or --seeds",
    "polish": "--polish none, or fewer or narrower --layers",
}


def check_fits(config: TrainConfig) -> None:
    """UsageError, before anything is allocated, when training `config` needs more memory than the
    machine holds; it states the need, the limit, and what to change."""
    limit = memory_limit(config.device)
    parts = training_bytes(config)
    need = sum(parts.values())
    if limit is None or need <= limit[0]:
        return
    largest = max(parts, key=parts.get)
    members = len(config.seeds)
    raise UsageError(
        f"this training needs about {gib(need)} of memory ({members} member{'s' if members > 1 else ''} × "
        f"{parameter_count(config.hidden_layers):,} parameters, batches of {config.batch_size}, {config.points} points; most "
        f"for the {largest}; docs/files-and-safety.md), but {limit[1].format(gib(limit[0]))}: use {ADVICE[largest]}"
    )


def gib(size: int) -> str:
    value = size / 2**30
    return f"{value:,.0f} GiB" if value >= 100 else f"{value:.3g} GiB"
