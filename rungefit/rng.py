"""Counter-based random numbers: every draw is a pure function of (seed, stream, index).

Each member of a stacked model needs its own random stream (initialisation, training points,
shuffling) that does not depend on how many other members train beside it, on the device, or on
how often the run was interrupted and resumed. A hash of (seed, stream, counter) gives exactly that,
in one vectorised tensor operation for all members at once, with no generator state to save.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
# Multipliers stay below 2**31 so that a 32-bit value times a multiplier never overflows int64.
_MULTIPLIERS = (0x7FEB352D, 0x4C957F2D, 0x5851F42D)

# Named streams keep the draws of different purposes independent of each other.
STREAM_DATA = 1
STREAM_INIT = 2
STREAM_SHUFFLE = 3


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixing function (xor-shift / odd-multiply rounds) on int64 tensors."""
    for multiplier in _MULTIPLIERS:
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK32
    return x ^ (x >> 15)


def _keys(seeds: torch.Tensor, stream: int, counter: int, n: int) -> torch.Tensor:
    """53-bit integer keys [K, n], one row per seed."""
    seeds = seeds.to(torch.int64).reshape(-1, 1)
    base = _mix(_mix(seeds & _MASK32) ^ _mix(torch.tensor(stream * 7919 + counter, dtype=torch.int64)))
    base = _mix(base ^ _mix(torch.tensor(counter, dtype=torch.int64) ^ 0x2545F491))
    index = torch.arange(n, dtype=torch.int64, device=seeds.device).reshape(1, -1)
    high = _mix(index ^ base)
    low = _mix(high ^ _mix(base ^ 0x68E31DA4))
    return ((high >> 6) << 27) | (low >> 5)


def uniform(
    seeds: torch.Tensor, stream: int, n: int, *, counter: int = 0, dtype=torch.float64
) -> torch.Tensor:
    """[K, n] numbers uniform on [0, 1), row k a function of seeds[k] alone."""
    return (_keys(seeds, stream, counter, n).to(torch.float64) / 2.0**53).to(dtype)


def permutations(seeds: torch.Tensor, stream: int, n: int, *, counter: int = 0) -> torch.Tensor:
    """[K, n] random permutations of range(n), row k a function of seeds[k] and counter."""
    return torch.argsort(_keys(seeds, stream, counter, n), dim=1, stable=True)
