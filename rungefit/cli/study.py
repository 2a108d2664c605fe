"""The commands that study a saved run: `grad`, `eval`, `export` and `predict`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO, Optional

import typer

from rungefit.cli.options import (
    ExportFormat,
    JsonFlag,
    MemberOption,
    RunName,
    RunsDir,
    XValues,
    checked_points,
    complete_layers,
    complete_path,
    complete_target,
    open_member,
    report,
    warn_outside,
    whole_option,
    write_figure,
)
from rungefit.config import (
    DEFAULT_LAYERS,
    MAX_GRID,
    MAX_SEED,
    TrainConfig,
    format_layers,
)
from rungefit.errors import RungefitError, UsageError
from rungefit.files import atomic_write, describe, existing_file
from rungefit.runs import ENSEMBLE_EXPORT, EVAL_FIGURE, EXPORT_PREFIX, GRAD_FIGURE, RunStore


def grad(
    x: XValues = None,
    grid: Annotated[Optional[int], whole_option(help="Also check N equally spaced points of the domain and report the largest discrepancies; grad.png then shows them. With neither --x nor --grid: --grid 201.", min=2, max=MAX_GRID)] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print the chain-rule product for each --x factor by factor: its shape and its value at that x.")] = False,
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    untrained: Annotated[bool, typer.Option("--untrained", help="Study a freshly initialised network (--seed, --layers) instead of a saved run; writes no files.")] = False,
    seed: Annotated[Optional[int], whole_option(help="With --untrained: the initialisation seed, as in train (default: 0).", min=0, max=MAX_SEED)] = None,
    layers: Annotated[Optional[str], typer.Option(help="With --untrained: hidden layers as WIDTH:ACTIVATION items (default: train's).", autocompletion=complete_layers)] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="With --untrained: the target to compare with, as train's --target (default: runge).", autocompletion=complete_target)] = None,
    domain: Annotated[Optional[str], typer.Option("--domain", help="With --untrained: the interval A,B, as train's --domain.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", path_type=str, help="With --untrained: a data file, as train's --data (there is no true derivative then).", autocompletion=complete_path)] = None,
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
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit import targets
    from rungefit.cli import figures as plots
    from rungefit.study import grad as core

    points = checked_points(x)
    if explain and not points:
        raise UsageError("--explain needs at least one --x to explain the product at")
    if not points and grid is None:
        grid = 201
    if untrained:
        if run is not None or member is not None:
            raise UsageError("--untrained studies a new network; drop --run and --member")
        model = core.untrained_model(DEFAULT_LAYERS if layers is None else layers, seed or 0)
        chosen = targets.settings(target, domain, data)
        goal = targets.resolve(TrainConfig(**chosen.fields), chosen.points)
        doc = {"source": f"untrained, seed {seed or 0}", "run": None, "member": 0}
    else:
        if seed is not None or layers is not None or target is not None or domain is not None or data is not None:
            raise UsageError("--seed, --layers, --target, --domain and --data apply only with --untrained; a saved run has its own")
        loaded, member, source = open_member(runs_dir, run, member)
        model = core.as_float64(loaded.model, member)
        goal = loaded.target
        doc = {"source": source, "run": str(loaded.path), "member": member}
    warn_outside(points, goal.domain)
    study = core.study_gradient(model, goal, points, grid, explain)
    doc = {**doc, "layers": format_layers(model.layers), "dtype": "float64", "target": goal.name, "domain": list(goal.domain), **study.as_dict()}
    if json_output:
        report.print_json(doc)
    else:
        from rungefit.cli.render_study import render_grad

        render_grad(doc)
    if not untrained:
        curve = study.curve
        title = plots.title(loaded.path.name, goal.name, plots.shown([member]))
        png = plots.grad_png(curve.x, curve.true, curve.explicit, study.at_x.x, title=title, label=goal.derivative_label, x_label=goal.x_label)
        write_figure(loaded, GRAD_FIGURE, png)


def eval_run(
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    points: Annotated[Optional[int], whole_option(help="Size of the equally spaced test grid on the run's domain (default: the run's, as train scored it). A data run is scored on its held-out test points.", min=2, max=MAX_GRID)] = None,
    x: XValues = None,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also score, for d = 10, 20, 40, the polynomial interpolant at d+1 equally spaced nodes, the Chebyshev interpolant of degree d and the cubic spline through the same d+1 nodes. For a data run: the Chebyshev least-squares fit of degree d of the member's training points, and a smoothing spline.")] = False,
    member: MemberOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Score a saved network on the test grid: MSE, RMSE, max |error| and where it occurs, near the
    ends (the outer tenth of the domain at each end: |x| > 0.8 on [-1, 1]) and in the middle; on
    the default grid the MSE is exactly the test MSE that train reported. A data run is scored on
    its held-out test points; for a data run with several members, also the ensemble's band
    (`predict`'s mean ± 2 spread): the share of the test points inside it, and its mean spread.
    Writes eval.png (f, the network and the errors) into the run directory.

    Example: rungefit eval --baselines --x 0.95
    """
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.cli import figures as plots
    from rungefit.study import evaluate as core

    values = checked_points(x)
    loaded, member, source = open_member(runs_dir, run, member)
    goal = loaded.target
    if points is not None and not goal.has_function:
        raise UsageError("--points: a data run is scored on its held-out test points; drop --points")
    warn_outside(values, goal.domain)
    train = core.training_points(loaded.config, goal, member) if baselines and not goal.has_function else None
    degrees = core.BASELINE_DEGREES if baselines else ()
    val_mse = loaded.val_mse
    result = core.evaluate(loaded.model, goal, member, points or loaded.config.test_points, values, degrees, train, val_mse)
    doc = {"source": source, "run": str(loaded.path), **result.as_dict()}
    if json_output:
        report.print_json(doc)
    else:
        from rungefit.cli.render_study import render_eval

        render_eval(doc)
    curves = result.curves
    png = plots.eval_png(
        curves.x, curves.target, curves.prediction, curves.errors, title=plots.title(loaded.path.name, goal.name, plots.shown([member])),
        label=curves.label, error_x=curves.error_x, points=curves.points, x_label=curves.x_label, y_label=curves.y_label,
    )
    write_figure(loaded, EVAL_FIGURE, png)


