"""What the tests share besides fixtures: constants, the CLI runner, small builders, and the harness
that runs `rungefit` in a process of its own. An ordinary module: tests import from it by name
(conftest.py holds only fixtures and hooks)."""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import click.testing
import torch
import typer
import typer.main
from rich.console import Console

from rungefit.cli import render as report
from rungefit.runs import format as runformat
from rungefit.runs import commit as runsave
from rungefit.cli.app import app
from rungefit.cli.app import main as cli_main
from rungefit.config import parse_layers
from rungefit.net.model import StackedMLP

# cli imports report lazily, and report imports rich, which draws from `random` as it loads:
# loaded inside a hypothesis draw (hypothesis looks at the modules loaded), that would count as a
# strategy using `random`. So load it now.
from rungefit.cli.render import error  # noqa: E402, F401


class AppRunner:
    """`runner.invoke(app, args, **options)`: rungefit's app run in this process through public
    routes only, click's CliRunner invoking the command that typer.main.get_command builds from it.

    Typer builds the click command anew whenever it is asked, which costs more than most
    invocations themselves: it is built once, here. The result is click's: `stdout`, `stderr`
    (kept apart since click 8.2) and `output`, the two mixed as a terminal shows them. Typer
    carries its own copy of click, whose prompts click's runner does not answer; it swaps
    sys.stdin, sys.stdout, sys.stderr and the environment, all that rungefit's commands read.
    """

    def __init__(self, typer_app: typer.Typer) -> None:
        self.app = typer_app
        self.command = typer.main.get_command(typer_app)
        self.cli_runner = click.testing.CliRunner()

    def invoke(self, typer_app: typer.Typer, args=(), **options) -> click.testing.Result:
        assert typer_app is self.app, "this runner runs the app it was made with"
        options.setdefault("prog_name", "rungefit")
        return self.cli_runner.invoke(self.command, args, **options)


runner = AppRunner(app)

# The repository's root, and the small data set committed for --data tests.
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "damped_sine.csv"
# What every saved training run holds.
RUN_FILES = {"config.json", "model.pt", "history.csv", "summary.json", "fit.png", "loss.png"}

# The smallest runs that still learn f (validation MSE below 1 % of Var(y), so `train` exits 0):
# a fraction of a second of training. Shorter runs learn nothing, and `train` exits 1.
LEARNS = ["--points", "120", "--batch-size", "8", "--epochs", "60"]
QUICK_TRAIN = [*LEARNS, "--quiet"]


def runge(x):
    """The Runge function in closed form, independent of target.py: what the default target must compute."""
    return 1.0 / (1.0 + 25.0 * x * x)


def runge_prime(x):
    return -50.0 * x / (1.0 + 25.0 * x * x) ** 2


