"""The smoke grid: the smoke results of one dataset laid out like a paper table (models
by their suite labels × attack and ε, a worst case per ε), built from the results alone."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from bench.db.schema import ResultRecord
from bench.leaderboard.fmt import slug
from bench.leaderboard.stats import MIN_TIME
from bench.leaderboard.store import Store, run_labels
from bench.leaderboard.tables import (CellView, ColumnView, WorstCase, fill_cell,
                                      matching_results, rank_values, table_eps, worst_case)


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


def _first_seen(results: Sequence[ResultRecord]) -> list[ResultRecord]:
    """Results in the order they were recorded (a run records cells in suite order)."""
    return sorted(results, key=lambda r: (r.created or MIN_TIME, r.run_id or 0, r.cell_id))


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
                    fill_cell(cell, cands, col)
                cells.append(cell)
            worst = [worst_case(results, model, e, True, id=f"sw-{slug(dataset)}-{ri}-{j}")
                     for j, e in enumerate(weps)]
            keys = list(dict.fromkeys(r.model_key for r in results if r.model_name == model))
            rows.append(SmokeRow(ri, model, model_labels.get(model, model), cells, worst, keys))
        for j in range(len(columns)):
            rank_values([row.cells[j] for row in rows])
        for j in range(len(weps)):
            rank_values([row.worst[j] for row in rows])
        ns = sorted({r.n for r in results if r.n})
        grids.append(SmokeGrid(name=f"smoke-{dataset}", dataset=dataset,
                               title=f"Smoke profile: {dataset}", columns=columns,
                               worst_eps=weps, rows=rows, results=results, n_examples=ns))
    return grids
