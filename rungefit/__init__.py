"""rungefit: fit a 1-D function (the Runge function by default) or a data set with a small network,
and study its gradient, learning rate and fit.

The Python API, for scripts and notebooks:

- load(run, runs_dir, member): a saved network as a plain torch.nn.Sequential;
- open_run(run, runs_dir): a saved run with its config, summary, history and networks;
- TrainConfig and fit(config): train without the command line;
- to_sequential(stack, member) and from_sequential(network): a trained stack's member as a
  torch.nn.Sequential and back.

Nothing heavy is imported until a name is used, so that `import rungefit` and `rungefit --help`
never pay for importing torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

# Public names that live in torch-importing modules, loaded on first access (PEP 562).
_LAZY = {
    "TrainConfig": "rungefit.config",
    "fit": "rungefit.training.train",
    "to_sequential": "rungefit.net.model",
    "from_sequential": "rungefit.net.model",
}

__all__ = ["__version__", "load", "open_run", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'rungefit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def open_run(run: str | None = None, runs_dir: str | Path = "runs"):
    """The saved run `run` in `runs_dir` (None or "latest": the newest), as a rungefit.runs.store.LoadedRun.

    It has .config (a TrainConfig), .summary (summary.json as a dict), .history (train_mse, val_mse
    and lr as float64 arrays [epochs, members]), .path, and .network(member) giving a member as a
    torch.nn.Sequential. A missing or damaged run raises rungefit.errors.RungefitError.
    """
    from rungefit.runs import store as runs

    return runs.load_run(Path(runs_dir), run)


def load(run: str | None = None, runs_dir: str | Path = "runs", member: int | None = None):
    """A saved network as a torch.nn.Sequential: Linear, activation, …, Linear, input and output [batch, 1].

    `member` picks one of a stacked run's networks (default: the best by validation MSE). The module
    is in the run's dtype, on the CPU, in eval mode, and its parameters do not require grad.
    """
    return open_run(run, runs_dir).network(member)
