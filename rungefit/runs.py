"""The run directory: atomic save, safe load, "latest", and listing names for completion.

A run is written in full under a temporary name in the runs directory and then renamed into
place, so a crash, a Ctrl-C or a second `train` never leaves a half-written run; files rewritten
later (a resumed run) are replaced one by one with os.replace. This module imports torch only
inside the functions that need it, so listing runs for TAB completion stays fast.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rungefit.errors import RungefitError, UsageError

CHECKPOINT_FORMAT = 1
LATEST = "latest"
LR_FIND_DIR = "lr-find"  # lr-find's outputs live in this subdirectory of the runs directory
RESERVED_NAMES = (LATEST, LR_FIND_DIR)
MODEL_FILE = "model.pt"
DEFAULT_TARGET = "runge"
DEFAULT_DOMAIN = (-1.0, 1.0)
MAX_TARGET_CHARS = 1000


class RunError(RungefitError):
    """A run directory problem the user can fix; the message says how."""


@dataclass
class LoadedRun:
    """A saved run: its directory, settings, every member's network, its raw checkpoint and summary."""

    path: Path
    config: Any  # TrainConfig
    model: Any  # StackedMLP
    checkpoint: dict
    summary: dict

    @property
    def history(self) -> dict:
        """train_mse, val_mse and lr of every epoch and member, float64 NumPy arrays [epochs, K]."""
        import torch

        curves = self.checkpoint.get("history")
        if not isinstance(curves, dict) or not all(isinstance(curve, torch.Tensor) and curve.dim() == 2 for curve in curves.values()):
            raise RunError(f"{self.path / MODEL_FILE} holds no readable history; retrain with `rungefit train`")
        return {name: curve.double().numpy() for name, curve in curves.items()}

    def member(self, member: int | None = None, option: str = "member") -> int:
        """`member` checked against the run, or, for None, the member with the best validation MSE.

        `option` names the value in the error message (the CLI's "--member")."""
        from rungefit.evaluate import best_member

        if member is None:
            return best_member(self.summary)
        members = self.model.members
        if not 0 <= member < members:
            raise UsageError(f"{option} {member}: run {self.path.name!r} has {members} member(s), numbered 0…{members - 1}")
        return member

    def network(self, member: int | None = None):
        """The member (default: the best by validation MSE) as a torch.nn.Sequential in the run's
        dtype, on the CPU, in eval mode and without gradients for its parameters."""
        from rungefit.model import to_sequential

        return to_sequential(self.model, self.member(member))


