"""The checkpoint cache: one state dict per model key, verified by sha256 before use.

A checkpoint is written atomically (temporary file, fsync, then rename) and its sha256 is
recorded in the database, so on a shared `--results-dir` a worker never sees a
half-written file under a checkpoint's name, and verifies the bytes before loading them. Loading uses `weights_only=True`. A missing, corrupt or
mismatched checkpoint is reported to the caller, which retrains: it is never silently used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from bench.errors import CheckpointError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: Path) -> str:
    """Save the model's state dict atomically; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:     # on disk before the name (and the database) points at it
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def load_checkpoint(model: nn.Module, path: Path, expected_sha256: str | None) -> None:
    """Load a cached checkpoint into model, strictly, after checking its sha256."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing")
    if expected_sha256:
        got = sha256_file(path)
        if got != expected_sha256:
            raise CheckpointError(f"checkpoint {path} does not match its recorded sha256 "
                                  f"({got[:12]}… ≠ {expected_sha256[:12]}…)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} does not fit the model: "
                              f"{first[1].strip() if len(first) > 1 else first[0]}") from None
