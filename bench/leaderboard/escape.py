"""Names made safe for the file they are written into: a LaTeX table, a Markdown table, a
CSV file that a spreadsheet will open. (HTML is escaped by the site's Jinja autoescape.)"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL: never wanted in a table cell (a newline in LaTeX can end the
# paragraph inside a tabular, in Markdown it ends the row)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")


def one_line(s: Any) -> str:
    """`s` as text on one line: control characters (newlines included) become spaces and a
    run of spaces that held one collapses, so a name cannot open a blank line."""
    text = str(s)
    if not _CONTROLS.search(text):
        return text
    return _SPACES.sub(" ", _CONTROLS.sub(" ", text))


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "ε": r"$\varepsilon$", "ϵ": r"$\epsilon$", "ℓ": r"$\ell$", "∞": r"$\infty$",
    "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$",
}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX_SPECIALS))


def tex_escape(s: Any) -> str:
    """Text safe inside LaTeX, on one line: the ten specials, < > | and a few math symbols."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIALS[m.group(0)], one_line(s))


_MD_RE = re.compile(r"([\\`*_\[\]|~])")


def md_escape(s: Any) -> str:
    """Text safe inside a Markdown table cell, on one line; HTML is neutralised, not
    interpreted."""
    s = one_line(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_RE.sub(r"\\\1", s)


# OWASP, "CSV Injection": a cell that begins with one of these is run as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """A value for a CSV cell: text that a spreadsheet would run as a formula gets a leading
    single quote (OWASP's rule); numbers stay numbers (-0.59 is a difference, not a formula);
    None is an empty cell."""
    if v is None:
        return ""
    if isinstance(v, (int, float)):         # bool too
        return v
    text = str(v)
    return "'" + text if text.startswith(_FORMULA_START) else text
