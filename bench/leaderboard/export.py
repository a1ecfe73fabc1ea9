"""The paper tables as files: CSV and JSON (every field, for analysis), Markdown (for a
README) and LaTeX (booktabs, for the paper), built from the same views as the site.

`export_tables(engine, out_dir)` writes ``<table>.<fmt>`` per table and format:

* CSV: one line per cell (tidy): table, row, model, column, attack, ε, state, measured,
  paper, difference, 95 % Wilson interval, n, flags, error, cell id/key; the worst-case
  columns come last with attack ``worst-case``.
* JSON: the table with its columns and rows, each cell with the same fields.
* Markdown / LaTeX: the paper's layout; best in bold, second best underlined, the paper's
  value in parentheses (Markdown only), "not run" / "failed" where there is no number.

Smoke results never enter these files. They get their own: the smoke grid of each dataset
(`bench.leaderboard.smoke.build_smoke_grids`: models × attack and ε, worst case per ε) is written as
``smoke-<dataset>.<fmt>`` beside the tables, marked smoke in every format (a "smoke"
column in CSV, ``"smoke": true`` in JSON, SMOKE in the Markdown title and LaTeX caption).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy.engine import Engine

from bench import __version__
from bench.errors import BenchError
from bench.leaderboard.fmt import fmt_pct, slug
from bench.leaderboard.smoke import SmokeGrid, build_smoke_grids
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import CellView, TableView, WorstCase, build_table

FORMATS = ("csv", "json", "md", "tex")


# ============================================================================ escaping

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "ε": r"$\varepsilon$", "ϵ": r"$\epsilon$", "ℓ": r"$\ell$", "∞": r"$\infty$",
    "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$",
}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX_SPECIALS))


def tex_escape(s: Any) -> str:
    """Text safe inside LaTeX: the ten specials, < > | and a few math symbols."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIALS[m.group(0)], str(s))


_MD_RE = re.compile(r"([\\`*_\[\]|~])")


def md_escape(s: Any) -> str:
    """Text safe inside a Markdown table cell; HTML is neutralised, not interpreted."""
    s = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("\r", " ").replace("\n", " ")
    return _MD_RE.sub(r"\\\1", s)


# ============================================================================ rows of data

def _cell_record(tv: TableView, row, cell: CellView, column) -> dict[str, Any]:
    r = cell.result
    return {
        "table": tv.name, "row": row.label, "model": row.model, "column": column.label,
        "attack": column.attack, "eps": column.eps, "state": cell.state,
        "measured": None if cell.value is None else round(cell.value, 4),
        "reported": cell.reported,
        "reported_source": cell.reported_source or None,
        "others": [{"source": o.label, "value": o.value, "citation": o.source} for o in cell.others],
        "beyond": bool(row.beyond or column.beyond),
        "diff": None if cell.diff is None else round(cell.diff, 4),
        "within_tolerance": cell.within_tolerance,
        "ci_low": None if cell.ci is None else round(cell.ci[0], 4),
        "ci_high": None if cell.ci is None else round(cell.ci[1], 4),
        "n": cell.n if r is not None else None,
        "n_correct": cell.n_correct if r is not None else None,
        "rank": cell.rank or None,
        "flags": list(cell.flags), "error": cell.error or None,
        "cell_id": r.cell_id if r is not None else None,
        "cell_key": r.cell_key if r is not None else None,
        "precision": r.precision if r is not None else None,
        "commit": r.commit if r is not None else None,
        "note": cell.note or None,
    }


def _worst_record(tv: TableView, row, w: WorstCase) -> dict[str, Any]:
    return {
        "table": tv.name, "row": row.label, "model": row.model,
        "column": _worst_label(tv, w.eps), "attack": "worst-case", "eps": w.eps,
        "state": "done" if w.value is not None else "not_run",
        "measured": None if w.value is None else round(w.value, 4), "reported": None,
        "diff": None, "within_tolerance": None,
        "ci_low": None if w.ci is None else round(w.ci[0], 4),
        "ci_high": None if w.ci is None else round(w.ci[1], 4),
        "n": w.n or None, "n_correct": w.k if w.n else None, "rank": w.rank or None,
        "flags": [], "error": None, "cell_id": None, "cell_key": None, "precision": None,
        "commit": None, "note": w.note or None, "attacks": list(w.attacks),
    }


def _worst_label(tv: TableView, eps: str) -> str:
    return "Worst case" if len(tv.worst_eps) == 1 else f"Worst case (ε = {eps})"