def heavy_imports_after(setup: str) -> tuple[str, str]:
    """Run `setup` (which calls the CLI) in a fresh interpreter: (its stdout, and which of torch and
    matplotlib it imported, comma-separated, '' when none)."""
    code = (
        "import sys\n"
        f"try:\n{''.join('    ' + line + chr(10) for line in setup.splitlines())}except SystemExit:\n    pass\n"
        "sys.stderr.write('HEAVY:' + ','.join(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout, result.stderr.rpartition("HEAVY:")[2].strip()


def stacked(spec: str, seeds=(0, 1, 2), dtype=torch.float64) -> StackedMLP:
    """A freshly initialised stack, one member per seed, float64 unless told otherwise."""
    model = StackedMLP(parse_layers(spec), len(seeds), dtype=dtype)
    model.initialise(torch.tensor(list(seeds)))
    return model


# The default network and two others that between them use every other activation but identity.
SPECS = ["20:tanh,10:sigmoid,20:tanh,10:sigmoid", "16:gelu,8:relu", "8:silu,6:softplus"]


def stop_after(steps: int):
    """A should_stop for fit that says yes from its `steps`-th call (one call per optimizer step) on."""
    calls = itertools.count(1)
    return lambda: next(calls) >= steps


def save_run(runs_dir, result, name=None):
    """Save a fit's result as `train` would, without the CLI's extra summary fields; its directory."""
    return runsave.save_new_run(runs_dir, name, runformat.run_files(result, {}, {}, {}))


# Long enough never to end by itself in a test: the process is stopped by a signal once it has
# shown an epoch done. --seeds 2 --workers 2: two worker processes, one member each.
ENDLESS_TRAIN = ["train", "--points", "120", "--epochs", "100000", "--seeds", "2", "--workers", "2"]
# Workers get a kernel signal when their parent dies, so they end at once; the deadline only
# guards against a machine too busy to schedule them.
WORKERS_GONE_WITHIN_S = 5.0


class Rungefit:
    """`rungefit ARGS` in a process of its own, in a session of its own, its output read as it comes.

    The process is a fork of the test process, which runs the CLI's entry point and exits: torch
    and rungefit are loaded already, where a new interpreter would spend most of a short run
    importing them (the entry point itself runs in new interpreters in test_cli and test_predict).
    The progress bar is drawn as on a terminal (TTY_COMPATIBLE), so that a test can wait for the
    event it needs, "epoch N done", in the process's stderr rather than for some time to pass.
    `prepare` runs in the child before the CLI; with `stdin=True` the test writes the child's stdin.
    """

    _parent_ends: set[int] = set()  # every open pipe end of this process's children: no child inherits another's

    def __init__(self, *args: str, prepare=None, stdin: bool = False):
        stdin_r, stdin_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), None)
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            for fd in {*self._parent_ends, out_r, err_r} | ({stdin_w} if stdin else set()):
                os.close(fd)
            _run_the_cli(args, prepare, (stdin_r, out_w, err_w))
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
        self.stdin = stdin_w
        self._parent_ends.update({out_r, err_r} | ({stdin_w} if stdin else set()))
        self.process = Child(self.pid)
        self._out = {"stdout": bytearray(), "stderr": bytearray()}
        self._output_changed = threading.Condition()  # notified on every chunk read, and at each stream's end
        self._streams_open = 2
        self._readers = [threading.Thread(target=self._read, args=(fd, name), daemon=True) for fd, name in ((out_r, "stdout"), (err_r, "stderr"))]
        for reader in self._readers:
            reader.start()

    def _read(self, fd: int, name: str) -> None:
        while chunk := os.read(fd, 65536):
            with self._output_changed:
                self._out[name] += chunk
                self._output_changed.notify_all()
        self._close(fd)
        with self._output_changed:
            self._streams_open -= 1
            self._output_changed.notify_all()

    def _close(self, fd: int) -> None:
        self._parent_ends.discard(fd)
        os.close(fd)

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self._close(self.stdin)
            self.stdin = None

    @property
    def stderr(self) -> str:
        return self._out["stderr"].decode(errors="replace")

    @property
    def stdout(self) -> str:
        return self._out["stdout"].decode(errors="replace")

    def epochs_done(self) -> int:
        """The last epoch count the progress bar showed."""
        counts = re.findall(r"train\s[^\r\n]*?(\d+)/\d+", self.stderr)
        return int(counts[-1]) if counts else 0

    def wait_until(self, condition, what: str, timeout: float = 60.0) -> None:
        """Wait until condition() holds, asked again whenever output arrives; fail the test if the
        process's output ends or time runs out first."""
        deadline = time.monotonic() + timeout
        with self._output_changed:
            while not condition():
                assert self._streams_open, f"rungefit ended (exit {self.process.poll()}) before {what}: {self.stderr[-2000:]}"
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self._output_changed.wait(left)

    def wait_for_epoch(self, epoch: int = 1, timeout: float = 60.0) -> None:
        self.wait_until(lambda: self.epochs_done() >= epoch, f"epoch {epoch}", timeout)

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the process and for the end of its output; its exit code. The output ends only
        when every process holding the pipes has ended, worker processes included."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
            assert not reader.is_alive(), "the output never ended: another process still holds rungefit's pipes"
        return code

    def training_workers(self, count: int = 2) -> list[int]:
        """Once an epoch is done: the pids of the worker processes (there must be `count`)."""
        self.wait_for_epoch(1)
        workers = children_of(self.pid)
        assert len(workers) == count, workers
        return workers

    def __enter__(self) -> Rungefit:
        return self

    def __exit__(self, *exc_info) -> None:
        """Whatever the test did, the process does not outlive it."""
        self.close_stdin()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WORKERS_GONE_WITHIN_S)


TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def _run_the_cli(args, prepare, fds) -> None:
    """In a forked child: fds become its stdin, stdout and stderr, as a terminal's would; run the
    CLI's entry point on args and exit with its code, without the test process's exit handlers."""
    code = 70  # EX_SOFTWARE: the harness itself failed
    try:
        os.setsid()  # a session of its own, so that a signal can reach its process group, as in a terminal
        for fd, standard in zip(fds, (0, 1, 2)):
            os.dup2(fd, standard)
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = open(0, closefd=False), open(1, "w", closefd=False), open(2, "w", closefd=False)
        os.environ.update(TERMINAL)
        # The test process's OpenMP threads are not in this copy of it: a parallel region would
        # wait for them forever. (Training picks one thread for small stacks anyway.)
        torch.set_num_threads(1)
        report.stdout, report.stderr = Console(), Console(stderr=True)  # they read the environment when made
        if prepare is not None:
            prepare()
        sys.argv = ["rungefit", *args]
        try:
            cli_main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Child:
    """The part of subprocess.Popen's interface that tests use, for a forked child."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None
        self.exited = os.pidfd_open(pid)  # readable once the child has ended

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                os.close(self.exited)
        return self.returncode

    def wait(self, timeout: float):
        if self.returncode is None and not select.select([self.exited], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"forked rungefit {self.pid}", timeout)
        return self.poll()

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is pid, from /proc (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every process in pids has ended (a pidfd turns readable then, child or not), or
    timeout seconds; those still running."""
    running = {}
    for pid in pids:
        try:
            running[os.pidfd_open(pid)] = pid
        except ProcessLookupError:  # gone already
            continue
    deadline = time.monotonic() + timeout
    try:
        while running and (left := deadline - time.monotonic()) > 0:
            for fd in select.select(list(running), [], [], left)[0]:
                del running[fd]
                os.close(fd)
        return sorted(running.values())
    finally:
        for fd in running:
            os.close(fd)


