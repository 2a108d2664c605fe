"""TrainConfig, the layer spec, and every default and limit: torch-free, so cli/ imports it directly.

Checkpoints store asdict(TrainConfig) in config.json and rebuild the config from it; validate()
names each bad setting by the CLI option that sets it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from rungefit.errors import UsageError, suggest
from rungefit.rules import (
    NUMBER_RULE,
    Rule,
    described,
    fraction,
    is_real,
    one_of,
    pair_of,
    parse_number,
    positive,
    text_of,
    whole_in,
)

DEFAULT_LAYERS = "20:tanh,10:sigmoid,20:tanh,10:sigmoid"
# The activations a --layers spec may name; model.ACTIVATIONS implements exactly these.
ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "identity", "sin")
# A first hidden layer of sin starts with its weights and biases this many times PyTorch's default:
# frequencies up to 10 radians per unit of the standardized x, so that a periodic signal with many
# cycles is within reach from the start (SIREN's idea, Sitzmann et al. 2020; bench_data.py scores
# the sine network beside the tanh one).
SINE_FIRST_SCALE = 10.0
SCHEDULES = ("constant", "cosine", "onecycle")
DTYPE_NAMES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
POLISHES = ("none", "lm")
MODES = ("exp", "linear")  # spacing of lr-find's sweep
# --scale: which of x and y the network sees in standard coordinates (targets/maps.py). auto: x
# always; y for data, and for a function whose values are far from unit size.
SCALES = ("auto", "xy", "x", "none")
# --keep: which weights a run keeps: auto (best for data, last for a function), best (each
# member's epoch of lowest validation MSE), last (the last epoch's).
KEEPS = ("auto", "best", "last")
EXPORT_FORMATS = ("pt2", "onnx", "safetensors")  # rungefit export --format
PLOT_POINTS = 401  # the points each curve of a figure is drawn through

# Upper bounds that turn absurd sizes into a clear error instead of an allocation failure.
MAX_WIDTH = 4096
MAX_POINTS = 10_000_000  # per member
MAX_MEMBERS = 100_000
MAX_STEPS = 100_000_000  # optimizer steps of one run: the schedule holds one float64 per step
MAX_EPOCHS = MAX_STEPS  # every epoch takes at least one optimizer step
MAX_TEST_POINTS = 1_000_000
MAX_GRID = 1_000_000  # points of grad --grid and eval --points
# rng.py keys on the low 32 bits of a seed, so a larger seed would silently repeat a smaller one.
MAX_SEED = 2**32 - 1
MAX_POLISH_ITERATIONS = 10_000
MAX_WORKERS = 256
MAX_ITERS = 1_000_000  # steps of one sweep; the rates are an array of this length
MAX_VERIFY = 100  # most rates, and most seeds per rate, of --verify
# Automatic worker processes give each at least this many members: smaller shares gain too
# little over one process to pay for a process each (see docs/speed.md).
MIN_MEMBERS_PER_WORKER = 4

# Bounds on a target (target.py): a formula is parsed, checked and evaluated in work proportional
# to these, whoever wrote it (a user, or a config.json from someone else's run).
MAX_FORMULA_CHARS = 1000
MAX_FORMULA_NODES = 500  # syntax-tree nodes
MAX_FORMULA_DEPTH = 100  # nesting of the syntax tree; the evaluator recurses this deep
MAX_DOMAIN = 1e6  # largest |A|, |B| of --domain
MAX_LAYERS_CHARS = 10_000  # of a --layers spec
MAX_DATA_NAME_CHARS = 4096  # of a --data file's name, as a run records it
DATA_FILE = "data.csv"  # a data run's copy of its points, in the run directory
MAX_DATA_BYTES = 64 * 2**20  # size of a --data file
# A --data column's values and spread: its mean and variance must stay finite and non-zero in
# float64 (squares of 1e150 and their sum over any file that fits MAX_DATA_BYTES stay below 1.8e308).
# Data are held to these, not to MAX_DOMAIN: calendar years and x in Hz are ordinary measurements.
MAX_DATA_VALUE = 1e150
MIN_DATA_SPREAD = 1e-150  # the smallest standard deviation of a varying column
MIN_DATA_POINTS = 10  # the smallest --data set: a training, a validation and a test share
# f is checked for NaN/inf on this many equally spaced points of the domain (its ends included,
# and 0 when inside), besides the training points.
CHECK_POINTS = 10_001


@dataclass(frozen=True)
class Preset:
    """A named target: a formula in target.py's language, and what a user and a plot call it."""

    formula: str
    about: str  # for --help
    label: str  # f in a plot's legend
    derivative_label: str  # f' in a plot's legend
    kinks: tuple[float, ...] = ()  # where f is not differentiable