def list_run_names(runs_dir: Path) -> list[str]:
    """Names of the complete runs in runs_dir, newest first (no torch import)."""
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MODEL_FILE).is_file()]
    return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def check_name(name: str) -> None:
    """A run name is one path component of safe characters."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not name or name.startswith(".") or name in RESERVED_NAMES or not set(name) <= allowed:
        raise RunError(
            f"--name {name!r} is not a valid run name; use letters, digits, '.', '_' and '-' "
            f"(not starting with '.', and not {' or '.join(repr(n) for n in RESERVED_NAMES)})"
        )


def prepare_runs_dir(runs_dir: Path, name: str | None) -> None:
    """Fail before any training if the runs directory cannot be written or the name is taken."""
    ensure_writable_dir(runs_dir, "--runs-dir")
    if name is not None:
        check_name(name)
        if (runs_dir / name).exists():
            raise RunError(f"run {name!r} already exists in {runs_dir}; choose another --name or delete it")


def ensure_writable_dir(path: Path, option: str) -> None:
    """Create path if needed; RunError naming the option if it cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"{option} {path}: cannot create it ({error.strerror}); choose another directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunError(f"{option} {path} is not writable; choose another directory")


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a temporary file in the same directory and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run is as shareable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_bytes(result, extra: dict | None = None) -> bytes:
    """model.pt: format, layer spec, members, dtype, the tensors, and what --resume needs: the
    optimizer state, the epochs run and the history (as float64 [epochs, K] tensors: exact for
    float32 and float64 runs alike, and stored as raw bytes rather than one pickled float each)."""
    import torch

    curves = {name: torch.tensor(values, dtype=torch.float64).reshape(len(values), result.model.members) for name, values in asdict(result.history).items()}
    state = {
        "format": CHECKPOINT_FORMAT,
        "layers": result.config.layers,
        "members": result.model.members,
        "dtype": result.config.dtype,
        "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
        "optimizer": {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in result.optimizer.state_dict().items()},
        "epochs_run": result.epochs_run,
        "history": curves,
        "status": result.status,
        **(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def history_csv(history, seeds) -> bytes:
    """One row per epoch per member."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "member", "seed", "train_mse", "val_mse", "lr"])
    for epoch, (train, val, lr) in enumerate(zip(history.train_mse, history.val_mse, history.lr), start=1):
        for member, seed in enumerate(seeds):
            writer.writerow([epoch, member, seed, repr(train[member]), repr(val[member]), repr(lr[member])])
    return out.getvalue().encode()


def json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, allow_nan=True) + "\n").encode()


def run_files(result, config_extra: dict, summary_extra: dict, pictures: dict[str, bytes]) -> dict[str, bytes]:
    """Everything a run directory holds, as bytes keyed by file name."""
    import torch

    from rungefit import __version__
    from rungefit.datafile import DATA_FILE
    from rungefit.target import target_of

    config = {**asdict(result.config), **config_extra, "rungefit_version": __version__, "torch_version": torch.__version__}
    return {
        "config.json": json_bytes(config),
        MODEL_FILE: checkpoint_bytes(result),
        "history.csv": history_csv(result.history, result.config.seeds),
        "summary.json": json_bytes({**result.summary(), **summary_extra}),
        # A data run keeps its points, so that it survives the file moving.
        **({DATA_FILE: target_of(result.config).points.raw} if result.config.data else {}),
        **pictures,
    }


def save_new_run(runs_dir: Path, name: str | None, files: dict[str, bytes]) -> Path:
    """Write a complete run under a temporary name, then move it into place and mark it latest.

    With no name, a timestamp is used, suffixed -2, -3, … when another run got there first:
    os.mkdir is the arbiter, so two processes never share a directory.
    """
    staging = Path(tempfile.mkdtemp(dir=runs_dir, prefix=".staging-"))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700, and the directory keeps its mode
    final = None
    try:
        write_files(staging, files)
        final = _reserve(runs_dir, name)
        os.replace(staging, final)
    except BaseException:
        _discard(staging, final)
        raise
    mark_latest(runs_dir, final.name)
    return final


def _discard(staging: Path, reserved: Path | None) -> None:
    """Remove a failed save's staging directory and the still empty directory reserved for it."""
    for leftover in staging.glob("*") if staging.exists() else []:
        leftover.unlink(missing_ok=True)
    if staging.exists():
        staging.rmdir()
    if reserved is not None and reserved.is_dir() and not any(reserved.iterdir()):
        reserved.rmdir()


def _reserve(runs_dir: Path, name: str | None) -> Path:
    base = name or default_run_name()
    for attempt in range(1, 1000):
        candidate = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            if name is not None:
                raise RunError(f"run {name!r} already exists in {runs_dir}; choose another --name") from None
    raise RunError(f"could not find a free run name starting with {base!r} in {runs_dir}")


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write every file into an existing directory, each atomically."""
    for file_name, data in files.items():
        atomic_write(directory / file_name, data)


def update_run(run_dir: Path, files: dict[str, bytes]) -> None:
    """Replace files of an existing run one by one, each atomically.

    model.pt goes last: it is what --resume reads, so a crash part-way leaves the old checkpoint
    and its status, and resuming again redoes the same deterministic work.
    """
    for file_name in sorted(files, key=lambda file_name: file_name == MODEL_FILE):
        atomic_write(run_dir / file_name, files[file_name])
    mark_latest(run_dir.parent, run_dir.name)


def mark_latest(runs_dir: Path, name: str) -> None:
    atomic_write(runs_dir / LATEST, (name + "\n").encode())


def resolve_run(runs_dir: Path, name: str | None) -> Path:
    """The directory of run `name`, or of the latest run; RunError saying how to make one."""
    if name is None:
        latest = runs_dir / LATEST
        if not latest.is_file():
            raise RunError(f"no runs in --runs-dir {runs_dir} yet; create one with `rungefit train`")
        name = latest.read_text().strip()
    path = runs_dir / name
    if not path.is_dir():
        known = ", ".join(list_run_names(runs_dir)[:5]) or "none"
        raise RunError(f"run {name!r} not found in {runs_dir} (runs: {known}); create one with `rungefit train`")
    if not (path / MODEL_FILE).is_file():
        raise RunError(f"{path} has no {MODEL_FILE}; it is not a rungefit run. Create one with `rungefit train`")
    return path


def load_checkpoint(path: Path) -> dict:
    """Read model.pt as data only (weights_only=True); RunError for anything unreadable or foreign."""
    import pickle
    import warnings
    import zipfile

    import torch

    file = path / MODEL_FILE
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before refusing it.
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"{file} is not a readable rungefit checkpoint ({first[:120]}); retrain with `rungefit train`") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise RunError(f"{file} is not a rungefit checkpoint; retrain with `rungefit train`")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise RunError(
            f"{file} has checkpoint format {checkpoint['format']}, this rungefit reads format "
            f"{CHECKPOINT_FORMAT}; upgrade rungefit"
        )
    return checkpoint


def load_run(runs_dir: Path, name: str | None) -> LoadedRun:
    """The run's config, its model rebuilt from model.pt, and its summary."""
    from rungefit.config import TrainConfig, parse_layers
    from rungefit.datafile import DATA_FILE, read_points
    from rungefit.model import StackedMLP
    from rungefit.stack import DTYPES
    from rungefit.target import target_of

    path = resolve_run(runs_dir, name)
    checkpoint = load_checkpoint(path)
    try:
        raw = json.loads((path / "config.json").read_text())
        fields = TrainConfig.__dataclass_fields__
        config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})
        # The target is parsed as if typed (a UsageError, a ValueError, for anything hostile), and a
        # data run finds its points in its own copy of them.
        if config.data:
            read_points(path / DATA_FILE, expected_sha256=config.data_sha256)
        target_of(config)
        model = StackedMLP(parse_layers(checkpoint["layers"]), int(checkpoint["members"]), dtype=DTYPES[checkpoint["dtype"]])
        model.load_state_dict(checkpoint["state_dict"])
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path} is damaged or incomplete ({error}); retrain with `rungefit train`") from None
    return LoadedRun(path=path, config=config, model=model, checkpoint=checkpoint, summary=summary)


