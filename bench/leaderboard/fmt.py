"""How the leaderboard writes values and names: percentages, differences, times, and
file names and anchors made from table, model and cell names."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from bench.db.schema import ResultRecord


def fmt_when(t: dt.datetime | None) -> str:
    return "" if t is None else f"{t:%Y-%m-%d %H:%M} UTC"


def fmt_pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def fmt_signed(x: float | None) -> str:
    if x is None:
        return ""
    s = f"{x:+.2f}"
    return "±0.00" if s in ("+0.00", "-0.00") else s.replace("-", "−")


SLUG_MAX = 80                    # a slug's length before it is cut (file names allow 255)


def slug(name: str) -> str:
    """A file-name-safe form of a name, at most SLUG_MAX characters; a name that had to be
    changed or cut gets a short hash of itself, which keeps different names apart."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"
    if s != name or len(s) > SLUG_MAX:
        s = f"{s[:60]}-{hashlib.sha1(str(name).encode(), usedforsecurity=False).hexdigest()[:8]}"
    return s


def result_anchor(r: ResultRecord) -> str:
    return "r-" + slug(r.cell_key)


def model_page(key: str) -> str:
    return f"model-{slug(key)}.html"


def table_page(name: str) -> str:
    return f"table-{slug(name)}.html"
