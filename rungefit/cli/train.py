"""The commands that train: `train` (with --resume and --lr auto) and `lr-find`."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from rungefit.cli import choices
from rungefit.cli.options import (
    DEFAULTS,
    SWEEP,
    VERIFY,
    DataOption,
    Device,
    DomainOption,
    Dtype,
    JsonFlag,
    Keep,
    Polish,
    RunsDir,
    Scale,
    ScaleOption,
    Schedule,
    SweepMode,
    TargetOption,
    TestFractionOption,
    complete_interrupted_run,
    complete_layers,
    complete_path,
    data_run_plan,
    note_latest,
    parse_lr,
    parse_seeds,
    real_option,
    report,
    resume_command,
    target_settings,
    was_given,
    whole_option,
)
from rungefit.cli.phases import Phases
from rungefit.cli.stopping import StopRequest, ctrl_c_stops_training
from rungefit.config import (
    CHOICE_SKIPPED_BY,
    DATA_LR,
    DATA_NETWORKS,
    DATA_PATIENCE_STEPS,
    DATA_STEPS,
    EXPORT_FORMATS,
    FULL_BATCH_POINTS,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_WORKERS,
    MIN_MEMBERS_PER_WORKER,
    chooses_network,
    data_defaults,
)
from rungefit.errors import RungefitError, UsageError
from rungefit.files import ensure_writable_dir, json_bytes, write_files
from rungefit.runs import RunStore

BATCH_HELP = f"Mini-batch size; the last batch of an epoch may be smaller. Larger than the training set: every step uses the whole set (full-batch), with a warning. With --data, unless given: the whole training set up to {FULL_BATCH_POINTS} points, batches of about that size beyond."

PATIENCE_HELP = (
    "Stop a member once its validation MSE has not improved for this many epochs and for half the epochs to its best "
    "(a member that improved late may improve again); the run ends when every member has stopped, or after --epochs. "
    f"0: never. With --data, unless --epochs or --patience is given: the epochs of {DATA_PATIENCE_STEPS} optimizer steps, "
    "at a constant rate."
)

# Options that may go with --resume: where the run is and how to show it; the rest is the saved run's.
RESUME_ALLOWS = ("resume", "runs_dir", "quiet", "json_output")


def train(
    ctx: typer.Context,
    layers: Annotated[str, typer.Option(help=f"Hidden layers as WIDTH:ACTIVATION items; the output layer is linear. With --data, unless --layers or --epochs is given: {' or '.join(DATA_NETWORKS)}, whichever reaches the lower validation MSE on seed 0 (a first sin layer starts at high frequencies, for data of many cycles: docs/data.md).", autocompletion=complete_layers)] = DEFAULTS.layers,
    points: Annotated[int, whole_option(help="Training points drawn uniformly from the domain, validation included (with --data: the data's). More points mean more Adam steps per epoch, and the fit is limited by the steps, not by data (docs/accuracy.md).")] = DEFAULTS.points,
    val_fraction: Annotated[float, real_option(help="Share of the points held out for validation, in (0, 1).")] = DEFAULTS.val_fraction,
    batch_size: Annotated[int, whole_option(help=BATCH_HELP)] = DEFAULTS.batch_size,
    epochs: Annotated[int, whole_option(help=f"Passes over the training set (the most, with --patience). With --data, unless given: enough for {DATA_STEPS} optimizer steps.")] = DEFAULTS.epochs,
    lr: Annotated[str, typer.Option(help=f"Peak Adam learning rate, or 'auto': a range test and a short stacked training at a grid of rates choose one (see lr-find). With --data, unless given: {DATA_LR:g}.")] = f"{DEFAULTS.lr:g}",
    schedule: Annotated[Schedule, typer.Option(parser=Schedule.parse, help="Learning-rate schedule over the optimizer steps. With --data, unless given: constant (a member may stop at any step).")] = Schedule(DEFAULTS.schedule),
    seed: Annotated[int, whole_option(help="Seed of the initialisation, the training points and the shuffling.", min=0, max=MAX_SEED)] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Train one member per seed in one stacked run: a count N (seeds 0…N-1) or a list 3,7,11. Overrides --seed.")] = None,
    dtype: Annotated[Dtype, typer.Option(parser=Dtype.parse, help="Floating-point precision of the model and data.")] = Dtype(DEFAULTS.dtype),
    device: Annotated[Device, typer.Option(parser=Device.parse, help="Where to train: auto picks cuda when a GPU is present.")] = Device.auto,
    polish: Annotated[Polish, typer.Option(parser=Polish.parse, help="After Adam, refine every member on its training set: lm = Levenberg-Marquardt in float64 (what it gains and what it costs: docs/accuracy.md).")] = Polish(DEFAULTS.polish),
    polish_iterations: Annotated[int, whole_option(help="Levenberg-Marquardt iterations per member with --polish lm.")] = DEFAULTS.polish_iterations,
    workers: Annotated[int, whole_option(help=f"CPU processes that share the members of a stacked run. 0: one per core, each with at least {MIN_MEMBERS_PER_WORKER} members; 1: all in this process. Linux only (elsewhere always 1). float32 results depend slightly on how the members are split, float64 ones do not.", min=0, max=MAX_WORKERS)] = DEFAULTS.workers,
    target: TargetOption = None,
    domain: DomainOption = None,
    data: DataOption = None,
    test_fraction: TestFractionOption = DEFAULTS.test_fraction,
    scale: ScaleOption = Scale(DEFAULTS.scale),
    keep: Annotated[Keep, typer.Option(parser=Keep.parse, help="Which weights each member keeps: best (those of its epoch of lowest validation MSE, so that noise fitted later is not kept), last (the last epoch's), or auto: best for --data, last for a function.")] = Keep(DEFAULTS.keep),
    patience: Annotated[int, whole_option(help=PATIENCE_HELP, min=0, max=MAX_EPOCHS)] = DEFAULTS.patience,
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
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit import targets
    from rungefit.training import train as core

    phases = Phases(ctx.obj["started"])
    if resume is not None:
        _refuse_options_beside_resume(ctx, resume)
        _resume_run(runs_dir, resume, quiet, json_output, phases)
        return
    lr_value = parse_lr(lr)
    settings = dict(
        layers=layers, points=points, val_fraction=val_fraction, batch_size=batch_size, epochs=epochs,
        lr=lr_value or core.TrainConfig.lr, schedule=schedule.value, seeds=parse_seeds(seed, seeds), dtype=dtype.value,
        device=core.resolve_device(device.value), polish=polish.value, polish_iterations=polish_iterations, workers=workers, patience=patience,
    )
    chosen = target_settings(ctx, target, domain, data, test_fraction)
    config = core.TrainConfig(**{**settings, **chosen.fields, "scale": scale.value, "keep": keep.value})
    config.validate()
    goal = targets.resolve(config, chosen.points)
    config, plan = data_run_plan(ctx, config, goal)
    store = RunStore(runs_dir)
    # A --name is reserved now, so that a clash fails before training; leaving unsaved gives it up.
    with store.reserve(name) as reservation:
        if not plan:
            warn_if_full_batch(config)
        lr_extra = {**plan}
        if plan and chooses_network(option for option in CHOICE_SKIPPED_BY if was_given(ctx, option)):
            phases.end("start_up")
            config, chosen_network = choices.choose_network(config, goal, quiet or json_output)
            lr_extra.update(chosen_network)
            phases.end("network_search")
        if lr_value is None:
            phases.end("start_up")
            config, chosen_lr = choices.auto_lr(config, goal, quiet or json_output)
            lr_extra.update(chosen_lr)
            phases.end("rate_search")

        def save(result) -> Path:
            figures, summary_extra = _run_extras(result, lr_extra, phases, reservation.path.name)
            return store.save(result, summary_extra=summary_extra, figures=figures, name=name, reservation=reservation)

        _train_and_report(config, goal, save, lr_extra, quiet, json_output, phases)


def _refuse_options_beside_resume(ctx: typer.Context, name: str) -> None:
    """A resumed run keeps its saved settings: any other option given with --resume is a usage error."""
    given = [param.opts[0] for param in ctx.command.params if param.name not in RESUME_ALLOWS and was_given(ctx, param.name)]
    if given:
        raise UsageError(
            f"--resume {name} continues the run with its saved settings; drop {', '.join(given)} "
            "(only --runs-dir, --quiet and --json go with --resume)"
        )


def _resume_run(runs_dir: Path, name: str, quiet: bool, json_output: bool, phases: Phases) -> None:
    """Continue an interrupted run in place from its last completed epoch."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training import train as core

    store = RunStore(runs_dir)
    # The run stays locked until it is saved: no other process updates it meanwhile.
    with store.open_for_update(name) as loaded:
        note_latest(loaded)
        state = loaded.resume_state()
        config = replace(loaded.config, device=core.resolve_device(loaded.config.device))
        # How --lr auto chose the rate: the resumed part does not choose again, so carry it over.
        carried = {key: loaded.summary[key] for key in ("lr_choice", "lr_auto", "steps_why", "network_choice") if key in loaded.summary}
        if not (quiet or json_output):
            report.note(f"resuming run {loaded.path} at epoch {state.epochs_run + 1} of {config.epochs}")

        def save(result) -> Path:
            figures, summary_extra = _run_extras(result, carried, phases, loaded.path.name)
            store.update(loaded, result, summary_extra=summary_extra, figures=figures)
            _warn_made_before(loaded)
            return loaded.path

        _train_and_report(config, loaded.target, save, carried, quiet, json_output, phases, resume=state)


