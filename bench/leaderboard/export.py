"""The paper tables as files: CSV and JSON (every field, for analysis), Markdown (for a
README) and LaTeX (booktabs, for the paper), built from the same views as the site.

`export_tables(engine, out_dir)` writes ``<table>.<fmt>`` per table and format:

* CSV: one line per cell (tidy): table, row, model, column, attack, ε, state, measured,
  paper, difference, 95 % Wilson interval, n, flags, error, cell id/key; the worst-case
  columns come last with attack ``worst-case``. Text that a spreadsheet would run as a
  formula starts with a quote (`bench.leaderboard.escape.csv_cell`); numbers stay numbers.
* JSON: the table with its columns and rows, each cell with the same fields.
* Markdown / LaTeX (templates/export.md.j2, export.tex.j2): the paper's layout; best in
  bold, second best underlined, the paper's value in parentheses (Markdown only), "not
  run" / "failed" where there is no number; every name escaped for the format, on one line.

Smoke results never enter these files. They get their own: the smoke grid of each dataset
(`bench.leaderboard.smoke.build_smoke_grids`: models × attack and ε, worst case per ε) is
written as ``smoke-<dataset>.<fmt>`` beside the tables by the same writers, marked smoke in
every format (a "smoke" column in CSV, ``"smoke": true`` in JSON, SMOKE in the Markdown
title and LaTeX caption) and with the 95 % interval beside each Markdown value.

Every file is written whole or not at all (`bench.atomic`).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from sqlalchemy.engine import Engine

from bench import __version__
from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.errors import BenchError
from bench.leaderboard.escape import csv_cell, md_escape, tex_escape
from bench.leaderboard.fmt import fmt_pct, slug
from bench.leaderboard.site import TEMPLATE_DIR
from bench.leaderboard.smoke import SmokeGrid, build_smoke_grids
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import CellView, TableView, WorstCase, build_table

FORMATS = ("csv", "json", "md", "tex")


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

# One writer per format for both kinds of table: a paper table (TableView) and a smoke grid
# (SmokeGrid, `view.smoke`), which share columns, rows of CellView and a worst case per ε.

CSV_FIELDS = ["table", "row", "model", "column", "attack", "eps", "state", "measured",
              "reported", "reported_source", "beyond", "diff", "within_tolerance", "ci_low",
              "ci_high", "n", "n_correct",
              "rank", "flags", "error", "cell_id", "cell_key", "precision", "commit", "note"]
SMOKE_NOTE = ("SMOKE: a scaled-down profile (few examples, short schedules) that checks the "
              "pipeline; not comparable with the paper's values")

Table = TableView | SmokeGrid


def write_csv(view: Table, path: Path) -> None:
    """One line per cell; every text cell through `csv_cell` (no formula can start)."""
    fields = CSV_FIELDS + (["smoke"] if view.smoke else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for rec in table_records(view):
        rec = dict(rec, flags=";".join(rec["flags"]), smoke=view.smoke)
        w.writerow({k: csv_cell(v) for k, v in rec.items()})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def write_json(view: Table, path: Path, generated: str) -> None:
    records = table_records(view)
    per_row = len(view.columns) + len(view.worst_eps)
    if view.smoke:
        about = {"dataset": view.dataset, "note": SMOKE_NOTE, "n_examples": view.n_examples}
    else:
        about = {"source": view.source, "tolerance_pp": view.tolerance, "tags": view.tags}
    doc = {
        "table": view.name, "title": view.title, **about, "generated": generated,
        "bench_version": __version__, "smoke": view.smoke, "counts": view.counts,
        "columns": [{"label": c.label, "attack": c.attack, "eps": c.eps,
                     "eps_value": c.eps_value} for c in view.columns]
        + [{"label": _worst_label(view, e), "attack": "worst-case", "eps": e, "eps_value": None}
           for e in view.worst_eps],
        "rows": [{"model": row.model, "label": row.label,
                  "cells": records[i * per_row:(i + 1) * per_row]}
                 for i, row in enumerate(view.rows)],
    }
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _item(x: CellView | WorstCase) -> dict[str, Any]:
    """A cell as the Markdown and LaTeX templates show it: kind (value, failed, reference,
    not_run, none), the value, its rank, interval, the paper's value and the flag mark."""
    cell = isinstance(x, CellView)
    if cell and x.state in ("failed", "reference"):
        kind = x.state
    elif x.value is None:
        kind = "not_run" if cell else "none"
    else:
        kind = "value"
    return {"kind": kind, "value": fmt_pct(x.value), "rank": x.rank if kind == "value" else 0,
            "ci": [fmt_pct(v) for v in x.ci] if kind == "value" and x.ci else None,
            "paper": fmt_pct(x.reported) if cell and x.reported is not None else None,
            "flagged": bool(cell and x.flags)}


def _environment(escape, **delimiters) -> Environment:
    """Templates for a plain-text format: every {{ }} value goes through `escape` (finalize),
    so names stay text; the markup lives in the templates."""
    # nosec B701: these are Markdown and LaTeX, not HTML; `finalize=escape` escapes every value
    return Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=False,  # nosec B701
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True, finalize=escape, **delimiters)


# LaTeX's braces clash with Jinja's: << value >> and <% tag %> there
_TEMPLATES = {
    "md": (lambda: _environment(md_escape), "export.md.j2"),
    "tex": (lambda: _environment(tex_escape, block_start_string="<%", block_end_string="%>",
                                 variable_start_string="<<", variable_end_string=">>",
                                 comment_start_string="<#", comment_end_string="#>"),
            "export.tex.j2"),
}


@functools.lru_cache(maxsize=None)
def _template(fmt: str) -> Template:
    env, name = _TEMPLATES[fmt]
    return env().get_template(name)


def write_document(view: Table, path: Path, generated: str, fmt: str) -> None:
    """The table as the paper lays it out, in Markdown ("md") or LaTeX ("tex")."""
    text = _template(fmt).render(
        view=view, version=__version__, generated=generated, note=SMOKE_NOTE,
        label=re.sub(r"[^A-Za-z0-9:-]", "-", view.name),
        heads=[c.label for c in view.columns] + [_worst_label(view, e) for e in view.worst_eps],
        rows=[(row.label, [_item(x) for x in [*row.cells, *row.worst]]) for row in view.rows])
    atomic_write_text(path, text)


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
    views: list[Table] = [build_table(store, rec) for rec in store.tables]
    for view in views + build_smoke_grids(store):
        for fmt in formats:
            path = out_dir / f"{slug(view.name)}.{fmt}"
            if fmt == "csv":
                write_csv(view, path)
            elif fmt == "json":
                write_json(view, path, generated)
            else:
                write_document(view, path, generated, fmt)
            written.append(path)
    return written


__all__ = ["export_tables", "table_records", "FORMATS"]
