"""The Typer app: parse options → call the core → render → exit code.

torch, matplotlib and every module that imports them are imported inside the commands, so that
`rungefit --help` and TAB completion stay fast. Errors from the core become one line on stderr:
exit 2 for a bad option value (UsageError, click usage errors), 1 for a runtime failure
(RungefitError, running out of memory), 130 for Ctrl-C, 3 for anything else: a bug, reported as an
internal error in one line (the traceback with RUNGEFIT_TRACEBACK=1).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from rungefit.config import (
    ACTIVATION_NAMES,
    FORMULA_FUNCTIONS,
    MAX_EPOCHS,
    MAX_GRID,
    MAX_MEMBERS,
    MAX_SEED,
    MAX_WORKERS,
    MIN_MEMBERS_PER_WORKER,
    PRESETS,
    RangeTestConfig,
    TrainConfig,
    VerifyConfig,
)
from rungefit.errors import RungefitError, UsageError
from rungefit.phases import Phases, process_started


def _lazy_import(name: str):
    """The module, loaded on first attribute access (importlib's LazyLoader recipe).

    report imports Rich's console, progress and table machinery, which TAB completion
    never needs.
    """
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = _lazy_import("rungefit.report")


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a known exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        extra.setdefault("obj", {"started": time.perf_counter()})  # main() passes the process's start
        try:
            with _sigterm_raises():
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
        except Terminated:
            report.error("terminated (SIGTERM)")
            code = SIGTERM_EXIT
        except RungefitError as error:
            report.error(str(error))
            code = 1
        except UsageError as error:
            report.error(str(error))
            code = 2
        except (MemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                code = _internal_error(error)
            else:
                report.error("out of memory; use fewer --points or --seeds, fewer --grid or --points to evaluate, or a smaller network")
                code = 1
        except Exception as error:  # noqa: BLE001 — a bug: one line, never disguised as bad input
            code = _internal_error(error)
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


class Terminated(BaseException):
    """SIGTERM arrived outside training, where it ends the command as Ctrl-C does (a BaseException,
    so that no `except Exception` takes it for an error)."""


SIGINT_EXIT, SIGTERM_EXIT = 128 + signal.SIGINT, 128 + signal.SIGTERM


@contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated, so that it unwinds like Ctrl-C: worker processes are closed,
    a reserved run name is given up, and the exit code is 143. Only the main thread may set
    signal handlers; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Set to 1 to see the traceback of an internal error.
TRACEBACK_VAR = "RUNGEFIT_TRACEBACK"
INTERNAL_ERROR_EXIT = 3


def _internal_error(error: BaseException) -> int:
    """A bug: one line saying so (the traceback with RUNGEFIT_TRACEBACK=1), exit 3."""
    if os.environ.get(TRACEBACK_VAR) == "1":
        traceback.print_exception(error)
    report.error(
        f"internal error ({type(error).__name__}: {error}); this is a bug in rungefit. "
        f"Run again with {TRACEBACK_VAR}=1 to see the traceback, and report it"
    )
    return INTERNAL_ERROR_EXIT


def _out_of_memory(error: BaseException) -> bool:
    """NumPy raises MemoryError; torch raises a RuntimeError (CPU) or its OutOfMemoryError subclass (CUDA)."""
    text = str(error)
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
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
    """Fit a 1-D function with a small network (the Runge function f(x) = 1/(1+25x²) on [-1, 1]
    unless --target or --data says otherwise), and study its gradient, its learning rate and its fit.

    Example: rungefit train && rungefit eval && rungefit grad --x 0.3
    """


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


class Polish(str, Enum):
    none = "none"
    lm = "lm"


class Dtype(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEFAULTS, SWEEP, VERIFY = TrainConfig(), RangeTestConfig(), VerifyConfig()


def complete_layers(incomplete: str) -> list[str]:
    """Complete the activation name after the last WIDTH: of a --layers spec (after a bare WIDTH,
    every name)."""
    head, _, last = incomplete.rpartition(",")
    width, sep, partial = last.partition(":")
    if not (sep or width.isdigit()):
        return []
    prefix = f"{head}," if head else ""
    return [f"{prefix}{width}:{name}" for name in ACTIVATION_NAMES if name.startswith(partial)]


def complete_run_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """The runs in --runs-dir, and `latest` while it names one of them."""
    from rungefit.runs import LATEST, latest_run, list_run_names

    runs_dir = Path(ctx.params.get("runs_dir") or "runs")
    names = list_run_names(runs_dir) + ([LATEST] if latest_run(runs_dir) else [])
    return [name for name in names if name.startswith(incomplete)]


def complete_interrupted_run(ctx: typer.Context, incomplete: str) -> list[str]:
    """--resume offers the runs that can be resumed: the interrupted ones."""
    from rungefit.runs import list_interrupted_runs

    runs_dir = Path(ctx.params.get("runs_dir") or "runs")
    return [name for name in list_interrupted_runs(runs_dir) if name.startswith(incomplete)]


def parse_seeds(seed: int, seeds: Optional[str]) -> tuple[int, ...]:
    """--seeds N means seeds 0…N-1; --seeds 3,7,11 lists them; otherwise the single --seed."""
    if seeds is None:
        return (seed,)
    text = seeds.strip()
    try:
        if "," not in text:
            count = ascii_int(text)
            if not 1 <= count <= MAX_MEMBERS:
                raise UsageError
            return tuple(range(count))
        values = tuple(ascii_int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds {seeds!r}: expected a count N in 1…{MAX_MEMBERS} (seeds 0…N-1) or a list like 3,7,11") from None
    if len(set(values)) != len(values) or min(values) < 0 or max(values) > MAX_SEED:
        raise UsageError(f"--seeds {seeds!r}: seeds must be distinct whole numbers in 0…{MAX_SEED}")
    return values


def ascii_int(text: str) -> int:
    """A whole number in ASCII digits; ValueError for anything else, such as '１', '٣' or '1_0',
    which int() would take."""
    digits = text.strip()
    if not (digits.isascii() and digits.lstrip("+-").isdigit()):
        raise ValueError(f"not a whole number: {text!r}")
    return int(digits)


def parse_lr(text: str) -> Optional[float]:
    """A positive finite float, or None for 'auto'."""
    if text.strip().lower() == "auto":
        return None
    try:
        if not text.isascii() or "_" in text:  # float() takes '１' and '1_0'
            raise ValueError
        value = float(text)
    except ValueError:
        raise UsageError(f"--lr {text!r}: expected a positive number such as 3e-2, or 'auto'") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--lr {text!r}: the learning rate must be a positive finite number")
    return value


def complete_target(incomplete: str) -> list[str]:
    return [name for name in PRESETS if name.startswith(incomplete)]


TARGET_HELP = (
    "What to fit: a preset, "
    + "; ".join(f"`{name}` ({preset.about})" for name, preset in PRESETS.items())
    + " (default: runge). Or a formula in x such as `'exp(-x**2) * cos(5*x)'`: numbers, x, pi, e, `+ - * / **`, "
    + f"parentheses and {', '.join(FORMULA_FUNCTIONS)}."
)
TargetOption = Annotated[Optional[str], typer.Option("--target", help=TARGET_HELP, autocompletion=complete_target)]
DomainOption = Annotated[Optional[str], typer.Option("--domain", help="The interval A,B of the training points, the test grid, the baselines and the plots (default: -1,1; with --data, the data's range).")]
DataOption = Annotated[Optional[str], typer.Option("--data", help="Fit measured points instead of a function: a CSV file of two columns x,y (a header line is allowed). --test-fraction of them are the test set; the rest are split into training and validation as usual. The run keeps a copy.")]
TestFractionOption = Annotated[float, typer.Option(help="With --data: the share of the points held out as the test set, drawn once (seeded) and the same for every member.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Directory holding the run directories.", show_default=True)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout instead of tables.")]


BATCH_HELP = "Mini-batch size; the last batch of an epoch may be smaller. Larger than the training set: every step uses the whole set (full-batch), with a warning."
# Options that may go with --resume: where the run is and how to show it; the rest is the saved run's.
RESUME_ALLOWS = ("resume", "runs_dir", "quiet", "json_output")


@app.command()
def train(
    ctx: typer.Context,
    layers: Annotated[str, typer.Option(help="Hidden layers as WIDTH:ACTIVATION items; the output layer is linear.", autocompletion=complete_layers)] = DEFAULTS.layers,
    points: Annotated[int, typer.Option(help="Training points drawn uniformly from the domain, validation included (with --data: the data's). More points mean more Adam steps per epoch, and the fit is limited by the steps, not by data (docs/accuracy.md).")] = DEFAULTS.points,
    val_fraction: Annotated[float, typer.Option(help="Share of the points held out for validation, in (0, 1).")] = DEFAULTS.val_fraction,
    batch_size: Annotated[int, typer.Option(help=BATCH_HELP)] = DEFAULTS.batch_size,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = DEFAULTS.epochs,
    lr: Annotated[str, typer.Option(help="Peak Adam learning rate, or 'auto': a range test and a short stacked training at a grid of rates choose one (see lr-find).")] = f"{DEFAULTS.lr:g}",
    schedule: Annotated[Schedule, typer.Option(help="Learning-rate schedule over the optimizer steps.")] = Schedule(DEFAULTS.schedule),
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the training points and the shuffling.", min=0, max=MAX_SEED)] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Train one member per seed in one stacked run: a count N (seeds 0…N-1) or a list 3,7,11. Overrides --seed.")] = None,
    dtype: Annotated[Dtype, typer.Option(help="Floating-point precision of the model and data.")] = Dtype(DEFAULTS.dtype),
    device: Annotated[Device, typer.Option(help="Where to train: auto picks cuda when a GPU is present.")] = Device.auto,
    polish: Annotated[Polish, typer.Option(help="After Adam, refine every member on its training set: lm = Levenberg-Marquardt in float64 (what it gains and what it costs: docs/accuracy.md).")] = Polish(DEFAULTS.polish),
    polish_iterations: Annotated[int, typer.Option(help="Levenberg-Marquardt iterations per member with --polish lm.")] = DEFAULTS.polish_iterations,
    workers: Annotated[int, typer.Option(help=f"CPU processes that share the members of a stacked run. 0: one per core, each with at least {MIN_MEMBERS_PER_WORKER} members; 1: all in this process. Linux only (elsewhere always 1). float32 results depend slightly on how the members are split, float64 ones do not.", min=0, max=MAX_WORKERS)] = DEFAULTS.workers,
    target: TargetOption = None,
    domain: DomainOption = None,
    data: DataOption = None,
    test_fraction: TestFractionOption = DEFAULTS.test_fraction,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Run directory name (default: a timestamp).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue the interrupted run NAME in --runs-dir with its saved settings; it ends with exactly the numbers of an uninterrupted run. Only --runs-dir, --quiet and --json may go with it.", autocompletion=complete_interrupted_run)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; print only the final table.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Train the network on the target (the Runge function unless --target or --data says
    otherwise) and save the run (model, history, plots).

    The defaults reproduce the reference experiment's setup (1 → 20 tanh → 10 sigmoid → 20 tanh →
    10 sigmoid → 1, Adam, MSE, mini-batches of 39, 300 epochs, 30 % validation, 100 test points).
    Ctrl-C stops after the current optimizer step (or LM iteration of --polish lm), saves the last
    completed epoch as an "interrupted" run and exits 130; `rungefit train --resume NAME`
    continues it (an interrupted polish runs again from the start).

    Example: rungefit train --seed 1 --name first
    """
    from rungefit import runs
    from rungefit import train as core

    phases = Phases(ctx.obj["started"])
    if resume is not None:
        _refuse_options_beside_resume(ctx, resume)
        _resume_run(runs_dir, resume, quiet, json_output, phases)
        return
    lr_value = parse_lr(lr)
    settings = dict(
        layers=layers, points=points, val_fraction=val_fraction, batch_size=batch_size, epochs=epochs,
        lr=lr_value or core.TrainConfig.lr, schedule=schedule.value, seeds=parse_seeds(seed, seeds), dtype=dtype.value,
        device=core.resolve_device(device.value), polish=polish.value, polish_iterations=polish_iterations, workers=workers,
    )
    config = core.TrainConfig(**{**settings, **target_settings(ctx, target, domain, data, test_fraction)})
    config.validate()
    # A --name is reserved now, so that a clash fails before training; leaving unsaved gives it up.
    with runs.prepare_runs_dir(runs_dir, name) or nullcontext() as reservation:
        warn_if_full_batch(config)
        lr_extra = {}
        if lr_value is None:
            phases.end("start_up")
            config, lr_extra = _auto_lr(config, quiet or json_output)
            phases.end("rate_search")

        def save(result) -> Path:
            return runs.save_new_run(runs_dir, name, _run_files(result, lr_extra, phases), reservation)

        _train_and_report(config, save, lr_extra, quiet, json_output, phases)


def target_settings(ctx: typer.Context, target: Optional[str], domain: Optional[str], data: Optional[str], test_fraction: float) -> dict:
    """The TrainConfig fields of --target, --domain, --data and --test-fraction (with data, the
    points too), checked: the target is parsed and checked for NaN/inf here, before any work."""
    from rungefit.target import settings

    if data is None and _was_given(ctx, "test_fraction"):
        raise UsageError("--test-fraction applies only with --data")
    fields = settings(target, domain, data, test_fraction)
    if data is not None and _was_given(ctx, "points"):
        raise UsageError("--points: with --data the points are the data's; drop --points")
    return fields


def _refuse_options_beside_resume(ctx: typer.Context, name: str) -> None:
    """A resumed run keeps its saved settings: any other option given with --resume is a usage error."""
    given = [param.opts[0] for param in ctx.command.params if param.name not in RESUME_ALLOWS and _was_given(ctx, param.name)]
    if given:
        raise UsageError(
            f"--resume {name} continues the run with its saved settings; drop {', '.join(given)} "
            "(only --runs-dir, --quiet and --json go with --resume)"
        )


def _was_given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set an option (command line or environment) rather than leaving its default.

    The source is compared by name: Typer carries its own copy of click, whose ParameterSource is not
    the one `import click` gives.
    """
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _resume_run(runs_dir: Path, name: str, quiet: bool, json_output: bool, phases: Phases) -> None:
    """Continue an interrupted run in place from its last completed epoch."""
    from dataclasses import replace

    from rungefit import runs
    from rungefit import train as core

    # The run stays locked until it is saved: no other process updates it meanwhile.
    with runs.run_for_update(runs_dir, name) as loaded:
        _note_latest(loaded)
        state = runs.resume_state(loaded)
        config = replace(loaded.config, device=core.resolve_device(loaded.config.device))
        # How --lr auto chose the rate: the resumed part does not choose again, so carry it over.
        carried = {key: loaded.summary[key] for key in ("lr_choice", "lr_auto") if key in loaded.summary}
        if not (quiet or json_output):
            report.note(f"resuming run {loaded.path} at epoch {state.epochs_run + 1} of {config.epochs}")

        def save(result) -> Path:
            runs.update_run(loaded.path, _run_files(result, carried, phases), loaded.owner)
            return loaded.path

        _train_and_report(config, save, carried, quiet, json_output, phases, resume=state)


def _train_and_report(config, save, summary_extra: dict, quiet: bool, json_output: bool, phases: Phases, resume=None) -> None:
    """fit with Ctrl-C and SIGTERM handling, save(result) → the run directory, render; an
    interrupted run exits 130 (Ctrl-C) or 143 (SIGTERM), a complete one whose members all learned
    nothing 1."""
    from rungefit import train as core

    progress, on_epoch, on_polish = report.training_progress(config.epochs, quiet or json_output)
    phases.end("start_up")
    with _ctrl_c_stops_training() as stop_requested:
        try:
            with progress:
                result = core.fit(config, on_epoch=on_epoch, should_stop=stop_requested, resume=resume, on_polish=on_polish)
        except core.DivergedError as diverged:
            path = save(diverged.result)
            raise RungefitError(f"{diverged} (last finite state saved in {path})") from None
        phases.end("training", **({"polish": result.polish_time_s} if config.polish != "none" else {}))
        if result.status == "interrupted" and result.epochs_run == (resume.epochs_run if resume else 0):
            _nothing_new_to_save(resume, config.epochs, stop_requested)
        path = save(result)
        phases.end("saving_and_plots")
    summary = {**result.summary(), "run": str(path), "schedule": config.schedule, **summary_extra, "times_s": phases.as_dict()}
    interrupted = result.status == "interrupted"
    if interrupted:
        summary["resume"] = f"rungefit train --resume {shlex.quote(path.name)} --runs-dir {shlex.quote(str(path.parent))}"
    if json_output:
        report.print_json({**summary, "config": asdict(result.config)})
    else:
        report.render_train(summary, str(path))
    if interrupted:
        if result.epochs_run == config.epochs:
            report.warning(f"{stop_requested.cause} during the polish: all {config.epochs} epochs are saved in {path}, unpolished; `{summary['resume']}` runs the polish")
        else:
            report.warning(f"{stop_requested.cause}: epoch {result.epochs_run} of {config.epochs} is saved in {path}; continue with `{summary['resume']}`")
        raise typer.Exit(stop_requested.exit_code)
    _judge_fit(summary)


def _judge_fit(summary: dict) -> None:
    """Members that learned nothing: a warning naming them; when none learned, the same as the
    error line of a failed run, exit 1 (the run is saved and shown all the same)."""
    from rungefit.evaluate import FIT_NONE, FIT_OK, TRAINED_BELOW

    if summary["fit"] == FIT_OK:
        return
    message = report.nothing_learned(summary, TRAINED_BELOW)
    if summary["fit"] != FIT_NONE:
        report.warning(message)
        return
    report.error(message)
    raise typer.Exit(1)


def _nothing_new_to_save(resume, epochs: int, stop: StopRequest) -> None:
    """The stop came before an epoch (or a resumed polish) completed: say so and exit 130 or 143
    without touching the runs directory."""
    if resume is None:
        report.warning(f"{stop.cause} before the first epoch completed; nothing was saved")
    elif resume.epochs_run == epochs:
        report.warning(f"{stop.cause} during the polish again; the run still resumes at the polish")
    else:
        report.warning(f"{stop.cause} before epoch {resume.epochs_run + 1} completed; the run still resumes from epoch {resume.epochs_run}")
    raise typer.Exit(stop.exit_code)


class StopRequest:
    """Set by Ctrl-C (SIGINT) or SIGTERM while training; fit asks it after every step. The first
    signal decides the exit code (130 or 143) and the word for it."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def set(self, signum: int, frame=None) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def exit_code(self) -> int:
        return SIGTERM_EXIT if self.signal == signal.SIGTERM else SIGINT_EXIT

    @property
    def cause(self) -> str:
        return "terminated (SIGTERM)" if self.signal == signal.SIGTERM else "interrupted"


@contextmanager
def _ctrl_c_stops_training():
    """While training and saving, Ctrl-C (SIGINT) and SIGTERM set a StopRequest instead of raising
    wherever Python happens to be; fit reads it after each optimizer step and stops cleanly.

    Yields the request. Further signals are absorbed until the run is saved, because the save
    takes a moment and aborting it would lose the epochs the first signal meant to keep. The
    previous handlers come back afterwards.
    """
    request = StopRequest()
    previous = {signum: signal.signal(signum, request.set) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def warn_if_full_batch(config) -> None:
    """--batch-size above the training set is allowed: every step then uses the whole set."""
    if config.batch_size > config.n_train:
        report.warning(
            f"--batch-size {config.batch_size} is larger than the {config.n_train} training points; "
            "every step uses the whole training set (full-batch)"
        )


def _run_files(result, summary_extra: dict, phases: Phases) -> dict[str, bytes]:
    from rungefit import plots, runs
    from rungefit.evaluate import fit_curves
    from rungefit.target import target_of

    curves = fit_curves(result.model, target_of(result.config))
    pictures = {
        "fit.png": plots.fit_png(curves.x, curves.target, curves.predictions, title=f"{result.config.layers}", label=curves.label, points=curves.points),
        "loss.png": plots.loss_png(result.history.train_mse, result.history.val_mse, None if result.polish is None else result.polish.curves.numpy()),
    }
    # summary.json cannot hold the time of its own writing: its times end as it is made.
    times = phases.as_dict(ongoing="saving_and_plots")
    return runs.run_files(result, {}, {"schedule": result.config.schedule, **summary_extra, "times_s": times}, pictures)


XValues = Annotated[Optional[list[float]], typer.Option("--x", help="A point to evaluate at; repeat for several. Outside the run's domain is extrapolation (allowed, with a warning).")]
RunName = Annotated[Optional[str], typer.Option("--run", help="Name of the run in --runs-dir (default: the latest run).", autocompletion=complete_run_name)]
MemberOption = Annotated[Optional[int], typer.Option("--member", help="Member of a stacked run (--seeds) to use (default: the best by validation MSE).", min=0)]


def checked_points(values: Optional[list[float]]) -> list[float]:
    """--x values: NaN or ±inf is a usage error."""
    points = list(values or [])
    for value in points:
        if not math.isfinite(value):
            raise UsageError(f"--x {value}: expected a finite number")
    return points


def warn_outside(points: list[float], domain: tuple[float, float]) -> None:
    """--x outside the domain is extrapolation, allowed with a warning."""
    low, high = domain
    outside = [value for value in points if not low <= value <= high]
    if outside:
        report.warning(f"--x {', '.join(f'{v:g}' for v in outside)}: outside {report.interval(domain)}, where the network was trained, so this is extrapolation")


def _load_member(runs_dir: Path, run: Optional[str], member: Optional[int]):
    """The run and the member to study: --member, else the best by validation MSE."""
    from rungefit import runs

    loaded = runs.load_run(runs_dir, run)
    _note_latest(loaded)
    _warn_if_unfinished(loaded)
    members = loaded.model.members
    member = loaded.member(member, "--member")
    source = f"run {loaded.path}, member {member}" + (f" of {members}, best by validation MSE" if members > 1 else "")
    return loaded, member, source


def _note_latest(loaded) -> None:
    """Say which run `latest` stood for, when it is not the one it names."""
    if loaded.note:
        report.note(loaded.note)


def _warn_if_unfinished(loaded) -> None:
    """An interrupted or diverged run is studied as it stands, with a word on what that is."""
    status, epochs = loaded.checkpoint["status"], loaded.checkpoint["epochs_run"]
    name = shlex.quote(loaded.path.name)
    if status == "interrupted":
        report.warning(
            f"run {loaded.path.name!r} was interrupted after epoch {epochs} of {loaded.config.epochs}: these are the figures "
            f"of an unfinished training; `rungefit train --resume {name} --runs-dir {shlex.quote(str(loaded.path.parent))}` continues it"
        )
    elif status == "diverged":
        report.warning(f"run {loaded.path.name!r} diverged in epoch {epochs + 1}: this is its last finite state, from before the divergence")


def _write_figure(path: Path, png: bytes) -> None:
    """Write a figure into the run directory; a failure is a warning, the results stand."""
    from rungefit import runs

    try:
        runs.atomic_write(path, png)
    except OSError as error:
        report.warning(f"cannot write {path} ({runs.describe(error)}); the results above are complete without it")
    else:
        report.note(f"wrote {path}")


@app.command()
def grad(
    x: XValues = None,
    grid: Annotated[Optional[int], typer.Option(help="Also check N equally spaced points of the domain and report the largest discrepancies; grad.png then shows them. With neither --x nor --grid: --grid 201.", min=2, max=MAX_GRID)] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print the chain-rule product for each --x factor by factor: its shape and its value at that x.")] = False,
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    untrained: Annotated[bool, typer.Option("--untrained", help="Study a freshly initialised network (--seed, --layers) instead of a saved run; writes no files.")] = False,
    seed: Annotated[Optional[int], typer.Option(help="With --untrained: the initialisation seed, as in train (default: 0).", min=0, max=MAX_SEED)] = None,
    layers: Annotated[Optional[str], typer.Option(help="With --untrained: hidden layers as WIDTH:ACTIVATION items (default: train's).", autocompletion=complete_layers)] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="With --untrained: the target to compare with, as train's --target (default: runge).", autocompletion=complete_target)] = None,
    domain: Annotated[Optional[str], typer.Option("--domain", help="With --untrained: the interval A,B, as train's --domain.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="With --untrained: a data file, as train's --data (there is no true derivative then).")] = None,
    member: MemberOption = None,
    json_output: JsonFlag = False,
) -> None:
    """The network's derivative `∇a^[L](x)`: the explicit chain-rule product, checked against autograd
    and a central finite difference, beside the true f'(x) (by autograd of the target's formula; for
    the default, f'(x) = −50x/(1+25x²)²). Where f is not differentiable, and for data, there is none.

    The product is σ_L'(Z^[L]) · W^[L] diag(σ_{L-1}'(Z^[L-1])) · … · W^[2] diag(σ_1'(Z^[1])), where
    the input layer's factor diag(σ_1'(Z^[1])) is the identity (a^[1] = x has no activation) and
    σ_L' = 1 (the output is linear). It runs in float64 whatever the run's dtype. Writes grad.png, the
    network's derivative beside f' over the domain, into the run directory.

    Example: rungefit grad --x 0.3 --explain
    """
    from rungefit import grad as core
    from rungefit import plots
    from rungefit.config import DEFAULT_LAYERS, TrainConfig, format_layers
    from rungefit.target import settings, target_of

    points = checked_points(x)
    if explain and not points:
        raise UsageError("--explain needs at least one --x to explain the product at")
    if not points and grid is None:
        grid = 201
    if untrained:
        if run is not None or member is not None:
            raise UsageError("--untrained studies a new network; drop --run and --member")
        model = core.untrained_model(DEFAULT_LAYERS if layers is None else layers, seed or 0)
        goal = target_of(TrainConfig(**settings(target, domain, data)))
        doc = {"source": f"untrained, seed {seed or 0}", "run": None, "member": 0}
    else:
        if seed is not None or layers is not None or target is not None or domain is not None or data is not None:
            raise UsageError("--seed, --layers, --target, --domain and --data apply only with --untrained; a saved run has its own")
        loaded, member, source = _load_member(runs_dir, run, member)
        model = core.as_float64(loaded.model, member)
        goal = target_of(loaded.config)
        doc = {"source": source, "run": str(loaded.path), "member": member}
    warn_outside(points, goal.domain)
    study = core.study_gradient(model, goal, points, grid, explain)
    doc = {**doc, "layers": format_layers(model.layers), "dtype": "float64", "target": goal.name, "domain": list(goal.domain), **study.as_dict()}
    if json_output:
        report.print_json(doc)
    else:
        report.render_grad(doc)
    if not untrained:
        curve = study.curve
        png = plots.grad_png(curve.x, curve.true, curve.explicit, study.at_x.x, title=doc["source"], label=goal.derivative_label)
        _write_figure(loaded.path / "grad.png", png)


@app.command("eval")
def eval_run(
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    points: Annotated[Optional[int], typer.Option(help="Size of the equally spaced test grid on the run's domain (default: the run's, as train scored it). A data run is scored on its held-out test points.", min=2, max=MAX_GRID)] = None,
    x: XValues = None,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also score, for d = 10, 20, 40, the polynomial interpolant at d+1 equally spaced nodes, the Chebyshev interpolant of degree d and the cubic spline through the same d+1 nodes. For a data run: the Chebyshev least-squares fit of degree d of the member's training points, and a smoothing spline.")] = False,
    member: MemberOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Score a saved network on the test grid: MSE, RMSE, max |error| and where it occurs, near the
    ends (the outer tenth of the domain at each end: |x| > 0.8 on [-1, 1]) and in the middle; on
    the default grid the MSE is exactly the test MSE that train reported. A data run is scored on
    its held-out test points. Writes eval.png (f, the network and the errors) into the run directory.

    Example: rungefit eval --baselines --x 0.95
    """
    from rungefit import evaluate as core
    from rungefit import plots
    from rungefit.target import target_of

    values = checked_points(x)
    loaded, member, source = _load_member(runs_dir, run, member)
    goal = target_of(loaded.config)
    if points is not None and not goal.has_function:
        raise UsageError("--points: a data run is scored on its held-out test points; drop --points")
    warn_outside(values, goal.domain)
    train = core.training_points(loaded.config, member) if baselines and not goal.has_function else None
    degrees = core.BASELINE_DEGREES if baselines else ()
    result = core.evaluate(loaded.model, goal, member, points or loaded.config.test_points, values, degrees, train)
    doc = {"source": source, "run": str(loaded.path), **result.as_dict()}
    if json_output:
        report.print_json(doc)
    else:
        report.render_eval(doc)
    curves = result.curves
    png = plots.eval_png(curves.x, curves.target, curves.prediction, curves.errors, title=source, label=curves.label, error_x=curves.error_x, points=curves.points)
    _write_figure(loaded.path / "eval.png", png)


class SweepMode(str, Enum):
    exp = "exp"
    linear = "linear"


@app.command("lr-find")
def lr_find_command(
    ctx: typer.Context,
    layers: Annotated[Optional[str], typer.Option(help="Hidden layers as WIDTH:ACTIVATION items (default: train's).", autocompletion=complete_layers)] = None,
    points: Annotated[Optional[int], typer.Option(help="Training points, validation included (default: train's).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Share of the points held out for validation (default: train's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Mini-batch size: one range-test step per mini-batch (default: train's). Larger than the training set: full-batch, with a warning.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the points and the shuffling, as in train.", min=0, max=MAX_SEED)] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Repeat the range test over several seeds (a count N or a list 3,7,11) and report each rule's median and its spread in decades. Overrides --seed.")] = None,
    dtype: Annotated[Optional[Dtype], typer.Option(help="Floating-point precision (default: train's).")] = None,
    device: Annotated[Device, typer.Option(help="Where to run: auto picks cuda when a GPU is present.")] = Device.auto,
    start_lr: Annotated[float, typer.Option(help="Rate of the first step of the sweep.")] = SWEEP.start_lr,
    end_lr: Annotated[float, typer.Option(help="Rate of the last step of the sweep.")] = SWEEP.end_lr,
    iters: Annotated[int, typer.Option(help="Steps of the sweep, one mini-batch each.")] = SWEEP.iters,
    mode: Annotated[SweepMode, typer.Option(help="Spacing of the rates: exp (even in log lr) or linear.")] = SweepMode(SWEEP.mode),
    smooth: Annotated[float, typer.Option(help="Decay of the bias-corrected moving average of the loss, in [0, 1).")] = SWEEP.smooth,
    diverge: Annotated[float, typer.Option(help="Stop a seed once its smoothed loss exceeds this multiple of its best (or any loss is NaN/inf).")] = SWEEP.diverge,
    val: Annotated[bool, typer.Option("--val", help="Also record the full validation loss after every step.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Train real models at a grid of rates plus each rule's suggestion, all as one stacked fit, and report which rate is best and how far each suggestion lands from it.")] = False,
    verify_rates: Annotated[int, typer.Option(help="Grid rates for --verify, half a decade apart, below the divergence point.", min=1)] = VERIFY.rates,
    verify_seeds: Annotated[int, typer.Option(help="Seeds per rate for --verify (the range test's seeds, continued).", min=1)] = VERIFY.seeds,
    verify_epochs: Annotated[Optional[int], typer.Option(help="Training length for --verify (default: train's --epochs).", min=1, max=MAX_EPOCHS)] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule of the --verify trainings (default: train's).")] = None,
    target: TargetOption = None,
    domain: DomainOption = None,
    data: DataOption = None,
    test_fraction: TestFractionOption = DEFAULTS.test_fraction,
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[Optional[Path], typer.Option(help="Directory for lr_find.csv, lr_find.json, lr_find.png and lr_verify.png (default: `RUNS_DIR/lr-find/<timestamp>`).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar for --verify.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Find a learning rate: the range test (Smith 2017) with the steepest, valley and minimum
    rules, and with --verify the evidence, real trainings at a grid of rates.

    The rate rises every mini-batch from --start-lr to --end-lr on train's model and data; the
    model, the optimizer and the RNG state are restored afterwards. On this problem the curve sits
    near Var(y) for most of the sweep (the network first learns the mean), and lr-find warns when
    it never falls clearly below it: the rules are guesses then, and --verify says which rate trains.

    Example: rungefit lr-find --seeds 3 --verify
    """
    from rungefit import lr_find as core
    from rungefit import runs
    from rungefit import train as training

    shape = {"layers": layers, "points": points, "val_fraction": val_fraction, "batch_size": batch_size, "epochs": verify_epochs, "schedule": schedule and schedule.value, "dtype": dtype and dtype.value}
    shape = {**{k: v for k, v in shape.items() if v is not None}, **target_settings(ctx, target, domain, data, test_fraction)}
    config = training.TrainConfig(seeds=parse_seeds(seed, seeds), device=training.resolve_device(device.value), **shape)
    config.validate()
    test = core.RangeTestConfig(start_lr=start_lr, end_lr=end_lr, iters=iters, mode=mode.value, smooth=smooth, diverge=diverge, val=val)
    test.validate()
    verify_config = core.VerifyConfig(rates=verify_rates, seeds=verify_seeds)
    verify_config.validate()  # with or without --verify: a value given is checked
    # Fail on an unusable directory now, not after the range test.
    if out is None:
        runs.prepare_runs_dir(runs_dir / runs.LR_FIND_DIR, None)
    else:
        runs.ensure_writable_dir(out, "--out")
    warn_if_full_batch(config)
    progress, on_epoch, _ = report.training_progress(config.epochs, quiet or json_output or not verify)
    with progress:
        findings = core.lr_find(config, test, verify_config if verify else None, on_epoch)
    doc = {**findings.to_json(), "config": asdict(config)}
    path = _save_lr_find(doc, findings.test.csv(), runs_dir, out)
    if json_output:
        report.print_json({**doc, "out": str(path)})
    else:
        report.render_lr_find(doc, str(path))


def _save_lr_find(doc: dict, csv_text: str, runs_dir: Path, out: Optional[Path]) -> Path:
    """Write lr-find's files, each atomically: into --out, or as a new RUNS_DIR/lr-find/<timestamp>."""
    from rungefit import plots, runs

    files = {
        "lr_find.csv": csv_text.encode(),
        "lr_find.json": runs.json_bytes(doc),
        "lr_find.png": plots.lr_find_png(doc["range_test"]["members"], {rule: s["median"] for rule, s in doc["suggestions"].items()}),
    }
    if doc["verification"]:
        files["lr_verify.png"] = plots.lr_verify_png(doc["verification"])
    if out is None:
        return runs.save_new_run(runs_dir / runs.LR_FIND_DIR, None, files)
    runs.ensure_writable_dir(out, "--out")
    try:
        runs.write_files(out, files)
    except OSError as error:
        raise RungefitError(f"--out {out}: cannot write there ({error.strerror}); choose another directory") from None
    return out


def _auto_lr(config, quiet: bool):
    """--lr auto: the config with the chosen rate, and the summary entries that say how it was chosen."""
    from dataclasses import replace

    from rungefit.lr_find import choose_lr

    if not quiet:
        report.note("--lr auto: choosing the rate with a range test and a short stacked training…")
    choice = choose_lr(config)
    if not quiet:
        report.note(f"--lr auto chose {choice.lr:.3g}: {choice.how}")
    return replace(config, lr=choice.lr), {"lr_choice": choice.how, "lr_auto": choice.to_json()}


class ExportFormat(str, Enum):
    pt2 = "pt2"
    onnx = "onnx"
    safetensors = "safetensors"


@app.command()
def export(
    file_format: Annotated[ExportFormat, typer.Option("--format", help="pt2: torch.export's archive (torch.export.load); onnx: an ONNX model (needs `pip install \"rungefit[onnx]\"`); safetensors: the nn.Sequential's state_dict, with the layer spec, target and domain as metadata.")],
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    member: MemberOption = None,
    out: Annotated[Optional[Path], typer.Option(help="File to write (default: member-K.FORMAT in the run directory).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write one network of a run as a file that other tools load without rungefit.

    The network is the member's plain torch.nn.Sequential (Linear, activation, …, Linear) in the
    run's dtype. pt2 and onnx take a batch of any size: input x of shape [batch, 1], output y of
    shape [batch, 1]. Every format records the layer spec, the target and its domain (safetensors
    and ONNX as metadata, pt2 as its extra file rungefit.json). The file is written atomically and
    an existing one is kept unless --force is given.

    Example: rungefit export --format onnx --out runge.onnx
    """
    from rungefit import export as core
    from rungefit import runs

    loaded, member, source = _load_member(runs_dir, run, member)
    path = out or loaded.path / f"member-{member}.{file_format.value}"
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name")
    if path.exists() and not force:
        raise RungefitError(f"{path} exists; add --force to overwrite it, or choose another --out")
    network = loaded.network(member)
    target = loaded.target()
    # The target as typed (a preset or a formula), or "data FILE" for a data run.
    meta = core.metadata(network, loaded.config.target or target.name, target.domain, loaded.path.name, member)
    data = core.export_bytes(network, file_format.value, meta)
    try:
        runs.atomic_write(path, data)
    except OSError as error:
        raise RungefitError(f"cannot write {path} ({error.strerror}); choose another --out") from None
    doc = {"source": source, "run": str(loaded.path), "member": member, "format": file_format.value, "out": str(path), "bytes": len(data), "metadata": meta}
    if json_output:
        report.print_json(doc)
    else:
        report.render_export(doc)


@app.command()
def predict(
    file: Annotated[str, typer.Argument(metavar="FILE", help="File of x values: one number per line, or a CSV whose first column holds them (a header line is skipped). - or nothing: standard input.")] = "-",
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    member: MemberOption = None,
    with_grad: Annotated[bool, typer.Option("--grad", help="Add a column dydx: the network's derivative by autograd, in float64 as `rungefit grad` computes it.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Predict y at x values read from a file or a pipe, and print CSV x,y to stdout.

    y is exactly what `eval --x` reports for the same x. The whole input is checked before anything
    is printed: a line that is not a finite number is an error naming its line number, and then
    nothing is written. Pipe it: `seq -1 0.01 1 | rungefit predict > fit.csv`.

    Example: rungefit predict xs.csv --grad
    """
    from rungefit import predict as core

    loaded, member, _ = _load_member(runs_dir, run, member)
    x = core.read_x(*_x_lines(file))
    lo, hi = loaded.target().domain
    outside = int(((x < lo) | (x > hi)).sum())
    if outside:
        report.warning(f"{outside} of the {len(x)} x values lie outside [{lo:g}, {hi:g}], where the network was trained: extrapolation")
    result = core.predict(loaded.model, member, x, with_grad)
    if json_output:
        report.print_json({"run": str(loaded.path), "member": member, "points": len(x), **result.as_dict()})
    else:
        report.print_plain(result.csv())


def _x_lines(file: str):
    """(the lines of FILE or of standard input, as bytes; the name to show in errors)."""
    if file == "-":
        if sys.stdin.isatty():
            report.note("reading x values from standard input, one per line (end with Ctrl-D)")
        return sys.stdin.buffer, "standard input"
    try:
        return Path(file).read_bytes().splitlines(), file
    except OSError as error:
        raise UsageError(f"FILE {file}: cannot read it ({error.strerror})") from None


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(shell: Annotated[Shell, typer.Argument(help="The shell to print the completion script for.")]) -> None:
    """Print the TAB-completion script for SHELL: commands, options, choices, activation names inside
    --layers, presets and run names. bash needs no bash-completion package for it.

    Example: rungefit completion bash > ~/.local/share/bash-completion/completions/rungefit
    """
    from rungefit.completions import completion_script

    sys.stdout.write(completion_script(shell.value))


def main() -> None:
    app(prog_name="rungefit", obj={"started": process_started()})
