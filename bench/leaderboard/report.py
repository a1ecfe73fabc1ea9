"""The published leaderboard: a static site rendered from the results database alone.

`render_site(engine, out_dir)` writes

* ``index.html``   the smoke grid (the smoke results as a table: models by label × attack and
  ε, with intervals and worst cases; above the paper tables while those have no results),
  the paper tables (cells done / pending / failed), the models;
* ``table-<name>.html`` one page per paper table, laid out like the paper: rows and columns in
  layout order; each cell shows the measured robust accuracy (%), the paper's value, the
  difference, a 95 % Wilson interval from the number of examples, the sanity flags; best and
  second best per column in bold / underlined; one worst-case column per ε of the table
  (per-sample AND over every attack run on the model at that ε: RobustBench's ranking number);
* ``smoke.html``   the smoke grid, the paper tables filled with smoke results only, and every
  smoke result as a flat list, all marked as such (smoke results never enter the paper
  tables);
* ``model-<key>.html`` one page per model: resolved config, training curves and robustness
  curves (inline SVG drawn here, no JavaScript library), checkpoint sha256, the runs.

Every page carries a provenance footer and works offline from disk: CSS and the small column
sorter are inline, nothing is fetched. All templates are rendered with autoescape on; markup
lives in the templates only, so names from suite.yaml are always shown as text.

The data model (`load_store`, `build_table`, `TableView`, ...) is shared with `bench.leaderboard.export`
and `bench.leaderboard.check`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench import __version__
from bench.db.database import (ModelRecord, ReportedValue, ResultRecord, RunRecord, TableRecord,
                      unpack_details, unpack_outcomes)

TEMPLATE_DIR = Path(__file__).with_name("templates")
Z95 = 1.959963984540054          # two-sided 95 % normal quantile
DEFAULT_TOLERANCE_PP = 1.0       # when a table's layout gives none
EXPORT_DIRNAME = "export"        # render_site links <out>/export/<table>.<fmt> when present
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_MIN_TIME = dt.datetime(1970, 1, 1)
PAPER = "paper"                  # the kind of the paper's own values (what check --paper uses)


# ============================================================================ loading

@dataclass
class Store:
    """Everything the report needs, read once from the database."""

    results: list[ResultRecord]
    models: dict[str, ModelRecord]
    runs: dict[int, RunRecord]
    tables: list[TableRecord]
    reported: dict[tuple[str, str, str, str], ReportedValue]   # (table, row, column, kind)

    def table(self, name: str) -> TableRecord | None:
        return next((t for t in self.tables if t.name == name), None)


def load_store(engine: Engine, baselines: Sequence[dict] = ()) -> Store:
    """The database's contents, plus the cells of committed baselines (`bench.leaderboard.check`
    baseline documents) that the database does not hold: a fresh clone renders the
    leaderboard's measured cells from results/baselines/ alone."""
    with Session(engine) as s:
        results = list(s.scalars(select(ResultRecord)))
        models = {m.key: m for m in s.scalars(select(ModelRecord))}
        runs = {r.id: r for r in s.scalars(select(RunRecord))}
        tables = list(s.scalars(select(TableRecord)))
        reported = {(v.table, v.row, v.column, v.kind or PAPER): v
                    for v in s.scalars(select(ReportedValue))}
        s.expunge_all()
    if baselines:
        from bench.leaderboard.baseline import baseline_records
        have = {r.cell_key for r in results}
        for doc in baselines:
            extra, extra_models = baseline_records(doc)
            results += [r for r in extra if r.cell_key not in have]
            have |= {r.cell_key for r in extra}
            for m in extra_models:
                models.setdefault(m.key, m)
    tables.sort(key=lambda t: (_order_of(t), t.name))
    return Store(results, models, runs, tables, reported)


def _order_of(t: TableRecord) -> tuple:
    order = (t.layout or {}).get("order")
    return (0, float(order)) if isinstance(order, (int, float)) else (1, 0.0)


# ============================================================================ numbers

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
    return (r.status == "done", not r.smoke, r.n or 0, r.created or _MIN_TIME)


def _when(t: dt.datetime | None) -> str:
    return "" if t is None else f"{t:%Y-%m-%d %H:%M} UTC"


def fmt_pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def fmt_signed(x: float | None) -> str:
    if x is None:
        return ""
    s = f"{x:+.2f}"
    return "±0.00" if s in ("+0.00", "-0.00") else s.replace("-", "−")


