"""Errors that end a command with one clear sentence instead of a traceback."""

from __future__ import annotations

import os
import traceback


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


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7f, *range(0x80, 0xa0)] if c != 0x09}


def printable(text: object) -> str:
    """`text` with control characters (terminal escape sequences, carriage returns, NULs)
    shown escaped, so a name from a foreign suite or file cannot rewrite the terminal."""
    return str(text).translate(_CONTROL)


def one_line(e: BaseException, limit: int | None = 300, *, where: bool = False) -> str:
    """An exception as one printable line: a BenchError's sentence as it is, anything else
    as `Type: first line of its message`, cut at `limit` characters (None: not cut).

    `where` adds ` (at file.py:line)`, the innermost frame of the traceback, to what is not
    a BenchError: an unexpected error in a model job is a bug to locate, not a sentence.
    """
    if isinstance(e, BenchError):
        text = str(e)
    else:
        lines = str(e).strip().splitlines()
        text = f"{type(e).__name__}: {lines[0]}" if lines and lines[0].strip() else type(e).__name__
    text = printable(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    if where and not isinstance(e, BenchError):
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            text += printable(f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})")
    return text
