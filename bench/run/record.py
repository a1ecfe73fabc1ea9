"""Recording into the results database: runs, tables, cell results, their cross-result flags,
and what is still to do.

Every write is an upsert keyed by its primary key (`db.upsert`) inside `with_retry`, so
many workers write one registry (SQLite or PostgreSQL) without losing or duplicating a
result, and a dropped connection costs a retry.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
import sys
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.checkpoints.sources import redacted_config
from bench.db import database as db
from bench.db.chunks import select_in
from bench.db.outcomes import pack_details, pack_outcomes
from bench.db.schema import ModelRecord, ReportedValue, ResultRecord, RunRecord, TableRecord, utcnow
from bench.run import sanity
from bench.run.evaluate import CellOutcome
from bench.run.plan import Cell
from bench.db.provenance import code_commit, host, library_versions
from bench.plugins.registry import ATTACKS
from bench.db.retry import with_retry
from bench.errors import SuiteError
from bench.suite.spec import Suite
from bench.suite.tables import TableSpec
from bench.run.summary import RunSummary, WorkerSummary


# ---------------------------------------------------------------------- runs and tables

def start_run(engine: Engine, suite: Suite, device_desc: str,
              cells: list | None = None) -> tuple[int, dt.datetime]:
    # the suite's display labels of what this run touches: the report shows models and
    # attacks by them (labels are not part of any key, so they live here)
    labels = {"models": {c.model.name: c.model.label for c in cells or []},
              "attacks": {c.attack.name: c.attack.label for c in cells or []}}

    def add():
        with Session(engine) as s:
            rec = RunRecord(command=shlex.join(sys.argv), suite_path=str(suite.path),
                            suite_sha256=suite.sha256, commit=code_commit(), host=host(),
                            device=device_desc, versions=library_versions(), started=utcnow(),
                            summary={"labels": labels})
            s.add(rec)
            s.commit()
            return rec.id, rec.started
    return with_retry(add, what="starting the run")


def end_run(engine: Engine, run_id: int, status: str, summary: RunSummary) -> None:
    def end():
        with Session(engine) as s:
            rec = s.get(RunRecord, run_id)
            rec.ended, rec.status = utcnow(), status
            rec.summary = {**(rec.summary or {}),
                           "done": len(summary.done), "failed": len(summary.failed),
                           "skipped": summary.skipped, "trained": summary.trained,
                           "loaded": summary.loaded,
                           "workers": {w.worker: w.as_dict() for w in summary.workers}}
            s.commit()
    with_retry(end, what="ending the run")


def record_tables(engine: Engine, suite: Suite) -> None:
    """Store each table's layout (with what its cells need, `table_needs`) and its published
    values, so `report` needs only the DB. One process at a time (`db.exclusive`): two runs
    starting together never double a value."""
    layouts = {t.name: {**t.layout(), "needs": table_needs(suite, t)} for t in suite.tables.values()}

    def write():
        with db.exclusive(engine, "bench tables") as conn, Session(bind=conn) as s:
            for t in suite.tables.values():
                s.merge(TableRecord(name=t.name, title=t.title, layout=layouts[t.name],
                                       suite_path=str(suite.path), updated=utcnow()))
                s.execute(delete(ReportedValue).where(ReportedValue.table == t.name))
                for v in t.values:
                    s.add(ReportedValue(table=t.name, row=v.row, column=v.column, value=v.value,
                                        source=v.source, kind=v.kind))
            s.flush()
    with_retry(write, what="recording the tables")


def table_needs(suite: Suite, table: TableSpec) -> dict[str, dict]:
    """What running a table's model rows takes, counted as the dry run counts it
    (`bench.run.estimate`) but with no device and no calibration. Per row id: the
    architecture and dataset (the report times them by earlier training runs of the same
    network), the dataset's training-set size (to count those runs' passes), the input
    size, whether it is a released checkpoint (nothing to train), the training passes (and
    the model it fine-tunes, whose own are not counted), and each column's evaluation
    passes (from the suite's non-smoke cells; `exact` False where the count is a lower
    bound; a column no matrix entry declares has none)."""
    from bench.plugins.config import config_dict
    from bench.plugins.registry import DATASETS
    from bench.run.estimate import eval_work, train_examples, train_work
    from bench.run.plan import expand
    try:
        cells = [c for c in expand(suite) if not c.smoke]
    except SuiteError:                     # no matrix entry: no cells to count
        cells = []
    exact: dict[tuple, Cell] = {}
    any_eps: dict[tuple, Cell] = {}
    for c in cells:
        exact.setdefault((c.model.name, c.attack.name, c.eps.literal), c)
        any_eps.setdefault((c.model.name, c.attack.name), c)
    out: dict[str, dict] = {}
    for row in table.rows:
        if row.model is None:
            continue
        m = suite.models[row.model]
        shape = DATASETS.get(m.dataset.plugin).info.shape
        evals: dict[str, dict] = {}
        for col in table.columns:
            cell = (exact.get((m.name, col.attack, col.eps.literal)) if col.eps is not None
                    else any_eps.get((m.name, col.attack)))
            if cell is not None:
                work = eval_work(cell)
                evals[col.label] = {"passes": work.passes, "exact": work.exact}
        out[row.id] = {
            "dataset": m.dataset.plugin,
            "dataset_train_size": train_examples(m.dataset.plugin, None, 0),
            "arch": [m.arch, config_dict(m.arch_config), m.dataset.plugin],
            "input_size": int(math.prod(shape)),
            "checkpoint": m.checkpoint is not None,
            "train_passes": None if m.checkpoint is not None else train_work(m).passes,
            "init_from": m.init_model.name if m.init_model is not None else None,
            "eval_passes": evals,
        }
    return out


# ---------------------------------------------------------------------- cell results

def record_result(engine: Engine, outcome: CellOutcome, run_id: int, model_key: str, *,
                  device_desc: str, worker: str | None = None) -> None:
    c = outcome.cell
    n = (c.eval.n or 0) if outcome.outcomes is None else int(outcome.outcomes.size)
    n_correct = 0 if outcome.outcomes is None else int(outcome.outcomes.sum())
    rec = ResultRecord(
        cell_key=c.key, cell_id=c.id, model_key=model_key, model_name=c.model.name,
        dataset=c.model.dataset.name, attack=c.attack.name, attack_plugin=c.attack.plugin,
        norm=c.attack.norm, eps_literal=c.eps.literal, eps=c.eps.value, split=c.eval.split,
        n=n, n_correct=n_correct, robust_acc=(n_correct / n) if n else None,
        outcomes=None if outcome.outcomes is None else pack_outcomes(outcome.outcomes),
        details=pack_details(outcome.details), flags=list(getattr(outcome, "flags", []) or []),
        config=redacted_config(c.resolved()), tags=c.tags, precision=c.precision, seed=c.seed, smoke=c.smoke,
        seconds=outcome.seconds, status="done" if outcome.ok else "failed", error=outcome.error,
        device=device_desc, versions=library_versions(), commit=code_commit(), run_id=run_id,
        created=utcnow(), worker=worker)

    def write():
        with engine.begin() as conn:
            db.upsert(conn, rec)
    with_retry(write, what=f"recording {c.id}")


def update_result_flags(engine: Engine, model_key: str) -> None:
    """Recompute the cross-result flags of every stored result of this model."""
    def update():
        with Session(engine) as s:
            recs = list(s.scalars(select(ResultRecord).where(
                ResultRecord.model_key == model_key, ResultRecord.status == "done")))
            if not recs:
                return
            rows = []
            for r in recs:
                try:
                    cls = ATTACKS.get(r.attack_plugin)
                except Exception:
                    cls = None
                rows.append(sanity.row_from_record(r, cls))
            flags = sanity.result_flags(rows)
            for r in recs:
                keep = [f for f in (r.flags or []) if f in sanity.MODEL_FLAGS]
                new = sorted(set(keep) | set(flags.get(r.cell_key, [])))
                if new != list(r.flags or []):
                    r.flags = new
            s.commit()
    with_retry(update, what="updating result flags")


# ---------------------------------------------------------------------- what is left to do

@dataclass
class Attempt:
    status: str            # done / failed
    run_id: int | None
    created: dt.datetime | None


def attempts(engine: Engine, keys: list[str]) -> dict[str, Attempt]:
    """The stored result of each cell key that has one."""
    def read():
        out: dict[str, Attempt] = {}
        with Session(engine) as s:
            q = select(ResultRecord.cell_key, ResultRecord.status, ResultRecord.run_id,
                       ResultRecord.created)
            for key, status, run_id, created in select_in(s, q, ResultRecord.cell_key, keys):
                out[key] = Attempt(status, run_id, created)
        return out
    return with_retry(read, what="reading cell status")


def is_pending(a: Attempt | None, *, force: bool, run_id: int, run_started: dt.datetime) -> bool:
    """Whether this run still owes the cell a result.

    A result recorded by this run, or by any run since this one started (another terminal
    sharing the work), is this run's attempt: done or failed, it is not redone. Before
    that, a done cell is kept (unless --force) and a failed one is retried.
    """
    if a is None:
        return True
    if a.run_id == run_id or (a.created is not None and a.created >= run_started):
        return False
    return force or a.status != "done"


def models_done(engine: Engine, keys: list[str]) -> set[str]:
    def read():
        with Session(engine) as s:
            return {key for key, in select_in(s, select(ModelRecord.key).where(
                ModelRecord.status == "done"), ModelRecord.key, keys)}
    return with_retry(read, what="reading model status") if keys else set()


def collect_summary(engine: Engine, run_id: int, cells: list[Cell], run_started: dt.datetime,
                    skipped: int, force: bool = False) -> RunSummary:
    """What this run's workers did, read back from the database (wherever they ran)."""
    from bench.db.claims import workers
    summary = RunSummary(run_id, skipped=skipped)
    by_key = {c.key: c for c in cells}

    def read():
        with Session(engine) as s:
            return select_in(s, select(
                ResultRecord.cell_key, ResultRecord.status, ResultRecord.robust_acc,
                ResultRecord.seconds, ResultRecord.error, ResultRecord.run_id,
                ResultRecord.created), ResultRecord.cell_key, list(by_key))
    rows = {r.cell_key: r for r in with_retry(read, what="reading the run's results")}
    for c in cells:              # in selection order
        r = rows.get(c.key)
        if r is None or is_pending(Attempt(r.status, r.run_id, r.created), force=force,
                                   run_id=run_id, run_started=run_started):
            summary.unfinished += 1
            continue
        if r.run_id == run_id:
            if r.status == "done":
                summary.done.append((c, float("nan") if r.robust_acc is None else r.robust_acc, r.seconds))
            else:
                summary.failed.append((c, r.error or ""))
        elif r.created is not None and r.created >= run_started:
            summary.elsewhere += 1
    for w in workers(engine, run_id=run_id):
        ws = WorkerSummary.from_record(w.record, w.state)
        summary.workers.append(ws)
        summary.trained += ws.trained
        summary.loaded += ws.loaded
    return summary
