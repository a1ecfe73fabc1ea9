"""suite.yaml `tables:` → `TableSpec`: the layout of a paper table and its published values.

    tables:
      table3:
        title: "Table 3: …"
        source: "paper, Table 3"          # the citation of `reported` (the paper's values)
        orientation: transposed           # how the paper prints it (below); default rows
        info: [Model]                     # text columns before the values (Tables 4–5)
        rows:
          - cifar_wrn_pgd_at              # a model of the suite (its label)
          - {model: cifar_wrn_trades, label: TRADES, info: {Model: WRN-34-10}}
          - {reference: blum_crown_ibp, label: "Crown IBP [48]"}   # a value with no model
          - {model: cifar_wrn_sgd, beyond: true}                    # not in the paper
          - {model: cifar_wrn_sgd_code, beyond: true, recipe_for: cifar_wrn_sgd}
          - {model: …, block: "ε2 = 0.435"}   # starts a block under that sub-header
        columns:
          - {attack: clean, label: Benign}
          - {attack: pgd20_linf, eps: 0.031, label: "ℓ∞ PGD-20"}
          - {attack: autoattack_linf, eps: 0.031, label: AutoAttack, beyond: true}
        reported:                         # the paper's values (kind "paper"): check --paper
          cifar_wrn_pgd_at:
            Benign: {value: 87.30, source: "paper, Table 3 (Madry et al.'s model via TRADES)"}
            "ℓ∞ PGD-20": 47.04            # a bare number cites the table's `source`
        reported_by:                      # other published values, always shown apart
          authors_code:
            label: "authors' code"
            source: "GauriJagatap/StochAT notebooks/…"
            values: {cifar_wrn_atent_code: {Benign: 85.67}}
        notes:                            # explanations of one cell (row id → column label)
          cifar_wrn_trades: {"ℓ∞ PGD-20": "their checkpoint; the paper's step size differs"}

`notes:` (a text, or a list of texts) may also sit on a row (`{model: …, notes: …}`) or a
column (`{attack: …, label: …, notes: …}`): the recorded explanation of a difference from
the paper (its source, what differs, what was tried). They are data: stored with the
layout, shown on the table page, the Reproduction page and by `check --paper`. Each note is
at most `MAX_NOTE_CHARS` characters (a suite may come from someone else; the loader already
refuses control characters), and a place holds at most `MAX_NOTES` of them.

Rows and columns marked `beyond: true` are not in the paper; they come after the paper's
own. `recipe_for: <row>` on a row beyond the paper says it trains another recipe for the
values a row of the paper prints (the authors' code, a reading of a setting the paper leaves
open): the Reproduction page and `check --paper` judge it against that row's values, beside
the row itself, without gating on it. `orientation` names the paper's printed layout, which the page offers beside the
one-row-per-model layout: `rows` (as declared), `transposed` (attacks as rows, defenses as
columns: Table 3), `attack_by_eps` (one row per attack, one column per ε: Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.plugins.config import config_dict
from bench.plugins.eps import Eps

TABLE_KEYS = {"title", "source", "order", "tags", "tolerance", "rows", "columns", "reported",
              "reported_by", "orientation", "info", "description", "notes"}
ROW_KEYS = {"model", "reference", "label", "beyond", "info", "block", "notes", "recipe_for"}
COLUMN_KEYS = {"attack", "eps", "label", "beyond", "notes"}
SOURCE_KEYS = {"label", "source", "values"}
ORIENTATIONS = ("rows", "transposed", "attack_by_eps")
PAPER = "paper"
MAX_NOTE_CHARS = 2000      # one explanation: a paragraph, not a document
MAX_NOTES = 20             # notes of one row, column or cell


@dataclass
class Column:
    label: str
    attack: str
    eps: Eps | None
    beyond: bool = False
    attack_label: str = ""     # the attack's own label (the paper view of Table 6 uses it)
    attack_plugin: str = ""
    attack_config: dict = field(default_factory=dict)   # resolved: the page states the budget
    notes: list[str] = field(default_factory=list)
    loss: str | None = None        # the attack's traits (bench.plugins.attack.Attack): the
    strength: int | None = None    # page sets cross-entropy cells against stronger columns


@dataclass
class Row:
    id: str                    # the model's name, or the reference row's name
    label: str
    model: str | None          # None: a reference row (a published value, nothing to run)
    beyond: bool = False
    info: dict[str, str] = field(default_factory=dict)
    block: str | None = None
    notes: list[str] = field(default_factory=list)
    recipe_for: str | None = None   # a row of the paper whose printed values this row's recipe tries


@dataclass
class Reported:
    """One published value of a table cell (row id, column label), in percent."""

    row: str
    column: str
    value: float
    source: str
    kind: str = PAPER          # "paper" or a key of `reported_by`
    kind_label: str = "paper"


@dataclass
class TableSpec:
    name: str
    title: str
    source: str
    order: int
    tags: list[str]
    tolerance: float
    rows: list[Row]
    columns: list[Column]
    values: list[Reported]
    orientation: str = "rows"
    info: list[str] = field(default_factory=list)
    cell_notes: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # row → column → notes

    @property
    def reported(self) -> dict[tuple[str, str], float]:
        """The paper's values: (row id, column label) → percent."""
        return {(v.row, v.column): v.value for v in self.values if v.kind == PAPER}

    def layout(self) -> dict:
        return {
            "title": self.title, "source": self.source, "order": self.order, "tags": self.tags,
            "tolerance": self.tolerance, "orientation": self.orientation, "info": self.info,
            "rows": [{"model": r.model, "id": r.id, "label": r.label, "beyond": r.beyond,
                      "info": r.info, "block": r.block, "notes": r.notes,
                      "recipe_for": r.recipe_for} for r in self.rows],
            "columns": [{"label": c.label, "attack": c.attack,
                         "eps": c.eps.literal if c.eps else None,
                         "eps_value": c.eps.value if c.eps else None,
                         "beyond": c.beyond, "attack_label": c.attack_label,
                         "attack_plugin": c.attack_plugin, "attack_config": c.attack_config,
                         "notes": c.notes, "loss": c.loss, "strength": c.strength}
                        for c in self.columns],
            "sources": {v.kind: v.kind_label for v in self.values},
            "notes": self.cell_notes,
        }


