"""Each member's best-validation weights, kept while it trains: on noisy data the last epoch has
fitted more of the noise than the best one (`--keep best`, the default for data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def keeps_best(config, target) -> bool:
    """Whether a run keeps each member's best-validation weights: --keep best, or auto on data."""
    return config.keep == "best" or (config.keep == "auto" and not target.has_function)


def training_done(config, epochs_run: int, best: Best | None) -> bool:
    """Whether a run's Adam epochs are over: all done, or every member stopped (--patience)."""
    return epochs_run == config.epochs or (best is not None and bool(best.stopped(epochs_run, config.patience).all()))


@dataclass
class Best:
    """Per member: the weights of its epoch of lowest validation MSE so far, that MSE (in the
    network's standard coordinates, float64) and that epoch (1-based; 0 while none was finite)."""

    params: torch.Tensor  # [K, P], the run's dtype
    val: torch.Tensor  # [K] float64, inf while none
    epoch: torch.Tensor  # [K] int64

    @classmethod
    def start(cls, params: torch.Tensor) -> Best:
        members = params.shape[0]
        return cls(params.detach().clone(), torch.full((members,), torch.inf, dtype=torch.float64), torch.zeros(members, dtype=torch.int64))

    def update(self, epoch: int, params: torch.Tensor, val_mse: torch.Tensor) -> None:
        """After epoch `epoch` (1-based): members whose validation MSE fell below their best so far
        keep these weights (the earliest of equal bests stays)."""
        val = val_mse.detach().double().cpu()
        better = torch.isfinite(val) & (val < self.val)
        if bool(better.any()):
            with torch.no_grad():
                self.params[better.to(self.params.device)] = params.detach()[better.to(params.device)]
            self.val = torch.where(better, val, self.val)
            self.epoch = torch.where(better, torch.tensor(epoch), self.epoch)

    def _stop_after(self, patience: int) -> torch.Tensor:
        """[K] the epoch after which each member stops under --patience, as its best stands: when
        that best is `patience` epochs old and at least half as old as the epochs that found it (a
        member that improved late may improve again)."""
        return self.epoch + torch.clamp((self.epoch + 1) // 2, min=patience)

    def stopped(self, epochs_done: int, patience: int) -> torch.Tensor:
        """[K] bool: the members that have stopped after `epochs_done` epochs (none with patience 0)."""
        return (epochs_done >= self._stop_after(patience)) & (patience > 0)

    def stop_epochs(self, epochs_run: int, patience: int) -> list[int | None]:
        """The epoch after which each member stopped (None: it trained to the last epoch)."""
        return [stop if patience and stop <= epochs_run else None for stop in self._stop_after(patience).tolist()]

    def apply_to(self, params: torch.Tensor) -> None:
        """Every member with a best epoch takes its best weights into params [K, P] (in place)."""
        chosen = self.epoch > 0
        with torch.no_grad():
            params[chosen.to(params.device)] = self.params[chosen.to(self.params.device)].to(params.device)

    def clone(self) -> Best:
        return Best(self.params.clone(), self.val.clone(), self.epoch.clone())

    def select(self, start: int, stop: int) -> Best:
        return Best(self.params[start:stop].clone(), self.val[start:stop].clone(), self.epoch[start:stop].clone())

    def as_arrays(self) -> dict[str, np.ndarray]:
        """For the pipe from a worker process: NumPy arrays (torch tensors would cross it through shared memory)."""
        return {"params": self.params.detach().cpu().numpy(), "val": self.val.numpy(), "epoch": self.epoch.numpy()}

    @classmethod
    def join(cls, parts: list[dict[str, np.ndarray]], like: torch.Tensor) -> Best:
        """The Best of consecutive groups of members (as_arrays of each), params on like's device."""
        params = torch.from_numpy(np.concatenate([part["params"] for part in parts])).to(like.device)
        return cls(params, *(torch.from_numpy(np.concatenate([part[name] for part in parts])) for name in ("val", "epoch")))