def table_records(tv: TableView) -> list[dict[str, Any]]:
    out = []
    for row in tv.rows:
        out += [_cell_record(tv, row, c, col) for c, col in zip(row.cells, tv.columns)]
        out += [_worst_record(tv, row, w) for w in row.worst]
    return out


# ============================================================================ writers

CSV_FIELDS = ["table", "row", "model", "column", "attack", "eps", "state", "measured",
              "reported", "reported_source", "beyond", "diff", "within_tolerance", "ci_low",
              "ci_high", "n", "n_correct",
              "rank", "flags", "error", "cell_id", "cell_key", "precision", "commit", "note"]


def write_csv(tv: TableView, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for rec in table_records(tv):
            rec = dict(rec, flags=";".join(rec["flags"]))
            w.writerow({k: "" if v is None else v for k, v in rec.items()})


def write_json(tv: TableView, path: Path, generated: str) -> None:
    records = table_records(tv)
    per_row = len(tv.columns) + len(tv.worst_eps)
    doc = {
        "table": tv.name, "title": tv.title, "source": tv.source, "tolerance_pp": tv.tolerance,
        "tags": tv.tags, "generated": generated, "bench_version": __version__,
        "smoke": False, "counts": tv.counts,
        "columns": [{"label": c.label, "attack": c.attack, "eps": c.eps,
                     "eps_value": c.eps_value} for c in tv.columns]
        + [{"label": _worst_label(tv, e), "attack": "worst-case", "eps": e, "eps_value": None}
           for e in tv.worst_eps],
        "rows": [{"model": row.model, "label": row.label,
                  "cells": records[i * per_row:(i + 1) * per_row]}
                 for i, row in enumerate(tv.rows)],
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _plain(item: CellView | WorstCase) -> tuple[str, int]:
    if isinstance(item, CellView) and item.state == "failed":
        return "failed", 0
    if isinstance(item, CellView) and item.state == "reference":   # published, not measured
        return ("–" if item.reported is None else f"[{fmt_pct(item.reported)}]"), 0
    if item.value is None:
        return "not run" if isinstance(item, CellView) else "–", 0
    return fmt_pct(item.value), item.rank


def _header_cells(tv: TableView) -> list[str]:
    return ([c.label for c in tv.columns] + [_worst_label(tv, e) for e in tv.worst_eps])


def write_markdown(tv: TableView, path: Path, generated: str) -> None:
    lines = [f"### {md_escape(tv.title)}", ""]
    head = ["Defense"] + _header_cells(tv)
    lines.append("| " + " | ".join(md_escape(h) for h in head) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in tv.rows:
        out = [md_escape(row.label)]
        for item in list(row.cells) + list(row.worst):
            text, rank = _plain(item)
            text = f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text
            if isinstance(item, CellView) and item.reported is not None and item.state != "reference":
                text += f" ({fmt_pct(item.reported)})"
            if isinstance(item, CellView) and item.flags:
                text += " ⚑"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", f"Robust accuracy (%) measured by bench {__version__}, generated {generated}; "
              "the paper's value in parentheses, [a published value with no model to run] in "
              "brackets. **Bold**: best, <u>underlined</u>: second best; "
              "⚑: sanity flags raised. Worst case: per-sample AND over every attack at the "
              "table's ε." + (f" Source: {md_escape(tv.source)}." if tv.source else ""), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_latex(tv: TableView, path: Path, generated: str) -> None:
    head = ["Defense"] + _header_cells(tv)
    lines = [f"% {tex_escape(tv.name)}: generated by bench {__version__} on {generated}; "
             "smoke results excluded. Needs \\usepackage{booktabs}.",
             r"\begin{table}[t]", r"\centering",
             r"\caption{" + tex_escape(tv.title) + "}",
             r"\label{tab:" + re.sub(r"[^A-Za-z0-9:-]", "-", tv.name) + "}",
             r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for row in tv.rows:
        out = [tex_escape(row.label)]
        for item in list(row.cells) + list(row.worst):
            text, rank = _plain(item)
            text = "--" if text in ("not run", "–") else tex_escape(text)
            out.append(r"\textbf{" + text + "}" if rank == 1
                       else r"\underline{" + text + "}" if rank == 2 else text)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


# ============================================================================ the smoke grid

SMOKE_NOTE = ("SMOKE: a scaled-down profile (few examples, short schedules) that checks the "
              "pipeline; not comparable with the paper's values")


def write_smoke_csv(g: SmokeGrid, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS + ["smoke"], extrasaction="ignore")
        w.writeheader()
        for rec in table_records(g):
            rec = dict(rec, flags=";".join(rec["flags"]), smoke=True)
            w.writerow({k: "" if v is None else v for k, v in rec.items()})


def write_smoke_json(g: SmokeGrid, path: Path, generated: str) -> None:
    records = table_records(g)
    per_row = len(g.columns) + len(g.worst_eps)
    doc = {
        "table": g.name, "title": g.title, "dataset": g.dataset, "smoke": True,
        "note": SMOKE_NOTE, "generated": generated, "bench_version": __version__,
        "counts": g.counts, "n_examples": g.n_examples,
        "columns": [{"label": c.label, "attack": c.attack, "eps": c.eps,
                     "eps_value": c.eps_value} for c in g.columns]
        + [{"label": _worst_label(g, e), "attack": "worst-case", "eps": e, "eps_value": None}
           for e in g.worst_eps],
        "rows": [{"model": row.model, "label": row.label,
                  "cells": records[i * per_row:(i + 1) * per_row]}
                 for i, row in enumerate(g.rows)],
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _smoke_text(item: CellView | WorstCase) -> tuple[str, int]:
    text, rank = _plain(item)
    if item.value is not None and item.ci is not None:
        text += f" [{fmt_pct(item.ci[0])}, {fmt_pct(item.ci[1])}]"
    return text, rank


def write_smoke_markdown(g: SmokeGrid, path: Path, generated: str) -> None:
    head = ["Model"] + _header_cells(g)
    lines = [f"### {md_escape(g.title)} (SMOKE)", "",
             "| " + " | ".join(md_escape(h) for h in head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in g.rows:
        out = [md_escape(row.label)]
        for item in list(row.cells) + list(row.worst):
            text, rank = _smoke_text(item)
            out.append(f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", f"{SMOKE_NOTE}. Robust accuracy (%) with its 95 % Wilson interval, measured "
              f"by bench {__version__}, generated {generated}; n = "
              + ", ".join(str(n) for n in g.n_examples) + " examples. Worst case: per-sample "
              "AND over every attack at that ε.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_smoke_latex(g: SmokeGrid, path: Path, generated: str) -> None:
    head = ["Model"] + _header_cells(g)
    lines = [f"% {tex_escape(g.name)}: SMOKE results, generated by bench {__version__} on "
             f"{generated}; not paper numbers. Needs \\usepackage{{booktabs}}.",
             r"\begin{table}[t]", r"\centering",
             r"\caption{" + tex_escape(g.title) + r" (smoke: not comparable with the paper)}",
             r"\label{tab:" + re.sub(r"[^A-Za-z0-9:-]", "-", g.name) + "}",
             r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for row in g.rows:
        out = [tex_escape(row.label)]
        for item in list(row.cells) + list(row.worst):
            text, rank = _plain(item)
            text = "--" if text in ("not run", "–") else tex_escape(text)
            out.append(r"\textbf{" + text + "}" if rank == 1
                       else r"\underline{" + text + "}" if rank == 2 else text)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def export_tables(engine: Engine, out_dir: Path, formats: Iterable[str] = FORMATS,
                  baselines: Iterable[dict] = ()) -> list[Path]:
    """Write every paper table, and the smoke grid of each dataset with smoke results
    (``smoke-<dataset>.<fmt>``, marked smoke), in each format under out_dir; return the
    paths written. `baselines`: committed baseline files whose cells join the
    database's."""
    formats = [f.strip().lower() for f in formats if f and f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise BenchError(f"unknown export format {', '.join(unknown)}: choose from "
                         f"{', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = load_store(engine, list(baselines))
    generated = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    written: list[Path] = []
    for rec in store.tables:
        tv = build_table(store, rec)
        base = slug(tv.name)
        for fmt in formats:
            path = out_dir / f"{base}.{fmt}"
            if fmt == "csv":
                write_csv(tv, path)
            elif fmt == "json":
                write_json(tv, path, generated)
            elif fmt == "md":
                write_markdown(tv, path, generated)
            else:
                write_latex(tv, path, generated)
            written.append(path)
    for g in build_smoke_grids(store):
        base = slug(g.name)
        for fmt in formats:
            path = out_dir / f"{base}.{fmt}"
            if fmt == "csv":
                write_smoke_csv(g, path)
            elif fmt == "json":
                write_smoke_json(g, path, generated)
            elif fmt == "md":
                write_smoke_markdown(g, path, generated)
            else:
                write_smoke_latex(g, path, generated)
            written.append(path)
    return written


__all__ = ["export_tables", "tex_escape", "md_escape", "table_records", "FORMATS"]
