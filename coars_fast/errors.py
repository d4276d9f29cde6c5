"""Errors meant for the user: the CLI prints their message alone, never a traceback."""


class CoarsError(Exception):
    """Base class for every error a user can fix (bad data, bad config, bad arguments)."""


class DataError(CoarsError, ValueError):
    """A dataset is missing, malformed or inconsistent. The message names the file (and line)."""


class ConfigError(CoarsError, ValueError):
    """A configuration key or value is wrong. The message names the key."""


class TrainingError(CoarsError, RuntimeError):
    """Training cannot go on (e.g. non-finite losses several steps in a row)."""
