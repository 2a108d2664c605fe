"""The Typer app: parse options → call the core → render → exit code.

torch, matplotlib and every module that imports them are imported inside the commands, so that
`rungefit --help` and TAB completion stay fast. Errors from the core become one line on stderr:
exit 2 for a bad option value (ValueError, click usage errors), 1 for a runtime failure
(RungefitError), 130 for Ctrl-C.
"""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from rungefit import report
from rungefit.errors import RungefitError


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a known exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args=args, prog_name=prog_name or "rungefit", complete_var=complete_var, standalone_mode=False, **extra)
        except TyperException as error:
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            if message:  # empty when no_args_is_help has already printed the help
                report.error(message)
            code = getattr(error, "exit_code", 2)
        except typer.Abort:
            report.error("aborted")
            code = 1
        except KeyboardInterrupt:
            report.error("interrupted")
            code = 130
        except RungefitError as error:
            report.error(str(error))
            code = 1
        except ValueError as error:
            report.error(str(error))
            code = 2
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from rungefit import __version__

        print(f"rungefit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Fit the Runge function f(x) = 1/(1+25x²) on [-1, 1] with a small network, and study its
    gradient, its learning rate and its fit.

    Example: rungefit train && rungefit eval && rungefit grad --x 0.3
    """


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


class Dtype(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "identity")


def complete_layers(incomplete: str) -> list[str]:
    """Complete the activation name after the last WIDTH: of a --layers spec."""
    head, _, last = incomplete.rpartition(",")
    width, sep, partial = last.partition(":")
    if not sep:
        return []
    prefix = f"{head}," if head else ""
    return [f"{prefix}{width}:{name}" for name in ACTIVATION_NAMES if name.startswith(partial)]


def complete_run_name(ctx: typer.Context, incomplete: str) -> list[str]:
    from rungefit.runs import list_run_names

    runs_dir = Path(ctx.params.get("runs_dir") or "runs")
    return [name for name in list_run_names(runs_dir) if name.startswith(incomplete)]


def parse_seeds(seed: int, seeds: Optional[str]) -> tuple[int, ...]:
    """--seeds N means seeds 0…N-1; --seeds 3,7,11 lists them; otherwise the single --seed."""
    if seeds is None:
        return (seed,)
    text = seeds.strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return tuple(range(count))
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds {seeds!r}: expected a count N ≥ 1 (seeds 0…N-1) or a list like 3,7,11") from None
    if len(set(values)) != len(values) or min(values) < 0:
        raise ValueError(f"--seeds {seeds!r}: seeds must be distinct non-negative integers")
    return values


def parse_lr(text: str) -> Optional[float]:
    """A positive finite float, or None for 'auto'."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--lr {text!r}: expected a positive number such as 3e-2, or 'auto'") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--lr {text!r}: the learning rate must be a positive finite number")
    return value


RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Directory holding the run directories.", show_default=True)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout instead of tables.")]


@app.command()
def train(
    layers: Annotated[str, typer.Option(help="Hidden layers as WIDTH:ACTIVATION items; the output layer is linear.", autocompletion=complete_layers)] = "20:tanh,10:sigmoid,20:tanh,10:sigmoid",
    points: Annotated[int, typer.Option(help="Training points drawn uniformly from [-1, 1], validation included. 1000 rather than a few hundred: with 39 per batch that is 18 Adam steps per epoch, and the fit is limited by data, not by the network, below ~500 points.")] = 1000,
    val_fraction: Annotated[float, typer.Option(help="Share of the points held out for validation, in (0, 1).")] = 0.3,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size; the last batch of an epoch may be smaller.")] = 39,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = 300,
    lr: Annotated[str, typer.Option(help="Peak Adam learning rate.")] = "3e-2",
    schedule: Annotated[Schedule, typer.Option(help="Learning-rate schedule over the optimizer steps.")] = Schedule.cosine,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the training points and the shuffling.", min=0)] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Train one member per seed in one stacked run: a count N (seeds 0…N-1) or a list 3,7,11. Overrides --seed.")] = None,
    dtype: Annotated[Dtype, typer.Option(help="Floating-point precision of the model and data.")] = Dtype.float32,
    device: Annotated[Device, typer.Option(help="Where to train: auto picks cuda when a GPU is present.")] = Device.auto,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Run directory name (default: a timestamp).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; print only the final table.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Train the network on the Runge function and save the run (model, history, plots).

    The defaults reproduce the reference experiment's setup (1 → 20 tanh → 10 sigmoid → 20 tanh →
    10 sigmoid → 1, Adam, MSE, mini-batches of 39, 300 epochs, 30 % validation, 100 test points).

    Example: rungefit train --seed 1 --name first
    """
    from rungefit import plots, runs
    from rungefit import train as core

    lr_value = parse_lr(lr)
    if lr_value is None:
        raise ValueError("--lr auto is not available yet; give a number such as 3e-2")
    config = core.TrainConfig(
        layers=layers, points=points, val_fraction=val_fraction, batch_size=batch_size, epochs=epochs,
        lr=lr_value, schedule=schedule.value, seeds=parse_seeds(seed, seeds), dtype=dtype.value,
        device=core.resolve_device(device.value),
    )
    config.validate()
    runs.prepare_runs_dir(runs_dir, name)
    progress, on_epoch = report.training_progress(config.epochs, quiet or json_output)
    try:
        with progress:
            result = core.fit(config, on_epoch=on_epoch)
    except core.DivergedError as diverged:
        path = runs.save_new_run(runs_dir, name, _run_files(diverged.result))
        raise RungefitError(f"{diverged} (last finite state saved in {path})") from None
    path = runs.save_new_run(runs_dir, name, _run_files(result))
    summary = {**result.summary(), "run": str(path), "schedule": config.schedule}
    if json_output:
        report.print_json({**summary, "config": runs.json_ready(config)})
    else:
        report.render_train(summary, str(path))


def _run_files(result) -> dict[str, bytes]:
    from rungefit import plots, runs
    from rungefit.evaluate import fit_curves

    x, target, predictions = fit_curves(result.model)
    pictures = {
        "fit.png": plots.fit_png(x, target, predictions, title=f"{result.config.layers}"),
        "loss.png": plots.loss_png(result.history.train_mse, result.history.val_mse),
    }
    return runs.run_files(result, {}, {"schedule": result.config.schedule}, pictures)


def main() -> None:
    app(prog_name="rungefit")
