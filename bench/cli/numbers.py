"""argparse `type=` functions for the command line's numbers: each reads one flag's value
and refuses what the engine cannot use (NaN, infinity, a 26-digit seed, a negative count)
with one sentence, which argparse prints after its usage line, exit status 2."""

from __future__ import annotations

import argparse
import math

INT64_MAX = 2**63 - 1           # a seed or an id goes into a signed 64-bit database column
MAX_LEASE_SECONDS = 7 * 86400   # a worker silent for a week is dead; longer would never hand over
_MAX_DIGITS = 30                # more is not a number any flag takes (and int() of 5,000 digits is slow)


def _whole(text: str) -> int:
    s = text.strip()
    if len(s) > _MAX_DIGITS:
        raise argparse.ArgumentTypeError(f"{text[:_MAX_DIGITS]!r}… is too long for a number")
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _real(text: str) -> float:
    s = text.strip()
    if len(s) > _MAX_DIGITS:
        raise argparse.ArgumentTypeError(f"{text[:_MAX_DIGITS]!r}… is too long for a number")
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """A count or an id: 1 … 2**63 − 1."""
    v = _whole(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    if v > INT64_MAX:
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got {v}")
    return v


def seed(text: str) -> int:
    """A seed: 0 … 2**63 − 1 (what a suite's seed may be)."""
    v = _whole(text)
    if not 0 <= v <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"must be a seed in [0, 2**63 - 1], got {v}")
    return v


def lease_seconds(text: str) -> float:
    """A claim's lease: more than 0 s, at most a week."""
    v = _real(text)
    if not 0 < v <= MAX_LEASE_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, at most "
                                         f"{MAX_LEASE_SECONDS} (7 days), got {text!r}")
    return v

