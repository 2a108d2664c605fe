"""The affine maps between a target's units and the network's standard coordinates.

The network trains on x_std = (x − x_centre) / x_half and y_std = (y − y_mean) / y_scale: the
domain [lo, hi] becomes [−1, 1], where the activations bend, and y gets mean 0 and spread 1, so
that the output layer starts where the targets are, whatever the units (milliseconds, calendar
years, y in the hundreds). The maps come from data that no seed draws (the domain; y on the data's
non-test pool, or f on the check grid), so member k of a stack still equals the single run with
seed k, and are applied in float64 before anything is cast to the run's dtype. On [−1, 1] with
y unscaled they are exactly the identity: x − 0 and x / 1 change no bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rungefit.errors import UsageError

# auto leaves a function's y alone while its spread and its mean are of this order: there the
# network's output layer already starts near the targets, and today's runs stay bit for bit.
UNIT_SPREAD = (0.05, 20.0)


@dataclass(frozen=True)
class Maps:
    """x_std = (x − x_centre) / x_half and y_std = (y − y_mean) / y_scale (the identity by default)."""

    x_centre: float = 0.0
    x_half: float = 1.0
    y_mean: float = 0.0
    y_scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self == Maps()

    @property
    def slope(self) -> float:
        """dy/dx over dy_std/dx_std: the chain factor that takes a derivative back to data units."""
        return self.y_scale / self.x_half

    def x_in(self, x):
        return (x - self.x_centre) / self.x_half

    def x_out(self, x_std):
        return x_std * self.x_half + self.x_centre

    def y_in(self, y):
        return (y - self.y_mean) / self.y_scale

    def y_out(self, y_std):
        return y_std * self.y_scale + self.y_mean

    def mse_out(self, mse):
        """An MSE (or a variance) in standard coordinates, in data units (exactly itself under the identity)."""
        return mse * self.y_scale**2

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: np.ndarray) -> float:
    """The standard deviation of values. np.std squares the deviations, which underflow to 0 for
    values near 1e-300 however much they vary, and overflow to inf near 1e160; there it is taken
    of values / max|values| instead (elsewhere np.std's own, so that runs stay bit for bit)."""
    with np.errstate(all="ignore"):
        plain = float(np.std(values))
        if 1e-140 <= plain <= 1e140:
            return plain
        largest = float(np.max(np.abs(values)))
        return largest * float(np.std(values / largest)) if 0 < largest < math.inf else plain


def make_maps(scale: str, domain: tuple[float, float], y: np.ndarray, has_function: bool) -> Maps:
    """The maps --scale asks for on `domain`, y's from the values `y` (float64, seed-independent)."""
    low, high = domain
    x_maps = {"x_centre": (low + high) / 2, "x_half": (high - low) / 2} if scale != "none" else {}
    mean, y_spread = float(np.mean(y)), spread(y)
    far_from_unit = not (UNIT_SPREAD[0] <= y_spread <= UNIT_SPREAD[1]) or abs(mean) > UNIT_SPREAD[1] * max(y_spread, UNIT_SPREAD[0])
    scale_y = scale == "xy" or (scale == "auto" and (not has_function or far_from_unit))
    y_maps = {"y_mean": mean, "y_scale": y_spread} if scale_y else {}
    maps = Maps(**x_maps, **y_maps)
    if not all(math.isfinite(value) for value in asdict(maps).values()) or maps.x_half <= 0 or maps.y_scale <= 0:
        raise UsageError(
            f"the values are too large or too close together to scale (x over {low:g}…{high:g}, y with mean {mean:g} and "
            f"spread {y_spread:g}); rescale them in the file, or train with --scale none"
        )
    return maps
