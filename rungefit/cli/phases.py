"""Where a command's time goes: the phases a user waits for, one after another, and their total.

torch-free: cli/app.py starts the clock before anything heavy is imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

# In the order they happen; a phase that did not run stays None.
PHASES = ("start_up", "rate_search", "training", "polish", "saving_and_plots")


def process_started() -> float:
    """time.perf_counter()'s reading when this process started: on Linux from its start time in
    /proc (so the interpreter's own start-up counts), elsewhere now."""
    now = time.perf_counter()
    try:
        # Field 22 of /proc/self/stat, the 20th after the parenthesised command name: clock ticks after boot.
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - max(age, 0.0)


class Phases:
    """Seconds per phase of one command, each phase running from the end of the one before."""

    def __init__(self, started: float, clock: Callable[[], float] = time.perf_counter):
        self.started = self._last = started
        self.clock = clock
        self.seconds: dict[str, float | None] = dict.fromkeys(PHASES)

    def end(self, phase: str, **parts: float) -> None:
        """`phase` ran from the end of the previous phase until now; `parts` name later phases
        that took that many of its seconds (the polish inside fit)."""
        now = self.clock()
        inside = sum(parts.values())
        self.seconds[phase] = (self.seconds[phase] or 0.0) + now - self._last - inside
        for name, seconds in parts.items():
            self.seconds[name] = (self.seconds[name] or 0.0) + seconds
        self._last = now

    def as_dict(self, ongoing: str | None = None) -> dict[str, float | None]:
        """The phases and their total so far; with `ongoing`, that phase counts until now (what
        summary.json can say while it is being written)."""
        seconds = dict(self.seconds)
        last = self._last
        if ongoing is not None:
            last = self.clock()
            seconds[ongoing] = (seconds[ongoing] or 0.0) + last - self._last
        return {**seconds, "total": last - self.started}
