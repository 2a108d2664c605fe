"""The runs directory, the face of runs/: the rest of rungefit imports from here only.

RunStore owns a runs directory (names, `latest`, opening, reserving, saving) and Run a saved run
(its config, target, networks, summary, history, resume state, and the files made from it). Only
this package writes under a runs directory.
"""

from __future__ import annotations

from rungefit.runs.layout import (
    ENSEMBLE_EXPORT,
    EVAL_FIGURE,
    EXPORT_PREFIX,
    GRAD_FIGURE,
    LATEST,
)
from rungefit.runs.store import Run, RunStore

__all__ = ["ENSEMBLE_EXPORT", "EVAL_FIGURE", "EXPORT_PREFIX", "GRAD_FIGURE", "LATEST", "Run", "RunStore"]