def export(
    file_format: Annotated[ExportFormat, typer.Option("--format", parser=ExportFormat.parse, help="pt2: torch.export's archive (torch.export.load); onnx: an ONNX model (needs `pip install \"rungefit[onnx]\"`); safetensors: the module's state_dict, with the layer spec, target and domain as metadata.")],
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    member: Annotated[Optional[int], whole_option("--member", help="Member of a stacked run (--seeds) to export. Default: on a data run with several members, their ensemble mean as one module; otherwise the best by validation MSE.", min=0)] = None,
    out: Annotated[Optional[Path], typer.Option(help="File to write (default: member-K.FORMAT, or ensemble.FORMAT for an ensemble, in the run directory).", autocompletion=complete_path)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists. Only a regular file is replaced: a directory, a device, a FIFO or a symbolic link there never is, --force or not.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write one network of a run as a file that other tools load without rungefit.

    The network is the member's plain torch.nn.Sequential (Linear, activation, …, Linear) in the
    run's dtype and the data's units. On a data run with several members and no --member it is
    their ensemble mean, `predict`'s y: one module that averages the members' Sequentials (its
    state_dict under members.0., members.1., …; the band's spread is not exported). pt2 and onnx
    take a batch of any size: input x of shape [batch, 1], output y of shape [batch, 1]. Where a
    float32 run's x lie far from zero (calendar years, x near 1e6), folding the scaling into the
    first Linear would lose digits, so the module keeps it as float64 layers at its ends: it then
    takes and returns float64 (`io_dtype` in the file's metadata). Every
    format records the layer spec, the target, its domain and what was exported (safetensors and
    ONNX as metadata, pt2 as its extra file rungefit.json). The file is written atomically and an
    existing one is kept unless --force is given; --out may not lie inside a run.

    Example: rungefit export --format onnx --out runge.onnx
    """
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.study import export as core

    if out is not None:
        RunStore(runs_dir).check_outside(out, "--out")
    chosen = member
    loaded, member, source = open_member(runs_dir, run, member)
    ensemble = loaded.uses_ensemble(chosen)
    if ensemble:
        network, members = loaded.ensemble_network()
        file_name = f"{ENSEMBLE_EXPORT}.{file_format.value}"
        source = f"run {loaded.path}, the ensemble mean of {len(members)} members"
    else:
        members = member
        network = loaded.network(member)
        file_name = f"{EXPORT_PREFIX}{member}.{file_format.value}"
    path = out or loaded.derived_path(file_name)
    try:
        exists = existing_file(path)
    except OSError as error:
        raise _cannot_write(path, error) from None
    if exists and not force:
        raise RungefitError(f"{path} exists; add --force to overwrite it, or choose another --out")
    target = loaded.target
    # The target as typed (a preset or a formula), or "data FILE" for a data run.
    meta = core.metadata(network, loaded.config.target or target.name, target.domain, loaded.path.name, members)
    data = core.export_bytes(network, file_format.value, meta)
    try:
        if out is None:
            loaded.write_derived(file_name, data)
        else:
            atomic_write(out, data)  # the old contents or the new
    except OSError as error:
        raise _cannot_write(path, error) from None
    doc = {
        "source": source, "run": str(loaded.path), "member": None if ensemble else member, **({"members": members} if ensemble else {}),
        "format": file_format.value, "out": str(path), "bytes": len(data), "metadata": meta,
    }
    if json_output:
        report.print_json(doc)
    else:
        report.render_export(doc)


def _cannot_write(path: Path, error: OSError) -> RungefitError:
    return RungefitError(f"cannot write {path} ({describe(error)}); choose another --out")


def predict(
    file: Annotated[str, typer.Argument(metavar="FILE", allow_dash=True, help="File of x values: one number per line, or a CSV whose first column holds them (a header line is skipped). - or nothing: standard input.", autocompletion=complete_path)] = "-",
    run: RunName = None,
    runs_dir: RunsDir = Path("runs"),
    member: Annotated[Optional[int], whole_option("--member", help="Member of a stacked run (--seeds) to use. Default: on a data run with several members, their ensemble (x,y,spread); otherwise the best by validation MSE.", min=0)] = None,
    with_grad: Annotated[bool, typer.Option("--grad", help="Add a column dydx: the network's derivative by autograd, in float64 as `rungefit grad` computes it; for an ensemble, the derivative of its mean (the mean of the members' derivatives).")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Predict y at x values read from a file or a pipe, and print CSV x,y to stdout.

    y is exactly what `eval --x` reports for the same x. On a data run with several members
    (train --data --seeds 5) and no --member, y is the members' mean and a column spread follows:
    the standard deviation of a new measurement at x about y, combining the noise level estimated
    from the members' validation errors with their disagreement at x (y ± 2·spread is a ~95 %
    band; `eval` reports its coverage of the test points). The whole input is checked before
    anything is printed: a line that is not a finite number is an error naming its line number,
    and then nothing is written. Pipe it: `seq -1 0.01 1 | rungefit predict > fit.csv`.

    Example: rungefit predict xs.csv --grad
    """
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.study import predict as core

    chosen = member
    loaded, member, _ = open_member(runs_dir, run, member)
    with _x_input(file) as (stream, source):
        x = core.read_x(stream, source)
    lo, hi = loaded.target.domain
    outside = int(((x < lo) | (x > hi)).sum())
    if outside:
        report.warning(f"{outside} of the {len(x)} x values lie outside [{lo:g}, {hi:g}], where the network was trained: extrapolation")
    if loaded.uses_ensemble(chosen):
        val_mse = loaded.val_mse
        result, noise, members = core.predict_ensemble(loaded.model, loaded.target, val_mse, x, with_grad)
        doc = {"run": str(loaded.path), "member": None, "members": members, "noise": noise, "points": len(x), **result.as_dict()}
    else:
        result = core.predict(loaded.model, loaded.target, member, x, with_grad)
        doc = {"run": str(loaded.path), "member": member, "points": len(x), **result.as_dict()}
    if json_output:
        report.print_json(doc)
    else:
        report.print_plain(result.csv())


@contextmanager
def _x_input(file: str) -> Iterator[tuple[BinaryIO, str]]:
    """(FILE or standard input as a binary stream, read as it comes; the name to show in errors).
    An OSError while it is opened or read is a UsageError."""
    try:
        if file == "-":
            if sys.stdin.isatty():
                report.note("reading x values from standard input, one per line (end with Ctrl-D)")
            yield sys.stdin.buffer, "standard input"
        else:
            with open(file, "rb") as stream:
                yield stream, file
    except OSError as error:
        raise UsageError(f"FILE {file}: cannot read it ({error.strerror})") from None
