"""Errors that end a command with one clear sentence instead of a traceback."""

from __future__ import annotations


class BenchError(Exception):
    """A user-facing error: the CLI prints it as one line and exits with status 2."""

    exit_status = 2


class SuiteError(BenchError):
    """A problem in suite.yaml, located by file, line and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        self.message, self.file, self.line, self.key = message, file, line, key
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class DataError(BenchError):
    """A dataset that is missing, corrupt or cannot be fetched."""


class CheckpointError(BenchError):
    """A checkpoint that is missing, corrupt or does not match its model."""


class PluginError(BenchError):
    """A plugin misused (unknown name, bad config) outside of a suite file."""
