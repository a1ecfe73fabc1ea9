"""Where a number came from: library versions, code commit, host and device."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import bench

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "timm", "foolbox", "sqlalchemy", "jinja2",
             "pyautoattack")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    import torch     # here, not at the top: `--help`, `ls` and `report` import this module and need no torch

    out = {"python": platform.python_version(), "bench": bench.__version__}
    for p in _PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["torch"] = torch.__version__          # the build tag too (+cu130, +cpu)
    out["cuda"] = torch.version.cuda or "none"
    if torch.backends.cudnn.is_available():
        out["cudnn"] = str(torch.backends.cudnn.version())
    return out


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """The git commit of the bench checkout ('+dirty' if modified), or '' if not a checkout."""
    root = Path(bench.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def host() -> str:
    return socket.gethostname()
