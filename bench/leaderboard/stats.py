"""The numbers of a cell: robust accuracy in percent, its 95 % Wilson interval, and which
of several matching results a cell shows."""

from __future__ import annotations

import datetime as dt
import functools

from bench.db.schema import ResultRecord

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


@functools.lru_cache(maxsize=4096)
def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n, in percent (scipy's
    `binomtest(k, n).proportion_ci(method="wilson")`); None without a valid count."""
    if not n or n <= 0 or k is None or not 0 <= k <= n:
        return None
    from scipy.stats import binomtest     # imported on first use: scipy.stats is slow to load
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (100.0 * float(ci.low), 100.0 * float(ci.high))


def preference(r: ResultRecord) -> tuple:
    """Sort key of matching results: done, then non-smoke, then the largest n, then newest."""
    return (r.status == "done", not r.smoke, r.n or 0, r.created or MIN_TIME)
