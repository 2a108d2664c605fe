"""What the commands share: option types and defaults, parsers, TAB-completion callbacks, and
loading a run's member. Imports nothing heavy: `rungefit --help` and TAB completion import it.
"""

from __future__ import annotations

import importlib.util
import math
import shlex
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rungefit.cli.completion import complete_path
from rungefit.config import (
    ACTIVATION_NAMES,
    DATA_CHOSEN,
    DEVICES,
    DTYPE_NAMES,
    EXPORT_FORMATS,
    FORMULA_FUNCTIONS,
    KEEPS,
    MAX_DATA_BYTES,
    MAX_DATA_VALUE,
    MAX_DOMAIN,
    MAX_MEMBERS,
    MAX_SEED,
    MIN_DATA_POINTS,
    MODES,
    POLISHES,
    PRESETS,
    SCALES,
    SCHEDULES,
    RangeTestConfig,
    TrainConfig,
    VerifyConfig,
    data_defaults,
)
from rungefit.errors import UsageError, suggest
from rungefit.files import describe
from rungefit.rules import NUMBER_RULE, parse_number
from rungefit.runs import LATEST, RunStore

# The exit codes of a run stopped by a signal, as a shell reports them.
SIGINT_EXIT, SIGTERM_EXIT = 128 + signal.SIGINT, 128 + signal.SIGTERM


def _lazy_import(name: str):
    """The module, loaded on first attribute access (importlib's LazyLoader recipe).

    report imports Rich's console, progress and table machinery, which TAB completion
    never needs. A module already loaded is that module: a second copy would have consoles of
    its own.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = _lazy_import("rungefit.cli.render")


class Choice(str, Enum):
    """The base of an option's fixed set of values (Typer lists them in --help and completes them).
    Each option names its set's parse as its parser, so that a mistyped value is a one-line usage
    error that suggests the closest values, as a mistyped command or option is."""

    @classmethod
    def parse(cls, value):
        """The member `value` names; otherwise Typer's BadParameter (exit 2), ending in "Did you mean …?"."""
        if isinstance(value, cls):  # a default
            return value
        try:
            return cls(value)
        except ValueError:
            names = [member.value for member in cls]
            raise typer.BadParameter(suggest(f"{value!r} is not one of {', '.join(map(repr, names))}", value, names)) from None


def choices(name: str, values: tuple[str, ...]) -> type[Choice]:
    """A Choice of config's names for an option with a fixed set of values."""
    return Choice(name, [(value, value) for value in values])


Schedule = choices("Schedule", SCHEDULES)
Polish = choices("Polish", POLISHES)
Dtype = choices("Dtype", DTYPE_NAMES)
Device = choices("Device", DEVICES)
SweepMode = choices("SweepMode", MODES)
ExportFormat = choices("ExportFormat", EXPORT_FORMATS)
Scale = choices("Scale", SCALES)
Keep = choices("Keep", KEEPS)


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
    store = RunStore(ctx.params.get("runs_dir") or "runs")
    names = store.names() + ([LATEST] if store.latest() else [])
    return [name for name in names if name.startswith(incomplete)]


def complete_interrupted_run(ctx: typer.Context, incomplete: str) -> list[str]:
    """--resume offers the runs that can be resumed: the interrupted ones."""
    return [name for name in RunStore(ctx.params.get("runs_dir") or "runs").interrupted() if name.startswith(incomplete)]


def parse_seeds(seed: int, seeds: Optional[str]) -> tuple[int, ...]:
    """--seeds N means seeds 0…N-1; --seeds 3,7,11 lists them; otherwise the single --seed."""
    if seeds is None:
        return (seed,)
    expected = f"--seeds {seeds!r}: expected a count N in 1…{MAX_MEMBERS} (seeds 0…N-1) or a list like 3,7,11"
    try:
        values = tuple(parse_number(part, whole=True) for part in seeds.split(","))
    except ValueError:
        raise UsageError(f"{expected} ({NUMBER_RULE})") from None
    if "," not in seeds:
        if not 1 <= values[0] <= MAX_MEMBERS:
            raise UsageError(expected)
        return tuple(range(values[0]))
    if len(set(values)) != len(values) or min(values) < 0 or max(values) > MAX_SEED:
        raise UsageError(f"--seeds {seeds!r}: seeds must be distinct whole numbers in 0…{MAX_SEED}")
    return values


