"""The Python API, for scripts and notebooks (re-exported by the package, so `rungefit.fit`):

- load(run, runs_dir, member): a saved network as a plain torch.nn.Sequential;
- open_run(run, runs_dir): a saved run with its config, target, summary, history and networks;
- TrainConfig and fit(config): train without the command line; data_config(file, **options):
  the TrainConfig of `rungefit train --data FILE` (its network chosen by validation, as train does);
- to_sequential(stack, member) and from_sequential(network): a trained stack's member as a
  torch.nn.Sequential and back.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

from rungefit import targets
from rungefit.config import TrainConfig, chooses_network, data_defaults
from rungefit.errors import UsageError
from rungefit.net.sequential import from_sequential, to_sequential
from rungefit.rules import Rule
from rungefit.runs import Run, RunStore
from rungefit.training.choose import choose_network
from rungefit.training.train import fit

# TrainConfig's fields that the data file sets.
DATA_FIELDS = frozenset({"target", "data", "data_sha256", "points", "test_points"})

__all__ = ["TrainConfig", "data_config", "fit", "from_sequential", "load", "open_run", "to_sequential"]

# What the arguments of open_run and load must be (a UsageError names the one that is not).
ARGUMENTS = {
    "run": Rule("a run's name (a string), or None for the latest", lambda v: v is None or isinstance(v, str)),
    "runs_dir": Rule("a directory (a string or a path)", lambda v: isinstance(v, (str, os.PathLike))),
    "member": Rule("a member's index (a whole number), or None for the best", lambda v: v is None or type(v) is int),
}


def open_run(run: str | None = None, runs_dir: str | Path = "runs") -> Run:
    """The saved run `run` in `runs_dir` (None or "latest": the newest), as a rungefit.runs.Run.

    It has .config (a TrainConfig), .target, .summary (summary.json as a dict), .history
    (train_mse, val_mse and lr as float64 arrays [epochs, members]), .path, and .network(member)
    giving a member as a torch.nn.Sequential. A missing or damaged run raises
    rungefit.errors.RungefitError; an argument of the wrong type, rungefit.errors.UsageError.
    """
    ARGUMENTS["run"].check("run", run)
    ARGUMENTS["runs_dir"].check("runs_dir", runs_dir)
    return RunStore(runs_dir).open(run)


def load(run: str | None = None, runs_dir: str | Path = "runs", member: int | None = None):
    """A saved network as a torch.nn.Sequential: Linear, activation, …, Linear, input and output [batch, 1].

    `member` picks one of a stacked run's networks (default: the best by validation MSE). The module
    is in the run's dtype, on the CPU, in eval mode, and its parameters do not require grad.
    """
    ARGUMENTS["member"].check("member", member)
    opened = open_run(run, runs_dir)
    if opened.learned_nothing:
        warnings.warn(f"run {opened.path.name!r} learned nothing: its predictions are little better than the mean of y", UserWarning, stacklevel=2)
    return opened.network(member)


def data_config(data: str | Path, **options) -> TrainConfig:
    """The TrainConfig that `rungefit train --data DATA` runs, with `options` (TrainConfig's fields) given.

    It holds the data's points and test share, and a data run's defaults (a wider network, its
    rate, full-batch steps until each member converges) for layers, lr, schedule, batch_size, epochs
    and patience where they are not in `options`. Where neither layers nor epochs is given, the
    network is chosen as `train` chooses it: each of config.DATA_NETWORKS is trained on seed 0 and
    the one of lower validation MSE kept (training/choose.py), so this call trains two networks. Example: fit(data_config("accel.csv", seeds=(0, 1, 2, 3, 4))) trains
    the 5-member ensemble whose band says how sure the fit is.
    """
    unknown = sorted(set(options) - {field.name for field in dataclasses.fields(TrainConfig)} | (set(options) & DATA_FIELDS))
    if unknown:
        raise UsageError(f"data_config: {', '.join(unknown)} cannot be given; the others of TrainConfig's fields can (the data set {', '.join(sorted(DATA_FIELDS))})")
    domain = options.pop("domain", None)
    chosen = targets.settings(data=str(data), domain=domain, test_fraction=options.get("test_fraction", TrainConfig.test_fraction))
    config, _ = data_defaults(TrainConfig(**{**chosen.fields, **options}), options)
    if chooses_network(options):
        config = dataclasses.replace(config, layers=choose_network(config, targets.resolve(config, chosen.points)).layers)
    return config
