"""README.md stays true: the set-up commands, the command outputs it shows, and the help texts."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from rungefit.cli import app

from .snippets import FAST, README, SLOW, readme_snippets, run, words

TEXT = README.read_text()


def test_readme_opens_with_exactly_two_setup_commands():
    head = TEXT.split("\n## ", 2)[1]  # the section after the title
    blocks = re.findall(r"```\n(.*?)```", head, re.S)
    assert len(blocks) == 2 and all(len(block.strip().splitlines()) == 1 for block in blocks)
    install_and_train, install_and_test = (block.strip() for block in blocks)
    assert install_and_train.endswith("rungefit train")
    assert "[test]" in install_and_test and "pytest" in install_and_test


def test_every_snippet_command_is_known():
    assert set(readme_snippets(TEXT)) == set(FAST + SLOW)


def test_fast_snippets_are_current(tmp_path):
    shown = readme_snippets(TEXT)
    for command in FAST:
        fresh = run(command, tmp_path)
        assert words(fresh) == words(shown[command]), f"stale README output of `{command}`: run `python -m tests.snippets`"
        if command == FAST[0]:
            # The numbers themselves: the test MSE README shows, within a factor of 3 of this machine's.
            assert 1 / 3 < reported_test_mse(fresh) / reported_test_mse(shown[command]) < 3, "README's test MSE is stale: run `python -m tests.snippets`"


def reported_test_mse(output: str) -> float:
    return float(re.search(r"test MSE\s*│\s*(\S+)", output).group(1))


@pytest.mark.parametrize("command", SLOW)
def test_slow_snippet_commands_still_parse(command):
    click_app = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    name, *rest = args
    subcommand = click_app.get_command(None, name)
    subcommand.make_context(name, rest)  # raises on an unknown option or a bad value


COMMANDS = ["train", "lr-find", "grad", "eval", "export", "predict"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_that_ends_with_an_example(name):
    command = typer.main.get_command(app).get_command(None, name)
    assert command is not None
    help_text = (command.help or "").strip()
    assert len(help_text.splitlines()[0]) > 20
    assert help_text.splitlines()[-1].startswith("Example: rungefit " + name)
    for parameter in command.params:
        if parameter.name != "help":
            assert getattr(parameter, "help", None), f"{name} {parameter.name} has no help"
