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
from pathlib import Path

import click.testing
import torch
import typer
import typer.main

from rungefit.cli.app import app

# cli imports report lazily, and report imports rich, which draws from `random` as it loads:
# loaded inside a hypothesis draw (hypothesis looks at the modules loaded), that would count as a
# strategy using `random`. So load it now (conftest imports this module before any test runs).
from rungefit.cli.render import error  # noqa: F401
from rungefit.config import parse_layers
from rungefit.net.model import StackedMLP
from rungefit.runs import RunStore

# The repository's root, and the small data set committed for --data tests.
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "damped_sine.csv"
# What every saved training run holds.
RUN_FILES = {"config.json", "model.pt", "history.csv", "summary.json", "fit.png", "loss.png"}

# The smallest runs that still learn f (validation MSE below 1 % of Var(y), so `train` exits 0):
# a fraction of a second of training. Shorter runs learn nothing, and `train` exits 1.
LEARNS = ["--points", "120", "--batch-size", "8", "--epochs", "60"]
QUICK_TRAIN = [*LEARNS, "--quiet"]

# The default network and two others that between them use every other activation but identity.
SPECS = ["20:tanh,10:sigmoid,20:tanh,10:sigmoid", "16:gelu,8:relu", "8:silu,6:softplus", "12:sin,8:tanh"]


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


def png_not_rendered(fig) -> bytes:
    """In place of figures._png: the figure is drawn, then closed instead of rendered to PNG, which
    would cost most of a short command's time."""
    from rungefit.cli import figures as plots

    plots._pyplot().close(fig)
    return b"\x89PNG (not rendered)"


def stop_after(steps: int):
    """A should_stop for fit that says yes from its `steps`-th call (one call per optimizer step) on."""
    calls = itertools.count(1)
    return lambda: next(calls) >= steps


def save_run(runs_dir, result, name=None, summary_extra=None):
    """Save a fit's result through the RunStore, as `train` does but without its figures (and the
    CLI's extra summary fields but `summary_extra`); its directory."""
    return RunStore(runs_dir).save(result, name=name, summary_extra=summary_extra)


# ---------------------------------------------------------------- rungefit in a process of its own

# Long enough never to end by itself in a test: the process is stopped by a signal once it has
# shown an epoch done. --seeds 2 --workers 2: two worker processes, one member each.
ENDLESS_TRAIN = ["train", "--points", "120", "--epochs", "100000", "--seeds", "2", "--workers", "2"]
# Workers get a kernel signal when their parent dies, so they end at once; the deadline only
# guards against a machine too busy to schedule them.
WORKERS_GONE_WITHIN_S = 5.0
# The environment of a terminal, for the consoles the child makes as it starts.
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def fresh_interpreter_env(**variables: str) -> dict[str, str]:
    """The environment for a fresh interpreter that imports this checkout's rungefit and tests,
    wherever the test runs from, with `variables` set."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, **variables, "PYTHONPATH": path}


class Rungefit:
    """`rungefit ARGS` in a fresh interpreter, in a session of its own, its output read as it comes.

    The interpreter runs tests/driver.py, which prepares the process as the test asks and then runs
    the CLI's entry point on ARGS. As in the test process (conftest's figures_not_rendered), figures
    are drawn but not rendered; `prepare` adds preparations the driver knows by name, an argument
    after a colon (`("announce-then-wait:3",)`). The progress bar is drawn as on a terminal
    (TTY_COMPATIBLE), so that a test can wait for the event it needs, "epoch N done", in the
    process's stderr rather than for some time to pass. With `stdin=True` the test writes the
    process's stdin (`stdin`, a binary file) and `close_stdin()` closes it. `exited` is a pidfd,
    readable once the process has ended.
    """

    def __init__(self, *args: str, prepare: tuple[str, ...] = (), stdin: bool = False):
        command = [sys.executable, "-m", "tests.driver", "figures-not-rendered", *prepare, "--", *args]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=fresh_interpreter_env(**TERMINAL),
            start_new_session=True,  # so that a signal can reach its process group, as in a terminal
        )
        self.pid = self.process.pid
        self.exited = os.pidfd_open(self.pid)
        self.stdin = self.process.stdin
        self._out = {"stdout": bytearray(), "stderr": bytearray()}
        self._output_changed = threading.Condition()  # notified on every chunk read, and at each stream's end
        self._streams_open = 2
        self._readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr"))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, name: str) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            with self._output_changed:
                self._out[name] += chunk
                self._output_changed.notify_all()
        stream.close()
        with self._output_changed:
            self._streams_open -= 1
            self._output_changed.notify_all()

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
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

    def wait(self, timeout: float) -> int:
        """Wait for the process to end (on its pidfd, not by polling); its exit code, -N for signal N."""
        if self.process.returncode is None and not select.select([self.exited], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(self.process.args, timeout)
        return self.process.wait()

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the process and for the end of its output; its exit code. The output ends only
        when every process holding the pipes has ended, worker processes included."""
        code = self.wait(timeout)
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
        """Whatever the test did, neither the process nor its workers outlive it."""
        self.close_stdin()
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # its session's group: the workers too
            except ProcessLookupError:  # ended meanwhile
                pass
            self.wait(timeout=WORKERS_GONE_WITHIN_S)
        os.close(self.exited)


# Room above what a loaded rungefit holds for a command under a memory cap: plenty for a command on
# a small run, far below the gigabytes that the hostile inputs capped with it used to take.
CAPPED_EXTRA_MIB = 1024


def rungefit_capped(*args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """`rungefit ARGS` in a fresh interpreter whose address space is capped (tests.driver's
    memory-limit, CAPPED_EXTRA_MIB), with one thread per pool so that the cap does not depend on
    the machine's cores: (its exit code, stdout and stderr as text)."""
    command = [sys.executable, "-m", "tests.driver", "figures-not-rendered", f"memory-limit:{CAPPED_EXTRA_MIB}", "--", *args]
    env = fresh_interpreter_env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run(command, stdin=stdin, capture_output=True, text=True, env=env, timeout=100)


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
