"""The package version, apart from the package face so that no module imports rungefit/__init__ for it."""

__version__ = "0.1.0"
