"""What the leaderboard reads: the results database, plus the cells of committed baselines
that it lacks, loaded once into a `Store` that the site, the exports and `check` share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.db.schema import ModelRecord, ReportedValue, ResultRecord, RunRecord, TableRecord

PAPER = "paper"                  # the kind of the paper's own values (what check --paper uses)


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


def run_labels(store: Store) -> tuple[dict[str, str], dict[str, str]]:
    """Suite labels of models and attacks as the runs recorded them (the newest run wins)."""
    models: dict[str, str] = {}
    attacks: dict[str, str] = {}
    for rid in sorted(store.runs):
        labels = (store.runs[rid].summary or {}).get("labels") or {}
        models.update({str(k): str(v) for k, v in (labels.get("models") or {}).items()})
        attacks.update({str(k): str(v) for k, v in (labels.get("attacks") or {}).items()})
    return models, attacks
