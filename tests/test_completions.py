"""Shell completion: committed scripts are current, and completion answers the way a shell asks."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.main import get_command

from rungefit.cli import completion as completions
from rungefit.cli.app import app
from rungefit.cli.completion import FILES, completion_script, typers_script
from rungefit.errors import RungefitError

from .helpers import REPO, heavy_imports_after, runner

# The app as the shells meet it, through Typer's public route.
COMMAND = get_command(app)


@pytest.mark.parametrize("shell", sorted(FILES))
def test_committed_scripts_are_current(shell):
    committed = (REPO / "completions" / FILES[shell]).read_text()
    assert committed == completion_script(shell, COMMAND), "stale: run `python -m rungefit.cli.completion completions`"


def test_the_module_entry_writes_what_rungefit_completion_prints(tmp_path):
    written = completions.write_all(tmp_path / "out")
    assert sorted(path.name for path in written) == sorted(FILES.values())
    for shell, name in FILES.items():
        assert (tmp_path / "out" / name).read_text() == completion_script(shell, COMMAND), shell


def test_zsh_and_fish_get_the_script_typer_prints_when_a_shell_sources_it():
    for shell in ("zsh", "fish"):
        result = runner.invoke(app, [], env={"_RUNGEFIT_COMPLETE": f"source_{shell}"}, prog_name="rungefit")
        assert result.exit_code == 0, result.output
        assert completion_script(shell, COMMAND) == result.stdout.strip() + "\n"
    assert completion_script("zsh", COMMAND).startswith("#compdef rungefit\n")  # compinit reads the first line


def test_a_typer_that_does_not_print_its_script_is_one_line():
    class Deaf:
        """A command that answers source_zsh with its usage, as one that ignores the variable would."""

        def main(self, **kwargs):
            print("Usage: rungefit [OPTIONS] COMMAND [ARGS]...")

    with pytest.raises(RungefitError, match="^this Typer version does not print its zsh script; use completions/"):
        typers_script("zsh", Deaf())
    assert "_RUNGEFIT_COMPLETE" not in os.environ


# ---------------------------------------------------------------- --install-completion, --show-completion, completion --install


def test_help_lists_each_completion_option_once():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag in ("--install-completion", "--show-completion"):
        assert result.stdout.count(flag) == 1, flag
    assert sorted(complete("rungefit --")) == ["--help", "--install-completion", "--show-completion", "--version"]


@pytest.mark.parametrize("shell", sorted(FILES))
def test_show_completion_gives_each_shell_the_script_rungefit_completion_gives(shell, monkeypatch):
    monkeypatch.setattr(completions, "detect_shell", lambda: shell)
    result = runner.invoke(app, ["--show-completion"], prog_name="rungefit")
    assert result.exit_code == 0, result.output
    assert result.stdout == completion_script(shell, COMMAND)  # bash: ours, not Typer's generic one


def test_install_completion_in_bash_installs_rungefits_script_once_and_keeps_bashrc(tmp_path, monkeypatch):
    monkeypatch.setattr(completions, "detect_shell", lambda: "bash")
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "bashrc").write_text("alias ll='ls -l'")  # no final newline
    (tmp_path / ".bashrc").symlink_to(dotfiles / "bashrc")
    for _ in range(2):
        result = runner.invoke(app, ["--install-completion"], env={"HOME": str(tmp_path)})
        assert result.exit_code == 0, result.output
    script = tmp_path / ".bash_completions" / "rungefit.sh"
    assert f"bash completion installed in {script}" in result.stdout
    assert script.read_text() == completion_script("bash", COMMAND)
    assert (tmp_path / ".bashrc").is_symlink()
    assert (dotfiles / "bashrc").read_text() == f"alias ll='ls -l'\nsource '{script}'\n"


@pytest.mark.parametrize(
    "shell, where, rc",
    [
        ("zsh", ".zfunc/_rungefit", ".zshrc"),
        ("fish", ".config/fish/completions/rungefit.fish", None),
    ],
)
def test_completion_install_puts_the_script_where_the_shell_finds_it(shell, where, rc, tmp_path):
    for _ in range(2):
        result = runner.invoke(app, ["completion", shell, "--install"], env={"HOME": str(tmp_path)})
        assert result.exit_code == 0, result.output
    assert f"{shell} completion installed in {tmp_path / where}" in result.stdout
    assert (tmp_path / where).read_text() == completion_script(shell, COMMAND)
    if rc is not None:
        assert (tmp_path / rc).read_text() == "fpath+=~/.zfunc; autoload -Uz compinit; compinit\n"
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()) == sorted(filter(None, [where, rc]))


@pytest.mark.parametrize("found", ["tcsh", None])
def test_a_shell_rungefit_cannot_complete_in_is_one_line(found, tmp_path, monkeypatch):
    monkeypatch.setattr(completions, "detect_shell", lambda: found)
    for option in ("--install-completion", "--show-completion"):
        result = runner.invoke(app, [option], env={"HOME": str(tmp_path)})
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: cannot complete in the shell that runs rungefit (found ") and len(result.stderr.splitlines()) == 1
        assert "rungefit completion bash|zsh|fish" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_without_a_shell_in_the_process_tree_the_shell_is_shells(monkeypatch):
    import shellingham


    def no_shell():
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell)
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    assert completions.detect_shell() == "zsh"
    monkeypatch.delenv("SHELL")
    assert completions.detect_shell() is None


def test_an_install_that_cannot_write_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(completions, "detect_shell", lambda: "bash")
    (tmp_path / ".bash_completions").write_text("a file where the directory goes")
    result = runner.invoke(app, ["--install-completion"], env={"HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot install bash completion (") and len(result.stderr.splitlines()) == 1


def complete(words: str, cwd: Path | None = None) -> list[str]:
    """Candidates bash would get for the command line `words` (completing its last word): the app
    answering _RUNGEFIT_COMPLETE as the scripts call it, in this process (the interactive-bash
    test below runs the real thing)."""


    parts = words.split(" ")
    env = {"_RUNGEFIT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    previous = os.getcwd()
    try:
        os.chdir(cwd or previous)
        result = runner.invoke(app, [], env=env, prog_name="rungefit")
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_commands():
    assert "train" in complete("rungefit ")
    assert complete("rungefit tr") == ["train"]


def test_options():
    candidates = complete("rungefit train --s")
    assert {"--schedule", "--seed", "--seeds"} <= set(candidates)


@pytest.mark.parametrize(
    "option, values",
    [
        ("--device", ["auto", "cpu", "cuda"]),
        ("--dtype", ["float32", "float64"]),
        ("--schedule", ["constant", "cosine", "onecycle"]),
    ],
)
def test_choice_values(option, values):
    assert complete(f"rungefit train {option} ") == values


def test_activation_names_in_layers():
    assert complete("rungefit train --layers 20:tanh,10:s") == ["20:tanh,10:sigmoid", "20:tanh,10:silu", "20:tanh,10:softplus", "20:tanh,10:sin"]


def test_completing_never_imports_torch_or_matplotlib():
    stdout, heavy = heavy_imports_after(
        "import os\n"
        "os.environ.update(_RUNGEFIT_COMPLETE='complete_bash', COMP_WORDS='rungefit train --device ', COMP_CWORD='3')\n"
        "from rungefit.cli.app import main\n"
        "main()"
    )
    assert "cuda" in stdout
    assert heavy == ""


def test_activation_names_offered_are_the_model_table():
    from rungefit.config import ACTIVATION_NAMES
    from rungefit.net.model import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)


def fake_run(runs_dir: Path, name: str, status: str | None = None) -> None:
    """A directory that lists as a run: model.pt, and summary.json with `status` if given."""
    (runs_dir / name).mkdir(parents=True)
    (runs_dir / name / "model.pt").write_bytes(b"")
    if status is not None:
        (runs_dir / name / "summary.json").write_text(json.dumps({"status": status}))


def test_run_names_come_from_the_runs_directory(tmp_path):
    for name in ("alpha", "beta"):
        fake_run(tmp_path, name)
    (tmp_path / "not-a-run").mkdir()  # no model.pt
    for command in ("eval --run", "grad --run"):
        candidates = complete(f"rungefit {command.split()[0]} --runs-dir {tmp_path} {command.split()[1]} ")
        assert sorted(candidates) == ["alpha", "beta"], command
    assert complete(f"rungefit eval --runs-dir {tmp_path} --run al") == ["alpha"]


def test_resume_offers_only_the_interrupted_runs(tmp_path):
    fake_run(tmp_path, "done", "complete")
    fake_run(tmp_path, "diverged", "diverged")
    fake_run(tmp_path, "halted", "interrupted")
    fake_run(tmp_path, "stopped", "interrupted")
    fake_run(tmp_path, "no-summary")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "model.pt").write_bytes(b"")
    (tmp_path / "damaged" / "summary.json").write_text("[not json")
    assert sorted(complete(f"rungefit train --runs-dir {tmp_path} --resume ")) == ["halted", "stopped"]
    assert complete(f"rungefit train --runs-dir {tmp_path} --resume h") == ["halted"]


def test_a_width_alone_in_layers_is_offered_every_activation():
    from rungefit.config import ACTIVATION_NAMES

    assert complete("rungefit train --layers 20:tanh,16") == [f"20:tanh,16:{name}" for name in ACTIVATION_NAMES]
    assert complete("rungefit train --layers x") == []


def test_lr_find_mode_values():
    assert complete("rungefit lr-find --mode ") == ["exp", "linear"]


def test_zsh_and_fish_are_answered_in_the_form_their_scripts_read():
    def answer(shell: str, line: str, **env) -> str:
        env = {"_RUNGEFIT_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line, **env}
        result = runner.invoke(app, [], env=env, prog_name="rungefit")
        assert result.exit_code == 0, result.output
        return result.stdout

    assert answer("zsh", "rungefit train --device ") == """_arguments '*: :(("auto"\n"cpu"\n"cuda"))'\n"""  # what the zsh script evals
    assert answer("zsh", "rungefit train --layers 20:t") == r"""_arguments '*: :(("20\\:tanh"))'""" + "\n"
    assert answer("fish", "rungefit train --layers 20:t", _TYPER_COMPLETE_FISH_ACTION="get-args") == "20:tanh\n"


# ---------------------------------------------------------------- the bash script in bash

BASH_SCRIPT = REPO / "completions" / "rungefit.bash"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@pytest.fixture()
def shell_env(tmp_path):
    """An environment whose `rungefit` runs this checkout, with HOME and the history under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rungefit"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rungefit "$@"\n')
    wrapper.chmod(0o755)
    return {
        **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path), "HISTFILE": str(tmp_path / "history"), "TERM": "dumb", "PS1": "READY$ ",
    }