def _warn_made_before(run) -> None:
    """An update keeps what eval, grad and export made from the old network: say that they no longer match."""
    stale = run.made_from_the_network(EXPORT_FORMATS)
    if stale:
        report.warning(
            f"{', '.join(stale)} in {run.path} were made from the network before this resume and no longer match it; "
            "make them again with `rungefit eval`, `rungefit grad` or `rungefit export --force`"
        )


def _train_and_report(config, target, save, summary_extra: dict, quiet: bool, json_output: bool, phases: Phases, resume=None) -> None:
    """fit with Ctrl-C and SIGTERM handling, save(result) → the run directory, render; an
    interrupted run exits 130 (Ctrl-C) or 143 (SIGTERM), a complete one whose members all learned
    nothing 1."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training import train as core
    from rungefit.training.memory import check_fits

    check_fits(config)  # before the progress bar: a network too large for the machine is one line
    progress, on_epoch, on_polish = report.training_progress(config.epochs, quiet or json_output)
    phases.end("start_up")
    with ctrl_c_stops_training() as stop_requested:
        try:
            with progress:
                result = core.fit(config, target, on_epoch=on_epoch, should_stop=stop_requested, resume=resume, on_polish=on_polish)
        except core.DivergedError as diverged:
            path = save(diverged.result)
            raise RungefitError(f"{diverged} (last finite state saved in {path})") from None
        phases.end("training", **({"polish": result.polish_time_s} if config.polish != "none" else {}))
        if result.status == "interrupted" and result.epochs_run == (resume.epochs_run if resume else 0):
            _nothing_new_to_save(resume, config, stop_requested)
        path = save(result)
        phases.end("saving_and_plots")
    summary = {**result.summary(), "run": str(path), "schedule": config.schedule, **summary_extra, "times_s": phases.as_dict()}
    interrupted = result.status == "interrupted"
    if interrupted:
        summary["resume"] = resume_command(path)
    if json_output:
        report.print_json({**summary, "config": asdict(result.config)})
    else:
        report.render_train(summary, str(path))
    if interrupted:
        if result.training_done:
            report.warning(f"{stop_requested.cause} during the polish: all {result.epochs_run} epochs are saved in {path}, unpolished; `{summary['resume']}` runs the polish")
        else:
            report.warning(f"{stop_requested.cause}: epoch {result.epochs_run} of {config.epochs} is saved in {path}; continue with `{summary['resume']}`")
        raise typer.Exit(stop_requested.exit_code)
    _judge_fit(summary)


def _judge_fit(summary: dict) -> None:
    """Members that learned nothing: a warning naming them; when none learned, the same as the
    error line of a failed run, exit 1 (the run is saved and shown all the same)."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.training.metrics import FIT_NONE, FIT_OK, TRAINED_BELOW

    if summary["fit"] == FIT_OK:
        return
    message = report.nothing_learned(summary, TRAINED_BELOW)
    if summary["fit"] != FIT_NONE:
        report.warning(message)
        return
    report.error(message)
    raise typer.Exit(1)


