"""The table view-model: a paper table as rows and columns of cells (measured value, the
paper's value, difference, interval, flags, rank) and a worst case per ε. The site, the
exports and `check` all read tables through `build_table`.

Besides the stored flags, a cell carries what the view works out across its row: the
recorded notes that apply to it (row, column and cell `notes:` of suite.yaml) and, for a
cross-entropy attack, the stronger or margin-based columns at the same ε that find a robust
accuracy below its interval ("cross_entropy_above_stronger", with the model's softmax
saturation share where the result recorded it: `bench.run.sanity`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from bench.db import outcomes
from bench.db.schema import ReportedValue, ResultRecord, TableRecord
from bench.leaderboard.fmt import fmt_pct, fmt_when, table_page
from bench.leaderboard.stats import MIN_TIME, accuracy_pct, preference, wilson
from bench.leaderboard.store import PAPER, Store
from bench.db.outcomes import SATURATION_THRESHOLD, saturation_share

DEFAULT_TOLERANCE_PP = 1.0       # when a table's layout gives none
CE_ABOVE_STRONGER = "cross_entropy_above_stronger"   # a view flag (not stored): see module doc
MAX_NOTE_CHARS = 2000            # as bench.suite.tables: a database may come from elsewhere
MAX_NOTES = 20


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
    notes: list[str] = field(default_factory=list)
    loss: str | None = None              # the attack's traits (bench.plugins.attack.Attack)
    strength: int | None = None

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
    notes: list[str] = field(default_factory=list)       # suite.yaml's notes on this cell
    saturation: float | None = None      # share of inputs with a saturated softmax, if recorded
    sanity: list[str] = field(default_factory=list)      # explanations of the view's flags
    sanity_short: list[str] = field(default_factory=list)  # the same, a few words each

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
    notes: list[str] = field(default_factory=list)
    recipe_for: str | None = None    # the paper's row whose values this row's recipe tries

    def notes_of(self, j: int, column: ColumnView) -> list[str]:
        """Every recorded note that applies to the cell in column j: the row's, the
        column's, then the cell's own."""
        return [*self.notes, *column.notes, *self.cells[j].notes]


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


def notes_from(raw: Any) -> list[str]:
    """Notes as stored in a layout (a text or a list of texts), bounded again: the
    database may not be one this bench wrote."""
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [t if len(t) <= MAX_NOTE_CHARS else t[:MAX_NOTE_CHARS - 1] + "…"
            for t in (str(x).strip() for x in items[:MAX_NOTES]) if t]


def _columns(layout: dict) -> list[ColumnView]:
    cols = []
    for i, c in enumerate(layout.get("columns") or []):
        eps = c.get("eps")
        strength = c.get("strength")
        cols.append(ColumnView(i, str(c.get("label", c.get("attack", f"column {i + 1}"))),
                               str(c.get("attack", "")), None if eps is None else str(eps),
                               c.get("eps_value"), bool(c.get("beyond")),
                               str(c.get("attack_label") or ""), str(c.get("attack_plugin") or ""),
                               dict(c.get("attack_config") or {}), notes_from(c.get("notes")),
                               str(c["loss"]) if c.get("loss") else None,
                               strength if isinstance(strength, int) and not isinstance(strength, bool)
                               else None))
    return cols


def matching_results(results: Iterable[ResultRecord], model: str, column: ColumnView,
                     smoke: bool) -> list[ResultRecord]:
    return [r for r in results
            if r.model_name == model and r.attack == column.attack and bool(r.smoke) == smoke
            and (column.eps is None or r.eps_literal == column.eps)]


def choice_note(chosen: ResultRecord, cands: list[ResultRecord], column: ColumnView) -> str:
    if len(cands) <= 1:
        return ""
    parts = [f"{len(cands)} results match this cell; showing the "
             + ("done" if chosen.status == "done" else "failed")
             + f" one with the largest n (n={chosen.n}), the newest "
             f"({fmt_when(chosen.created)})"]
    if column.eps is None:
        eps = sorted({r.eps_literal for r in cands})
        if len(eps) > 1:
            parts.append("several ε match: " + ", ".join(eps))
    others = sorted({(r.n, r.seed, r.precision, r.status) for r in cands if r is not chosen})
    parts.append("others: " + "; ".join(f"n={n} seed={s} {p} {st}" for n, s, p, st in others))
    return ". ".join(parts)


def fill_cell(cell: CellView, cands: list[ResultRecord], column: ColumnView) -> None:
    """Show the preferred of the results matching a cell: its value and interval, or its
    error; the others are named in the cell's note."""
    r = max(cands, key=preference)
    cell.result, cell.candidates = r, len(cands)
    cell.note = choice_note(r, cands, column)
    cell.flags = [str(f) for f in (r.flags or [])]
    cell.n, cell.n_correct = r.n, r.n_correct
    cell.saturation = saturation_share(r.details)
    if r.status == "done":
        cell.state, cell.value, cell.ci = "done", accuracy_pct(r), wilson(r.n_correct, r.n)
    else:
        cell.state, cell.error = "failed", r.error or "failed (no error recorded)"


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
        return (len({r.attack for r in rs}), n, max(r.created or MIN_TIME for r in rs))

    (key, split, n), group = max(groups.items(), key=rank)
    robust = outcomes.worst_case([outcomes.unpack_outcomes(r.outcomes, n) for r in group])
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


