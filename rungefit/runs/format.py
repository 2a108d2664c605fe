"""What each file of a run holds: the bytes a save writes (run_files), the schema checks that
what a load reads back must pass (config.json, model.pt, summary.json), and the upgrade chain that
brings a file of an older format up to today's, side by side so that a change of format is made,
written, checked and upgraded in one place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rungefit._version import __version__
from rungefit.config import (
    DATA_FILE,
    MAX_LAYERS_CHARS,
    MAX_SEED,
    MAX_STEPS,
    TRAIN_RULES,
    TrainConfig,
    layer_shapes,
    parameter_count,
    parse_layers,
    parse_number,
)
from rungefit.errors import RunError, UsageError
from rungefit.files import json_bytes, read_bounded
from rungefit.runs import schema
from rungefit.runs.layout import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, RETRAIN, SUMMARY_FILE, damaged
from rungefit.runs.read import DAMAGED_ADVICE, FILE_LIMITS
from rungefit.runs.schema import array, equal_to, figure, integer, json_value, number, optional, record, tensor, text

STATUSES = ("complete", "interrupted", "diverged")

# ---------------------------------------------------------------- versions

# The format each file is written in, in its "format" field. A file without one is format 1: the
# first, from before config.json and summary.json carried a version (model.pt always did). An
# older file is brought up to date as it is read by UPGRADES[file][v], one function per step from
# format v to v + 1 (as llm's MIGRATIONS), given the document and the run directory. A new format
# raises its number here, adds one step, and commits a fixture run of the old format under
# tests/fixtures/, which every later rungefit must load, evaluate and resume.
FORMAT_KEY = "format"
VERSIONS = {CONFIG_FILE: 3, MODEL_FILE: 2, SUMMARY_FILE: 1}


def _config_1_to_2(document: dict, run_dir: Path) -> dict:
    """Format 2 adds --scale and --keep; a run of format 1 trained in the units it was given and
    kept its last epoch's weights."""
    return {**document, "scale": "none", "keep": "last"}


def _config_2_to_3(document: dict, run_dir: Path) -> dict:
    """Format 3 adds --patience; a run of format 2 trained every epoch of every member."""
    return {**document, "patience": 0}


def _checkpoint_1_to_2(document: dict, run_dir: Path) -> dict:
    """Format 2 keeps the maps into the network's standard coordinates (format 1 had none), the
    last epoch's weights for a resume apart from the run's network (in format 1 they were one),
    and each member's best-validation weights (format 1 kept none)."""
    from rungefit.targets import Maps  # NumPy: read with a checkpoint, never on the way of TAB completion

    return {**document, "maps": Maps().as_dict(), "resume_state_dict": document.get("state_dict"), "best": None}


UPGRADES: dict[str, dict[int, Callable[[dict, Path], dict]]] = {
    CONFIG_FILE: {1: _config_1_to_2, 2: _config_2_to_3},
    MODEL_FILE: {1: _checkpoint_1_to_2},
    SUMMARY_FILE: {},
}


def upgraded(document: Any, file: Path) -> Any:
    """The document of `file` (a run's config.json, model.pt or summary.json) in today's format:
    older formats upgraded step by step; RunError for a format newer than this rungefit reads, or
    one that is not a format number. Anything but an object is left to the schema check."""
    if not isinstance(document, dict):
        return document
    version, current = document.get(FORMAT_KEY, 1), VERSIONS[file.name]
    if not schema.exact_int(version) or version < 1:
        raise damaged(file, f"its format must be a whole number from 1, got {schema.shown(version)}")
    if version > current:
        raise RunError(f"{file} has format {version}, and this rungefit reads formats up to {current}; upgrade rungefit to read it")
    for step in range(version, current):
        document = UPGRADES[file.name][step](document, file.parent)
    return {**document, FORMAT_KEY: current}


# ---------------------------------------------------------------- writing


