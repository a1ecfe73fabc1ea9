"""Per-sample data of a result: the robust outcome of each sample as a bitmap
(`results.outcomes`), other per-sample arrays as an npz (`results.details`), and the
per-sample worst case over attacks."""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

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


# The softmax saturation a result records (bench.run.sanity computes and flags it; the
# leaderboard reads it back from the stored details without the model).
SATURATION_DETAIL = "softmax_saturated"   # the per-sample bool stored in a result's details
# A tenth of the inputs: where a cross-entropy attack stalls on that many, a robust
# accuracy moves by whole points, more than the tables' tolerances; a smaller share is
# shown on the page but not flagged. (p_y rounds to 1.0 in float32 once the true logit
# leads every other by ~17 or more: a model trained to a loss of 1e-6, as the committed
# SGD baseline's LeNet, gets there.)
SATURATION_THRESHOLD = 0.10


def saturation_share(details: bytes | Mapping[str, Any] | None) -> float | None:
    """The share of a result's evaluated inputs whose softmax saturates, from its stored
    details (an npz blob, read without pickles, or the unpacked dict); None when the result
    has no such record (results evaluated before it was measured)."""
    if details is None or (isinstance(details, (bytes, bytearray, memoryview)) and not details):
        return None
    try:
        if isinstance(details, Mapping):
            arr = details.get(SATURATION_DETAIL)
        else:
            with np.load(io.BytesIO(bytes(details)), allow_pickle=False) as d:
                arr = d[SATURATION_DETAIL] if SATURATION_DETAIL in d.files else None
    except (ValueError, OSError, KeyError):    # not an npz bench wrote: no share
        return None
    if arr is None:
        return None
    arr = np.asarray(arr).reshape(-1)
    return float(arr.astype(bool).mean()) if arr.size else None
