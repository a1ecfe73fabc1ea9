"""One way to write a file: a temporary file in the same folder, fsynced, then renamed.

A reader (another worker on a shared folder, a browser, `check` reading a baseline) sees
the old file or the new one, never half of either; a full disk or a kill leaves the old
file as it was and no temporary behind (except on SIGKILL: `stale_temporaries` finds
those). Every file bench writes goes through here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """A fresh name beside `path` (same folder, so the rename stays on one filesystem)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb", *, encoding: str | None = None,
                perms: int | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it is flushed,
    fsynced and renamed to `path`; on any error it is removed and `path` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes whole files: mode 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if perms is None else perms)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if perms is None:       # the umask's usual mode, as open() would have given it
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path | str, data: bytes, *, perms: int | None = None) -> None:
    with atomic_open(path, "wb", perms=perms) as f:
        f.write(data)


def atomic_write_text(path: Path | str, text: str, *, perms: int | None = None) -> None:
    with atomic_open(path, "w", encoding="utf-8", perms=perms) as f:
        f.write(text)


def stale_temporaries(folder: Path | str) -> list[Path]:
    """Temporaries that a killed writer left in `folder` (not its subfolders)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.startswith(".") and TMP_MARK in p.name]
