"""rungefit: fit a 1-D function (the Runge function by default) or a data set with a small network,
and study its gradient, learning rate and fit.

The package's face re-exports the Python API of rungefit.api (load, open_run, fit, TrainConfig,
data_config, to_sequential, from_sequential) and __version__. It defines nothing itself, and imports the API
only when a name is first used, so that `import rungefit` and `rungefit --help` never pay for
importing torch.
"""

from __future__ import annotations

import importlib

from rungefit._version import __version__

_API = ("TrainConfig", "data_config", "fit", "from_sequential", "load", "open_run", "to_sequential")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # PEP 562: the API module (and torch with it) loads on first access.
    if name not in _API:
        raise AttributeError(f"module 'rungefit' has no attribute {name!r}")
    value = getattr(importlib.import_module("rungefit.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
