"""One rule for numbers wherever they are typed or read: ASCII digits, no underscores. Python's int()
and float() take other scripts' digits ('１', '٣', '𝟏') and underscores ('1_0'); every place that
reads a number is swept here with the same cases, and each must refuse them all (and take the
plain spelling, so that the refusal is the number's)."""

from __future__ import annotations

import json
import shutil
import typing

import pytest
import typer

from rungefit.cli.app import app
from rungefit.errors import RunError
from rungefit.rules import NUMBER_RULE, parse_number
from rungefit.runs import store as runs

from .helpers import runner

# Each is a number to int() or float() (checked below), and none is one by the rule.
SPELLED_OTHERWISE = ["１", "٣", "𝟏", "1_0", "１.５", "1_0e-2"]
PLAIN = "2"


def test_every_case_is_a_number_to_python_and_not_by_the_rule():
    for text in SPELLED_OTHERWISE:
        float(text)
        with pytest.raises(ValueError, match="ASCII digits"):
            parse_number(text)
    assert parse_number(" -1.5e3 ") == -1500.0 and parse_number("+7", whole=True) == 7


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) of every option whose value is a number, found from the commands' type
    hints, so that a new option is swept too."""
    numeric = (int, float, typing.Optional[int], typing.Optional[float], typing.Optional[list[float]])
    found = []
    for name, command in typer.main.get_command(app).commands.items():
        hints = typing.get_type_hints(command.callback)
        found += [(name, param.opts[0]) for param in command.params if hints.get(param.name) in numeric]
    return found


def test_the_sweep_finds_the_numeric_options_of_every_command():
    commands = {command for command, _ in numeric_options()}
    assert {"train", "lr-find", "grad", "eval", "export", "predict"} <= commands
    assert ("eval", "--x") in numeric_options() and ("train", "--val-fraction") in numeric_options()


def refused_for_the_rule(result) -> bool:
    """Exit 2 and one error line, which states the rule (a warning about the run may come first)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.exit_code == 2 and len(errors) == 1 and NUMBER_RULE in errors[0]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A runs directory holding a function run "f" (float64, one member) and a data file good.csv beside it."""
    from rungefit.config import TrainConfig
    from rungefit.runs import RunStore
    from rungefit.training.train import fit

    root = tmp_path_factory.mktemp("numbers")
    RunStore(root / "runs").save(fit(TrainConfig(layers="4:tanh", points=40, epochs=1, dtype="float64", workers=1)), name="f")
    return root / "runs"


@pytest.mark.parametrize("case", SPELLED_OTHERWISE)
@pytest.mark.parametrize("command, option", numeric_options())
def test_every_numeric_option_refuses_a_number_spelled_otherwise(command, option, case, runs_dir):
    result = runner.invoke(app, [command, option, case, "--runs-dir", str(runs_dir)])
    assert refused_for_the_rule(result), result.output
    assert option in result.stderr


# Text options that hold numbers: the case goes where {} stands.
TEXT_OPTIONS = [
    ["train", "--domain", "{},3"], ["train", "--domain", "0,{}"], ["train", "--lr", "{}e-2"], ["train", "--seeds", "{}"],
    ["train", "--seeds", "0,{}"], ["train", "--layers", "{}:tanh"], ["lr-find", "--domain", "0,{}"],
    ["grad", "--untrained", "--domain", "{},3"], ["train", "--target", "x*{}"],
]


@pytest.mark.parametrize("case", SPELLED_OTHERWISE)
@pytest.mark.parametrize("template", TEXT_OPTIONS, ids=" ".join)
def test_every_text_option_that_holds_numbers_refuses_a_number_spelled_otherwise(template, case, runs_dir):
    args = [part.replace("{}", case) for part in template]
    assert refused_for_the_rule(runner.invoke(app, [*args, "--runs-dir", str(runs_dir)])), args


# Options that keep each command short when the plain spelling lets it run.
SHORT = {"train": ["--epochs", "1", "--points", "20", "--quiet"], "lr-find": ["--points", "20", "--iters", "3"], "grad": ["--grid", "3"]}


@pytest.mark.parametrize("template", TEXT_OPTIONS, ids=" ".join)
def test_the_same_text_options_take_the_plain_spelling(template, tmp_path):
    args = [part.replace("{}", PLAIN) for part in template]
    result = runner.invoke(app, [*args, *SHORT[args[0]], "--runs-dir", str(tmp_path)])
    assert result.exit_code in (0, 1) and NUMBER_RULE not in result.stderr, result.output


def data_file(tmp_path, case: str, where: str):
    """A --data file with `case` as its first line's x (no header), or as a later line's y."""
    rows = [f"{i / 10},{(i / 10) ** 2}" for i in range(20)]
    if where == "first line":
        rows[0] = f"{case},1"
    else:
        rows = ["x,y", *rows[:10], f"0.55,{case}", *rows[10:]]
    path = tmp_path / "points.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("where", ["first line", "a later line"])
@pytest.mark.parametrize("case", [*SPELLED_OTHERWISE, PLAIN])
def test_a_data_cell_follows_the_rule(tmp_path, case, where):
    from rungefit.targets import read_points

    path = data_file(tmp_path, case, where)
    if case == PLAIN:
        assert len(read_points(path).x) == 21 - (where == "first line")
        return
    with pytest.raises(ValueError, match=NUMBER_RULE):
        read_points(path)


@pytest.mark.parametrize("case", [*SPELLED_OTHERWISE, PLAIN])
def test_predict_input_follows_the_rule(case, runs_dir):
    result = runner.invoke(app, ["predict", "--runs-dir", str(runs_dir), "--run", "f"], input=f"0.5\n{case}\n")
    if case == PLAIN:
        assert result.exit_code == 0 and result.stdout.splitlines()[-1].startswith("2.0,"), result.output
    else:
        assert refused_for_the_rule(result) and "line 2" in result.stderr, result.output


@pytest.mark.parametrize("case", [*SPELLED_OTHERWISE, "10"])
def test_a_json_field_follows_the_rule(tmp_path, case, runs_dir):
    """JSON's grammar is the rule: a run whose config.json spells a number otherwise is damaged."""
    shutil.copytree(runs_dir / "f", tmp_path / "f")
    config = tmp_path / "f" / "config.json"
    assert json.loads(config.read_text())["test_points"] == 100
    config.write_text(config.read_text().replace('"test_points": 100', f'"test_points": {case}0'))
    if case == "10":
        assert runs.load_run(tmp_path, "f").config.test_points == 100
        return
    with pytest.raises(RunError, match="config.json is damaged"):
        runs.load_run(tmp_path, "f")


@pytest.mark.parametrize(
    "formula, refusal",
    [("ｘ", "'ｘ': unknown preset"), ("sin(𝐱)", "unknown name '𝐱'"), ("x*𝐞", "unknown name '𝐞'"), ("ｓｉｎ(x)", "unknown name 'ｓｉｎ'"), ("𝐱**2 + pi", "unknown name '𝐱'")],
)
def test_a_lookalike_letter_in_a_formula_is_refused_as_other_unknown_names_are(formula, refusal, tmp_path):
    """Python's parser reads them as x, e and sin (it NFKC-normalises names); a formula is held to
    its text, and a lone name is a preset's (as `--target y` is)."""
    result = runner.invoke(app, ["train", "--target", formula, "--runs-dir", str(tmp_path)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and refusal in errors[0], result.output