def slug(name: str) -> str:
    """A file-name-safe form of a name; a short hash keeps different names apart."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"
    if s != name:
        s = f"{s[:60]}-{hashlib.sha1(str(name).encode()).hexdigest()[:8]}"
    return s


def result_anchor(r: ResultRecord) -> str:
    return "r-" + slug(r.cell_key)


def model_page(key: str) -> str:
    return f"model-{slug(key)}.html"


def table_page(name: str) -> str:
    return f"table-{slug(name)}.html"


# ============================================================================ table views

@dataclass
class ColumnView:
    index: int
    label: str
    attack: str
    eps: str | None
    eps_value: float | None
    beyond: bool = False          # not a column of the paper
    attack_label: str = ""
    attack_plugin: str = ""
    attack_config: dict = field(default_factory=dict)

    @property
    def budget(self) -> str:
        """The attack as configured: plugin(key=value, …), what the page states."""
        if not self.attack_plugin:
            return self.attack
        args = ", ".join(f"{k}={v}" for k, v in self.attack_config.items())
        return f"{self.attack_plugin}({args})"


@dataclass
class CellView:
    id: str
    state: str                              # done / failed / not_run
    value: float | None = None
    rank: int = 0                           # 1 best, 2 second best in its column
    reported: float | None = None           # the paper's value
    reported_source: str = ""
    others: list["OtherValue"] = field(default_factory=list)   # other sources' values
    diff: float | None = None
    within_tolerance: bool | None = None
    ci: tuple[float, float] | None = None
    n: int = 0
    n_correct: int = 0
    flags: list[str] = field(default_factory=list)
    error: str = ""
    note: str = ""
    result: ResultRecord | None = None
    candidates: int = 0

    @property
    def text(self) -> str:
        return fmt_pct(self.value)


@dataclass
class OtherValue:
    """A value published by another source than the paper (the authors' code, RobustBench)."""

    kind: str
    label: str
    value: float
    source: str


@dataclass
class WorstCase:
    id: str
    eps: str
    value: float | None = None
    rank: int = 0
    n: int = 0
    k: int = 0
    split: str = ""
    model_key: str = ""
    attacks: list[str] = field(default_factory=list)
    note: str = ""
    ci: tuple[float, float] | None = None

    @property
    def text(self) -> str:
        return fmt_pct(self.value)


@dataclass
class RowView:
    index: int
    model: str                   # the row id: a model's name, or a reference row's name
    label: str
    cells: list[CellView]
    worst: list[WorstCase]
    model_keys: list[str]
    reference: bool = False      # a published value with no model to run
    beyond: bool = False         # not a row of the paper
    info: dict[str, str] = field(default_factory=dict)
    block: str | None = None
    best_epoch: int | None = None


@dataclass
class TableView:
    name: str
    title: str
    source: str
    tolerance: float
    tags: list[str]
    columns: list[ColumnView]
    worst_eps: list[str]
    rows: list[RowView]
    smoke: bool
    counts: dict[str, int]
    results: list[ResultRecord]             # the results shown (for the provenance footer)
    page: str
    orientation: str = "rows"               # how the paper prints it (bench.suite.tables)
    info: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)   # kind → label

    @property
    def paper_view(self) -> dict | None:
        """The table as the paper prints it, when that differs from one row per model:
        {"corner", "headers": [..], "rows": [(label, [CellView | None])]}."""
        if self.orientation == "transposed":
            rows = [r for r in self.rows]
            return {"corner": "Attack ↓ / Defense →", "headers": [r.label for r in rows],
                    "beyond_headers": [r.beyond for r in rows],
                    "rows": [(c.label, c.beyond, [r.cells[c.index] for r in rows])
                             for c in self.columns]}
        if self.orientation == "attack_by_eps":
            eps = table_eps(self.columns)
            out = []
            for r in self.rows:
                attacks: list[str] = []
                for c in self.columns:
                    if c.attack not in attacks:
                        attacks.append(c.attack)
                for a in attacks:
                    cols = {c.eps: c for c in self.columns if c.attack == a}
                    first = next(iter(cols.values()))
                    label = first.attack_label or a
                    if len(self.rows) > 1:
                        label = f"{r.label}: {label}"
                    out.append((label, r.beyond or all(c.beyond for c in cols.values()),
                                [r.cells[cols[e].index] if e in cols else None for e in eps]))
            beyond_eps = [all(c.beyond for c in self.columns if c.eps == e) for e in eps]
            return {"corner": "Attack ↓ / radius →", "headers": eps, "beyond_headers": beyond_eps,
                    "rows": out}
        return None


