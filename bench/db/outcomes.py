"""Per-sample data of a result: the robust outcome of each sample as a bitmap
(`results.outcomes`), other per-sample arrays as an npz (`results.details`), and the
per-sample worst case over attacks."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np


def pack_outcomes(outcomes: np.ndarray) -> bytes:
    return np.packbits(np.asarray(outcomes, dtype=bool)).tobytes()


def unpack_outcomes(blob: bytes | bytearray | memoryview | np.ndarray | None,
                    n: int) -> np.ndarray | None:
    """Per-sample bools from `pack_outcomes` bytes (None stays None)."""
    if blob is None:
        return None
    data = blob.astype(np.uint8, copy=False) if isinstance(blob, np.ndarray) \
        else np.frombuffer(blob, dtype=np.uint8)
    return np.unpackbits(data, count=n).astype(bool)


def worst_case(outcomes: Sequence[Any]) -> np.ndarray:
    """Per-sample AND of robust outcomes over attacks (same examples, same order): robust
    against all. Bool arrays or torch tensors (read through `.cpu()`, so no torch here)."""
    arrays = [np.asarray(o.cpu() if hasattr(o, "cpu") else o, dtype=bool).reshape(-1)
              for o in outcomes]
    if not arrays:
        raise ValueError("worst_case needs at least one outcome array")
    sizes = {a.size for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"outcome arrays of different lengths {sorted(sizes)}")
    return np.logical_and.reduce(arrays)


def pack_details(details: dict[str, np.ndarray]) -> bytes | None:
    if not details:
        return None
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in details.items()})
    return buf.getvalue()


def unpack_details(blob: bytes | None) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as d:
        return {k: d[k] for k in d.files}
