"""The verdicts of `bench.leaderboard.check` as a terminal table (with a legend and a
summary line), JUnit XML (one testcase per cell) or Markdown.

A paper verdict's recorded notes (suite.yaml's `notes:` on its row, column or cell) and its
sanity explanations travel with it: indented lines under its row in the terminal, the
testcase's system-out in JUnit, a last column in Markdown."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from bench.atomic import atomic_open
from bench.errors import BenchError, one_line, printable
from bench.leaderboard.check import (
    ABOVE, BELOW, BETTER, CHANGED_NS, FAILED, MISSING, NEW, NOT_COMPARABLE, NOT_RUN,
    REPRODUCED, UNCHANGED, WORSE, PaperVerdict, Verdict, baseline_count, compared_count,
    measured_count)

_MARK = {WORSE: "+", BETTER: "-", UNCHANGED: " ", NEW: "n", MISSING: "?", FAILED: "!",
         NOT_COMPARABLE: "x", CHANGED_NS: "~", REPRODUCED: " ", BELOW: "v", ABOVE: "^",
         NOT_RUN: "."}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def _is_paper(verdicts: Sequence[Verdict | PaperVerdict], paper: bool | None) -> bool:
    """Paper verdicts or baseline ones (an empty list is what `paper` says, else baseline)."""
    return isinstance(verdicts[0], PaperVerdict) if verdicts else bool(paper)


def _rows(verdicts: Sequence[Verdict | PaperVerdict]) -> tuple[list[str], list[list[str]]]:
    if verdicts and isinstance(verdicts[0], PaperVerdict):
        head = ["", "verdict", "cell", "measured", "paper", "Δ pp", "tol", "n", "note"]
        rows = [[_MARK.get(v.verdict, "?"), v.verdict, v.name, _fmt(v.measured),
                 _fmt(v.reported), _fmt(v.diff_pp, "+.2f"), _fmt(v.tolerance, "g"),
                 "" if v.n is None else str(v.n), v.reason] for v in verdicts]
    else:
        head = ["", "verdict", "cell", "baseline", "current", "Δ pp", "p", "n", "note"]
        rows = [[_MARK.get(v.verdict, "?"), v.verdict, v.name, _fmt(v.baseline),
                 _fmt(v.current), _fmt(v.diff_pp, "+.2f"), _fmt(v.p_value, ".3g"),
                 "/".join(str(x) for x in (v.n_baseline, v.n_current) if x is not None),
                 v.reason] for v in verdicts]
    return head, rows


def summary(verdicts: Sequence[Verdict | PaperVerdict], *, paper: bool | None = None) -> str:
    """FAIL / OK / NOTHING MEASURED (paper) / NOTHING COMPARED (baseline), the counts of
    each verdict and, against a baseline, how many of its cells were compared."""
    paper = _is_paper(verdicts, paper)
    counts = Counter(v.verdict for v in verdicts)
    failing = sum(1 for v in verdicts if v.failing)
    parts = ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
    status = "FAIL" if failing else "OK"
    if not failing and paper and not measured_count(verdicts):
        status = "NOTHING MEASURED"              # not OK: a gate that measured nothing
    if not failing and not paper and not compared_count(verdicts):
        status = "NOTHING COMPARED"              # every baseline cell missing or not comparable
    line = f"{status}: {len(verdicts)} cell(s): {parts or 'nothing to check'}"
    if not paper:
        line += (f"; {compared_count(verdicts)} of {baseline_count(verdicts)} baseline "
                 f"cell(s) compared")
    return line


_PAPER_MARKS = (REPRODUCED, BELOW, ABOVE, NOT_RUN, FAILED)
_BASELINE_MARKS = (WORSE, BETTER, UNCHANGED, CHANGED_NS, NEW, MISSING, NOT_COMPARABLE, FAILED)


def legend(verdicts: Sequence[Verdict | PaperVerdict], *, paper: bool | None = None) -> str:
    """One line explaining the symbols of the table's first column."""
    kinds = _PAPER_MARKS if _is_paper(verdicts, paper) else _BASELINE_MARKS
    marks = [f"{'(blank)' if _MARK[k] == ' ' else _MARK[k]} {k.replace('_', ' ')}" for k in kinds]
    return "legend: " + " · ".join(marks)