def table_eps(columns: Sequence[ColumnView]) -> list[str]:
    """The distinct ε literals of a table's columns, in layout order."""
    out: list[str] = []
    for c in columns:
        if c.eps is not None and c.eps not in out:
            out.append(c.eps)
    return out


def _columns(layout: dict) -> list[ColumnView]:
    cols = []
    for i, c in enumerate(layout.get("columns") or []):
        eps = c.get("eps")
        cols.append(ColumnView(i, str(c.get("label", c.get("attack", f"column {i + 1}"))),
                               str(c.get("attack", "")), None if eps is None else str(eps),
                               c.get("eps_value"), bool(c.get("beyond")),
                               str(c.get("attack_label") or ""), str(c.get("attack_plugin") or ""),
                               dict(c.get("attack_config") or {})))
    return cols


def matching_results(results: Iterable[ResultRecord], model: str, column: ColumnView,
                     smoke: bool) -> list[ResultRecord]:
    return [r for r in results
            if r.model_name == model and r.attack == column.attack and bool(r.smoke) == smoke
            and (column.eps is None or r.eps_literal == column.eps)]


def _choice_note(chosen: ResultRecord, cands: list[ResultRecord], column: ColumnView) -> str:
    if len(cands) <= 1:
        return ""
    parts = [f"{len(cands)} results match this cell; showing the "
             + ("done" if chosen.status == "done" else "failed")
             + f" one with the largest n (n={chosen.n}), the newest "
             f"({_when(chosen.created)})"]
    if column.eps is None:
        eps = sorted({r.eps_literal for r in cands})
        if len(eps) > 1:
            parts.append("several ε match: " + ", ".join(eps))
    others = sorted({(r.n, r.seed, r.precision, r.status) for r in cands if r is not chosen})
    parts.append("others: " + "; ".join(f"n={n} seed={s} {p} {st}" for n, s, p, st in others))
    return ". ".join(parts)


def worst_case(results: Iterable[ResultRecord], model: str, eps: str, smoke: bool,
               id: str = "") -> WorstCase:
    """Per-sample AND over every done attack result of `model` at ε = `eps`.

    Only results on the same examples can be combined: they are grouped by (model key,
    split, n) and the group covering the most attacks (then the largest n, the newest) wins.
    """
    wc = WorstCase(id=id, eps=eps)
    cands = [r for r in results
             if r.model_name == model and r.eps_literal == eps and bool(r.smoke) == smoke
             and r.status == "done" and r.outcomes is not None and r.n and r.n > 0]
    if not cands:
        wc.note = "no per-sample outcomes at this ε"
        return wc
    groups: dict[tuple, list[ResultRecord]] = defaultdict(list)
    for r in cands:
        groups[(r.model_key, r.split, r.n)].append(r)

    def rank(item):
        (_key, _split, n), rs = item
        return (len({r.attack for r in rs}), n, max(r.created or _MIN_TIME for r in rs))

    (key, split, n), group = max(groups.items(), key=rank)
    robust = np.ones(n, dtype=bool)
    for r in group:
        robust &= unpack_outcomes(r.outcomes, n)
    wc.value = 100.0 * robust.mean()
    wc.n, wc.k, wc.split, wc.model_key = n, int(robust.sum()), split, key
    wc.attacks = sorted({r.attack for r in group})
    wc.ci = wilson(wc.k, n)
    left = sorted({f"{r.attack} (n={r.n}, {r.split})" for r in cands if r not in group})
    wc.note = (f"per-sample worst case over {len(group)} result(s): " + ", ".join(wc.attacks)
               + f"; {split} split, n={n}")
    if left:
        wc.note += "; not combined (other examples or model): " + ", ".join(left)
    failed = sorted({r.attack for r in results if r.model_name == model and r.eps_literal == eps
                     and bool(r.smoke) == smoke and r.status != "done"} - set(wc.attacks))
    if failed:
        wc.note += "; failed, so not included (an upper bound): " + ", ".join(failed)
    return wc


