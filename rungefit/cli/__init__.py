"""The command line: app.py holds the commands and `main`, rungefit's entry point.

This is the first of rungefit's code that a command runs, and its first line reads the clock: a
command's times (train's start-up phase and total) count from here, rungefit's imports included.
What ran in the process before is not counted: the interpreter's own start, and whatever a shell ran
before it exec'ed rungefit in its process (Linux keeps that process's start time).
"""

import time

STARTED = time.perf_counter()
