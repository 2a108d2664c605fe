"""A data run's network, chosen by validation: each of config.DATA_NETWORKS trained as the run
would train it, on PROBE_SEEDS, and the one of lower median validation MSE kept.

The probe seeds are fixed, so that every run on the same data and settings makes the same choice,
whatever its --seeds: member k of a stack is still the single run with seed k. The validation
points are those the run itself holds out, never its test share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from rungefit.config import DATA_NETWORKS, PROBE_SEEDS, TrainConfig
from rungefit.targets import Target
from rungefit.training.train import fit


@dataclass(frozen=True)
class NetworkChoice:
    layers: str  # the network kept
    val_mse: dict[str, float]  # each candidate's median validation MSE over the probe seeds, in data units

    @property
    def how(self) -> str:
        scores = ", ".join(f"{layers} {value:.4g}" for layers, value in self.val_mse.items())
        seeds = ", ".join(map(str, PROBE_SEEDS))
        return f"the lower validation MSE of {scores} (seed {seeds}; --layers sets the network)"

    def to_json(self) -> dict:
        return {"chosen": self.layers, "val_mse": dict(self.val_mse), "probe_seeds": list(PROBE_SEEDS)}


def choose_network(config: TrainConfig, target: Target) -> NetworkChoice:
    """Train each candidate network with config's other settings on the probe seeds (no polish, a
    diverged member scoring inf) and keep the one of lowest median validation MSE, the first on a tie."""
    scores = {}
    for layers in DATA_NETWORKS:
        probe = replace(config, layers=layers, seeds=PROBE_SEEDS, polish="none")
        result = fit(probe, target, stop_on_divergence=False)
        values = np.array([m.val_mse for m in result.members], dtype=np.float64)
        scores[layers] = float(np.median(np.where(np.isfinite(values), values, np.inf)))
    return NetworkChoice(min(scores, key=scores.get), scores)
