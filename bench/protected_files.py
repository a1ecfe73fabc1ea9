"""Files a report or baseline must never be written over: the results database (and its
WAL, shared-memory and journal files), any other SQLite file, and inputs of the command
(a baseline being checked). `check --junit bench.sqlite` used to replace the database with
XML; `refuse_overwrite` stops that with one sentence before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from sqlalchemy.engine import Engine

from bench.errors import BenchError, printable

SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")


def database_files(engine: Engine | None) -> list[Path]:
    """The files of a SQLite engine's database (none for a server or an in-memory one)."""
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return []
    name = engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return []
    return [Path(name)] + [Path(name + side) for side in _SIDE_FILES]


def is_sqlite_file(path: Path) -> bool:
    """Whether `path` is a regular file that starts like a SQLite database."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):          # a symlink loop: not our file
        return False


def refuse_overwrite(path: str | Path, flag: str, protected: Iterable[str | Path] = ()) -> Path:
    """`path`, unless writing it would replace one of `protected` or a SQLite file: then
    a BenchError naming `flag` (the option or the kind of file being written)."""
    path = Path(path).expanduser()
    for p in protected:
        if _same(path, Path(p).expanduser()):
            raise BenchError(f"{flag} {printable(path)} would overwrite {printable(p)}, which "
                             f"this command reads; write the output to another file")
    if is_sqlite_file(path):
        raise BenchError(f"{flag} {printable(path)} is a SQLite database; bench does not write "
                         f"over one (choose another file name)")
    return path
