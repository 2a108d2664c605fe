"""The error types the CLI turns into one-line messages (kept free of heavy imports)."""


class RungefitError(Exception):
    """A runtime failure the user can act on; the CLI prints the message and exits 1."""
