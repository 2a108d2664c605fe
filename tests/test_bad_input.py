"""Bad input to every command: one line on stderr naming the option and what it expects, exit 2 for
a usage error and 1 for a runtime failure, never a traceback. Inputs that are odd but meaningful
(extrapolation, a batch larger than the training set) run with a warning.
"""

from __future__ import annotations

import enum
import typing
from typing import Optional

import pytest
import typer

from rungefit.cli.app import app

from .helpers import QUICK_TRAIN, runner


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A runs directory with a one-member run "base" (the latest), and a regular file to nest paths under."""
    root = tmp_path_factory.mktemp("bad-input")
    runs_dir = root / "runs"
    result = runner.invoke(app, ["train", *QUICK_TRAIN, "--runs-dir", str(runs_dir), "--name", "base"])
    assert result.exit_code == 0, result.output
    (root / "file").write_text("not a directory")
    for name, text in DATA_FILES.items():
        (root / name).write_text(text)
    return root


# --data files, each wrong in one way, written under the fixture's root.
DATA_FILES = {
    "empty.csv": "",
    "one.csv": "x\n1\n2\n",
    "text.csv": "x,y\n0,1\n1,one\n",
    "nan.csv": "0,1\n1,nan\n",
    "few.csv": "".join(f"{i},{i}\n" for i in range(9)),
    "flat.csv": "".join(f"{i / 100},2.5\n" for i in range(100)),
    "good.csv": "".join(f"{i / 100},{(i / 100) ** 2}\n" for i in range(100)),
}
# Typed formulas that must be refused without running anything.
HOSTILE = ["__import__('os').system('touch p')", "x.real", "x[0]", "(lambda: 1)()", "[x for x in (1,)]", "min(x, key=1)", "'x'", "9**9**9**9", "x" * 100_000]


def cheap(command: str, root) -> list[str]:
    """Options that keep a command fast and its files under root; a later option overrides them."""
    runs_dir = str(root / "runs")
    return {
        "train": ["--points", "120", "--epochs", "1", "--quiet", "--runs-dir", runs_dir],
        "lr-find": ["--points", "120", "--iters", "5", "--verify-epochs", "1", "--runs-dir", runs_dir],
        # The fixture's run, which learned (the trainings here learn nothing, and their runs would be the latest).
        "grad": ["--runs-dir", runs_dir, "--run", "base"],
        "eval": ["--runs-dir", runs_dir, "--run", "base"],
        "export": ["--format", "safetensors", "--out", str(root / "out.safetensors"), "--runs-dir", runs_dir, "--run", "base"],
        "predict": ["--runs-dir", runs_dir, "--run", "base", str(root / "file")],
    }[command]


UNDER_A_FILE = "{root}/file/sub"  # not creatable, even for root (tests run as root, so chmod would not do)
MISSING = "{root}/missing"

TRAIN = [
    (["--epochs", "x"], 2, "--epochs"),
    (["--epochs", "0"], 2, "--epochs"),
    (["--epochs", "-3"], 2, "--epochs"),
    (["--epochs", "99999999999"], 2, "--epochs"),
    (["--points", "nan"], 2, "--points"),
    (["--points", "0"], 2, "--points"),
    (["--points", "-5"], 2, "--points"),
    (["--points", "1"], 2, "--points"),
    (["--points", "99999999999999999999"], 2, "--points"),
    (["--batch-size", "0"], 2, "--batch-size"),
    (["--batch-size", "-1"], 2, "--batch-size"),
    (["--batch-size", "2.5"], 2, "--batch-size"),
    (["--val-fraction", "0"], 2, "--val-fraction"),
    (["--val-fraction", "1"], 2, "--val-fraction"),
    (["--val-fraction", "1.5"], 2, "--val-fraction"),
    (["--val-fraction", "-0.2"], 2, "--val-fraction"),
    (["--val-fraction", "nan"], 2, "--val-fraction"),
    (["--val-fraction", "inf"], 2, "--val-fraction"),
    (["--val-fraction", "half"], 2, "--val-fraction"),
    (["--lr", "nan"], 2, "--lr"),
    (["--lr", "inf"], 2, "--lr"),
    (["--lr", "-inf"], 2, "--lr"),
    (["--lr", "0"], 2, "--lr"),
    (["--lr", "-1"], 2, "--lr"),
    (["--lr", "fast"], 2, "--lr"),
    (["--layers", ""], 2, "--layers"),
    (["--layers", ","], 2, "--layers"),
    (["--layers", "20:tanh,"], 2, "--layers"),
    (["--layers", "20"], 2, "WIDTH:ACTIVATION"),
    (["--layers", "x:tanh"], 2, "width"),
    (["--layers", "0:tanh"], 2, "width"),
    (["--layers", "20:foo"], 2, "unknown activation 'foo'"),
    (["--layers", "20:"], 2, "unknown activation"),
    (["--seed", "-1"], 2, "--seed"),
    (["--seed", "x"], 2, "--seed"),
    (["--seed", "4294967296"], 2, "--seed"),
    (["--seeds", "0"], 2, "--seeds"),
    (["--seeds", "-1"], 2, "--seeds"),
    (["--seeds", "x"], 2, "--seeds"),
    (["--seeds", ""], 2, "--seeds"),
    (["--seeds", "1,1"], 2, "--seeds"),
    (["--seeds", "1,,2"], 2, "--seeds"),
    (["--seeds", "99999999999999999999"], 2, "--seeds"),
    (["--schedule", "steps"], 2, "--schedule"),
    (["--dtype", "float16"], 2, "--dtype"),
    (["--device", "tpu"], 2, "--device"),
    (["--workers", "-1"], 2, "--workers"),
    (["--workers", "257"], 2, "--workers"),
    (["--workers", "two"], 2, "--workers"),
    (["--runs-dir", UNDER_A_FILE], 1, "--runs-dir"),
    (["--runs-dir", "{root}/file"], 1, "--runs-dir"),
    (["--name", "../escape"], 2, "--name"),
    (["--name", ""], 2, "--name"),
    (["--name", "x" * 300], 2, "--name"),
    (["--name", "[/]"], 2, "--name '[/]'"),
    (["--name", "[red]x"], 2, "--name '[red]x'"),
    (["--lr", "[/]"], 2, "--lr '[/]'"),
    (["--seeds", "[/x]"], 2, "--seeds '[/x]'"),
    (["--layers", "[/]"], 2, "'[/]'"),
    (["--runs-dir", "{root}/file/[/]"], 1, "[/]"),
    (["--seeds", "１"], 2, "--seeds"),
    (["--seeds", "٣"], 2, "--seeds"),
    (["--seeds", "1_0"], 2, "--seeds"),
    (["--seeds", "1,２"], 2, "--seeds"),
    (["--lr", "1_0"], 2, "--lr"),
    (["--lr", "３e-2"], 2, "--lr"),
    (["--layers", "２０:tanh"], 2, "width"),
    (["--layers", "2_0:tanh"], 2, "width"),
    (["--batch-size", "99999999999999999999"], 2, "--batch-size"),
    (["--resume", "nope"], 2, "--resume"),  # the cheap options may not go with it
    (["--target", "nope"], 2, "unknown preset; choose one of runge, abs, step"),
    (["--target", "exp(-x**2"], 2, "syntax error at character"),
    (["--target", "y + 1"], 2, "unknown name 'y'; a formula may use"),
    (["--target", "bessel(x)"], 2, "unknown function 'bessel'"),
    (["--target", "log(x)"], 2, "not a real number (NaN) at x = -1"),
    (["--target", "1/x"], 2, "infinite at x = 0"),
    (["--target", "sqrt(x - 1)", "--domain", "0,2"], 2, "at x = 0"),
    (["--target", "0"], 2, "--target '0' on --domain [-1, 1] is constant (0): there is nothing to learn"),
    (["--target", "0*x + 3", "--domain", "0,2"], 2, "is constant (3)"),
    *((["--target", formula], 2, "--target") for formula in HOSTILE),
    (["--domain", "1,1"], 2, "--domain"),
    (["--domain", "2,1"], 2, "--domain"),
    (["--domain", "nan,1"], 2, "--domain"),
    (["--domain", "0,inf"], 2, "--domain"),
    (["--domain", "0"], 2, "--domain"),
    (["--data", MISSING], 2, "--data"),
    (["--data", "{root}/empty.csv"], 2, "is empty"),
    (["--data", "{root}/one.csv"], 2, "one column"),
    (["--data", "{root}/text.csv"], 2, "'one' is not a number"),
    (["--data", "{root}/nan.csv"], 2, "NaN or infinite"),
    (["--data", "{root}/few.csv"], 2, "at least 10"),
    (["--data", "{root}/flat.csv"], 2, "y is constant (2.5)"),
    (["--data", "{root}/good.csv", "--domain", "0,0.5"], 2, "outside --domain"),
    (["--data", "{root}/good.csv", "--points", "50"], 2, "--points"),
    (["--data", "{root}/good.csv", "--target", "abs"], 2, "exclude each other"),
    (["--data", "{root}/good.csv", "--test-fraction", "0"], 2, "--test-fraction"),
    (["--data", "{root}/good.csv", "--test-fraction", "1"], 2, "--test-fraction"),
    (["--test-fraction", "0.1"], 2, "--test-fraction applies only with --data"),
]

LR_FIND = [
    (["--points", "0"], 2, "--points"),
    (["--points", "nan"], 2, "--points"),
    (["--val-fraction", "1"], 2, "--val-fraction"),
    (["--batch-size", "0"], 2, "--batch-size"),
    (["--layers", ""], 2, "--layers"),
    (["--layers", "20:foo"], 2, "unknown activation"),
    (["--seeds", "0"], 2, "--seeds"),
    (["--seed", "-2"], 2, "--seed"),
    (["--device", "tpu"], 2, "--device"),
    (["--dtype", "int8"], 2, "--dtype"),
    (["--mode", "log"], 2, "--mode"),
    (["--schedule", "x"], 2, "--schedule"),
    (["--start-lr", "nan"], 2, "--start-lr"),
    (["--start-lr", "0"], 2, "--start-lr"),
    (["--start-lr", "-1"], 2, "--start-lr"),
    (["--start-lr", "inf"], 2, "--start-lr"),
    (["--end-lr", "inf"], 2, "--end-lr"),
    (["--end-lr", "nan"], 2, "--end-lr"),
    (["--end-lr", "1e-9"], 2, "--end-lr"),
    (["--iters", "1"], 2, "--iters"),
    (["--iters", "-1"], 2, "--iters"),
    (["--iters", "x"], 2, "--iters"),
    (["--iters", "99999999999"], 2, "--iters"),
    (["--smooth", "1"], 2, "--smooth"),
    (["--smooth", "-0.1"], 2, "--smooth"),
    (["--smooth", "nan"], 2, "--smooth"),
    (["--diverge", "1"], 2, "--diverge"),
    (["--diverge", "nan"], 2, "--diverge"),
    (["--diverge", "inf"], 2, "--diverge"),
    (["--verify-rates", "0"], 2, "--verify-rates"),
    (["--verify", "--verify-rates", "1000"], 2, "--verify-rates"),
    (["--verify-seeds", "0"], 2, "--verify-seeds"),
    (["--verify-epochs", "0"], 2, "--verify-epochs"),
    (["--runs-dir", UNDER_A_FILE], 1, "--runs-dir"),
    (["--out", UNDER_A_FILE], 1, "--out"),
    (["--target", "nope"], 2, "unknown preset"),
    (["--target", "x.real"], 2, "attribute access"),
    (["--target", "0"], 2, "is constant (0)"),
    (["--domain", "3,-3"], 2, "--domain"),
    (["--data", "{root}/text.csv"], 2, "'one' is not a number"),
    (["--data", "{root}/good.csv", "--points", "50"], 2, "--points"),
    (["--batch-size", "99999999999999999999"], 2, "--batch-size"),
    (["--seeds", "１"], 2, "--seeds"),
]

GRAD = [
    (["--x", "nan"], 2, "--x"),
    (["--x", "inf"], 2, "--x"),
    (["--x", "-inf"], 2, "--x"),
    (["--x", "zero"], 2, "--x"),
    (["--grid", "1"], 2, "--grid"),
    (["--grid", "0"], 2, "--grid"),
    (["--grid", "x"], 2, "--grid"),
    (["--grid", "99999999999"], 2, "--grid"),
    (["--member", "-1"], 2, "--member"),
    (["--member", "5"], 2, "--member"),
    (["--explain"], 2, "--explain"),
    (["--seed", "1"], 2, "--seed"),
    (["--untrained", "--layers", ""], 2, "--layers"),
    (["--untrained", "--layers", "20:foo"], 2, "unknown activation"),
    (["--untrained", "--seed", "-1"], 2, "--seed"),
    (["--target", "abs"], 2, "--target"),
    (["--untrained", "--target", "log(x)"], 2, "NaN"),
    (["--untrained", "--domain", "1,0"], 2, "--domain"),
    (["--run", "nope"], 1, "'nope' not found"),
    (["--runs-dir", UNDER_A_FILE], 1, "--runs-dir"),
    (["--runs-dir", MISSING], 1, "--runs-dir"),
    *[(["--run", name], 2, "--run") for name in ("../runs/base", "{root}/runs/base", "base/", "x" * 300, "[/]")],
]

EVAL = [
    (["--x", "nan"], 2, "--x"),
    (["--x", "-inf"], 2, "--x"),
    (["--x", "one"], 2, "--x"),
    (["--points", "1"], 2, "--points"),
    (["--points", "0"], 2, "--points"),
    (["--points", "-3"], 2, "--points"),
    (["--points", "x"], 2, "--points"),
    (["--points", "99999999999"], 2, "--points"),
    (["--member", "-1"], 2, "--member"),
    (["--member", "9"], 2, "--member"),
    (["--run", "nope"], 1, "'nope' not found"),
    (["--runs-dir", UNDER_A_FILE], 1, "--runs-dir"),
    (["--runs-dir", MISSING], 1, "--runs-dir"),
    (["--runs-dir", "{root}/[/]"], 1, "[/]"),
    *[(["--run", name], 2, "--run") for name in ("../runs/base", "{root}/runs/base", "base/", "x" * 300, "[/]")],
]

CASES = [(command, *case) for command, cases in (("train", TRAIN), ("lr-find", LR_FIND), ("grad", GRAD), ("eval", EVAL)) for case in cases]


def invoke(command: str, root, args: list[str]):
    options = cheap(command, root)
    if "--data" in args and "--points" in options:  # the data's points are the points
        at = options.index("--points")
        options = options[:at] + options[at + 2 :]
    if "--untrained" in args and "--run" in options:  # a new network, not the fixture's run
        at = options.index("--run")
        options = options[:at] + options[at + 2 :]
    return runner.invoke(app, [command, *options, *(arg.format(root=root) for arg in args)])


@pytest.mark.parametrize("command, args, code, text", CASES, ids=[f"{c[0]} {' '.join(c[1])[:60]}" for c in CASES])
def test_bad_input_gives_one_line_naming_the_option(place, command, args, code, text):
    before = runs_tree(place)
    result = invoke(command, place, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert runs_tree(place) == before, "a refused command left something in the runs directory"


def runs_tree(root) -> set[str]:
    """Every path under the runs directory, with the content of `latest`."""
    runs_dir = root / "runs"
    return {str(p.relative_to(runs_dir)) for p in runs_dir.rglob("*")} | {(runs_dir / "latest").read_text()}


@pytest.mark.parametrize(
    "command, args, code, warning",
    [
        ("grad", ["--x", "1.5", "--x", "-3"], 0, "extrapolation"),
        ("eval", ["--x", "-1.01"], 0, "extrapolation"),
        ("train", ["--batch-size", "1000"], 1, "full-batch"),  # one step learns nothing, and says so
        ("lr-find", ["--batch-size", "1000", "--out", "{root}/lf"], 0, "full-batch"),
    ],
)
def test_odd_but_meaningful_input_runs_with_a_warning(place, command, args, code, warning):
    result = invoke(command, place, args)
    assert result.exit_code == code, result.output
    assert "warning:" in result.stderr and warning in result.stderr


def test_a_batch_larger_than_the_training_set_is_one_full_batch_per_epoch(place):
    result = invoke("train", place, ["--batch-size", "1000", "--epochs", "3", "--json"])
    assert result.exit_code == 1, result.output  # three steps learn nothing
    assert '"steps": 3' in result.stdout


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_help_says_what_a_large_batch_does(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "full-batch" in result.stdout


def test_an_unexpected_exception_is_an_internal_error_not_bad_input(place, monkeypatch):
    from rungefit.study import evaluate as evaluate

    def broken(*args, **kwargs):
        raise ValueError("a bug deep in the core")

    monkeypatch.setattr(evaluate, "evaluate", broken)
    result = runner.invoke(app, ["eval", *cheap("eval", place)])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "RUNGEFIT_TRACEBACK=1" in lines[0], result.stderr
    assert "Traceback" not in result.output

    monkeypatch.setenv("RUNGEFIT_TRACEBACK", "1")
    shown = runner.invoke(app, ["eval", *cheap("eval", place)])
    assert shown.exit_code == 3 and "Traceback" in shown.stderr and "a bug deep in the core" in shown.stderr


@pytest.mark.parametrize("name", ["../runs/base", "{root}/runs/base", "..", "x" * 300, "[/]"])
def test_resume_takes_a_run_name_not_a_path(place, name):
    before = runs_tree(place)
    result = runner.invoke(app, ["train", "--resume", name.format(root=place), "--runs-dir", str(place / "runs")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "not a valid run name" in lines[0]
    assert runs_tree(place) == before


def test_an_unknown_command_with_markup_is_one_line_naming_it():
    result = runner.invoke(app, ["[/]"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[/]" in lines[0]


def integer_options() -> list[tuple[str, str]]:
    """(command, option) of every option that takes a whole number."""
    found = []
    for name, command in typer.main.get_command(app).commands.items():
        hints = typing.get_type_hints(command.callback)
        found += [(name, param.opts[0]) for param in command.params if hints.get(param.name) in (int, Optional[int])]
    return found


@pytest.mark.parametrize("command, option", integer_options())
def test_every_integer_option_refuses_a_huge_value_naming_the_option(place, command, option):
    before = runs_tree(place)
    result = invoke(command, place, [option, "99999999999999999999"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], result.stderr
    assert runs_tree(place) == before


# ---------------------------------------------------------------- a mistyped choice: the closest suggested

MISTYPED = [
    ("train", ["--schedule", "cosin"], 2, "cosine"),
    ("train", ["--dtype", "float23"], 2, "float32"),
    ("train", ["--device", "cpux"], 2, "cpu"),
    ("train", ["--polish", "LM"], 2, "lm"),
    ("train", ["--scale", "xyy"], 2, "xy"),
    ("train", ["--keep", "bestt"], 2, "best"),
    ("lr-find", ["--mode", "lienar"], 2, "linear"),
    ("lr-find", ["--schedule", "onecyle"], 2, "onecycle"),
    ("export", ["--format", "onxx"], 2, "onnx"),
    ("train", ["--target", "rung"], 2, "runge"),
    ("train", ["--target", "sinn(x) + 1"], 2, "sin"),
    ("train", ["--target", "x * pii"], 2, "pi"),
    ("train", ["--layers", "20:tanh,10:sigmod"], 2, "sigmoid"),
    ("grad", ["--untrained", "--layers", "8:rel"], 2, "relu"),
    ("eval", ["--run", "bsae"], 1, "base"),
    ("predict", ["--run", "baes"], 1, "base"),
]


@pytest.mark.parametrize("command, args, code, closest", MISTYPED, ids=[f"{c[0]} {' '.join(c[1])}" for c in MISTYPED])
def test_a_mistyped_choice_is_one_line_that_suggests_the_closest(place, command, args, code, closest):
    result = invoke(command, place, args)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f". Did you mean {closest!r}" in lines[0], result.stderr


def test_resume_suggests_the_closest_run_name(place):
    result = runner.invoke(app, ["train", "--resume", "bsae", "--runs-dir", str(place / "runs")])
    assert result.exit_code == 1 and result.stderr.strip().endswith("Did you mean 'base'?"), result.output


def test_the_completion_command_suggests_the_closest_shell():
    result = runner.invoke(app, ["completion", "zhs"])
    assert result.exit_code == 2 and result.stderr.strip().endswith("Did you mean 'zsh'?"), result.output


def choice_options() -> list[tuple[str, str, str]]:
    """(command, option, a value) of every option that takes one of a fixed set of values."""
    found = []
    for name, command in typer.main.get_command(app).commands.items():
        hints = typing.get_type_hints(command.callback)
        for param in command.params:
            kind = next((t for t in (hints.get(param.name), *typing.get_args(hints.get(param.name))) if isinstance(t, type) and issubclass(t, enum.Enum)), None)
            if kind is not None and param.opts[0].startswith("--"):
                found.append((name, param.opts[0], list(kind)[-1].value))
    return found


@pytest.mark.parametrize("command, option, value", choice_options())
def test_every_choice_option_suggests_the_value_a_typo_came_from(place, command, option, value):
    result = invoke(command, place, [option, value + value[-1]])  # a letter typed twice
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f". Did you mean {value!r}" in lines[0] and option in lines[0], result.stderr


def test_a_value_close_to_no_choice_gets_no_suggestion():
    from rungefit.errors import suggest

    assert suggest("'zzz' is not one of 'a', 'b'.", "zzz", ["a", "b"]) == "'zzz' is not one of 'a', 'b'."
    assert suggest("unknown 'LM'", "LM", ["none", "lm"]) == "unknown 'LM'. Did you mean 'lm'?"