def parse_lr(text: str) -> Optional[float]:
    """A positive finite float, or None for 'auto'."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = parse_number(text)
    except ValueError:
        raise UsageError(f"--lr {text!r}: expected a positive number such as 3e-2, or 'auto' ({NUMBER_RULE})") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--lr {text!r}: the learning rate must be a positive finite number")
    return value


def _number_parser(whole: bool, low: float | None, high: float | None):
    """Typer's parser for a numeric option: rules.parse_number's rule, then low…high (Typer
    checks min and max only of the values it parses itself)."""

    def parse(value):
        if not isinstance(value, str):  # the default, already a number
            return value
        try:
            number = parse_number(value, whole=whole)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a {'whole number' if whole else 'number'}; {NUMBER_RULE}") from None
        if low is not None and number < low or high is not None and number > high:
            wanted = f"in {low}…{high}" if None not in (low, high) else f"at least {low}" if high is None else f"at most {high}"
            raise typer.BadParameter(f"must be {wanted}, got {value}")
        return number

    return parse


def whole_option(*declarations: str, min: Optional[int] = None, max: Optional[int] = None, **settings):  # noqa: A002 — Typer's names
    """typer.Option for a whole number, read by the one rule for numbers (rules.NUMBER_RULE)."""
    return typer.Option(*declarations, min=min, max=max, parser=_number_parser(True, min, max), **settings)


def real_option(*declarations: str, **settings):
    """typer.Option for a number, read by the one rule for numbers (rules.NUMBER_RULE)."""
    return typer.Option(*declarations, parser=_number_parser(False, None, None), **settings)


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


DATA_HELP = (
    "Fit measured points instead of a function: a CSV file of two columns x,y, separated by commas, semicolons "
    "(then a decimal comma is read as a point), tabs or spaces (a header line names them for the figures and tables; "
    "a cell may be quoted; lines starting with # are comments). --test-fraction of them are the test set; the rest are split into "
    f"training and validation as usual. The run keeps a copy. Limits: at least {MIN_DATA_POINTS} points, a file of at "
    f"most {MAX_DATA_BYTES // 2**20} MiB, values within ±{MAX_DATA_VALUE:g} (not --domain's ±{MAX_DOMAIN:g} for formulas), "
    "and a y that varies. Repeated x are allowed."
)
DataOption = Annotated[Optional[str], typer.Option("--data", path_type=str, help=DATA_HELP, autocompletion=complete_path)]  # a path, kept as typed


TestFractionOption = Annotated[float, real_option(help="With --data: the share of the points held out as the test set, drawn once (seeded) and the same for every member.")]


ScaleOption = Annotated[Scale, typer.Option(parser=Scale.parse, help="Which of x and y the network sees in standard coordinates: x mapped from the domain onto [-1, 1], y shifted and divided by its mean and spread (over the data's non-test points, or f on the domain). auto: x always; y for --data, and for a function far from unit size. Everything shown stays in the data's units.")]


RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Directory holding the run directories.", show_default=True, autocompletion=complete_path)]


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout instead of tables.")]


XValues = Annotated[Optional[list[float]], real_option("--x", help="A point to evaluate at; repeat for several. Outside the run's domain is extrapolation (allowed, with a warning).")]


RunName = Annotated[Optional[str], typer.Option("--run", help="Name of the run in --runs-dir (default: the latest run).", autocompletion=complete_run_name)]


MemberOption = Annotated[Optional[int], whole_option("--member", help="Member of a stacked run (--seeds) to use (default: the best by validation MSE).", min=0)]


def checked_points(values: Optional[list[float]]) -> list[float]:
    """--x values: NaN or ±inf is a usage error."""
    points = list(values or [])
    for value in points:
        if not math.isfinite(value):
            raise UsageError(f"--x {value}: expected a finite number")
    return points


def warn_outside(points: list[float], domain: tuple[float, float]) -> None:
    """--x outside the domain is extrapolation, allowed with a warning."""
    from rungefit.targets import describe_domain  # numpy: not on the way of --help

    low, high = domain
    outside = [value for value in points if not low <= value <= high]
    if outside:
        report.warning(f"--x {', '.join(f'{v:g}' for v in outside)}: outside {describe_domain(domain)}, where the network was trained, so this is extrapolation")


def was_given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set an option (command line or environment) rather than leaving its default.

    The source is compared by name: Typer carries its own copy of click, whose ParameterSource is not
    the one `import click` gives.
    """
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def open_member(runs_dir: Path, run: Optional[str], member: Optional[int]):
    """The run and the member to study (--member, else the best by validation MSE), and the words
    that name them."""
    loaded = RunStore(runs_dir).open(run)
    note_latest(loaded)
    _warn_if_unfinished(loaded)
    members, chosen = loaded.model.members, member
    member = loaded.member(member, "--member")
    how = ", best by validation MSE" if chosen is None else ""
    source = f"run {loaded.path}, member {member}" + (f" of {members}{how}" if members > 1 else "")
    return loaded, member, source