def checkpoint_bytes(result) -> bytes:
    """model.pt: format, layer spec, members, dtype, the tensors, and what --resume needs: the
    optimizer state, the epochs run and the history (as float64 [epochs, K] tensors: exact for
    float32 and float64 runs alike, and stored as raw bytes rather than one pickled float each)."""
    import torch

    curves = {name: torch.tensor(values, dtype=torch.float64).reshape(len(values), result.model.members) for name, values in asdict(result.history).items()}
    state = {
        FORMAT_KEY: VERSIONS[MODEL_FILE],
        "layers": result.config.layers,
        "members": result.model.members,
        "dtype": result.config.dtype,
        "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
        "optimizer": {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in result.optimizer.state_dict().items()},
        "epochs_run": result.epochs_run,
        "history": curves,
        "status": result.status,
        "maps": result.target.maps.as_dict(),
        "resume_state_dict": {k: v.cpu() for k, v in (result.last_state or result.model.state_dict()).items()},
        "best": None if result.best is None else {"params": result.best.params.cpu(), "val_mse": result.best.val, "epoch": result.best.epoch},
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


def history_from_csv(path: Path, members: int) -> dict:
    """The curves of history.csv as model.pt holds them, float64 tensors [epochs, members]; a
    damaged-run RunError when the file is missing or is not one row per epoch and member."""
    import torch


    names = ("train_mse", "val_mse", "lr")
    try:
        rows = list(csv.DictReader(io.StringIO(read_bounded(path, FILE_LIMITS[HISTORY_FILE], DAMAGED_ADVICE).decode("utf-8"))))
        epochs = len(rows) // members
        if len(rows) != epochs * members or any(
            parse_number(row["epoch"], whole=True) != 1 + i // members or parse_number(row["member"], whole=True) != i % members for i, row in enumerate(rows)
        ):
            raise ValueError("not one row per epoch and member, in order")
        return {name: torch.tensor([parse_number(row[name]) for row in rows], dtype=torch.float64).reshape(epochs, members) for name in names}
    except FileNotFoundError:
        raise damaged(path.parent / MODEL_FILE, f"it holds no history, and {path.name} is missing") from None
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise damaged(path, f"not the history rungefit wrote ({error})") from None


def run_files(result, summary_extra: dict, pictures: dict[str, bytes]) -> dict[str, bytes]:
    """Everything a run directory holds, as bytes keyed by file name."""
    import torch


    config = {FORMAT_KEY: VERSIONS[CONFIG_FILE], **asdict(result.config), "rungefit_version": __version__, "torch_version": torch.__version__}
    return {
        CONFIG_FILE: json_bytes(config),
        MODEL_FILE: checkpoint_bytes(result),
        HISTORY_FILE: history_csv(result.history, result.config.seeds),
        SUMMARY_FILE: json_bytes({FORMAT_KEY: VERSIONS[SUMMARY_FILE], **result.summary(), **summary_extra}),
        # A data run keeps its points, so that it survives the file moving.
        **({DATA_FILE: result.target.points.raw} if result.config.data else {}),
        **pictures,
    }


# ---------------------------------------------------------------- checking


def _validated(value: Any, check: schema.Check, file: Path, where: str = "") -> Any:
    try:
        return check(value, where)
    except schema.SchemaError as error:
        raise damaged(file, str(error)) from None


def check_config(document: Any, file: Path):
    """The TrainConfig that config.json holds, and its target. Every field by TrainConfig.validate,
    the rules the Python API is held to (config.TRAIN_RULES), and the target by targets.resolve (a
    formula parsed by the same whitelist as one typed, a data run's points from its own copy).
    Missing fields take their defaults (older runs lack newer ones); other keys are ignored."""
    from rungefit.targets import read_points, resolve  # NumPy: runs/ is listed for TAB completion without it

    checked = _validated(upgraded(document, file), record({}), file)
    config = TrainConfig(**{key: value for key, value in checked.items() if key in TRAIN_RULES})
    try:
        config.validate()
        # A data run's points are its own copy of them, whatever became of the file.
        points = read_points(file.parent / DATA_FILE, expected_sha256=config.data_sha256) if config.data else None
        target = resolve(config, points)
    except UsageError as error:
        raise damaged(file, str(error)) from None
    return config, target


def check_checkpoint(checkpoint: Any, config, file: Path) -> dict:
    """model.pt's contents against config.json: format, architecture, finite weights, shapes."""
    import torch

    # torch: runs/ is listed for TAB completion without it
    from rungefit.net.model import DTYPES
    from rungefit.training.train import History

    if not isinstance(checkpoint, dict) or FORMAT_KEY not in checkpoint:
        raise RunError(f"{file} is not a rungefit checkpoint; {RETRAIN}")
    checkpoint = upgraded(checkpoint, file)
    if "history" not in checkpoint:  # format 1 as written before it held the curves: history.csv has them
        checkpoint = {**checkpoint, "history": history_from_csv(file.parent / HISTORY_FILE, len(config.seeds))}
    layers, members, dtype = config.hidden_layers, len(config.seeds), DTYPES[config.dtype]

    def same_layers(value: Any, where: str) -> str:
        try:
            same = parse_layers(text(max_length=MAX_LAYERS_CHARS)(value, where)) == layers
        except UsageError as error:
            raise schema.SchemaError(where, str(error)) from None
        if not same:
            raise schema.SchemaError(where, f"must be config.json's layers {config.layers!r}, got {schema.shown(value)}")
        return value

    weights = {}
    for index, (fan_in, fan_out) in enumerate(layer_shapes(layers)):
        weights[f"layers.{index}.weight"] = tensor(dtype, (members, fan_out, fan_in), finite=True)
        weights[f"layers.{index}.bias"] = tensor(dtype, (members, fan_out), finite=True)
    moments = tensor(dtype, (members, parameter_count(layers)), finite=True)
    checked = _validated(checkpoint, record({
        FORMAT_KEY: equal_to(VERSIONS[MODEL_FILE], "the format this rungefit reads"),
        "layers": same_layers,
        "members": equal_to(members, "config.json's number of seeds"),
        "dtype": equal_to(config.dtype, "config.json's dtype"),
        "state_dict": record(weights, exact=True),
        "resume_state_dict": record(weights, exact=True),
        "best": schema.optional_or_none(record({
            "params": moments,
            "val_mse": tensor(torch.float64, (members,), finite=False),
            "epoch": tensor(torch.int64, (members,), finite=True),
        }, exact=True)),
        "optimizer": record({"step": integer(0, MAX_STEPS), "exp_avg": moments, "exp_avg_sq": moments}),
        "epochs_run": integer(0, config.epochs),
        "history": record({}),
        "status": text(choices=STATUSES),
        "maps": record({
            "x_centre": number(), "x_half": number(positive=True), "y_mean": number(), "y_scale": number(positive=True),
        }, exact=True),
    }), file)
    curve = tensor(torch.float64, (checked["epochs_run"], members), finite=False)
    checked["history"] = _validated(checked["history"], record({field.name: curve for field in fields(History)}), file, "history")
    return checked


def check_summary(document: Any, config, checkpoint: dict, run_dir: Path) -> dict:
    """summary.json, which must describe the state model.pt holds."""

    file = run_dir / SUMMARY_FILE
    member = record({
        "seed": integer(0, MAX_SEED),
        "lr": number(positive=True),
        **dict.fromkeys(("train_mse", "val_mse", "test_mse", "test_max_abs_error"), figure()),
    })
    summary = _validated(upgraded(document, file), record({
        "status": text(choices=STATUSES),
        "members": array(member, length=len(config.seeds)),
        "epochs": optional(integer(0)),
        "wall_time_s": optional(number(0)),
        "lr_choice": optional(text(max_length=1000)),
        "lr_auto": optional(json_value(max_depth=8)),
    }), file)
    disagreements = [
        f"{what} {schema.shown(ours)} against {schema.shown(theirs)}"
        for what, ours, theirs in (
            ("status", summary["status"], checkpoint["status"]),
            ("epochs", summary.get("epochs", checkpoint["epochs_run"]), checkpoint["epochs_run"]),
            ("seeds", [m["seed"] for m in summary["members"]], list(config.seeds)),
        )
        if ours != theirs
    ]
    if disagreements:
        raise RunError(f"{run_dir}: summary.json disagrees with model.pt and config.json ({'; '.join(disagreements)}); {DAMAGED_ADVICE}")
    return summary
