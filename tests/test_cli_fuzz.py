"""Random argument lists thrown at every command (hypothesis): never a traceback, always a known
exit code, and a failure is one `error:` line on stderr."""

from __future__ import annotations

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from rungefit.cli.app import app

from .helpers import QUICK_TRAIN, runner

KNOWN_EXIT_CODES = {0, 1, 2}
# Paths are never drawn: they are given under a temporary directory, so that nothing is written elsewhere.
PATH_OPTIONS = {"--runs-dir", "--out"}
# Small counts only, so that a drawn --epochs or --iters stays fast; the rest is meant to be refused.
VALUES = ["0", "1", "2", "3", "-1", "0.5", "-0.5", "1e-3", "2.5", "1e30", "1e400", "nan", "inf", "-inf", "", " ", ",", "x", "é", "auto", "20:tanh", "3:foo", "3:tanh,", "1,1", "0,2", "--"]


def option_names(command: str) -> list[str]:
    params = typer.main.get_command(app).commands[command].params
    return sorted({name for param in params for name in (*param.opts, *param.secondary_opts)} - PATH_OPTIONS) + ["--help", "--nope"]


def cheap(command: str, root) -> list[str]:
    """Options that keep a run fast; drawn options come after and override them."""
    runs_dir = str(root / "runs")
    return {
        "train": ["--points", "60", "--epochs", "1", "--quiet", "--runs-dir", runs_dir],
        "lr-find": ["--points", "60", "--iters", "5", "--verify-epochs", "1", "--verify-rates", "1", "--verify-seeds", "1", "--runs-dir", runs_dir, "--out", str(root / "lr")],
        "grad": ["--grid", "5", "--runs-dir", runs_dir],
        "eval": ["--runs-dir", runs_dir],
        "predict": ["--runs-dir", runs_dir],
    }[command]


def argument_lists(command: str):
    """Mostly OPTION VALUE pairs, with some lone options and values between them."""
    options, values = st.sampled_from(option_names(command)), st.sampled_from(VALUES)
    pieces = st.one_of(st.tuples(options, values).map(list), options.map(lambda o: [o]), values.map(lambda v: [v]))
    return st.lists(pieces, max_size=4).map(lambda chunks: [token for chunk in chunks for token in chunk])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A temporary directory whose runs directory holds a run for grad and eval to read."""
    path = tmp_path_factory.mktemp("fuzz")
    result = runner.invoke(app, ["train", *cheap("train", path), *QUICK_TRAIN, "--name", "base"])
    assert result.exit_code == 0, result.output
    return path


def check(command: str, root, args: list[str]) -> None:
    result = runner.invoke(app, [command, *cheap(command, root), *args], input="-0.5\n0.25\n")  # x values for predict
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{args}: {result.exception!r}"
    assert "Traceback" not in result.output
    assert result.exit_code in KNOWN_EXIT_CODES, (args, result.exit_code)
    if result.exit_code != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (args, result.stderr)


@pytest.mark.parametrize("command", ["train", "lr-find", "grad", "eval", "predict"])
def test_random_arguments_never_crash(root, command):
    @settings(max_examples=12, deadline=None, database=None)
    @given(args=argument_lists(command))
    def property_holds(args):
        check(command, root, args)

    property_holds()