def _rank(items: Sequence[Any]) -> None:
    """Set .rank = 1 (best) / 2 (second best) on items by their rounded .value (higher wins)."""
    values = sorted({round(i.value, 2) for i in items if i.value is not None}, reverse=True)
    for i in items:
        if i.value is None:
            continue
        v = round(i.value, 2)
        i.rank = 1 if v == values[0] else 2 if len(values) > 1 and v == values[1] else 0


def _published(store: Store, table: str, row: str, label: str, smoke: bool,
               sources: dict[str, str]) -> tuple[ReportedValue | None, list[OtherValue]]:
    """The paper's value of a cell and the other sources' (none for smoke tables: smoke
    numbers are not set against published values)."""
    if smoke:
        return None, []
    paper = store.reported.get((table, row, label, PAPER))
    others = [OtherValue(kind, sources.get(kind, kind.replace("_", " ")), v.value, v.source)
              for (t, r, c, kind), v in store.reported.items()
              if t == table and r == row and c == label and kind != PAPER]
    return paper, sorted(others, key=lambda o: o.label)


def build_table(store: Store, rec: TableRecord, *, smoke: bool = False) -> TableView:
    layout = rec.layout or {}
    columns = _columns(layout)
    tol = layout.get("tolerance")
    tolerance = float(tol) if isinstance(tol, (int, float)) else DEFAULT_TOLERANCE_PP
    sources = {str(k): str(v) for k, v in (layout.get("sources") or {}).items()}
    weps = table_eps(columns)
    rows: list[RowView] = []
    shown: list[ResultRecord] = []
    counts = Counter({"done": 0, "not_run": 0, "failed": 0})
    for ri, row in enumerate(layout.get("rows") or []):
        model = row.get("model")
        rid = str(row.get("id") or model or "")
        label = str(row.get("label") or rid)
        reference = model is None
        cells = []
        for col in columns:
            cell = CellView(id=f"c-{ri}-{col.index}", state="reference" if reference else "not_run")
            rv, cell.others = _published(store, rec.name, rid, col.label, smoke, sources)
            if rv is not None:
                cell.reported, cell.reported_source = rv.value, rv.source
            cands = [] if reference else matching_results(store.results, rid, col, smoke)
            if cands:
                r = max(cands, key=preference)
                cell.result, cell.candidates = r, len(cands)
                cell.note = _choice_note(r, cands, col)
                cell.flags = [str(f) for f in (r.flags or [])]
                cell.n, cell.n_correct = r.n, r.n_correct
                shown.append(r)
                if r.status == "done":
                    cell.state = "done"
                    cell.value = accuracy_pct(r)
                    cell.ci = wilson(r.n_correct, r.n)
                    if cell.reported is not None and cell.value is not None:
                        cell.diff = cell.value - cell.reported
                        cell.within_tolerance = abs(cell.diff) <= tolerance + 1e-9
                else:
                    cell.state = "failed"
                    cell.error = r.error or "failed (no error recorded)"
            if not reference:
                counts[cell.state] += 1
            cells.append(cell)
        if reference:
            worst = [WorstCase(id=f"w-{ri}-{j}", eps=e, note="a published value: no model to attack")
                     for j, e in enumerate(weps)]
            keys: list[str] = []
        else:
            worst = [worst_case(store.results, rid, e, smoke, id=f"w-{ri}-{j}")
                     for j, e in enumerate(weps)]
            keys = sorted({c.result.model_key for c in cells if c.result is not None})
            if not keys:
                keys = sorted(k for k, m in store.models.items() if m.name == rid
                              and bool(m.smoke) == smoke)
        best = [store.models[k].curves.get("best_epoch") for k in keys
                if k in store.models and isinstance(store.models[k].curves, dict)]
        rows.append(RowView(ri, rid, label, cells, worst, keys, reference=reference,
                            beyond=bool(row.get("beyond")), info=dict(row.get("info") or {}),
                            block=row.get("block"),
                            best_epoch=next((b for b in best if isinstance(b, int)), None)))
    measured = [r for r in rows if not r.reference]
    for j in range(len(columns)):
        _rank([r.cells[j] for r in measured])
    for j in range(len(weps)):
        _rank([r.worst[j] for r in measured])
    return TableView(name=rec.name, title=rec.title or layout.get("title") or rec.name,
                     source=str(layout.get("source") or ""), tolerance=tolerance,
                     tags=list(layout.get("tags") or []), columns=columns, worst_eps=weps,
                     rows=rows, smoke=smoke,
                     counts={"done": counts["done"], "pending": counts["not_run"],
                             "failed": counts["failed"]},
                     results=shown, page=table_page(rec.name),
                     orientation=str(layout.get("orientation") or "rows"),
                     info=[str(i) for i in layout.get("info") or []], sources=sources)