def _notes(ctx, node, key: str, where: str) -> list[str]:
    """`notes:` of a row, column or cell: a text or a list of texts, each non-empty and at
    most MAX_NOTE_CHARS characters."""
    raw = node.get(key)
    at = f"{where}.{key}" if key in node else where
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        ctx.err(node, key, "notes must be a text or a list of texts", at)
    if len(items) > MAX_NOTES:
        ctx.err(node, key, f"at most {MAX_NOTES} notes in one place, got {len(items)}", at)
    out = []
    for text in items:
        if not text.strip():
            ctx.err(node, key, "a note must not be empty", at)
        if len(text) > MAX_NOTE_CHARS:
            ctx.err(node, key, f"a note is at most {MAX_NOTE_CHARS} characters, got {len(text)}", at)
        out.append(text.strip())
    return out


def _cell_notes(ctx, node, where: str, rows: list[Row], cols: list[Column]
                ) -> dict[str, dict[str, list[str]]]:
    """The table's `notes: {row id: {column label: notes}}`: every row and column known."""
    tnode = ctx.mapping(node.get("notes"), f"{where}.notes", node, "notes")
    row_ids = [r.id for r in rows]
    col_labels = [c.label for c in cols]
    out: dict[str, dict[str, list[str]]] = {}
    for rid, by_col in tnode.items():
        at = f"{where}.notes.{rid}"
        if rid not in row_ids:
            ctx.err(tnode, rid, f"not a row of this table{_dym(str(rid), row_ids)}", at)
        by_col = ctx.mapping(by_col, at, tnode, rid)
        for lbl in by_col:
            if lbl not in col_labels:
                ctx.err(by_col, lbl, f"not a column label{_dym(str(lbl), col_labels)}", f"{at}.{lbl}")
            out.setdefault(rid, {})[lbl] = _notes(ctx, by_col, lbl, at)
    return out


def _paper_first(ctx, items: list, nodes: list, what: str, where: str) -> None:
    """Rows or columns beyond the paper come after the paper's own."""
    seen_beyond = False
    for j, item in enumerate(items):
        if item.beyond:
            seen_beyond = True
        elif seen_beyond:
            ctx.err(nodes, j, f"{what} of the paper must come before those marked beyond: true",
                    f"{where}[{j}]")


