"""The numbers of a cell: robust accuracy in percent, its 95 % Wilson interval, and which
of several matching results a cell shows."""

from __future__ import annotations

import datetime as dt
import math

from bench.db.database import ResultRecord

Z95 = 1.959963984540054          # two-sided 95 % normal quantile
MIN_TIME = dt.datetime(1970, 1, 1)


def accuracy_pct(r: ResultRecord) -> float | None:
    """Robust accuracy in percent: n_correct / n (robust_acc, a fraction, when n is 0)."""
    if r.status != "done":
        return None
    if r.n and r.n > 0:
        return 100.0 * r.n_correct / r.n
    if r.robust_acc is None:
        return None
    return 100.0 * r.robust_acc if r.robust_acc <= 1.0 else float(r.robust_acc)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n, in percent."""
    if not n or n <= 0:
        return None
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return (100.0 * lo, 100.0 * hi)


def preference(r: ResultRecord) -> tuple:
    """Sort key of matching results: done, then non-smoke, then the largest n, then newest."""
    return (r.status == "done", not r.smoke, r.n or 0, r.created or MIN_TIME)