# ============================================================================ smoke grid

@dataclass
class SmokeRow:
    index: int
    model: str
    label: str
    cells: list[CellView]
    worst: list[WorstCase]
    model_keys: list[str]
    reference: bool = False      # a smoke grid has neither reference rows
    beyond: bool = False         # nor rows beyond the paper (it is not a paper table)


@dataclass
class SmokeGrid:
    """The smoke results of one dataset laid out like a paper table: models (by their suite
    labels) as rows in the order they were run, attack × ε as columns, a worst case per ε.

    The smoke profile has no layout in suite.yaml: the grid is built from the results
    themselves, so it shows whatever a smoke run measured.
    """

    name: str                               # smoke-<dataset>: page anchor and export file stem
    dataset: str
    title: str
    columns: list[ColumnView]
    worst_eps: list[str]
    rows: list[SmokeRow]
    results: list[ResultRecord]
    n_examples: list[int]
    smoke: bool = True

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(cell.state for row in self.rows for cell in row.cells)
        return {"done": c["done"], "pending": c["not_run"], "failed": c["failed"]}


def run_labels(store: Store) -> tuple[dict[str, str], dict[str, str]]:
    """Suite labels of models and attacks as the runs recorded them (the newest run wins)."""
    models: dict[str, str] = {}
    attacks: dict[str, str] = {}
    for rid in sorted(store.runs):
        labels = (store.runs[rid].summary or {}).get("labels") or {}
        models.update({str(k): str(v) for k, v in (labels.get("models") or {}).items()})
        attacks.update({str(k): str(v) for k, v in (labels.get("attacks") or {}).items()})
    return models, attacks


def _first_seen(results: Sequence[ResultRecord]) -> list[ResultRecord]:
    """Results in the order they were recorded (a run records cells in suite order)."""
    return sorted(results, key=lambda r: (r.created or _MIN_TIME, r.run_id or 0, r.cell_id))


def _smoke_cell(cell: CellView, cands: list[ResultRecord], column: ColumnView) -> None:
    r = max(cands, key=preference)
    cell.result, cell.candidates = r, len(cands)
    cell.note = _choice_note(r, cands, column)
    cell.flags = [str(f) for f in (r.flags or [])]
    cell.n, cell.n_correct = r.n, r.n_correct
    if r.status == "done":
        cell.state, cell.value, cell.ci = "done", accuracy_pct(r), wilson(r.n_correct, r.n)
    else:
        cell.state, cell.error = "failed", r.error or "failed (no error recorded)"


def build_smoke_grids(store: Store) -> list[SmokeGrid]:
    """One SmokeGrid per dataset that has smoke results, in the order they were run."""
    model_labels, attack_labels = run_labels(store)
    by_dataset: dict[str, list[ResultRecord]] = {}
    for r in _first_seen([r for r in store.results if r.smoke]):
        by_dataset.setdefault(r.dataset, []).append(r)
    grids = []
    for dataset, results in by_dataset.items():
        attacks: dict[str, set[tuple[float, str]]] = {}
        no_eps: set[str] = set()
        for r in results:
            attacks.setdefault(r.attack, set())
            if (r.norm or "none") == "none":       # an attack that ignores ε (clean)
                no_eps.add(r.attack)
            else:
                attacks[r.attack].add((float(r.eps), r.eps_literal))
        order = [a for a in attacks if a in no_eps] + [a for a in attacks if a not in no_eps]
        columns: list[ColumnView] = []
        for a in order:
            label = attack_labels.get(a, a)
            if a in no_eps:
                columns.append(ColumnView(len(columns), label, a, None, None))
            for value, lit in sorted(attacks[a]):
                columns.append(ColumnView(len(columns), f"{label} ε={lit}", a, lit, value))
        weps = table_eps(sorted((c for c in columns if c.eps is not None),
                                key=lambda c: c.eps_value or 0.0))
        rows: list[SmokeRow] = []
        for ri, model in enumerate(dict.fromkeys(r.model_name for r in results)):
            cells = []
            for col in columns:
                cell = CellView(id=f"s-{slug(dataset)}-{ri}-{col.index}", state="not_run")
                cands = matching_results(results, model, col, smoke=True)
                if cands:
                    _smoke_cell(cell, cands, col)
                cells.append(cell)
            worst = [worst_case(results, model, e, True, id=f"sw-{slug(dataset)}-{ri}-{j}")
                     for j, e in enumerate(weps)]
            keys = list(dict.fromkeys(r.model_key for r in results if r.model_name == model))
            rows.append(SmokeRow(ri, model, model_labels.get(model, model), cells, worst, keys))
        for j in range(len(columns)):
            _rank([row.cells[j] for row in rows])
        for j in range(len(weps)):
            _rank([row.worst[j] for row in rows])
        ns = sorted({r.n for r in results if r.n})
        grids.append(SmokeGrid(name=f"smoke-{dataset}", dataset=dataset,
                               title=f"Smoke profile: {dataset}", columns=columns,
                               worst_eps=weps, rows=rows, results=results, n_examples=ns))
    return grids