def bash_completion(words: list[str], line: str, env: dict, setup: str = "") -> list[str]:
    """COMPREPLY of the script's function for the words as bash splits them (COMP_WORDBREAKS
    holds ':'), the cursor at the end of `line`."""
    script = "\n".join([
        f"source {shlex.quote(str(BASH_SCRIPT))}",
        setup,
        f"COMP_WORDS=({' '.join(shlex.quote(word) for word in words)})",
        f"COMP_CWORD={len(words) - 1}",
        f"COMP_LINE={shlex.quote(line)}",
        "COMP_POINT=${#COMP_LINE}",
        "_rungefit_completion rungefit",
        "printf '%s\\n' \"${COMPREPLY[@]}\"",
    ])
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [candidate for candidate in result.stdout.split("\n") if candidate]


@needs_bash
@pytest.mark.parametrize(
    "words, candidates",
    [
        (["20", ":", "t"], ["tanh"]),
        (["20", ":"], ["tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "identity", "sin"]),
        (["20", ":", "tanh,10", ":", "s"], ["sigmoid", "silu", "softplus", "sin"]),
        (["20"], ["20:tanh", "20:sigmoid", "20:relu", "20:gelu", "20:silu", "20:softplus", "20:identity", "20:sin"]),
    ],
)
def test_the_bash_script_joins_the_words_bash_split_at_colons(shell_env, words, candidates):
    line = "rungefit train --layers " + "".join(words)
    assert bash_completion(["rungefit", "train", "--layers", *words], line, shell_env) == candidates


@needs_bash
def test_the_bash_script_leaves_words_alone_when_colons_do_not_split_them(shell_env):
    setup = "COMP_WORDBREAKS=${COMP_WORDBREAKS//:}"
    line = "rungefit train --layers 20:t"
    assert bash_completion(["rungefit", "train", "--layers", "20:t"], line, shell_env, setup) == ["20:tanh"]
    # Words apart stay apart: "20 :" is not "20:".
    assert bash_completion(["rungefit", "train", "--seed", "20", ":"], "rungefit train --seed 20 :", shell_env) == []


def test_the_bash_script_speaks_typers_protocol():
    typers = typers_script("bash", COMMAND)
    for part in ('COMP_WORDS="${COMP_WORDS[*]}"', "COMP_CWORD=$COMP_CWORD", "_RUNGEFIT_COMPLETE=complete_bash $1"):
        assert part in typers
    assert "_RUNGEFIT_COMPLETE=complete_bash $1" in BASH_SCRIPT.read_text()


class Terminal:
    """An interactive bash on a pseudo-terminal: type into it, wait for what it prints."""

    def __init__(self, env: dict, cwd: Path):
        # bash in a session of its own with the terminal's other end as its controlling terminal
        # (subprocess opens it as such in the child); the test process is never forked.
        self.fd, terminal = pty.openpty()
        self.bash = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"], stdin=terminal, stdout=terminal, stderr=terminal,
            cwd=cwd, env=env, start_new_session=True,
        )
        os.close(terminal)
        self.pid = self.bash.pid
        self.output = b""
        self.deadline = time.monotonic() + 120

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait_for(self, pattern: bytes) -> re.Match:
        """The first match of pattern in what bash printed since the last match."""
        while (match := re.search(pattern, self.output)) is None:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, self.deadline - time.monotonic()))
            assert ready, f"timed out waiting for {pattern!r}; bash printed {self.output!r}"
            self.output += os.read(self.fd, 1 << 16)
        self.output = self.output[match.end() :]
        return match

    def close(self) -> None:
        """Ask bash to exit and wait until it has (its pidfd turns readable), reading what it prints
        meanwhile so that it never blocks on a full terminal; killed at the deadline."""
        self.type("exit\n")
        exited = os.pidfd_open(self.pid)
        watched = [exited, self.fd]
        while (left := self.deadline - time.monotonic()) > 0:
            ready = select.select(watched, [], [], left)[0]
            if exited in ready:
                break
            if self.fd in ready:
                try:
                    os.read(self.fd, 1 << 16)
                except OSError:  # bash's side of the terminal closed as it exits: only the pidfd is left to wait on
                    watched = [exited]
        if not select.select([exited], [], [], 0)[0]:
            self.bash.kill()
        self.bash.wait()
        os.close(exited)
        os.close(self.fd)


