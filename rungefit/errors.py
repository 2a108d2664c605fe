"""The error types the CLI turns into one-line messages (kept free of heavy imports).

UsageError: a value the user typed (an option, a formula, a file given on the command line) cannot
work; exit 2. RungefitError: a failure the user can act on (a missing or damaged run, divergence);
exit 1; RunError is the kind that concerns a run directory. Anything else reaching the CLI is a bug, reported as an internal error.
A message about a value outside a fixed set ends with the closest choices (suggest).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RungefitError(Exception):
    """A runtime failure the user can act on; the CLI prints the message and exits 1."""


class RunError(RungefitError):
    """A run directory problem the user can fix; the message says how."""


class UsageError(ValueError):
    """A bad value the user gave; the CLI prints the message and exits 2.

    A ValueError, so that callers of the Python API may catch either.
    """


def suggest(message: str, value: object, choices: Iterable[str]) -> str:
    """`message`, then "Did you mean 'cosine'?" naming the choices closest to the mistyped `value`
    (difflib's measure, as Typer suggests a command; case aside), when any is close."""
    folded = {choice.casefold(): choice for choice in choices}
    close = difflib.get_close_matches(str(value).casefold(), list(folded))
    if not close:
        return message
    return f"{message.rstrip('.')}. Did you mean {', '.join(repr(folded[name]) for name in close)}?"