def _rows(ctx, node, where: str, models: dict, info_names: list[str]) -> list[Row]:
    rnode = node.get("rows", [])
    if not isinstance(rnode, list) or not rnode:
        ctx.err(node, "rows" if "rows" in node else None,
                "needs a list of rows (model names)", f"{where}.rows")
    rows: list[Row] = []
    for j, r in enumerate(rnode):
        at = f"{where}.rows[{j}]"
        if isinstance(r, str):
            ctx.ref(rnode, j, r, models, "model", at)
            rows.append(Row(r, models[r].label, r))
            continue
        r = ctx.mapping(r, at, rnode, j)
        ctx.check_keys(r, ROW_KEYS, at)
        if ("model" in r) == ("reference" in r):
            ctx.err(rnode, j, "a row names either a model or a reference (a published value "
                              "with no model to run)", at)
        if "model" in r:
            m = ctx.ref(r, "model", r["model"], models, "model", f"{at}.model")
            label = ctx.typed(r, "label", str, at, models[m].label)
            row = Row(m, label, m)
        else:
            ref = ctx.name(r, "reference", ctx.typed(r, "reference", str, at), "reference row",
                           f"{at}.reference")
            if ref in models:
                ctx.err(r, "reference", f"{ref!r} is a model name; use model: {ref}", f"{at}.reference")
            if "label" not in r:
                ctx.err(r, None, "a reference row needs a label", at)
            row = Row(ref, ctx.typed(r, "label", str, at), None)
        row.beyond = ctx.typed(r, "beyond", bool, at, False)
        row.block = ctx.typed(r, "block", str, at)
        row.notes = _notes(ctx, r, "notes", at)
        row.recipe_for = ctx.typed(r, "recipe_for", str, at)
        info = ctx.mapping(r.get("info"), f"{at}.info", r, "info")
        for k, v in info.items():
            if k not in info_names:
                ctx.err(info, k, f"not an info column of this table (the table's info: "
                                 f"{', '.join(info_names) or 'none'})", f"{at}.info.{k}")
            if isinstance(v, (dict, list)) or v is None:
                ctx.err(info, k, f"must be a text or a number, got {v!r}", f"{at}.info.{k}")
            row.info[k] = str(v)
        if any(x.id == row.id for x in rows):
            ctx.err(rnode, j, f"row {row.id!r} is listed twice", at)
        rows.append(row)
    _paper_first(ctx, rows, rnode, "rows", f"{where}.rows")
    _recipe_rows(ctx, rows, rnode, where)
    return rows


def _recipe_rows(ctx, rows: list[Row], rnode: list, where: str) -> None:
    """`recipe_for:` names a row of the paper in the same table (a model row, not beyond),
    and sits on a row beyond the paper: another recipe for the values that row prints."""
    paper_rows = [r.id for r in rows if not r.beyond and r.model is not None]
    for j, row in enumerate(rows):
        if row.recipe_for is None:
            continue
        at = f"{where}.rows[{j}].recipe_for"
        if not row.beyond or row.model is None:
            ctx.err(rnode[j], "recipe_for", "only a model row marked beyond: true can be "
                                            "another recipe for a row of the paper", at)
        elif row.recipe_for not in paper_rows:
            ctx.err(rnode[j], "recipe_for", f"{row.recipe_for!r} is not a model row of the "
                    f"paper in this table{_dym(row.recipe_for, paper_rows)}", at)


def _columns(ctx, node, where: str, attacks: dict) -> list[Column]:
    cnode = node.get("columns", [])
    if not isinstance(cnode, list) or not cnode:
        ctx.err(node, "columns" if "columns" in node else None, "needs a list of columns",
                f"{where}.columns")
    cols: list[Column] = []
    for j, c in enumerate(cnode):
        at = f"{where}.columns[{j}]"
        c = ctx.mapping(c, at, cnode, j)
        ctx.check_keys(c, COLUMN_KEYS, at)
        a = ctx.ref(c, "attack" if "attack" in c else None, c.get("attack"), attacks, "attack",
                    f"{at}.attack")
        e = ctx.eps(c, "eps", c["eps"], f"{at}.eps") if "eps" in c else None
        label = ctx.typed(c, "label", str, at, attacks[a].label + (f" ε={e.literal}" if e else ""))
        if any(x.label == label for x in cols):
            ctx.err(c, "label", f"duplicate column label {label!r}", f"{at}.label")
        spec = attacks[a]
        config = config_dict(spec.config)
        cols.append(Column(label, a, e, ctx.typed(c, "beyond", bool, at, False), spec.label,
                           spec.plugin, config, _notes(ctx, c, "notes", at),
                           spec.cls.loss_for(config), spec.cls.strength))
    _paper_first(ctx, cols, cnode, "columns", f"{where}.columns")
    return cols


