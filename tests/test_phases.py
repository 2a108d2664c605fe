"""The phases of a command: each runs from the end of the one before, and they add up to the total."""

from __future__ import annotations

import subprocess
import sys

from rungefit.cli.phases import Phases

from .helpers import fresh_interpreter_env


def test_each_phase_runs_from_the_end_of_the_one_before_and_parts_move_out_of_it():
    readings = iter([3.0, 10.0, 10.5, 12.0])
    phases = Phases(1.0, clock=lambda: next(readings))
    phases.end("start_up")
    phases.end("training", polish=2.5)
    assert phases.as_dict(ongoing="saving_and_plots") == {
        "start_up": 2.0, "network_search": None, "rate_search": None, "training": 4.5, "polish": 2.5, "saving_and_plots": 0.5, "total": 9.5,
    }
    phases.end("saving_and_plots")
    assert phases.as_dict()["saving_and_plots"] == 2.0 and phases.as_dict()["total"] == 11.0


# In a fresh interpreter, injected clocks: perf_counter counts its readings (1.0, 2.0, …), and the
# process looks 100 s older than it is (CLOCK_BOOTTIME, which dates a process's start on Linux),
# as when bash ran a long command before exec'ing rungefit in its process. Then main runs, its
# app replaced by one that prints when the command's clock started.
ENTRY_POINT_UNDER_INJECTED_CLOCKS = """
import itertools, time
readings = itertools.count(1.0)
time.perf_counter = lambda: next(readings)
boot = time.clock_gettime
time.clock_gettime = lambda clock: boot(clock) + (100.0 if clock == getattr(time, "CLOCK_BOOTTIME", None) else 0.0)
from rungefit.cli import app as cli
cli.app = lambda **kwargs: print(kwargs["obj"]["started"])
cli.main()
"""


def test_the_clock_starts_at_the_first_line_of_rungefits_code_not_at_the_process_start():
    result = subprocess.run([sys.executable, "-c", ENTRY_POINT_UNDER_INJECTED_CLOCKS], env=fresh_interpreter_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The first reading of the clock was rungefit's: nothing before it, nor the process's age, counts.
    assert float(result.stdout) == 1.0