def note_latest(loaded) -> None:
    """Say which run `latest` stood for, when it is not the one it names."""
    if loaded.note:
        report.note(loaded.note)


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run in run_dir, quoted for a shell."""
    return f"rungefit train --resume {shlex.quote(run_dir.name)} --runs-dir {shlex.quote(str(run_dir.parent))}"


def _warn_if_unfinished(loaded) -> None:
    """An interrupted or diverged run is studied as it stands, with a word on what that is."""
    status, epochs = loaded.status, loaded.epochs_run
    if status == "interrupted":
        report.warning(
            f"run {loaded.path.name!r} was interrupted after epoch {epochs} of {loaded.config.epochs}: these are the figures "
            f"of an unfinished training; `{resume_command(loaded.path)}` continues it"
        )
    elif status == "diverged":
        report.warning(f"run {loaded.path.name!r} diverged in epoch {epochs + 1}: this is its last finite state, from before the divergence")
    note = unlearned_note(loaded)
    if note:
        report.warning(note)


def unlearned_note(loaded) -> str | None:
    """What to say of a run whose members learned nothing (its summary's verdict), or None."""
    if loaded.status != "complete" or not loaded.learned_nothing:  # an unfinished run has its own warning
        return None
    return (
        f"run {loaded.path.name!r} learned nothing: no member's validation MSE is below the yardstick (Var(y) of its "
        "validation points), so its predictions are little better than the mean of y"
    )


def write_figure(run, file_name: str, png: bytes) -> None:
    """Write a figure into the run's directory; a failure is a warning, the results stand."""
    try:
        path = run.write_derived(file_name, png)
    except OSError as error:
        report.warning(f"cannot write {run.derived_path(file_name)} ({describe(error)}); the results above are complete without it")
    else:
        report.note(f"wrote {path}")


def target_settings(ctx: typer.Context, target: Optional[str], domain: Optional[str], data: Optional[str], test_fraction: float):
    """targets.Settings of --target, --domain, --data and --test-fraction (with data, the points
    too); targets.resolve checks the target itself."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit import targets

    if data is None and was_given(ctx, "test_fraction"):
        raise UsageError("--test-fraction applies only with --data")
    chosen = targets.settings(target, domain, data, test_fraction)
    if data is not None and was_given(ctx, "points"):
        raise UsageError("--points: with --data the points are the data's; drop --points")
    return chosen


def data_run_plan(ctx: typer.Context, config, goal) -> tuple:
    """For data: config.data_defaults for the options not given, and the summary entry that says
    what was chosen ({} for a function)."""
    if goal.has_function:
        return config, {}
    config, why = data_defaults(config, [name for name in DATA_CHOSEN if was_given(ctx, name)])
    return config, {"steps_why": why}