def _nothing_new_to_save(resume, config, stop: StopRequest) -> None:
    """The stop came before an epoch (or a resumed polish) completed: say so and exit 130 or 143
    without touching the runs directory."""
    if resume is None:
        report.warning(f"{stop.cause} before the first epoch completed; nothing was saved")
    elif resume.training_done(config):
        report.warning(f"{stop.cause} during the polish again; the run still resumes at the polish")
    else:
        report.warning(f"{stop.cause} before epoch {resume.epochs_run + 1} completed; the run still resumes from epoch {resume.epochs_run}")
    raise typer.Exit(stop.exit_code)


def warn_if_full_batch(config) -> None:
    """--batch-size above the training set is allowed: every step then uses the whole set."""
    if config.batch_size > config.n_train:
        report.warning(
            f"--batch-size {config.batch_size} is larger than the {config.n_train} training points; "
            "every step uses the whole training set (full-batch)"
        )


def _run_extras(result, summary_extra: dict, phases: Phases, run: str) -> tuple[dict[str, bytes], dict]:
    """What `train` saves beside the result, the run named `run`: its figures, and the summary's extra entries."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.cli import figures as plots
    from rungefit.study.evaluate import fit_curves

    curves = fit_curves(result.model, result.target, config=result.config, val_mse=[m.val_mse for m in result.members])
    members = plots.shown(range(len(result.members)))
    pictures = {
        "fit.png": plots.fit_png(
            curves.x, curves.target, curves.predictions, label=curves.label, points=curves.points, x_label=curves.x_label,
            y_label=curves.y_label, band=curves.band,
            title=plots.title(run, result.target.name, members if curves.band is None else f"ensemble of {len(result.members)}"),
        ),
        "loss.png": plots.loss_png(
            result.history.train_mse, result.history.val_mse, None if result.polish is None else result.polish.curves.numpy(),
            val_var=[member.val_var for member in result.members], title=plots.title(run, result.target.name, members),
            kept=result.best.epoch.tolist() if result.keeps_best else None,
        ),
    }
    # summary.json cannot hold the time of its own writing: its times end as it is made.
    times = phases.as_dict(ongoing="saving_and_plots")
    return pictures, {"schedule": result.config.schedule, **summary_extra, "times_s": times}


def lr_find_command(
    ctx: typer.Context,
    layers: Annotated[Optional[str], typer.Option(help="Hidden layers as WIDTH:ACTIVATION items (default: train's).", autocompletion=complete_layers)] = None,
    points: Annotated[Optional[int], whole_option(help="Training points, validation included (default: train's).")] = None,
    val_fraction: Annotated[Optional[float], real_option(help="Share of the points held out for validation (default: train's).")] = None,
    batch_size: Annotated[Optional[int], whole_option(help="Mini-batch size: one range-test step per mini-batch (default: train's). Larger than the training set: full-batch, with a warning.")] = None,
    seed: Annotated[int, whole_option(help="Seed of the initialisation, the points and the shuffling, as in train.", min=0, max=MAX_SEED)] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Repeat the range test over several seeds (a count N or a list 3,7,11) and report each rule's median and its spread in decades. Overrides --seed.")] = None,
    dtype: Annotated[Optional[Dtype], typer.Option(parser=Dtype.parse, help="Floating-point precision (default: train's).")] = None,
    device: Annotated[Device, typer.Option(parser=Device.parse, help="Where to run: auto picks cuda when a GPU is present.")] = Device.auto,
    start_lr: Annotated[float, real_option(help="Rate of the first step of the sweep.")] = SWEEP.start_lr,
    end_lr: Annotated[float, real_option(help="Rate of the last step of the sweep.")] = SWEEP.end_lr,
    iters: Annotated[int, whole_option(help="Steps of the sweep, one mini-batch each.")] = SWEEP.iters,
    mode: Annotated[SweepMode, typer.Option(parser=SweepMode.parse, help="Spacing of the rates: exp (even in log lr) or linear.")] = SweepMode(SWEEP.mode),
    smooth: Annotated[float, real_option(help="Decay of the bias-corrected moving average of the loss, in [0, 1).")] = SWEEP.smooth,
    diverge: Annotated[float, real_option(help="Stop a seed once its smoothed loss exceeds this multiple of its best (or any loss is NaN/inf).")] = SWEEP.diverge,
    val: Annotated[bool, typer.Option("--val", help="Also record the full validation loss after every step.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Train real models at a grid of rates plus each rule's suggestion, all as one stacked fit, and report which rate is best and how far each suggestion lands from it.")] = False,
    verify_rates: Annotated[int, whole_option(help="Grid rates for --verify, half a decade apart, below the divergence point.", min=1)] = VERIFY.rates,
    verify_seeds: Annotated[int, whole_option(help="Seeds per rate for --verify (the range test's seeds, continued).", min=1)] = VERIFY.seeds,
    verify_epochs: Annotated[Optional[int], whole_option(help="Training length for --verify (default: train's --epochs).", min=1, max=MAX_EPOCHS)] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(parser=Schedule.parse, help="Learning-rate schedule of the --verify trainings (default: train's).")] = None,
    target: TargetOption = None,
    domain: DomainOption = None,
    data: DataOption = None,
    test_fraction: TestFractionOption = DEFAULTS.test_fraction,
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[Optional[Path], typer.Option(help="Directory for lr_find.csv, lr_find.json, lr_find.png and lr_verify.png (default: `RUNS_DIR/lr-find/<timestamp>`).", autocompletion=complete_path)] = None,
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
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit import targets
    from rungefit.training import lr_find as core
    from rungefit.training import train as training

    chosen = target_settings(ctx, target, domain, data, test_fraction)
    shape = {"layers": layers, "points": points, "val_fraction": val_fraction, "batch_size": batch_size, "epochs": verify_epochs, "schedule": schedule and schedule.value, "dtype": dtype and dtype.value}
    shape = {**{k: v for k, v in shape.items() if v is not None}, **chosen.fields}
    config = training.TrainConfig(seeds=parse_seeds(seed, seeds), device=training.resolve_device(device.value), **shape)
    config.validate()
    goal = targets.resolve(config, chosen.points)
    if not goal.has_function:  # the network and batch of `train --data`; the epochs stay --verify-epochs'
        given = {"epochs", "lr", *(name for name, value in (("layers", layers), ("batch_size", batch_size), ("schedule", schedule)) if value is not None)}
        config, _ = data_defaults(config, given)
    test = core.RangeTestConfig(start_lr=start_lr, end_lr=end_lr, iters=iters, mode=mode.value, smooth=smooth, diverge=diverge, val=val)
    test.validate()
    verify_config = core.VerifyConfig(rates=verify_rates, seeds=verify_seeds)
    verify_config.validate()  # with or without --verify: a value given is checked
    # Fail on an unusable directory now, not after the range test.
    store = RunStore(runs_dir)
    if out is None:
        store.check_lr_find()
    else:
        ensure_writable_dir(out, "--out")
    warn_if_full_batch(config)
    progress, on_epoch, _ = report.training_progress(config.epochs, quiet or json_output or not verify)
    with progress:
        findings = core.lr_find(config, goal, test, verify_config if verify else None, on_epoch)
    doc = {**findings.to_json(), "config": asdict(config)}
    path = _save_lr_find(doc, findings.test.csv(), store, out, goal.name)
    if json_output:
        report.print_json({**doc, "out": str(path)})
    else:
        report.render_lr_find(doc, str(path))


def _save_lr_find(doc: dict, csv_text: str, store, out: Optional[Path], target: str) -> Path:
    """Write lr-find's files, each atomically: into --out, or as a new RUNS_DIR/lr-find/<timestamp>.
    The figures' run is lr-find itself, its members the range test's seeds and --verify's trainings."""
    # Loaded when the command runs: --help and TAB completion import no torch or matplotlib.
    from rungefit.cli import figures as plots

    files = {
        "lr_find.csv": csv_text.encode(),
        "lr_find.json": json_bytes(doc),
        "lr_find.png": plots.lr_find_png(
            doc["range_test"]["members"], {rule: s["median"] for rule, s in doc["suggestions"].items()},
            title=plots.title("lr-find", target, plots.shown(range(len(doc["range_test"]["members"])))),
        ),
    }
    verification = doc["verification"]
    if verification:
        rates, seeds = len(verification["rates"]), len(verification["seeds"])
        trainings = f"{plots.shown(range(rates * seeds))}: {rates} rate{'s' * (rates > 1)} × {seeds} seed{'s' * (seeds > 1)}"
        files["lr_verify.png"] = plots.lr_verify_png(verification, title=plots.title("lr-find", target, trainings))
    if out is None:
        return store.save_lr_find(files)
    try:  # --out was checked before the range test; a write that fails now is said so here
        write_files(out, files)
    except OSError as error:
        raise RungefitError(f"--out {out}: cannot write there ({error.strerror}); choose another directory") from None
    return out