def run_target(run_dir: Path) -> tuple[str, tuple[float, float]]:
    """The run's target and domain from its config.json ("runge" and [-1, 1] when absent).

    The one place that reads them, so that runs which record other targets need a change here only.
    """
    try:
        raw = json.loads((run_dir / "config.json").read_text())
        target = raw.get("target", DEFAULT_TARGET)
        lo, hi = (float(value) for value in raw.get("domain", DEFAULT_DOMAIN))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise RunError(f"{run_dir / 'config.json'} is damaged ({error}); retrain with `rungefit train`") from None
    if not isinstance(target, str) or len(target) > MAX_TARGET_CHARS or not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RunError(f"{run_dir / 'config.json'} has an invalid target or domain; retrain with `rungefit train`")
    return target, (lo, hi)


def resume_state(loaded: LoadedRun):
    """The TrainState an interrupted run stopped at; RunError for a run that cannot be resumed."""
    from rungefit.train import History, TrainState

    checkpoint, name = loaded.checkpoint, loaded.path.name
    status = checkpoint.get("status")
    if status == "complete":
        raise RunError(f"run {name!r} is complete ({checkpoint.get('epochs_run')} epochs): there is nothing to resume; start a new run with `rungefit train`")
    if status == "diverged":
        raise RunError(
            f"run {name!r} diverged, and resuming it would diverge again; train a new run with a lower --lr "
            "(`rungefit lr-find` suggests one)"
        )
    if status != "interrupted":
        raise RunError(f"run {name!r} has status {status!r}; only an interrupted run can be resumed")
    try:
        history = History(**{key: curve.tolist() for key, curve in checkpoint["history"].items()})
        state = TrainState(
            model_state=checkpoint["state_dict"],
            optimizer_state=checkpoint["optimizer"],
            epochs_run=int(checkpoint["epochs_run"]),
            history=history,
            wall_time_s=float(loaded.summary.get("wall_time_s", 0.0)),
        )
        state.check(loaded.config)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise RunError(f"{loaded.path} cannot be resumed: its checkpoint is damaged or incomplete ({error}); retrain with `rungefit train`") from None
    return state


# A summary.json larger than this is not read when listing runs for completion: it stays quick.
MAX_LISTED_SUMMARY_BYTES = 16 << 20


def list_interrupted_runs(runs_dir: Path) -> list[str]:
    """Names of the runs in runs_dir that `train --resume` can continue, newest first: those whose
    summary.json says "interrupted" (read as untrusted JSON, no torch import)."""
    names = []
    for name in list_run_names(runs_dir):
        summary = runs_dir / name / "summary.json"
        try:
            if summary.stat().st_size > MAX_LISTED_SUMMARY_BYTES:
                continue
            document = json.loads(summary.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and document.get("status") == "interrupted":
            names.append(name)
    return names
