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
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from rungefit._version import __version__
from rungefit.cli import STARTED
from rungefit.cli import completion as completions
from rungefit.cli import study as cli_study
from rungefit.cli import train as cli_train
from rungefit.cli.options import SIGINT_EXIT, SIGTERM_EXIT, choices, report
from rungefit.errors import RungefitError, UsageError


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a known exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        extra.setdefault("obj", {"started": time.perf_counter()})  # main() passes rungefit's start (cli.STARTED)
        try:
            with _sigterm_raises(), _warnings_as_lines():
                result = super().main(args=args, prog_name=prog_name or "rungefit", complete_var=complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:
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

    def get_params(self, ctx):
        """The first parameter to claim a flag has it. Typer's add_completion, which is what turns TAB
        completion on, appends its own --install-completion and --show-completion after the root's
        options; rungefit declares those flags itself (bash gets rungefit's script, not Typer's
        generic one, which completes file names after `20:`), so Typer's give way."""
        params, claimed = [], set()
        for param in super().get_params(ctx):
            flags = set(param.opts) | set(param.secondary_opts)
            if not flags & claimed:
                params.append(param)
                claimed |= flags
        return params


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


@contextmanager
def _warnings_as_lines():
    """A Python warning that reaches the command (one rungefit does not handle where it arises)
    is one `warning:` line of rungefit's, never Python's line with a source path and code."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        report.warning(" ".join(str(message).split()))

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


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
        print(f"rungefit {__version__}")
        raise typer.Exit()


def _shell_here() -> str:
    """The shell that runs rungefit, if TAB completion knows it."""
    shell = completions.detect_shell()
    if shell not in completions.SHELLS:
        found = f"found {shell}" if shell else "found none"
        raise RungefitError(f"cannot complete in the shell that runs rungefit ({found}); name one: `rungefit completion bash|zsh|fish [--install]`")
    return shell


def _install_completion(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        _install(_shell_here(), ctx.find_root().command)
        raise typer.Exit()


def _show_completion(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        sys.stdout.write(completions.completion_script(_shell_here(), ctx.find_root().command))
        raise typer.Exit()


def _install(shell: str, command) -> None:
    path = completions.install(shell, command, Path.home())
    print(f"{shell} completion installed in {path}; it takes effect in a new terminal")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
    install_completion: Annotated[bool, typer.Option("--install-completion", callback=_install_completion, is_eager=True, expose_value=False, help="Install TAB completion for the shell that runs rungefit (bash, zsh or fish).")] = False,
    show_completion: Annotated[bool, typer.Option("--show-completion", callback=_show_completion, is_eager=True, expose_value=False, help="Print the TAB-completion script for the shell that runs rungefit, to install it by hand.")] = False,
) -> None:
    """Fit a 1-D function with a small network (the Runge function f(x) = 1/(1+25x²) on [-1, 1]
    unless --target or --data says otherwise), and study its gradient, its learning rate and its fit.

    Example: rungefit train && rungefit eval && rungefit grad --x 0.3
    """


Shell = choices("Shell", completions.SHELLS)


def completion(
    ctx: typer.Context,
    shell: Annotated[Shell, typer.Argument(parser=Shell.parse, help="The shell to print (or install) the completion script for.")],
    install: Annotated[bool, typer.Option("--install", help="Install the script where SHELL finds it instead of printing it (bash: ~/.bash_completions, sourced from ~/.bashrc; zsh: ~/.zfunc; fish: ~/.config/fish/completions).")] = False,
) -> None:
    """Print the TAB-completion script for SHELL: commands, options, choices, activation names inside
    --layers, presets and run names. bash needs no bash-completion package for it.

    Example: rungefit completion bash > ~/.local/share/bash-completion/completions/rungefit
    """
    if install:
        _install(shell.value, ctx.find_root().command)
        return
    sys.stdout.write(completions.completion_script(shell.value, ctx.find_root().command))


# The commands, in the order --help lists them.
app.command()(cli_train.train)
app.command()(cli_study.grad)
app.command("eval")(cli_study.eval_run)
app.command("lr-find")(cli_train.lr_find_command)
app.command()(cli_study.export)
app.command()(cli_study.predict)
app.command()(completion)


def main() -> None:
    app(prog_name="rungefit", obj={"started": STARTED})