# Approximation theory's classic cases: smooth but hard for equispaced interpolation, a kink, a
# jump, smooth and easy, oscillating. Written as x*x rather than x**2 so that the default target
# computes exactly what the Runge function always has.
PRESETS = {
    "runge": Preset("1/(1+25*x*x)", "1/(1+25x²), the Runge function", "f(x) = 1/(1+25x²)", "f'(x) = −50x/(1+25x²)²"),
    "abs": Preset("abs(x)", "|x|, a kink at 0", "f(x) = |x|", "f'(x) = sign(x)", (0.0,)),
    "step": Preset("step(x)", "0 for x < 0 and 1 for x ≥ 0, a jump at 0", "f(x) = step(x)", "f'(x) = 0 (x ≠ 0)", (0.0,)),
    "sine": Preset("sin(pi*x)", "sin(πx), smooth and easy", "f(x) = sin(πx)", "f'(x) = π cos(πx)"),
    "wave": Preset("sin(8*x)", "sin(8x), oscillating", "f(x) = sin(8x)", "f'(x) = 8 cos(8x)"),
}
# The functions a formula may call; target.py implements exactly these. step(v) is 0 for v < 0, 1 for v ≥ 0.
FORMULA_FUNCTIONS = ("abs", "sqrt", "exp", "log", "sin", "cos", "tan", "tanh", "arctan", "sinh", "cosh", "sign", "step", "min", "max")
DEFAULT_TARGET = "runge"
DEFAULT_DOMAIN = (-1.0, 1.0)


@dataclass(frozen=True)
class Layer:
    """One hidden layer: its width and the name of its activation."""

    width: int
    activation: str


def parse_layers(spec: str) -> tuple[Layer, ...]:
    """Parse "20:tanh,10:sigmoid" into hidden layers; UsageError saying what is wrong."""
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise UsageError(
            f"--layers {spec!r} has an empty entry; expected WIDTH:ACTIVATION items separated by "
            f"commas, e.g. {DEFAULT_LAYERS!r}"
        )
    return tuple(_parse_layer(item) for item in items)


def _parse_layer(item: str) -> Layer:
    width_text, sep, name = item.partition(":")
    if not sep:
        raise UsageError(f"layer {item!r} is not WIDTH:ACTIVATION, e.g. '20:tanh'")
    name = name.strip().lower()
    if name not in ACTIVATION_NAMES:
        raise UsageError(suggest(f"unknown activation {name!r} in layer {item!r}; choose one of {', '.join(ACTIVATION_NAMES)}", name, ACTIVATION_NAMES))
    try:
        width = parse_number(width_text, whole=True)
    except ValueError:
        raise UsageError(f"layer {item!r}: width {width_text.strip()!r} is not a whole number ({NUMBER_RULE})") from None
    if not 1 <= width <= MAX_WIDTH:
        raise UsageError(f"layer {item!r}: width must be between 1 and {MAX_WIDTH}, got {width}")
    return Layer(width, name)


def format_layers(layers: tuple[Layer, ...]) -> str:
    """The inverse of parse_layers."""
    return ",".join(f"{layer.width}:{layer.activation}" for layer in layers)


