"""ε literals: kept as written ("8/255", "0.031") and as a float.

TRADES' 0.031 is not 8/255 (0.0313725…); storing the literal keeps such cells apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EPS_RE = re.compile(rf"^\s*({_NUM})\s*(?:/\s*({_NUM}))?\s*$")


@dataclass(frozen=True, order=True)
class Eps:
    value: float
    literal: str

    def __str__(self) -> str:
        return self.literal


def parse_eps(raw: object) -> Eps:
    """Parse 0.3, "0.3", "8/255" or 2 into an Eps; raise ValueError with the reason."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"malformed epsilon {raw!r}: expected a number or 'a/b'")
    if isinstance(raw, (int, float)):
        if raw < 0 or raw != raw or raw == float("inf"):
            raise ValueError(f"epsilon must be a finite number ≥ 0, got {raw!r}")
        return Eps(float(raw), _literal_of_number(raw))
    if not isinstance(raw, str):
        raise ValueError(f"malformed epsilon {raw!r}: expected a number or 'a/b'")
    m = _EPS_RE.match(raw)
    if not m:
        raise ValueError(f"malformed epsilon {raw!r}: expected a number or 'a/b' such as 8/255")
    num, den = m.group(1), m.group(2)
    if den is None:
        value = float(num)
    else:
        if float(den) == 0:
            raise ValueError(f"malformed epsilon {raw!r}: division by zero")
        value = float(Fraction(num) / Fraction(den))
    literal = re.sub(r"\s+", "", raw)
    return Eps(value, literal)


def _literal_of_number(x: float | int) -> str:
    return repr(x) if isinstance(x, float) else str(x)
