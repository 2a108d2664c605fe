"""Ctrl-C and SIGTERM while training: a request to stop after the current step, not an exception
raised wherever Python happens to be."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from rungefit.cli.options import SIGINT_EXIT, SIGTERM_EXIT


class StopRequest:
    """Set by Ctrl-C (SIGINT) or SIGTERM while training; fit asks it after every step. The first
    signal decides the exit code (130 or 143) and the word for it."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def set(self, signum: int, frame=None) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def exit_code(self) -> int:
        return SIGTERM_EXIT if self.signal == signal.SIGTERM else SIGINT_EXIT

    @property
    def cause(self) -> str:
        return "terminated (SIGTERM)" if self.signal == signal.SIGTERM else "interrupted"


@contextmanager
def ctrl_c_stops_training():
    """While training and saving, Ctrl-C (SIGINT) and SIGTERM set a StopRequest instead of raising
    wherever Python happens to be; fit reads it after each optimizer step and stops cleanly.

    Yields the request. Further signals are absorbed until the run is saved, because the save
    takes a moment and aborting it would lose the epochs the first signal meant to keep. The
    previous handlers come back afterwards.
    """
    request = StopRequest()
    previous = {signum: signal.signal(signum, request.set) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