def layer_shapes(layers: tuple[Layer, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every affine map, input layer to output layer."""
    widths = [1, *(layer.width for layer in layers), 1]
    return list(zip(widths[:-1], widths[1:], strict=True))


def parameter_count(layers: tuple[Layer, ...]) -> int:
    """Number of parameters of one member."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in layer_shapes(layers))


def validation_size(points: int, val_fraction: float) -> int:
    """How many of `points` are held out; both parts must keep at least one point."""
    TRAIN_RULES["val_fraction"].check("val_fraction", val_fraction)
    n_val = round(points * val_fraction)
    if n_val < 1 or n_val >= points:
        raise UsageError(
            f"{points} points with val_fraction {val_fraction} leave an empty training or validation set; use more points"
        )
    return n_val


# ---------------------------------------------------------------- what each setting must be


def _seeds(value: Any) -> bool:
    return isinstance(value, tuple) and 1 <= len(value) <= MAX_MEMBERS and all(type(s) is int and 0 <= s <= MAX_SEED for s in value)


SHA256 = re.compile(r"[0-9a-f]{64}")

# Every field of TrainConfig and its rule (tests check that none is missing). Whether a target
# parses, a domain is ordered and data match their SHA-256 is targets.resolve's to check.
TRAIN_RULES: dict[str, Rule] = {
    "layers": text_of(f"a layer spec such as {DEFAULT_LAYERS!r}", MAX_LAYERS_CHARS, "--layers"),
    "points": whole_in(2, MAX_POINTS, "--points"),
    "val_fraction": fraction("--val-fraction"),
    "batch_size": whole_in(1, MAX_POINTS, "--batch-size"),
    "epochs": whole_in(1, MAX_EPOCHS, "--epochs"),
    "lr": positive("--lr"),
    "schedule": one_of(SCHEDULES, "--schedule"),
    "seeds": Rule(f"1…{MAX_MEMBERS} whole numbers in 0…{MAX_SEED}", _seeds, "--seeds"),
    "dtype": one_of(DTYPE_NAMES, "--dtype"),
    "device": one_of(("cpu", "cuda"), "--device"),
    "test_points": whole_in(2, MAX_TEST_POINTS),
    "betas": Rule("Adam's two moment decay rates, each in [0, 1)", lambda v: pair_of(v, lambda b: is_real(b) and 0 <= b < 1)),
    "eps": positive(),
    "polish": one_of(POLISHES, "--polish"),
    "polish_iterations": whole_in(0, MAX_POLISH_ITERATIONS, "--polish-iterations"),
    "workers": whole_in(0, MAX_WORKERS, "--workers"),
    "target": text_of("a preset name or a formula in x", MAX_FORMULA_CHARS, "--target"),
    "domain": Rule("two finite numbers A, B", lambda v: pair_of(v, is_real), "--domain"),
    "data": text_of("a file name", MAX_DATA_NAME_CHARS, "--data"),
    "data_sha256": Rule("'' or a SHA-256 in 64 lowercase hexadecimal digits", lambda v: v == "" or (isinstance(v, str) and SHA256.fullmatch(v) is not None)),
    "test_fraction": fraction("--test-fraction"),
    "scale": one_of(SCALES, "--scale"),
    "keep": one_of(KEEPS, "--keep"),
    "patience": whole_in(0, MAX_EPOCHS, "--patience"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; `rungefit train`'s options map onto these fields."""

    layers: str = DEFAULT_LAYERS  # hidden layers, "WIDTH:ACTIVATION,…"; the output is linear
    points: int = 4000  # training points per member, validation included (more points = more steps)
    val_fraction: float = 0.3  # share of the points held out for validation
    batch_size: int = 39  # mini-batch size (the last batch of an epoch may be smaller)
    epochs: int = 300  # passes over the training set
    lr: float = 3e-2  # peak Adam learning rate
    schedule: str = "cosine"  # constant | cosine | onecycle, applied per optimizer step
    seeds: tuple[int, ...] = (0,)  # one member per seed: init, data and shuffling
    dtype: str = "float32"  # float32 | float64
    device: str = "cpu"  # cpu | cuda (resolved, never "auto")
    test_points: int = 100  # size of the equally spaced test grid
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's denominator guard
    polish: str = "none"  # none | lm: Levenberg-Marquardt refinement on the training set after Adam
    polish_iterations: int = 30  # LM iterations per member (each solves one P × P system)
    workers: int = 0  # CPU processes sharing the members; 0: one per core, ≥ MIN_MEMBERS_PER_WORKER members each
    target: str = DEFAULT_TARGET  # a PRESETS name, or a formula in x as typed; ignored with data ("" from the CLI)
    domain: tuple[float, float] = DEFAULT_DOMAIN  # the interval of the training points, test grid, baselines and plots
    data: str = ""  # with --data: the points file as it was named; the run keeps a copy (DATA_FILE)
    data_sha256: str = ""  # with --data: the file's SHA-256, which its copy must match
    test_fraction: float = 0.2  # with --data: share of the points held out as the test set, the same for every member
    scale: str = "auto"  # auto | xy | x | none: the maps into the network's standard coordinates (targets/maps.py)
    keep: str = "auto"  # auto | best | last: which weights the run keeps (auto: best for data, last for a function)
    patience: int = 0  # epochs without a better validation MSE (and half those to the best) after which a member stops; 0: never

    def __post_init__(self) -> None:
        for name in ("seeds", "betas", "domain"):  # given as a list (a JSON array, a Python list), kept as a tuple
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def check(self, *names: str) -> None:
        """UsageError unless each named field follows its TRAIN_RULES entry."""
        for name in names:
            TRAIN_RULES[name].check(name, getattr(self, name))

    def validate(self, member_lrs: list[float] | None = None) -> None:
        """UsageError naming the first setting that cannot work, by its field and its CLI option:
        each field's TRAIN_RULES entry, then what the fields must be together. Members are distinct
        (seed, rate) pairs: member_lrs, when the members have rates of their own (lr-find's
        verification repeats each seed at every rate), else config.lr for all."""
        self.check(*TRAIN_RULES)
        self.hidden_layers  # noqa: B018 — parsed here, so that a bad spec is refused before any other use
        pairs = set(zip(self.seeds, [self.lr] * len(self.seeds) if member_lrs is None else member_lrs, strict=True))
        require([
            (len(pairs) == len(self.seeds), f"--seeds (seeds) must be distinct: a repeated seed trains the same network twice, got {described(self.seeds)}"),
            (self.workers <= 1 or self.device == "cpu", "--workers splits CPU training into processes; use --workers 0 or 1 with --device cuda"),
        ])
        validation_size(self.points, self.val_fraction)
        require([
            (
                self.total_steps <= MAX_STEPS,
                f"--epochs {self.epochs} × {self.steps_per_epoch} steps per epoch is more than {MAX_STEPS:.0e} "
                "optimizer steps; use fewer --epochs or a larger --batch-size",
            )
        ])

    @functools.cached_property
    def hidden_layers(self) -> tuple[Layer, ...]:
        """The --layers spec parsed, once per config (a UsageError if it is not one)."""
        return parse_layers(self.layers)

    @property
    def n_val(self) -> int:
        return validation_size(self.points, self.val_fraction)

    @property
    def n_train(self) -> int:
        return self.points - self.n_val

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


# A data run's defaults, where its options are not given (tests/benchmarks/bench_data.py measures
# them against standard smoothers): a wider network than the reference's at a lower, constant rate,
# on the whole training set up to FULL_BATCH_POINTS points and on as few batches of about that size
# beyond, until each member's validation MSE has stopped improving (DATA_PATIENCE_STEPS, see
# Best.stopped) or DATA_STEPS optimizer steps: a small set then converges instead of stopping after a
# few hundred mini-batches, an easy one stops early, and a large one costs no more steps than a small one.
DATA_LAYERS = "64:tanh,64:tanh"
# Where neither --layers nor --epochs is given, a data run trains each of these on PROBE_SEEDS and
# keeps the one of lower validation MSE (training/choose.py): the sine network fits signals of many
# cycles that the tanh network cannot reach in the steps it takes, and loses on smooth ones.
DATA_NETWORKS = (DATA_LAYERS, "64:sin,64:tanh")
PROBE_SEEDS = (0,)  # whatever --seeds says: member k of a stack still equals the single run with seed k
CHOICE_SKIPPED_BY = ("layers", "epochs")  # a network, or a training length, given: no choice


def chooses_network(given: Collection[str]) -> bool:
    """Whether a data run with the options `given` chooses its network among DATA_NETWORKS."""
    return not set(CHOICE_SKIPPED_BY) & set(given)

DATA_LR = 1e-2
DATA_SCHEDULE = "constant"  # a member may stop at any step: no schedule tied to the last one
DATA_STEPS = 8000
DATA_PATIENCE_STEPS = 1000
FULL_BATCH_POINTS = 1024
# The options a data run chooses where they are not given; an explicit --epochs runs that many (no patience).
DATA_CHOSEN = ("layers", "lr", "schedule", "batch_size", "epochs", "patience")


@dataclass(frozen=True)
class DataPlan:
    """How a data run trains where its options are not given: batch size, epochs and patience."""

    batch_size: int
    epochs: int
    patience: int


def data_plan(n_train: int, given: dict) -> DataPlan:
    """The plan of a data run with n_train training points; an option in `given` (name → value) is kept."""
    batch = given.get("batch_size") or (n_train if n_train <= FULL_BATCH_POINTS else math.ceil(n_train / math.ceil(n_train / FULL_BATCH_POINTS)))
    steps_per_epoch = math.ceil(n_train / batch)
    default_patience = 0 if "epochs" in given else math.ceil(DATA_PATIENCE_STEPS / steps_per_epoch)
    return DataPlan(batch, given.get("epochs") or max(1, math.ceil(DATA_STEPS / steps_per_epoch)), given.get("patience", default_patience))


def data_defaults(config: TrainConfig, given: Collection[str]) -> tuple[TrainConfig, str]:
    """A data run's config: the data defaults for the options of DATA_CHOSEN not in `given`, and a
    sentence saying what runs and why (summary.json's steps_why). The one definition used by
    `train --data`, `lr-find --data` and the Python API's data_config."""
    kept = {name: getattr(config, name) for name in DATA_CHOSEN if name in given}
    plan = data_plan(config.n_train, kept)
    config = replace(
        config, layers=kept.get("layers", DATA_LAYERS), lr=kept.get("lr", DATA_LR), schedule=kept.get("schedule", DATA_SCHEDULE),
        batch_size=plan.batch_size, epochs=plan.epochs, patience=plan.patience,
    )
    config.validate()
    batches = "the whole training set" if config.batch_size >= config.n_train else f"batches of {config.batch_size}"
    steps = f"{config.total_steps} optimizer steps"
    if config.patience:
        steps = (
            f"up to {steps}, each member stopping once its validation MSE has not improved for "
            f"{config.patience * config.steps_per_epoch} steps and for half the steps to its best,"
        )
    why = (
        f"{steps} at {config.schedule} lr {config.lr:g} on {batches} of {config.n_train} "
        "training points: a data run's defaults, so that a small set trains until it converges "
        "(--lr, --schedule, --epochs, --patience and --batch-size set them)"
    )
    return config, why


def require(checks: list[tuple[bool, str]]) -> None:
    """UsageError with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


@dataclass(frozen=True)
class RangeTestConfig:
    start_lr: float = 1e-7  # rate of the first step
    end_lr: float = 10.0  # rate of the last step
    iters: int = 100  # steps of the sweep (mini-batches, cycling through epochs)
    mode: str = "exp"  # exp | linear spacing of the rates
    smooth: float = 0.98  # decay of the bias-corrected exponential moving average of the loss
    diverge: float = 4.0  # stop once the smoothed loss exceeds this multiple of its best
    val: bool = False  # also record the full validation loss after every step

    def validate(self) -> None:
        """UsageError naming the first setting that cannot work."""
        require([
            (math.isfinite(self.start_lr) and self.start_lr > 0, f"--start-lr must be a positive finite number, got {self.start_lr}"),
            (math.isfinite(self.end_lr) and self.end_lr > self.start_lr, f"--end-lr must be finite and above --start-lr {self.start_lr:g}, got {self.end_lr}"),
            (2 <= self.iters <= MAX_ITERS, f"--iters must be between 2 and {MAX_ITERS}, got {self.iters}"),
            (self.mode in MODES, suggest(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}", self.mode, MODES)),
            (0 <= self.smooth < 1, f"--smooth must lie in [0, 1), got {self.smooth}"),
            (math.isfinite(self.diverge) and self.diverge > 1, f"--diverge must be a finite number above 1, got {self.diverge}"),
        ])


@dataclass(frozen=True)
class VerifyConfig:
    rates: int = 9  # grid rates, half a decade apart, below the divergence point
    seeds: int = 3  # seeds per rate; each trains for the TrainConfig's epochs

    def validate(self) -> None:
        # The bounds keep the stacked verification (rates + rules) × seeds members to a size that fits in memory.
        require([
            (1 <= self.rates <= MAX_VERIFY, f"--verify-rates must be between 1 and {MAX_VERIFY}, got {self.rates}"),
            (1 <= self.seeds <= MAX_VERIFY, f"--verify-seeds must be between 1 and {MAX_VERIFY}, got {self.seeds}"),
        ])
