"""Regression checks that CI can trust: verdicts and their statistics.

* `compare` puts the current database next to a baseline (`bench.leaderboard.baseline`),
  cell by cell (matched by cell id). A cell is *not comparable* when its resolved config,
  plugin version, precision, number of examples or smoke/full mode differs (the verdict
  names the field). A change counts only when it is both large (≥ threshold_pp) and
  significant at alpha (like asv's factor + significance): an exact McNemar test on the
  per-sample outcomes when the examples are the same, a two-proportion z-test when
  outcomes are missing; a large change that is not significant is *changed_not_significant*.
* `check_paper` puts each paper-table cell next to the paper's value with the table's
  tolerance: reproduced / below / above / not_run (and failed), with the notes suite.yaml
  records for it and the view's sanity explanations. `paper_cells` is that one verdict,
  which the Reproduction page (`bench.leaderboard.reproduction`) reads too.

`bench.leaderboard.verdict_writers` prints the verdicts (terminal table, JUnit, Markdown).
Bad input (unreadable baseline, unknown table) raises BenchError.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.db.outcomes import unpack_outcomes
from bench.db.schema import ResultRecord
from bench.errors import BenchError, printable
from bench.plugins.registry import did_you_mean
from bench.leaderboard.baseline import in_selection, plugin_versions, validate_baseline
from bench.leaderboard.stats import accuracy_pct, preference
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import CellView, ColumnView, RowView, TableView, build_table

WORSE, BETTER, UNCHANGED, NEW, MISSING, FAILED = \
    "worse", "better", "unchanged", "new", "missing", "failed"
NOT_COMPARABLE, CHANGED_NS = "not_comparable", "changed_not_significant"
VERDICTS = (WORSE, BETTER, UNCHANGED, NEW, MISSING, FAILED, NOT_COMPARABLE, CHANGED_NS)
FAILING = (WORSE, FAILED)                       # verdicts that make `check` exit with 1
COMPARED = (WORSE, BETTER, UNCHANGED, CHANGED_NS)   # a test was run on the cell

REPRODUCED, BELOW, ABOVE, NOT_RUN = "reproduced", "below", "above", "not_run"
PAPER_FAILING = (BELOW, ABOVE, FAILED)          # not reproduced within the tolerance


# ============================================================================ comparison

def finite(value: Any, name: str, what: str, ok: Callable[[float], bool]) -> float:
    """`value` as a float if it is a finite number for which `ok` holds, else one
    BenchError sentence: a NaN threshold used to turn every drop into "unchanged"."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or not ok(x):
        raise BenchError(f"{name} must be a finite number {what}, got {printable(value)}")
    return x


@dataclass
class Verdict:
    cell_id: str
    verdict: str
    baseline: float | None = None       # accuracy, %
    current: float | None = None
    diff_pp: float | None = None        # current − baseline
    p_value: float | None = None
    test: str | None = None             # mcnemar / z-test
    n_baseline: int | None = None
    n_current: int | None = None
    discordant: tuple[int, int] | None = None   # (lost, gained) examples, McNemar's b and c
    field: str | None = None            # what makes the cells not comparable
    reason: str = ""
    cell_key_baseline: str | None = None
    cell_key_current: str | None = None
    smoke: bool = False

    @property
    def name(self) -> str:
        return self.cell_id + (" [smoke]" if self.smoke else "")

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING

    def as_dict(self) -> dict:
        return asdict(self)


