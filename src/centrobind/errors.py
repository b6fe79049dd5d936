"""Exceptions that the CLI turns into one-line messages (no traceback)."""

__all__ = ["CentrobindError", "CentrobindWarning", "ConfigError", "DatasetError"]


class CentrobindError(Exception):
    """Base class for user-facing errors: bad input, bad configuration, bad run folder."""


class DatasetError(CentrobindError, ValueError):
    """A dataset on disk or in memory is malformed. The message names the file and the problem."""


class ConfigError(CentrobindError, ValueError):
    """A training/benchmark configuration is invalid."""


class CentrobindWarning(UserWarning):
    """A legal but doubtful input (e.g. a split too small to mean anything); the CLI prints it as
    one ``warning: ...`` line."""
