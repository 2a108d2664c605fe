"""The Typer app: parse options → call the core → render → exit code.

torch, matplotlib and every module that imports them are imported inside the commands, so that
`rungefit --help` and TAB completion stay fast. Errors from the core become one line on stderr:
exit 2 for a bad option value (UsageError, click usage errors), 1 for a runtime failure
(RungefitError, running out of memory), 130 for Ctrl-C, 3 for anything else: a bug, reported as an
internal error in one line (the traceback with RUNGEFIT_TRACEBACK=1).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from rungefit.cli import study as cli_study
from rungefit.cli import train as cli_train
from rungefit.cli.options import SIGINT_EXIT, SIGTERM_EXIT, report
from rungefit.errors import RungefitError, UsageError
from rungefit.cli.phases import process_started


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a known exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        extra.setdefault("obj", {"started": time.perf_counter()})  # main() passes the process's start
        _bash_gets_rungefits_script(self)
        try:
            with _sigterm_raises():
                result = super().main(args=args, prog_name=prog_name or "rungefit", complete_var=complete_var, standalone_mode=False, **extra)
        except TyperException as error:
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            if message:  # empty when no_args_is_help has already printed the help
                report.error(message)
            code = getattr(error, "exit_code", 2)
        except typer.Abort:
            report.error("aborted")
            code = 1
        except KeyboardInterrupt:
            report.error("interrupted")
            code = SIGINT_EXIT
        except Terminated:
            report.error("terminated (SIGTERM)")
            code = SIGTERM_EXIT
        except RungefitError as error:
            report.error(str(error))
            code = 1
        except UsageError as error:
            report.error(str(error))
            code = 2
        except (MemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                code = _internal_error(error)
            else:
                report.error("out of memory; use fewer --points or --seeds, fewer --grid or --points to evaluate, or a smaller network")
                code = 1
        except Exception as error:  # noqa: BLE001 — a bug: one line, never disguised as bad input
            code = _internal_error(error)
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _bash_gets_rungefits_script(group) -> None:
    """Typer's --install-completion and --show-completion would give bash Typer's generic script,
    which completes file names after `20:`: bash gets completions.py's, other shells Typer's.
    (Should a Typer version name these options otherwise, they stay all Typer's.)"""
    for param in group.params:
        if param.name in ("install_completion", "show_completion") and not getattr(param.callback, "bash_is_ours", False):
            param.callback = _bash_is_ours(param.callback, install=param.name == "install_completion")


def _bash_is_ours(typers_callback, install: bool):
    def callback(ctx, param, value):
        if not value or ctx.resilient_parsing:
            return value
        from rungefit.cli import completion as completions

        shell = value if isinstance(value, str) else completions.detect_shell()
        if shell != "bash":
            return typers_callback(ctx, param, shell or value)  # the shell found here, not found again
        if install:
            path = completions.install_bash(Path.home())
            print(f"bash completion installed in {path}; it takes effect in a new terminal")
        else:
            sys.stdout.write(completions.completion_script("bash"))
        raise typer.Exit()

    callback.bash_is_ours = True
    return callback


class Terminated(BaseException):
    """SIGTERM arrived outside training, where it ends the command as Ctrl-C does (a BaseException,
    so that no `except Exception` takes it for an error)."""


@contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated, so that it unwinds like Ctrl-C: worker processes are closed,
    a reserved run name is given up, and the exit code is 143. Only the main thread may set
    signal handlers; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Set to 1 to see the traceback of an internal error.
TRACEBACK_VAR = "RUNGEFIT_TRACEBACK"


INTERNAL_ERROR_EXIT = 3


def _internal_error(error: BaseException) -> int:
    """A bug: one line saying so (the traceback with RUNGEFIT_TRACEBACK=1), exit 3."""
    if os.environ.get(TRACEBACK_VAR) == "1":
        traceback.print_exception(error)
    report.error(
        f"internal error ({type(error).__name__}: {error}); this is a bug in rungefit. "
        f"Run again with {TRACEBACK_VAR}=1 to see the traceback, and report it"
    )
    return INTERNAL_ERROR_EXIT


def _out_of_memory(error: BaseException) -> bool:
    """NumPy raises MemoryError; torch raises a RuntimeError (CPU) or its OutOfMemoryError subclass (CUDA)."""
    text = str(error)
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from rungefit._version import __version__

        print(f"rungefit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Fit a 1-D function with a small network (the Runge function f(x) = 1/(1+25x²) on [-1, 1]
    unless --target or --data says otherwise), and study its gradient, its learning rate and its fit.

    Example: rungefit train && rungefit eval && rungefit grad --x 0.3
    """


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Annotated[Shell, typer.Argument(help="The shell to print the completion script for.")]) -> None:
    """Print the TAB-completion script for SHELL: commands, options, choices, activation names inside
    --layers, presets and run names. bash needs no bash-completion package for it.

    Example: rungefit completion bash > ~/.local/share/bash-completion/completions/rungefit
    """
    from rungefit.cli.completion import completion_script

    sys.stdout.write(completion_script(shell.value))


# The commands, in the order --help lists them.
app.command()(cli_train.train)
app.command()(cli_study.grad)
app.command("eval")(cli_study.eval_run)
app.command("lr-find")(cli_train.lr_find_command)
app.command()(cli_study.export)
app.command()(cli_study.predict)
app.command()(completion)


def main() -> None:
    app(prog_name="rungefit", obj={"started": process_started()})
