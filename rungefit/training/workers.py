"""Worker processes: objects built in forked children, whose methods the parent calls on all at once.

fit() trains a large stack on the CPU as a few smaller stacks, one per core (stack.py): members
never interact, so each worker trains its share on its own and only small results cross the pipes.
Threads would not do: each of the kernels of a step releases and retakes the GIL, and handing
it between threads costs about as much as the kernel (docs/speed.md).

Children are forked: one starts in milliseconds with the parent's memory (torch imported, the
factory's closure in place), where a spawned interpreter would spend seconds importing torch.
They ignore Ctrl-C and SIGTERM (the parent decides when to stop and says so through a shared
flag), never write to the terminal (their standard streams are os.devnull: the inherited ones may
be locked forever by a parent thread that was writing at the fork, such as a progress bar's, and
holding the caller's pipes open would keep a caller waiting for their end), and end when the parent
closes them or dies, by any signal: a child holds only its own end of its own pipe, so the
parent's death is the end of the pipe, and Linux kills it then as well (PR_SET_PDEATHSIG), should
it be busy computing. This module imports nothing heavy; what runs in a child is up to the factory.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from rungefit.config import MIN_MEMBERS_PER_WORKER, TrainConfig
from rungefit.errors import RungefitError

# How often the parent runs its poll callback while it waits for the workers (seconds).
POLL_INTERVAL = 0.02
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class WorkerError(RungefitError):
    """A worker process ended without answering."""


def available() -> bool:
    """Whether workers can be forked here: on Linux (fork is unsafe on macOS, absent on Windows),
    and not from a daemonic process (a multiprocessing pool's worker), which may have no children."""
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def cpu_count() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Workers:
    """One forked child per factory; child i holds factory_i(stop_requested) and serves calls.

    stop_requested is the child's view of a flag the parent raises with request_stop(). Use as a
    context manager: leaving it ends the children, whatever happened.
    """

    def __init__(self, factories: Sequence[Callable[[Callable[[], bool]], Any]]):
        if not available():
            raise WorkerError("worker processes need fork, which only Linux allows, and not from a daemonic process; use one worker")
        context = multiprocessing.get_context("fork")
        self._stop = context.RawValue("b", 0)
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        try:
            for factory in factories:
                parent_end, child_end = context.Pipe()
                # The child closes the parent's ends, its own and its elder siblings': were it to
                # hold them, no child would see its pipe end when the parent dies.
                foreign = [*self._pipes, parent_end]
                process = context.Process(target=_serve, args=(factory, child_end, self._stop, os.getpid(), foreign), daemon=True)
                process.start()
                child_end.close()
                self._pipes.append(parent_end)
                self._processes.append(process)
        except BaseException as error:
            self.close()
            if isinstance(error, OSError):  # fork failed: out of memory or processes
                raise WorkerError(f"cannot start worker processes ({error.strerror or error}); use --workers 1") from None
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def request_stop(self) -> None:
        """Raise the flag every child's stop_requested() reads."""
        self._stop.value = 1

    def call(
        self,
        method: str,
        *args,
        poll: Callable[[], None] | None = None,
        on_note: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """target.method(*args) in every child at once; their results in worker order.

        poll runs every POLL_INTERVAL while the children work. With on_note, the method gets a
        `note` keyword: a child's note(payload) reaches on_note(worker, payload) in the parent.
        The first exception a child raises is raised here.
        """
        self.start(method, *args, with_notes=on_note is not None)
        return self.results(poll=poll, on_note=on_note)

    def start(self, method: str, *args, with_notes: bool = False) -> None:
        """The first half of call: the children begin, and the parent goes on until results()."""
        for pipe in self._pipes:
            try:
                pipe.send((method, args, with_notes))
            except OSError:
                pass  # that child has ended; its error or EOF is read by results()

    def results(
        self, *, poll: Callable[[], None] | None = None, on_note: Callable[[int, Any], None] | None = None
    ) -> list[Any]:
        """The second half of call: wait for the results of the call start() began."""
        results: list[Any] = [None] * len(self._pipes)
        pending = dict(enumerate(self._pipes))
        while pending:
            ready = wait(list(pending.values()), timeout=POLL_INTERVAL)
            if poll is not None:
                poll()
            for worker in [w for w, pipe in pending.items() if pipe in ready]:
                kind, payload = self._receive(worker)
                if kind == "note" and on_note is not None:
                    on_note(worker, payload)
                elif kind == "error":
                    raise payload
                elif kind == "done":
                    results[worker] = payload
                    del pending[worker]
        return results

    def _receive(self, worker: int) -> tuple[str, Any]:
        try:
            return self._pipes[worker].recv()
        except (EOFError, OSError):
            process = self._processes[worker]
            process.join(timeout=1)
            raise WorkerError(
                f"worker process {worker} ended unexpectedly (exit code {process.exitcode}); "
                "if memory ran out, use fewer --seeds or --points, or --workers 1"
            ) from None

    def close(self) -> None:
        """Ask the children to end, and make sure they have."""
        self.request_stop()  # a child still working stops after its current step
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []


def _serve(factory: Callable[[Callable[[], bool]], Any], pipe, stop, parent: int, foreign: list) -> None:
    """A child's life: cut loose from what the parent holds, build the target, then answer calls
    until told to end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    for end in foreign:
        end.close()
    _standard_streams_to_devnull()
    try:
        target = factory(lambda: stop.value != 0)
        while (request := pipe.recv()) is not None:
            method, args, with_notes = request
            extra = {"note": lambda payload: pipe.send(("note", payload))} if with_notes else {}
            pipe.send(("done", getattr(target, method)(*args, **extra)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone
    except BaseException as error:  # noqa: BLE001 — every failure must reach the parent
        _send_error(pipe, error)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this child when the parent dies, and exit if it already has (it may
    have died before the request was made). Linux sends the signal when the forking thread ends,
    which a Workers user outlives: it closes the workers first. Where prctl is missing, the end
    of the pipe still ends the child, after its current call."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _standard_streams_to_devnull() -> None:
    """Point file descriptors 0, 1 and 2 and Python's streams at os.devnull.

    Never the inherited streams: flushing those at exit could wait forever on a lock that a parent
    thread held at the fork, or print what the parent had buffered a second time; and while a
    child holds the caller's pipes, a caller reading them to their end waits for the child too.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 — lives as long as the child


def _send_error(pipe, error: BaseException) -> None:
    """Send the exception itself if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 — an exception whose constructor pickle cannot call again
        error = RuntimeError(f"{type(error).__name__}: {error}")
    try:
        pipe.send(("error", error))
    except OSError:
        pass  # the parent is gone


def worker_count(config: TrainConfig) -> int:
    """How many processes train config's members: config.workers (at most one per member), or
    for 0 one per CPU core, each with at least MIN_MEMBERS_PER_WORKER members. Always 1 where
    worker processes cannot be forked (not Linux, or a daemonic process): a run saved with
    several, resumed there, goes on in one."""
    members = len(config.seeds)
    if config.device != "cpu" or not available():
        return 1
    if config.workers:
        return min(config.workers, members)
    return max(1, min(cpu_count(), members // MIN_MEMBERS_PER_WORKER))