def _diff_paths(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in a:
                out.append((p, "<absent>", b[k]))
            elif k not in b:
                out.append((p, a[k], "<absent>"))
            else:
                out += _diff_paths(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _diff_paths(x, y, f"{prefix}[{i}]")
        return out
    return [] if a == b else [(prefix or "<root>", a, b)]


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def comparability(base: dict, cur: ResultRecord) -> tuple[str, str] | None:
    """None when comparable, else (field, sentence) for the first relevant difference."""
    bcfg, ccfg = base.get("config") or {}, cur.config or {}
    if bool(base.get("smoke")) != bool(cur.smoke):
        mode = lambda s: "smoke" if s else "full"   # noqa: E731
        return "smoke", f"smoke/full differs: baseline {mode(base.get('smoke'))}, current {mode(cur.smoke)}"
    bp = base.get("precision") or bcfg.get("precision")
    cp = cur.precision or ccfg.get("precision")
    if bp != cp:
        return "precision", f"precision differs: baseline {bp}, current {cp}"
    if int(base.get("n") or 0) != int(cur.n or 0):
        return "n", f"number of examples differs: baseline n={base.get('n')}, current n={cur.n}"
    if (base.get("split") or "test") != (cur.split or "test"):
        return "split", f"split differs: baseline {base.get('split')}, current {cur.split}"
    bv, cv = plugin_versions(bcfg), plugin_versions(ccfg)
    if bv != cv:
        diffs = _diff_paths(bv, cv)
        detail = ", ".join(f"{p}: {_short(a)} → {_short(b)}" for p, a, b in diffs[:3])
        return "versions", f"plugin version differs: {detail}"
    if (base.get("seed") is not None and cur.seed is not None
            and int(base["seed"]) != int(cur.seed)):
        return "seed", f"seed differs: baseline {base['seed']}, current {cur.seed}"
    if bcfg != ccfg:
        diffs = _diff_paths(bcfg, ccfg)
        detail = ", ".join(f"{p}: {_short(a)} → {_short(b)}" for p, a, b in diffs[:3])
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        first = diffs[0][0] if diffs else "config"
        return f"config.{first}", f"resolved config differs: {detail}{more}"
    return None


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> tuple[float, int, int]:
    """Two-sided exact McNemar test: (p, b, c), b = lost (correct → wrong), c = gained."""
    b = int(np.sum(before & ~after))
    c = int(np.sum(~before & after))
    if b + c == 0:
        return 1.0, b, c
    return float(stats.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue), b, c


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2, p = k1 / n1, k2 / n2, (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    return float(2 * stats.norm.sf(abs(p2 - p1) / se))


def _base_acc(c: dict) -> float | None:
    n = int(c.get("n") or 0)
    if n > 0:
        return 100.0 * int(c.get("n_correct") or 0) / n
    if c.get("accuracy_pct") is not None:
        return float(c["accuracy_pct"])
    ra = c.get("robust_acc")
    return None if ra is None else 100.0 * ra if ra <= 1.0 else float(ra)


def _base_outcomes(c: dict) -> np.ndarray | None:
    blob = c.get("outcomes")
    if not blob:
        return None
    try:
        return unpack_outcomes(base64.b64decode(blob, validate=True), int(c["n"]))
    except (ValueError, TypeError) as e:
        raise BenchError(f"baseline cell {c.get('cell_id')}: outcomes are not valid base64 "
                         f"packed bits ({e})") from None


def _judge(base: dict, cur: ResultRecord, threshold_pp: float, alpha: float) -> Verdict:
    v = Verdict(cell_id=base["cell_id"], verdict=UNCHANGED, n_baseline=int(base["n"]),
                n_current=cur.n, cell_key_baseline=base["cell_key"], cell_key_current=cur.cell_key,
                baseline=_base_acc(base), smoke=bool(base.get("smoke")))
    if cur.status != "done":
        v.verdict, v.reason = FAILED, (cur.error or "failed (no error recorded)").strip()
        return v
    v.current = accuracy_pct(cur)
    why = comparability(base, cur)
    if why is not None:
        v.verdict, (v.field, v.reason) = NOT_COMPARABLE, why
        return v
    if v.baseline is None or v.current is None:
        v.verdict, v.field, v.reason = NOT_COMPARABLE, "robust_acc", "no accuracy recorded"
        return v
    v.diff_pp = v.current - v.baseline
    before, after = _base_outcomes(base), unpack_outcomes(cur.outcomes, cur.n)
    if before is not None and after is not None and len(before) == len(after):
        v.test = "mcnemar"
        v.p_value, b, c = mcnemar_exact(before, after)
        v.discordant = (b, c)
    else:
        v.test = "z-test"
        v.p_value = two_proportion_z(int(base["n_correct"]), int(base["n"]), cur.n_correct, cur.n)
    large = abs(v.diff_pp) >= threshold_pp - 1e-9 and v.diff_pp != 0
    significant = v.p_value < alpha
    if large and significant:
        v.verdict = WORSE if v.diff_pp < 0 else BETTER
    elif large:
        v.verdict = CHANGED_NS
    if v.test == "mcnemar":
        v.reason = (f"{v.discordant[0]} example(s) lost, {v.discordant[1]} gained; "
                    f"exact McNemar p={v.p_value:.3g}")
    else:
        v.reason = f"two-proportion z-test p={v.p_value:.3g} (per-sample outcomes missing)"
    if v.verdict == CHANGED_NS:
        v.reason += f" ≥ alpha {alpha:g}: not significant"
    elif v.verdict == UNCHANGED and significant and v.diff_pp != 0:
        v.reason += f"; below the {threshold_pp:g} pp threshold"
    lib_b, lib_c = base.get("versions") or {}, cur.versions or {}
    changed = sorted(k for k in set(lib_b) & set(lib_c) if lib_b[k] != lib_c[k])
    if changed:
        v.reason += "; library versions changed: " + ", ".join(
            f"{k} {lib_b[k]}→{lib_c[k]}" for k in changed[:4])
    return v


def _pick_current(base: dict, cands: list[ResultRecord]) -> ResultRecord:
    same = [r for r in cands if r.cell_key == base["cell_key"]]
    if same:
        return same[0]
    comparable = [r for r in cands if comparability(base, r) is None]
    if comparable:
        return max(comparable, key=preference)
    return max(cands, key=lambda r: (bool(r.smoke) == bool(base.get("smoke")),) + preference(r))


def compare(engine: Engine, baseline: dict, *, threshold_pp: float = 1.0,
            alpha: float = 0.05) -> list[Verdict]:
    """Verdicts for every baseline cell and every new current cell of the selection."""
    threshold_pp = finite(threshold_pp, "threshold", "≥ 0 pp", lambda x: x >= 0)
    alpha = finite(alpha, "alpha", "in (0, 1)", lambda x: 0 < x < 1)
    baseline = validate_baseline(baseline)
    sel = baseline.get("selection") or {}
    tags, filters = sel.get("tags") or None, sel.get("filters") or None
    with Session(engine) as s:
        current = list(s.scalars(select(ResultRecord)))
        s.expunge_all()
    by_id: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in current:
        by_id[r.cell_id].append(r)
    out: list[Verdict] = []
    used: set[str] = set()
    base_ids = set()
    for base in baseline["cells"]:
        base_ids.add(base["cell_id"])
        cands = [r for r in by_id.get(base["cell_id"], []) if r.cell_key not in used]
        if not cands:
            out.append(Verdict(cell_id=base["cell_id"], verdict=MISSING,
                               baseline=_base_acc(base), n_baseline=int(base["n"]),
                               cell_key_baseline=base["cell_key"], smoke=bool(base.get("smoke")),
                               reason="in the baseline, not in the database"))
            continue
        cur = _pick_current(base, cands)
        used.add(cur.cell_key)
        out.append(_judge(base, cur, threshold_pp, alpha))
    new: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in current:
        if r.cell_id not in base_ids and in_selection(r, tags, filters):
            new[r.cell_id].append(r)
    for cell_id in sorted(new):
        r = max(new[cell_id], key=preference)
        v = Verdict(cell_id=cell_id, verdict=NEW, current=accuracy_pct(r), n_current=r.n,
                    cell_key_current=r.cell_key, smoke=bool(r.smoke), reason="not in the baseline")
        if r.status != "done":
            v.verdict, v.reason = FAILED, "new cell failed: " + (r.error or "no error recorded")
        out.append(v)
    return out


# ============================================================================ paper check

@dataclass
class PaperVerdict:
    table: str
    row: str
    model: str
    column: str
    attack: str
    eps: str | None
    verdict: str
    measured: float | None = None
    reported: float | None = None
    diff_pp: float | None = None
    tolerance: float = 0.0
    ci: tuple[float, float] | None = None
    n: int | None = None
    reported_in_ci: bool | None = None
    cell_id: str | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)    # suite.yaml's: row, column, cell
    sanity: list[str] = field(default_factory=list)   # the view's flag explanations
    # rows beyond the paper that try another recipe for this value (their `recipe_for:`),
    # judged against it the same way; shown beside it, never gating
    recipes: list["PaperVerdict"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.table}: {self.row} / {self.column}"

    @property
    def recipe_line(self) -> str:
        """"recipe <row>: <measured> (n …), Δ …: <verdict>" — one recipe row's answer."""
        if self.measured is None:
            return f"recipe {self.row}: {self.verdict.replace('_', ' ')}"
        return (f"recipe {self.row}: {self.measured:.2f} (n {self.n}), Δ {self.diff_pp:+.2f} pp: "
                f"{self.verdict.replace('_', ' ')}")

    @property
    def failing(self) -> bool:
        return self.verdict in PAPER_FAILING

    def as_dict(self) -> dict:
        return asdict(self)


def check_paper(engine: Engine, *, tables: Sequence[str] | None = None,
                tolerance: float | None = None) -> list[PaperVerdict]:
    """Each paper-table cell with a reported value against it, within the table's tolerance."""
    if tolerance is not None:
        tolerance = finite(tolerance, "tolerance", "≥ 0 pp", lambda x: x >= 0)
    store = load_store(engine)
    names = [t.name for t in store.tables]
    if not names:
        raise BenchError("the database has no paper tables; they are recorded by "
                         "`python -m bench run suite.yaml`")
    for t in tables or []:
        if t not in names:
            raise BenchError(f"unknown table {t!r}{did_you_mean(t, names)}; known: "
                             f"{', '.join(names)}")
    views = [build_table(store, rec) for rec in store.tables if not tables or rec.name in tables]
    return [v for v, *_ in paper_cells(views, tolerance=tolerance)]


def paper_cells(views: Sequence[TableView], *, tolerance: float | None = None,
                references: bool = False
                ) -> Iterator[tuple[PaperVerdict, TableView, RowView, CellView, ColumnView]]:
    """The verdict of every cell with a value of the paper's own (kind "paper"), with the
    view it comes from, in table order. Reference rows (a value the paper quotes, with no
    model to measure) only with `references`, as not run: `check --paper` leaves them out,
    the Reproduction page lists every printed value."""
    for tv in views:
        tol = tv.tolerance if tolerance is None else float(tolerance)
        for row in tv.rows:
            if row.reference and not references:
                continue
            recipe_rows = [r for r in tv.rows if r.recipe_for == row.model and not r.reference]
            for j, (cell, col) in enumerate(zip(row.cells, tv.columns)):
                if cell.reported is None:   # the paper's own values only (kind "paper")
                    continue
                v = _paper_verdict(tv, row, cell, col, tol)
                v.recipes = [_paper_verdict(tv, r, r.cells[j], col, tol, reported=cell.reported)
                             for r in recipe_rows]
                yield v, tv, row, cell, col


def _paper_verdict(tv: TableView, row: RowView, cell: CellView, col: ColumnView,
                   tol: float, reported: float | None = None) -> PaperVerdict:
    """The verdict of a cell against the paper's value printed for it (`reported`: the
    value of the paper row a recipe row tries, for a row beyond the paper)."""
    reported = cell.reported if reported is None else reported
    v = PaperVerdict(table=tv.name, row=row.label, model=row.model,
                     column=col.label, attack=col.attack, eps=col.eps,
                     verdict=NOT_RUN, reported=reported, tolerance=tol,
                     n=cell.n or None,
                     cell_id=cell.result.cell_id if cell.result else None,
                     notes=row.notes_of(col.index, col), sanity=list(cell.sanity))
    if row.reference:
        v.reason = "a value the paper quotes, with no model in the suite to run"
    elif cell.state == "failed":
        v.verdict, v.reason = FAILED, cell.error
    elif cell.state == "done" and cell.value is not None:
        v.measured, v.ci = cell.value, cell.ci
        v.diff_pp = cell.value - reported
        v.reported_in_ci = (None if cell.ci is None
                            else cell.ci[0] <= reported <= cell.ci[1])
        if abs(v.diff_pp) <= tol + 1e-9:
            v.verdict = REPRODUCED
        else:
            v.verdict = BELOW if v.diff_pp < 0 else ABOVE
        v.reason = (f"Δ {v.diff_pp:+.2f} pp, tolerance ±{tol:g} pp"
                    + ("" if v.reported_in_ci is None else
                       "; paper value inside the 95 % interval" if v.reported_in_ci
                       else "; paper value outside the 95 % interval"))
    else:
        v.reason = "not run yet"
    return v


def measured_count(verdicts: Sequence[PaperVerdict]) -> int:
    """How many paper cells have a measured value (a gate that measured none proves nothing)."""
    return sum(1 for v in verdicts if v.measured is not None)


def compared_count(verdicts: Sequence[Verdict]) -> int:
    """How many baseline cells were put through the test (a gate that compared none, all
    missing or not comparable, proves nothing)."""
    return sum(1 for v in verdicts if v.verdict in COMPARED)


def baseline_count(verdicts: Sequence[Verdict]) -> int:
    """How many of the verdicts are about a cell of the baseline (not a new cell)."""
    return sum(1 for v in verdicts if v.cell_key_baseline is not None)


def exit_status(verdicts: Sequence[Verdict | PaperVerdict]) -> int:
    return 1 if any(v.failing for v in verdicts) else 0