def format_table(verdicts: Sequence[Verdict | PaperVerdict], *, width: int = 160,
                 paper: bool | None = None) -> str:
    """A plain-text table for the terminal, a legend of its first column, a summary line
    (names and notes with control characters escaped: they come from files)."""
    head, rows = _rows(verdicts)
    if not rows:
        return summary(verdicts, paper=paper)
    note_cap = 90
    rows = [r[:-1] + [r[-1] if len(r[-1]) <= note_cap else r[-1][:note_cap - 1] + "…"]
            for r in rows]
    rows = [[printable(" ".join(c.split())) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    numeric = {3, 4, 5, 6, 7}
    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])]
    for r, v in zip(rows, verdicts):
        out.append(line(r))
        out += [f"    {text}" for text in _explanations(v)]
    return "\n".join(out + ["", legend(verdicts, paper=paper), summary(verdicts, paper=paper)])


def _explanations(v: Verdict | PaperVerdict) -> list[str]:
    """A paper verdict's notes ("note: …"), sanity explanations ("⚑ …") and the recipe rows
    tried for its value ("recipe …: measured, Δ: verdict"), one line each, whitespace
    collapsed and control characters escaped (they come from files)."""
    if not isinstance(v, PaperVerdict):
        return []
    return ([printable(" ".join(f"note: {n}".split())) for n in v.notes]
            + [printable(" ".join(f"⚑ {x}".split())) for x in v.sanity]
            + [printable(" ".join(r.recipe_line.split())) for r in v.recipes])


def write_junit(verdicts: Sequence[Verdict | PaperVerdict], path: str | Path, *,
                suite: str = "bench.check") -> Path:
    """JUnit XML: one testcase per cell; worse/failed (paper: below/above/failed) are
    failures, missing/not comparable/not run are skipped. Written atomically; text with
    control characters (not allowed in XML) escaped."""
    path = Path(path)
    failures = sum(1 for v in verdicts if v.failing)
    skipped_kinds = (MISSING, NOT_COMPARABLE, NOT_RUN)
    skipped = sum(1 for v in verdicts if v.verdict in skipped_kinds)
    ts = ET.Element("testsuite", name=suite, tests=str(len(verdicts)), failures=str(failures),
                    errors="0", skipped=str(skipped),
                    timestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    for v in verdicts:
        classname = f"{suite}.{v.table}" if isinstance(v, PaperVerdict) else f"{suite}.baseline"
        tc = ET.SubElement(ts, "testcase", classname=printable(classname),
                           name=printable(v.name), time="0")
        detail = json.dumps(v.as_dict(), default=str, sort_keys=True)
        if v.failing:
            f = ET.SubElement(tc, "failure", type=v.verdict,
                              message=printable(f"{v.verdict}: {v.reason}"))
            f.text = detail
        elif v.verdict in skipped_kinds:
            ET.SubElement(tc, "skipped", message=printable(f"{v.verdict}: {v.reason}"))
        lines = [] if v.failing or v.verdict in skipped_kinds else [f"{v.verdict}: {v.reason}"]
        lines += _explanations(v)
        if lines:
            so = ET.SubElement(tc, "system-out")
            so.text = "\n".join(printable(x) for x in lines)
    with _writing(path, "JUnit report") as f:
        ET.ElementTree(ts).write(f, encoding="utf-8", xml_declaration=True)
    return path


def _md(s: Any) -> str:
    s = printable(" ".join(str(s).split()))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def write_markdown(verdicts: Sequence[Verdict | PaperVerdict], path: str | Path, *,
                   title: str = "bench check", paper: bool | None = None) -> Path:
    """A Markdown table of the verdicts under a title and the summary line, written
    atomically."""
    path = Path(path)
    head, rows = _rows(verdicts)
    if any(isinstance(v, PaperVerdict) for v in verdicts):
        head = head + ["notes"]
        rows = [r + [" · ".join(_explanations(v))] for r, v in zip(rows, verdicts)]
    lines = [f"### {_md(title)}", "", f"**{_md(summary(verdicts, paper=paper))}**", ""]
    if rows:
        lines.append("| " + " | ".join(_md(h) or " " for h in head[1:]) + " |")
        lines.append("|" + "|".join(":---" if i in (0, 1, 7, 8) else "---:"
                                    for i in range(len(head) - 1)) + "|")
        for r, v in zip(rows, verdicts):
            cells = [_md(c) for c in r[1:]]
            if v.failing:
                cells[0] = f"**{cells[0]}**"
            lines.append("| " + " | ".join(cells) + " |")
    with _writing(path, "Markdown report") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path


@contextlib.contextmanager
def _writing(path: Path, what: str) -> Iterator[IO[bytes]]:
    """An atomic write of `path` (the old file stays whole on a full disk), its failure
    one sentence."""
    try:
        with atomic_open(path, "wb") as f:
            yield f
    except OSError as e:
        raise BenchError(f"cannot write the {what} {printable(path)}: "
                         f"{e.strerror or one_line(e)}") from None
