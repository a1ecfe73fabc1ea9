"""ε literals: kept as written ("8/255", "0.031") and as a float.

TRADES' 0.031 is not 8/255 (0.0313725…); storing the literal keeps such cells apart.

A literal is short (`MAX_LITERAL` characters), its exponents have at most three digits, and
its value is finite and at most `MAX_EPS`: the plugins' norms are ℓ∞ and ℓ2 on images scaled
to [0, 1], where ℓ∞ ≤ 1 and the ℓ2 diameter of a 3×224×224 image is √150528 ≈ 388, so 1000
admits every meaningful budget (in pixel units too, 255) and refuses 1e400 or inf. The
division is exact (`Fraction`) and, with those bounds, cheap: '1e999999999/3' is refused,
not evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?"
MAX_LITERAL = 64
MAX_EPS = 1000.0
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
        if not 0 <= raw <= MAX_EPS:      # NaN fails both comparisons
            raise ValueError(f"epsilon must be a finite number in [0, {MAX_EPS:g}], got {raw!r}")
        return Eps(float(raw), _literal_of_number(raw))
    if not isinstance(raw, str):
        raise ValueError(f"malformed epsilon {_short(raw)}: expected a number or 'a/b'")
    if len(raw) > MAX_LITERAL:
        raise ValueError(f"malformed epsilon {_short(raw)}: longer than {MAX_LITERAL} characters")
    m = _EPS_RE.match(raw)
    if not m:
        raise ValueError(f"malformed epsilon {raw!r}: expected a number or 'a/b' such as 8/255 "
                         f"(exponents of at most three digits)")
    num, den = m.group(1), m.group(2)
    if den is None:
        exact = Fraction(num)
    else:
        if Fraction(den) == 0:
            raise ValueError(f"malformed epsilon {raw!r}: division by zero")
        exact = Fraction(num) / Fraction(den)
    if exact > MAX_EPS:
        raise ValueError(f"epsilon {raw!r} is larger than {MAX_EPS:g}")
    value = float(num) if den is None else float(exact)
    literal = re.sub(r"\s+", "", raw)
    return Eps(value, literal)


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:39] + "…"


def _literal_of_number(x: float | int) -> str:
    return repr(x) if isinstance(x, float) else str(x)