# ============================================================================ SVG plots

def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(v: float) -> str:
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.1e}"
    return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def line_plot(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
              xlabel: str, ylabel: str, width: int = 460, height: int = 260) -> dict | None:
    """Geometry of a line plot (numbers only); templates/_plots.html draws it as SVG."""
    clean = []
    for name, pts in series:
        p = [(float(x), float(y)) for x, y in pts
             if isinstance(x, (int, float)) and isinstance(y, (int, float))
             and not isinstance(y, bool) and math.isfinite(x) and math.isfinite(y)]
        if p:
            clean.append((str(name), sorted(p)))
    if not clean:
        return None
    xs = [x for _, p in clean for x, _ in p]
    ys = [y for _, p in clean for _, y in p]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    # one or two points are drawn as points: a line through them would suggest a curve
    points_only = max(len(p) for _, p in clean) <= 2
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    elif points_only:                      # keep the points off the frame
        x0, x1 = x0 - 0.15 * (x1 - x0), x1 + 0.15 * (x1 - x0)
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 0.5), y1 + (abs(y1) * 0.1 or 0.5)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 58, width - 12, 26, height - 42

    def px(x):
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y):
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    out_series = []
    for i, (name, p) in enumerate(clean):
        pts = [(round(px(x), 2), round(py(y), 2)) for x, y in p]
        out_series.append({
            "name": name, "color": PALETTE[i % len(PALETTE)],
            "points": "" if points_only else " ".join(f"{a},{b}" for a, b in pts),
            "markers": [(a, b, f"{_tick_label(x)}: {y:.4g}") for (a, b), (x, y) in zip(pts, p)]
            if len(pts) <= 40 else [],
            "r": 4.5 if points_only else 2.6,
        })
    xticks = [t for t in nice_ticks(x0, x1) if x0 <= t <= x1]
    if all(float(x).is_integer() for x in xs):      # epochs: no fractional ticks
        xticks = [t for t in xticks if float(t).is_integer()]
        if len(xticks) < 2:
            xticks = sorted(set(xs))[:12]
    return {
        "title": title, "width": width, "height": height, "xlabel": xlabel, "ylabel": ylabel,
        "left": left, "right": right, "top": top, "bottom": bottom,
        "xticks": [(round(px(t), 2), _tick_label(t)) for t in xticks],
        "yticks": [(round(py(t), 2), _tick_label(t)) for t in nice_ticks(y0, y1) if y0 <= t <= y1],
        "series": out_series,
    }


def _numeric_list(v: Any) -> bool:
    return isinstance(v, list) and any(isinstance(x, (int, float)) and not isinstance(x, bool)
                                       for x in v)


