"""README.md and docs/ stay true: the set-up commands, the command outputs they show, their links,
README's size, and the help texts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from rungefit.cli.app import app

from .snippets import FAST, README, ROOT, SLOW, pages, prepare, run_here, shown_snippets, words

TEXT = README.read_text()


def test_readme_opens_with_exactly_two_setup_commands():
    head = TEXT.split("\n## ", 2)[1]  # the section after the title
    blocks = re.findall(r"```\n(.*?)```", head, re.S)
    assert len(blocks) == 2 and all(len(block.strip().splitlines()) == 1 for block in blocks)
    install_and_train, install_and_test = (block.strip() for block in blocks)
    assert install_and_train.endswith("rungefit train")
    assert "[test]" in install_and_test and "pytest" in install_and_test


def test_every_snippet_command_is_known_and_shown_exactly_once():
    assert sorted(command for command, _ in shown_snippets()) == sorted(FAST + SLOW)


def test_fast_snippets_are_current(tmp_path):
    shown = dict(shown_snippets())
    prepare(tmp_path)
    for command in FAST:
        fresh = run_here(command, tmp_path)
        assert words(fresh) == words(shown[command]), f"stale output of `{command}`: run `python -m tests.snippets`"
        if command == FAST[0]:
            # The numbers themselves: the test MSE the page shows, within a factor of 3 of this machine's.
            assert 1 / 3 < reported_test_mse(fresh) / reported_test_mse(shown[command]) < 3, "the test MSE shown is stale: run `python -m tests.snippets`"


def reported_test_mse(output: str) -> float:
    return float(re.search(r"test MSE\s*│\s*(\S+)", output).group(1))


def test_readme_is_a_front_door_of_at_most_15_kb():
    assert len(README.read_bytes()) <= 15_000, "README.md is over 15 KB: move the detail to a page under docs/"


# [text](target) or ![alt](target), outside code; a target may end in #anchor.
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *$", re.M)


def prose(page: Path) -> str:
    """The page without its code blocks, where a # line is no heading."""
    return CODE_BLOCK.sub("", page.read_text())


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    for match in LINK.finditer(INLINE_CODE.sub("", prose(page))):
        target = match["target"]
        if re.match(r"[a-z]+:", target):
            continue  # http(s)://, mailto:
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: link to a missing file: {target}"
        if fragment:
            anchors = {anchor(heading["title"]) for heading in HEADING.finditer(prose(linked))}
            assert fragment in anchors, f"{page.name}: link to a missing heading: {target}"


# `python path/to/script.py` or `python -m package.module`, for the scripts of this repository.
SCRIPT = re.compile(r"python (?:-m (?P<module>[\w.]+)|(?P<path>[\w/.-]+\.py))")


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_script_a_page_names_exists(page):
    for match in SCRIPT.finditer(page.read_text()):
        if match["path"]:
            assert (ROOT / match["path"]).is_file(), f"{page.name} names a missing script: {match['path']}"
        elif (ROOT / match["module"].split(".")[0]).is_dir():
            module = ROOT / match["module"].replace(".", "/")
            found = [module.with_suffix(".py"), module / "__main__.py"]
            assert any(path.is_file() for path in found), f"{page.name} names a missing module: {match['module']}"


@pytest.mark.parametrize("command", SLOW)
def test_slow_snippet_commands_still_parse(command):
    click_app = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    name, *rest = args
    subcommand = click_app.get_command(None, name)
    subcommand.make_context(name, rest)  # raises on an unknown option or a bad value


COMMANDS = sorted(typer.main.get_command(app).commands)  # every command, those added later too


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
