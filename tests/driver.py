"""rungefit's entry point in a fresh interpreter, after the preparations named on the command line:

    python -m tests.driver PREPARATION[:ARGUMENT]... -- RUNGEFIT_ARGUMENT...

How tests.helpers.Rungefit makes a real `rungefit` process (one that gets real signals) behave as
a test needs without forking the test process: only the preparations in PREPARATIONS run.
"""

from __future__ import annotations

import sys


def figures_not_rendered() -> None:
    """As conftest's figures_not_rendered fixture does in the test process: figures are drawn but
    not rendered to PNG."""
    from rungefit.cli import figures as plots
    from tests.helpers import png_not_rendered

    plots._png = png_not_rendered


def announce_then_wait(epoch: str) -> None:
    """After epoch `epoch`, say `EPOCH <epoch>` on stderr and wait until stdin closes. A test
    presses Ctrl-C at a known point of the run, however busy the machine is; the real signal
    handler receives the real SIGINT."""
    from rungefit.cli import app as cli

    real = cli.report.training_progress

    def announcing(epochs, quiet):
        progress, on_epoch, on_polish = real(epochs, quiet)

        def on_epoch_then_wait(report):
            on_epoch(report)
            if report.epoch == int(epoch):
                print("EPOCH", report.epoch, file=sys.stderr, flush=True)
                sys.stdin.read()

        return progress, on_epoch_then_wait, on_polish

    cli.report.training_progress = announcing


def memory_limit(extra_mib: str) -> None:
    """Cap the address space at what the process holds once torch and the CLI are loaded, plus
    `extra_mib` MiB: a command that a small hostile input makes build gigabytes then fails
    (rungefit's out-of-memory line) instead of exhausting the machine, and the test sees which."""
    import resource

    import torch  # noqa: F401 — loaded before the cap is measured, as the command will load it

    import rungefit.cli.app  # noqa: F401

    with open("/proc/self/status") as status:
        held = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize:"))
    cap = held + (int(extra_mib) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


PREPARATIONS = {"figures-not-rendered": figures_not_rendered, "announce-then-wait": announce_then_wait, "memory-limit": memory_limit}


def main(argv: list[str]) -> None:
    split = argv.index("--")
    for preparation in argv[:split]:
        name, _, argument = preparation.partition(":")
        PREPARATIONS[name](*([argument] if argument else []))
    from rungefit.cli.app import main as rungefit

    sys.argv = ["rungefit", *argv[split + 1 :]]
    rungefit()


if __name__ == "__main__":
    main(sys.argv[1:])