@needs_bash
def test_tab_in_an_interactive_bash_completes_after_colons_and_offers_files_only_for_paths(tmp_path, shell_env):
    runs = tmp_path / "runs"
    fake_run(runs, "done", "complete")
    fake_run(runs, "halted", "interrupted")
    work = tmp_path / "work"
    work.mkdir()
    (work / "only-file").write_text("")  # what a fallback to file names would insert
    (work / "data-dir").mkdir()
    (work / "data-dir" / "points.csv").write_text("")
    cases = [
        ("rungefit train --layers 20:t\t", "rungefit train --layers 20:tanh"),
        ("rungefit train --layers 20:tanh,10:so\t", "rungefit train --layers 20:tanh,10:softplus"),
        ("rungefit train --layers 2\t", "rungefit train --layers 2:"),
        ("rungefit train --layers \t\t", "rungefit train --layers"),
        (f"rungefit train --runs-dir {runs} --resume \t", f"rungefit train --runs-dir {runs} --resume halted"),
        ("rungefit train --runs-dir on\t", "rungefit train --runs-dir only-file"),
        # Every value that is a path, whatever its type: --data (a str), FILE (a positional), --out.
        ("rungefit train --data on\t", "rungefit train --data only-file"),
        ("rungefit lr-find --data data-d\t", "rungefit lr-find --data data-dir/"),
        ("rungefit grad --untrained --data data-dir/p\t", "rungefit grad --untrained --data data-dir/points.csv"),
        ("rungefit predict on\t", "rungefit predict only-file"),
        ("rungefit predict --grad data-dir/\t", "rungefit predict --grad data-dir/points.csv"),
        ("rungefit export --format onnx --out on\t", "rungefit export --format onnx --out only-file"),
        ("rungefit lr-find --out data\t", "rungefit lr-find --out data-dir/"),
        ("rungefit predict only-file \t\t", "rungefit predict only-file"),  # no second FILE
    ]
    terminal = Terminal(shell_env, work)
    try:
        terminal.wait_for(rb"READY\$ ")
        terminal.type(f"source {shlex.quote(str(BASH_SCRIPT))}\n")
        for index, (typed, line) in enumerate(cases):
            terminal.wait_for(rb"READY\$ ")
            # After TAB, go to the start of the line and make it an echo: bash prints the line as completed.
            terminal.type(f"{typed}\x01echo @@$(({index}))@@ \n")
            shown = terminal.wait_for(rb"@@%d@@ ([^\r\n]*)\r?\n" % index).group(1).decode()
            assert shown == line, typed
    finally:
        terminal.close()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_command_prints_the_committed_script(shell):
    result = runner.invoke(app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert result.stdout == (REPO / "completions" / FILES[shell]).read_text()


def declared_paths() -> set[tuple[str, str]]:
    """(command, option or argument) of every parameter declared a path: typed pathlib.Path, or a
    str with Typer's path metadata (path_type, allow_dash)."""
    import inspect
    import typing

    from typer.models import ParameterInfo

    found = set()
    for name, command in COMMAND.commands.items():
        for param_name, hint in typing.get_type_hints(inspect.unwrap(command.callback), include_extras=True).items():
            info = next((i for i in getattr(hint, "__metadata__", ()) if isinstance(i, ParameterInfo)), None)
            if info is None:  # the context
                continue
            kinds = typing.get_args(typing.get_args(hint)[0]) or (typing.get_args(hint)[0],)
            if Path in kinds or info.path_type is not None or info.allow_dash:
                found.add((name, next(p for p in command.params if p.name == param_name).opts[0]))
    return found


def test_the_values_that_are_paths_are_the_ones_declared_so():
    assert declared_paths() == {
        *((command, "--runs-dir") for command in ("train", "grad", "eval", "lr-find", "export", "predict")),
        ("train", "--data"), ("lr-find", "--data"), ("grad", "--data"), ("lr-find", "--out"), ("export", "--out"), ("predict", "file"),
    }


def test_bash_is_told_to_complete_file_names_exactly_where_a_path_goes():
    from rungefit.cli.completion import FILE_NAMES

    for name, command in COMMAND.commands.items():
        for param in command.params:
            if param.opts[0].startswith("--") and not param.is_flag:
                line = f"rungefit {name} {param.opts[0]} x"
            elif not param.opts[0].startswith("-"):
                line = f"rungefit {name} x"
            else:
                continue
            is_path = (name, param.opts[0]) in declared_paths()
            assert (complete(line) == [f"x{FILE_NAMES}"]) == is_path, line


def test_zsh_and_fish_complete_file_names_for_a_path():
    zsh = runner.invoke(app, [], env={"_RUNGEFIT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "rungefit predict "}, prog_name="rungefit")
    assert zsh.stdout == "_files\n"
    # fish asks whether there are arguments to offer; "no" (exit 1) lets it offer file names.
    env = {"_RUNGEFIT_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "rungefit train --data ", "_TYPER_COMPLETE_FISH_ACTION": "is-args"}
    assert runner.invoke(app, [], env=env, prog_name="rungefit").exit_code == 1


def test_latest_is_offered_only_while_it_names_a_run(tmp_path):
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(b"")
    (tmp_path / "reserved").mkdir()  # a train --name in progress: not a run yet
    (tmp_path / "lr-find").mkdir()
    (tmp_path / "lr-find" / "model.pt").write_bytes(b"")
    (tmp_path / "latest").write_text("beta\n")
    assert sorted(complete(f"rungefit eval --runs-dir {tmp_path} --run ")) == ["alpha", "beta", "latest"]
    (tmp_path / "beta" / "model.pt").unlink()
    (tmp_path / "beta").rmdir()
    assert complete(f"rungefit eval --runs-dir {tmp_path} --run ") == ["alpha"]