def saturation_text(share: float | None) -> str:
    """What the model's recorded softmax saturation says about a cross-entropy attack."""
    if share is None:
        return ("The share of inputs whose softmax saturates is unknown for this result "
                "(evaluated before bench recorded it).")
    pct = f"{100 * share:.1f} %"
    if share >= SATURATION_THRESHOLD:
        return (f"The softmax saturates on {pct} of the inputs (true-class probability 1.0 in "
                f"float32), where the cross-entropy gradient vanishes.")
    return (f"The softmax saturates on only {pct} of the inputs, below the "
            f"{100 * SATURATION_THRESHOLD:.0f} % flag threshold: look for another cause.")


def cross_entropy_checks(row: "RowView", columns: Sequence[ColumnView]) -> None:
    """Flag each cross-entropy cell of `row` whose interval lies above that of a column at
    the same ε and norm whose attack is margin-based or declared stronger: the sign of an
    attack that stalls (softmax saturation, or masked cross-entropy gradients)."""
    share = next((c.saturation for c in row.cells if c.saturation is not None), None)
    for cell, col in zip(row.cells, columns):
        if col.loss != "ce" or cell.state != "done" or cell.ci is None:
            continue
        below = []
        for other, ocol in zip(row.cells, columns):
            if (other is cell or other.state != "done" or other.ci is None
                    or ocol.eps is None or ocol.eps != col.eps
                    or (other.result.norm or "") != (cell.result.norm or "")):
                continue
            margin = ocol.loss in ("margin", "mixed")
            stronger = (ocol.strength is not None and col.strength is not None
                        and ocol.strength > col.strength)
            if (margin or stronger) and other.ci[1] < cell.ci[0]:
                below.append((other.value, ocol, other,
                              "a margin loss" if margin and not stronger else "a stronger attack"))
        if not below:
            continue
        below.sort(key=lambda b: (b[0], b[1].index))
        names = "; ".join(f"{ocol.label} ({kind}) finds {fmt_pct(v)} % [{fmt_pct(o.ci[0])}, "
                          f"{fmt_pct(o.ci[1])}]" for v, ocol, o, kind in below)
        own = cell.saturation if cell.saturation is not None else share
        cell.sanity.append(
            f"cross-entropy attack {col.label} finds {fmt_pct(cell.value)} % [{fmt_pct(cell.ci[0])}, "
            f"{fmt_pct(cell.ci[1])}]; at the same ε {names}. {saturation_text(own)}")
        cell.sanity_short.append("cross-entropy above " + ", ".join(o.label for _, o, _, _ in below))
        if CE_ABOVE_STRONGER not in cell.flags:
            cell.flags.append(CE_ABOVE_STRONGER)


def rank_values(items: Sequence[Any]) -> None:
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
    cell_notes = layout.get("notes") if isinstance(layout.get("notes"), dict) else {}
    for ri, row in enumerate(layout.get("rows") or []):
        model = row.get("model")
        rid = str(row.get("id") or model or "")
        label = str(row.get("label") or rid)
        reference = model is None
        cells = []
        row_notes = cell_notes.get(rid) if isinstance(cell_notes.get(rid), dict) else {}
        for col in columns:
            cell = CellView(id=f"c-{ri}-{col.index}", state="reference" if reference else "not_run",
                            notes=notes_from(row_notes.get(col.label)))
            rv, cell.others = _published(store, rec.name, rid, col.label, smoke, sources)
            if rv is not None:
                cell.reported, cell.reported_source = rv.value, rv.source
            cands = [] if reference else matching_results(store.results, rid, col, smoke)
            if cands:
                fill_cell(cell, cands, col)
                shown.append(cell.result)
                if cell.reported is not None and cell.value is not None:
                    cell.diff = cell.value - cell.reported
                    cell.within_tolerance = abs(cell.diff) <= tolerance + 1e-9
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
                            best_epoch=next((b for b in best if isinstance(b, int)), None),
                            notes=notes_from(row.get("notes")),
                            recipe_for=(row.get("recipe_for")
                                        if isinstance(row.get("recipe_for"), str) else None)))
        if not reference:
            cross_entropy_checks(rows[-1], columns)
    measured = [r for r in rows if not r.reference]
    for j in range(len(columns)):
        rank_values([r.cells[j] for r in measured])
    for j in range(len(weps)):
        rank_values([r.worst[j] for r in measured])
    return TableView(name=rec.name, title=rec.title or layout.get("title") or rec.name,
                     source=str(layout.get("source") or ""), tolerance=tolerance,
                     tags=list(layout.get("tags") or []), columns=columns, worst_eps=weps,
                     rows=rows, smoke=smoke,
                     counts={"done": counts["done"], "pending": counts["not_run"],
                             "failed": counts["failed"]},
                     results=shown, page=table_page(rec.name),
                     orientation=str(layout.get("orientation") or "rows"),
                     info=[str(i) for i in layout.get("info") or []], sources=sources)
