"""The phases of a command: each runs from the end of the one before, and they add up to the total."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from rungefit.cli.phases import Phases


def test_each_phase_runs_from_the_end_of_the_one_before_and_parts_move_out_of_it():
    readings = iter([3.0, 10.0, 10.5, 12.0])
    phases = Phases(1.0, clock=lambda: next(readings))
    phases.end("start_up")
    phases.end("training", polish=2.5)
    assert phases.as_dict(ongoing="saving_and_plots") == {
        "start_up": 2.0, "rate_search": None, "training": 4.5, "polish": 2.5, "saving_and_plots": 0.5, "total": 9.5,
    }
    phases.end("saving_and_plots")
    assert phases.as_dict()["saving_and_plots"] == 2.0 and phases.as_dict()["total"] == 11.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process's start time comes from /proc")
def test_the_process_start_counts_the_interpreters_own_start_up():
    code = "import time\nfrom rungefit.cli.phases import process_started\nprint(time.perf_counter() - process_started())"
    before = time.perf_counter()
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    elapsed = time.perf_counter() - before
    # /proc gives the start in clock ticks, rounded down: the age may read up to one tick more.
    assert 0 < age <= elapsed + 1 / os.sysconf("SC_CLK_TCK")