def training_plots(curves: dict[str, Any] | None) -> list[dict]:
    """Plots of a model's per-epoch curves: accuracies together, losses, learning rate, rest."""
    curves = {k: v for k, v in (curves or {}).items() if _numeric_list(v)}
    epochs = curves.pop("epoch", None)
    if epochs is None:
        epochs = curves.pop("epochs", None)

    def pts(key):
        values = curves[key]
        own = curves.get(f"{key}_epoch")            # a curve recorded on some epochs only
        if own is not None and len(own) == len(values):
            xs = own
        elif epochs is not None and len(epochs) == len(values):
            xs = epochs
        else:
            xs = range(1, len(values) + 1)
        return [(x, y) for x, y in zip(xs, values) if y is not None]


    groups: dict[str, list[str]] = {"accuracy": [], "loss": [], "learning rate": []}
    other = []
    for k in sorted(curves):
        kl = k.lower()
        if kl.endswith("_epoch") and k[:-len("_epoch")] in curves:
            continue
        if "acc" in kl:
            groups["accuracy"].append(k)
        elif "loss" in kl:
            groups["loss"].append(k)
        elif kl == "lr" or "learning_rate" in kl or kl.endswith("_lr"):
            groups["learning rate"].append(k)
        else:
            other.append(k)
    plots = []
    for title, keys in list(groups.items()) + [(k, [k]) for k in other]:
        if keys:
            p = line_plot(title, [(k, pts(k)) for k in keys], xlabel="epoch",
                          ylabel=title)
            if p:
                plots.append(p)
    return plots


