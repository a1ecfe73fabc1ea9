"""The checkpoint cache: one state dict per model key, verified by sha256 before use.

A shared `--results-dir` is writable by others, so a file under a checkpoint's name proves
nothing. A checkpoint is written atomically (`bench.atomic.atomic_open`) and the sha256 of
the bytes bench wrote is recorded in the database; a file is loaded only when its sha256
equals a recorded one (`load_verified`: no recorded sha256, no load), and then with
`weights_only=True`. A missing, corrupt, unrecorded or mismatched checkpoint is reported to
the caller, which retrains: it is never silently used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from torch import nn

from bench.atomic import atomic_open
from bench.errors import CheckpointError, printable


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _sha256_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


class _HashingWriter:
    """A file for torch.save that hashes the bytes on their way to disk."""

    def __init__(self, f: BinaryIO):
        self.f, self.hash = f, hashlib.sha256()

    def write(self, b) -> int:
        self.hash.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def save_state(obj: Any, path: Path, before_rename: Callable[[str], None] | None = None) -> str:
    """torch.save `obj` to `path` atomically; return the sha256 of the bytes written.

    The hash is of what bench wrote, never of what is on disk afterwards (which another
    writer of a shared folder could have replaced). `before_rename(sha256)` runs once the
    bytes are written and before the file takes its name: a failure there leaves `path` as
    it was.
    """
    with atomic_open(path, "wb") as f:
        w = _HashingWriter(f)
        torch.save(obj, w)
        if before_rename is not None:
            before_rename(w.hash.hexdigest())
    return w.hash.hexdigest()


def load_verified(path: Path, expected_sha256: str | tuple[str, ...] | None, *,
                  what: str = "checkpoint", map_location: Any = "cpu", load: bool = True) -> Any:
    """`torch.load(path, weights_only=True)` of a file whose sha256 is (one of) the expected.

    No expected sha256 means no load. The hash and the load read the same open file, so a
    file renamed over `path` in between is not what gets loaded.
    """
    shown = printable(path)
    expected = tuple(s for s in ((expected_sha256,) if isinstance(expected_sha256, str)
                                 else (expected_sha256 or ())) if s)
    if not expected:
        raise CheckpointError(f"{what} {shown} has no sha256 recorded in the results database "
                              f"(bench did not write it), so it is not loaded")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{what} {shown} is missing") from None
    except OSError as e:
        raise CheckpointError(f"{what} {shown} cannot be opened: {e.strerror or e}") from None
    with f:
        got = _sha256_stream(f)
        if got not in expected:
            raise CheckpointError(f"{what} {shown} does not match its recorded sha256 "
                                  f"({got[:12]}… ≠ {expected[0][:12]}…)")
        if not load:
            return None
        f.seek(0)
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{what} {shown} cannot be read ({type(e).__name__})") from None


def verify_sha256(path: Path, expected_sha256: str | None, *, what: str = "checkpoint") -> None:
    """Raise CheckpointError unless `path` is there and its sha256 is the recorded one."""
    load_verified(path, expected_sha256, what=what, load=False)


def save_checkpoint(model: nn.Module, path: Path) -> str:
    """Save the model's state dict atomically; return its sha256."""
    return save_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def load_checkpoint(model: nn.Module, path: Path, expected_sha256: str | None) -> None:
    """Load a cached checkpoint into model, strictly, only if its sha256 is the recorded one."""
    state = load_verified(path, expected_sha256)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {printable(path)} does not fit the model: "
                              f"{first[1].strip() if len(first) > 1 else first[0]}") from None
