"""Where a command's time goes: the phases a user waits for, one after another, and their total.

torch-free. The first phase starts when rungefit's code starts (rungefit.cli.STARTED).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# In the order they happen; a phase that did not run stays None.
PHASES = ("start_up", "network_search", "rate_search", "training", "polish", "saving_and_plots")


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