def robustness_plots(results: Sequence[ResultRecord]) -> list[dict]:
    """Accuracy vs ε, one line per attack, one plot per norm (preferred result per ε)."""
    by_norm: dict[str, dict[str, dict[str, ResultRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.status != "done" or accuracy_pct(r) is None:
            continue
        cur = by_norm[r.norm or "?"][r.attack].get(r.eps_literal)
        if cur is None or preference(r) > preference(cur):
            by_norm[r.norm or "?"][r.attack][r.eps_literal] = r
    plots = []
    for norm in sorted(by_norm):
        # a curve needs two ε: an attack at one ε (the clean one always) is not plotted
        series = [(attack, [(r.eps, accuracy_pct(r)) for r in per_eps.values()])
                  for attack, per_eps in sorted(by_norm[norm].items()) if len(per_eps) >= 2]
        p = line_plot(f"robust accuracy vs ε ({norm})", series, xlabel=f"ε ({norm})",
                      ylabel="accuracy (%)")
        if p:
            plots.append(p)
    return plots


def certified_plots(results: Sequence[ResultRecord]) -> list[dict]:
    """Certified accuracy vs radius from per-sample radii stored in `details` (if any)."""
    series = []
    for r in results:
        if r.status != "done" or not r.details:
            continue
        try:
            details = unpack_details(r.details)
        except Exception:   # a corrupt blob must not break the whole site
            continue
        radius = next((details[k] for k in ("radius", "certified_radius") if k in details), None)
        if radius is None or radius.ndim != 1 or radius.size == 0:
            continue
        rad = np.where(np.isfinite(radius), radius, -1.0).astype(float)
        top = float(rad.max()) if rad.max() > 0 else 1.0
        grid = np.linspace(0.0, top, 25)
        series.append((f"{r.attack} (n={r.n})",
                       [(float(g), 100.0 * float((rad >= g).mean())) for g in grid]))
    if not series:
        return []
    p = line_plot("certified accuracy vs radius", series, xlabel="radius",
                  ylabel="certified accuracy (%)")
    return [p] if p else []


# ============================================================================ provenance

def provenance(results: Sequence[ResultRecord], generated: str, *,
               smoke_elsewhere: int = 0) -> dict:
    commits = Counter(r.commit for r in results if r.commit)
    versions: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for lib, v in (r.versions or {}).items():
            versions[str(lib)].add(str(v))
    return {
        "generated": generated,
        "bench_version": __version__,
        "n_results": len(results),
        "commits": commits.most_common(),
        "devices": Counter(r.device for r in results if r.device).most_common(),
        "precisions": Counter(r.precision for r in results if r.precision).most_common(),
        "n_examples": sorted(Counter(r.n for r in results).items()),
        "versions": [(k, ", ".join(sorted(v))) for k, v in sorted(versions.items())],
        "smoke": sum(1 for r in results if r.smoke),
        "smoke_elsewhere": smoke_elsewhere,
        "runs": sorted({r.run_id for r in results if r.run_id is not None}),
    }


# ============================================================================ rendering

def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["pct"] = fmt_pct
    env.filters["signed"] = fmt_signed
    env.filters["when"] = _when
    env.filters["short"] = lambda s, k=10: (s or "")[:k]
    env.filters["clip"] = lambda s, k=1500: s if len(s or "") <= k else s[:k] + " …"
    env.globals.update(model_page=model_page, table_page=table_page,
                       result_anchor=result_anchor, wilson=wilson, accuracy_pct=accuracy_pct)
    return env


def _model_view(store: Store, key: str, results: list[ResultRecord]) -> dict:
    m = store.models.get(key)
    results = sorted(results, key=lambda r: (r.attack, r.norm, r.eps, r.n, r.created or _MIN_TIME))
    full = [r for r in results if not r.smoke]
    curve_src = full or results
    run_ids = {r.run_id for r in results if r.run_id is not None}
    if m is not None and m.run_id is not None:
        run_ids.add(m.run_id)
    runs = []
    for rid in sorted(run_ids):
        role = []
        if m is not None and m.run_id == rid:
            role.append("trained")
        if any(r.run_id == rid for r in results):
            role.append("evaluated")
        runs.append({"run": store.runs.get(rid), "id": rid, "role": " + ".join(role)})
    name = m.name if m is not None else (results[0].model_name if results else key)
    return {
        "key": key, "name": name, "record": m,
        "config_json": json.dumps(m.config, indent=2, sort_keys=True, default=str)
        if m is not None else "",
        "training_plots": training_plots(m.curves if m is not None else None),
        "robustness_plots": robustness_plots(curve_src),
        "certified_plots": certified_plots(curve_src),
        "curves_smoke": not full and bool(results),
        "results": results,
        "runs": runs,
        "tables": [],
    }


def render_site(engine: Engine, out_dir: Path, baselines: Sequence[dict] = ()) -> Path:
    """Write the static site into out_dir (with the cells of `baselines` the database
    lacks, see `load_store`); return the path of index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = load_store(engine, baselines)
    env = environment()
    generated = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    smoke_results = [r for r in store.results if r.smoke]
    full_results = [r for r in store.results if not r.smoke]

    tables = [build_table(store, t) for t in store.tables]
    smoke_tables = [build_table(store, t, smoke=True) for t in store.tables]

    by_model: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in store.results:
        by_model[r.model_key].append(r)
    keys = sorted(set(store.models) | set(by_model),
                  key=lambda k: ((store.models[k].name if k in store.models
                                  else by_model[k][0].model_name), k))
    models = {k: _model_view(store, k, by_model.get(k, [])) for k in keys}
    model_labels, _ = run_labels(store)
    for mv in models.values():
        mv["label"] = model_labels.get(mv["name"], "")
    for tv in tables:
        for row in tv.rows:
            for k in row.model_keys:
                if k in models and tv.name not in [t.name for t in models[k]["tables"]]:
                    models[k]["tables"].append(tv)

    def write(name: str, template: str, **ctx) -> Path:
        path = out_dir / name
        html = env.get_template(template).render(generated=generated, models=models, **ctx)
        path.write_text(html, encoding="utf-8")
        return path

    export_dir = out_dir / EXPORT_DIRNAME
    for tv in tables:
        exports = [(fmt, f"{EXPORT_DIRNAME}/{slug(tv.name)}.{fmt}")
                   for fmt in ("csv", "json", "md", "tex")
                   if (export_dir / f"{slug(tv.name)}.{fmt}").exists()]
        write(tv.page, "table.html", table=tv, exports=exports,
              prov=provenance(tv.results, generated,
                              smoke_elsewhere=sum(len(st.results) for st in smoke_tables
                                                  if st.name == tv.name)))
    for key, mv in models.items():
        write(model_page(key), "model.html", model=mv,
              prov=provenance(mv["results"], generated))
    smoke_grids = build_smoke_grids(store)
    smoke_exports = {g.name: [(fmt, f"{EXPORT_DIRNAME}/{slug(g.name)}.{fmt}")
                              for fmt in ("csv", "json", "md", "tex")
                              if (export_dir / f"{slug(g.name)}.{fmt}").exists()]
                     for g in smoke_grids}
    write("smoke.html", "smoke.html", tables=smoke_tables, smoke_results=smoke_results,
          smoke_grids=smoke_grids, smoke_exports=smoke_exports,
          prov=provenance(smoke_results, generated))
    return write("index.html", "index.html", tables=tables, smoke_results=smoke_results,
                 smoke_tables=smoke_tables, full_results=full_results,
                 smoke_grids=smoke_grids, smoke_exports=smoke_exports,
                 prov=provenance(store.results, generated))
