"""The target of a run: the settings --target, --domain, --data and --test-fraction make, and
resolve(config), which checks them and builds the target once per command, its maps included."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from rungefit.config import (
    DEFAULT_DOMAIN,
    DEFAULT_TARGET,
    MAX_DATA_VALUE,
    MAX_DOMAIN,
    MAX_POINTS,
    MAX_TEST_POINTS,
    MIN_DATA_POINTS,
)
from rungefit.errors import UsageError
from rungefit.targets.datafile import PointsFile, read_points
from rungefit.targets.domain import check_domain, check_grid, parse_domain
from rungefit.targets.maps import make_maps
from rungefit.targets.target import DataTarget, FunctionTarget, data_target, function_target


@dataclass(frozen=True)
class Settings:
    """What --target, --domain, --data and --test-fraction make: the TrainConfig fields, and for
    data the points as read (resolve takes them, so that the file is read once)."""

    fields: dict
    points: PointsFile | None = None


def settings(target: str | None = None, domain: str | tuple[float, float] | None = None, data: str | None = None, test_fraction: float = 0.2) -> Settings:
    """The TrainConfig fields for --target, --domain (as typed, "A,B", or a pair of numbers),
    --data and --test-fraction (None: not given). With data they include the points (all but the
    test share) and the test points. resolve() checks the target itself."""
    if data is None:
        return Settings({"target": DEFAULT_TARGET if target is None else target, "domain": _domain(domain, MAX_DOMAIN) if domain is not None else DEFAULT_DOMAIN})
    if target is not None:
        raise UsageError("--target and --data exclude each other: the data are the target")
    points = read_points(data)
    _varying(points.y, f"--data {data}: y")
    if domain is not None:
        span = _domain(domain, MAX_DATA_VALUE)
    else:
        span = (float(points.x.min()), float(points.x.max()))
        if not span[0] < span[1]:
            raise UsageError(f"--data {data}: every x is {span[0]:g}; give --domain, or points at more than one x")
    resolved = data_target(points, span, test_fraction, str(data))
    _check_data_count(resolved, test_fraction, str(data))
    fields = {
        "target": "", "domain": span, "data": str(data), "data_sha256": points.sha256, "test_fraction": test_fraction,
        "points": len(resolved.pool), "test_points": len(resolved.test_index),
    }
    return Settings(fields, points)


def _domain(domain: str | tuple[float, float], limit: float) -> tuple[float, float]:
    """--domain as typed ("A,B") or as a pair (the Python API), checked."""
    return parse_domain(domain, limit) if isinstance(domain, str) else check_domain(domain, limit)


def _check_data_count(target: DataTarget, test_fraction: float, data: str) -> None:
    """A UsageError naming what the user can change when the data cannot make a test set and a
    training pool: fewer than MIN_DATA_POINTS, or a --test-fraction that leaves either too small
    or too large."""
    count, n_test, pool = len(target.points.x), len(target.test_index), len(target.pool)
    if count < MIN_DATA_POINTS:
        raise UsageError(f"--data {data} has {count} points; rungefit needs at least {MIN_DATA_POINTS} (training, validation and test points)")
    if n_test < 2:
        raise UsageError(f"--test-fraction {test_fraction:g} holds out {n_test} of the {count} points of --data {data} as the test set; it needs at least 2: use a larger --test-fraction")
    if n_test > MAX_TEST_POINTS:
        raise UsageError(f"--test-fraction {test_fraction:g} holds out {n_test} of the {count} points of --data {data}; the test set may have at most {MAX_TEST_POINTS}: use a smaller --test-fraction")
    if not 2 <= pool <= MAX_POINTS:
        raise UsageError(
            f"--test-fraction {test_fraction:g} leaves {pool} of the {count} points of --data {data} for training and validation; "
            f"{'at least 2' if pool < 2 else f'at most {MAX_POINTS}'} are needed: use a {'smaller' if pool < 2 else 'larger'} --test-fraction"
        )


def _varying(values: np.ndarray, what: str) -> None:
    """A UsageError for a constant: every fit is judged against the variance of y, and it has none."""
    if np.ptp(values) == 0:
        raise UsageError(f"{what} is constant ({values[0]:g}): there is nothing to learn, and rungefit judges every fit against the variance of y; choose a target that varies")


def resolve(config, points: PointsFile | None = None) -> FunctionTarget | DataTarget:
    """The target a TrainConfig names, checked: a formula parses, is finite and varies on the
    domain; data match their recorded SHA-256 and leave a batch, a validation share and a test
    share. `points`: a data run's points already read (by settings(), or a run's copy of them);
    otherwise the file the config names is read. A UsageError says what is wrong.

    Each command resolves its target once and passes it down; nothing is remembered between calls."""
    config.check("target", "domain", "data", "data_sha256", "test_fraction", "scale", "points", "val_fraction")  # the settings read here
    domain = check_domain(config.domain, MAX_DATA_VALUE) if config.data else check_domain(config.domain)
    if config.data and not config.data_sha256:
        raise UsageError("a data setting needs the file's SHA-256 too: build it with targets.settings(data=…)")
    if not config.data:
        target = function_target(config.target, domain)
        values = target(check_grid(domain))
        _varying(values, target.description)
        return replace(target, maps=make_maps(config.scale, domain, values, has_function=True))
    if points is None:
        points = read_points(config.data, expected_sha256=config.data_sha256)
    elif points.sha256 != config.data_sha256:
        raise UsageError(f"--data {config.data}: the points given do not match the SHA-256 the run recorded")
    _varying(points.y, f"--data {config.data}: y")
    target = data_target(points, domain, float(config.test_fraction), config.data)
    _check_data_sizes(config, target)
    return replace(target, maps=make_maps(config.scale, domain, points.y[target.pool], has_function=False))


def _check_data_sizes(config, target: DataTarget) -> None:
    """A UsageError unless the data leave a test share, a validation share and two training points
    (a batch larger than the training set takes all of it)."""
    pool = len(target.pool)
    n_test = len(target.test_index)
    n_val = round(pool * config.val_fraction)
    if len(target.points.x) < MIN_DATA_POINTS or n_test < 1 or n_val < 1 or pool - n_val < 2:
        raise UsageError(
            f"--data {config.data} has {len(target.points.x)} points: too few for a test share (--test-fraction "
            f"{config.test_fraction:g}), a validation share (--val-fraction {config.val_fraction:g}) and training points; "
            f"give at least {MIN_DATA_POINTS} points, or larger shares"
        )
    if config.points != pool:
        raise UsageError(f"--points: with --data the points are the data's ({pool} after the test share); drop --points")
