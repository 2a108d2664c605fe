"""What the network fits, the face of targets/: the rest of rungefit imports from here only.

resolve(config) turns a TrainConfig's target settings into a Target (checked once, built once, per
command, and passed down); settings() turns the command line's --target, --domain, --data and
--test-fraction into those settings. A Target is a FunctionTarget (a preset or a formula, parsed
by formula.py's whitelist and never executed) or a DataTarget (measured points, datafile.py).
"""

from __future__ import annotations

from rungefit.targets.datafile import is_number, read_points
from rungefit.targets.domain import describe_domain
from rungefit.targets.maps import Maps
from rungefit.targets.resolving import Settings, resolve, settings
from rungefit.targets.target import DataSplit, DataTarget, FunctionTarget

Target = FunctionTarget | DataTarget

__all__ = [
    "DataSplit",
    "DataTarget",
    "FunctionTarget",
    "Maps",
    "Settings",
    "Target",
    "describe_domain",
    "is_number",
    "read_points",
    "resolve",
    "settings",
]