def _values(ctx, node, where: str, rows: list[Row], cols: list[Column], source: str,
            kind: str, kind_label: str) -> list[Reported]:
    """{row id: {column label: number | {value, source}}} → [Reported]."""
    out: list[Reported] = []
    row_ids = [r.id for r in rows]
    col_labels = [c.label for c in cols]
    for rid, vals in node.items():
        if rid not in row_ids:
            ctx.err(node, rid, f"not a row of this table{_dym(rid, row_ids)}", f"{where}.{rid}")
        vals = ctx.mapping(vals, f"{where}.{rid}", node, rid)
        for lbl, v in vals.items():
            at = f"{where}.{rid}.{lbl}"
            if lbl not in col_labels:
                ctx.err(vals, lbl, f"not a column label{_dym(str(lbl), col_labels)}", at)
            cite = source
            if isinstance(v, dict):
                ctx.check_keys(v, {"value", "source"}, at)
                if "value" not in v:
                    ctx.err(vals, lbl, "needs a 'value'", at)
                cite = ctx.typed(v, "source", str, at, source)
                v = v["value"]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                ctx.err(vals, lbl, f"must be a number (percent), got {v!r}", at)
            if not 0.0 <= float(v) <= 100.0:
                ctx.err(vals, lbl, f"must be a percentage in [0, 100], got {v!r}", at)
            if not cite:
                ctx.err(vals, lbl, "needs a source: give the table (or this source) a 'source'", at)
            out.append(Reported(rid, lbl, float(v), cite, kind, kind_label))
    return out


def _dym(name: str, choices: list[str]) -> str:
    from bench.plugins.registry import did_you_mean
    return did_you_mean(name, choices)


def parse_table(ctx, name: str, node, order: int, models: dict, attacks: dict) -> TableSpec:
    where = f"tables.{name}"
    ctx.check_keys(node, TABLE_KEYS, where)
    info_names = ctx.list_of_str(node, "info", where)
    rows = _rows(ctx, node, where, models, info_names)
    cols = _columns(ctx, node, where, attacks)
    source = ctx.typed(node, "source", str, where, "")
    rep = ctx.mapping(node.get("reported"), f"{where}.reported", node, "reported")
    values = _values(ctx, rep, f"{where}.reported", rows, cols, source, PAPER, "paper")
    by = ctx.mapping(node.get("reported_by"), f"{where}.reported_by", node, "reported_by")
    for kind, snode in by.items():
        at = f"{where}.reported_by.{kind}"
        if kind == PAPER:
            ctx.err(by, kind, "the paper's values go under 'reported'", at)
        ctx.name(by, kind, kind, "reported_by source", at)
        snode = ctx.mapping(snode, at, by, kind)
        ctx.check_keys(snode, SOURCE_KEYS, at)
        ksource = ctx.typed(snode, "source", str, at, "")
        klabel = ctx.typed(snode, "label", str, at, str(kind).replace("_", " "))
        vnode = ctx.mapping(snode.get("values"), f"{at}.values", snode, "values")
        values += _values(ctx, vnode, f"{at}.values", rows, cols, ksource, str(kind), klabel)
    orientation = ctx.typed(node, "orientation", str, where, "rows")
    if orientation not in ORIENTATIONS:
        ctx.err(node, "orientation", f"must be one of {', '.join(ORIENTATIONS)}"
                f"{_dym(orientation, list(ORIENTATIONS))}", f"{where}.orientation")
    tol = ctx.typed(node, "tolerance", (int, float), where, 2.0)
    if not 0 <= tol <= 100:                # NaN fails too; inf would pass every check
        ctx.err(node, "tolerance", f"must be in [0, 100] percentage points, got {tol!r}",
                f"{where}.tolerance")
    return TableSpec(name, ctx.typed(node, "title", str, where, name), source,
                     ctx.typed(node, "order", int, where, order),
                     ctx.list_of_str(node, "tags", where), float(tol), rows, cols, values,
                     orientation, info_names, _cell_notes(ctx, node, where, rows, cols))
