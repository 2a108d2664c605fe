"""Counter-based random numbers: every draw is a pure function of (seed, stream, counter, index).

Each member of a stacked model needs its own random stream (initialisation, training points,
shuffling) that does not depend on how many other members train beside it, or on how often the
run was interrupted and resumed. A hash of (seed, stream, counter) gives exactly that, in one
vectorised tensor operation for all members at once, with no generator state to save. The data
and the initialisation are the same on every device; the shuffling order is not (permutations).
"""

from __future__ import annotations

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF
# Multipliers stay below 2**31 so that a 32-bit value times a multiplier never overflows int64.
_MULTIPLIERS = (0x7FEB352D, 0x4C957F2D, 0x5851F42D)

# Named streams keep the draws of different purposes independent of each other.
STREAM_DATA = 1
STREAM_INIT = 2
STREAM_SHUFFLE = 3
STREAM_TEST = 4  # a data set's test share: drawn with seed 0, the same for every member


def _mix(x):
    """A bijective 32-bit mixing function (xor-shift / odd-multiply rounds) on int64 tensors, int64
    NumPy arrays or ints, with the same bits for each."""
    for multiplier in _MULTIPLIERS:
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK32
    return x ^ (x >> 15)


def _keys(seeds: torch.Tensor, stream: int, counter: int, n: int) -> torch.Tensor:
    """53-bit integer keys [K, n], one row per seed."""
    index = torch.arange(n, dtype=torch.int64, device=seeds.device).reshape(1, -1)
    return _key_bits(_row_bases(seeds.to(torch.int64).reshape(-1, 1), stream, counter), index)


def _row_bases(seeds, stream: int, counter: int):
    """What a row's keys share, from int64 seeds (a tensor or a NumPy array)."""
    # The parts that do not depend on the seed are plain ints: the same bits, without a tensor
    # operation each (these keys are made every epoch).
    base = _mix(_mix(seeds & _MASK32) ^ _mix(stream * 7919 + counter))
    return _mix(base ^ _mix(counter ^ 0x2545F491))


def _key_bits(base, index):
    """The key of position `index` in the row of `base`."""
    high = _mix(index ^ base)
    low = _mix(high ^ _mix(base ^ 0x68E31DA4))
    return ((high >> 6) << 27) | (low >> 5)


def uniform(
    seeds: torch.Tensor, stream: int, n: int, *, counter: int = 0, dtype=torch.float64
) -> torch.Tensor:
    """[K, n] numbers uniform on [0, 1), row k a function of seeds[k] alone."""
    return (_keys(seeds, stream, counter, n).to(torch.float64) / 2.0**53).to(dtype)


def permutations(seeds: torch.Tensor, stream: int, n: int, *, counter: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """[K, n] random permutations of range(n), row k a function of seeds[k] and counter (into
    `out`, int64 on the seeds' device, if given).

    On the CPU, row k is torch.randperm (Fisher-Yates on an MT19937 generator seeded with the
    hash of seed, stream and counter): sorting n hashed keys per row costs much more there. On a
    GPU, the whole stack is one argsort of hashed keys, which a loop over members would not be.
    The two orders differ.
    """
    rows = torch.empty(seeds.shape[0], n, dtype=torch.int64, device=seeds.device) if out is None else out
    if seeds.device.type != "cpu":
        return rows.copy_(torch.argsort(_keys(seeds, stream, counter, n), dim=1, stable=True))
    # Each row's seed is its first key. In NumPy: a few dozen operations on [K] integers, each a
    # fraction of a torch call's cost (this runs every epoch).
    row_seeds = _key_bits(_row_bases(np.array(seeds.tolist(), dtype=np.int64), stream, counter), 0)
    generator = torch.Generator()
    for row, key in zip(rows, row_seeds.tolist(), strict=True):
        torch.randperm(n, generator=generator.manual_seed(key), out=row)
    return rows
