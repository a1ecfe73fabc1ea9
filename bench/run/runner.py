"""The runner: a selection of cells → a run record → workers (started by an executor) → a summary.

The runner only opens and closes the run and says what it did. What happens to one model
job is sequenced in one place, the worker loop (`bench.run.worker`): each distinct model
key trains once; a cached checkpoint is used only after its sha256 matches the database;
every cell is committed as soon as it is known, so `kill -9` loses nothing already
recorded and the next run resumes (training too: the training loop keeps a per-epoch
resume file); a cell that fails (non-finite loss, out of memory, a plugin error) is
recorded as failed with its error and the run goes on.

The runner always starts workers through an executor (`executors/`): by default the one
that runs a single worker in this process, built by the worker factory it hands the
executor; others start workers elsewhere from the run's `WorkerPlan`. The results
database coordinates them (`bench.db.claims`). Every worker runs on the same frozen
`RunSettings`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from sqlalchemy.engine import Engine

from bench.run import record
from bench.plugins.executor import Executor, LaunchContext, default_executor
from bench.run.plan import Cell
from bench.run.precision import device_name
from bench.run.settings import RunSettings
from bench.suite.spec import Suite
from bench.run.summary import RunSummary, WorkerSummary  # noqa: F401  (the public names)
from bench.run.worker import Worker, WorkerPlan


class Runner:
    """A run of `suite`'s cells on `settings` (or, from the Python API, the fields of
    `RunSettings` as keywords: `Runner(suite, engine, data_root=..., device="cpu")`).
    `executor` starts the workers (default: the registry's default, one worker in this
    process); `selection` (tags, filters, limit, seed) lets workers elsewhere rebuild the cells."""

    def __init__(self, suite: Suite, engine: Engine, settings: RunSettings | None = None, *,
                 out: Callable[[str], None] | None = None, executor: Executor | None = None,
                 selection: dict | None = None, **settings_fields):
        if settings is None:
            settings = RunSettings(**settings_fields)
        elif settings_fields:
            raise TypeError(f"Runner takes RunSettings or its fields, not both: {sorted(settings_fields)}")
        self.suite, self.engine, self.settings = suite, engine, settings
        self.out = out or (lambda s: print(s, file=sys.stderr))
        self.device_desc = device_name(settings.device)
        self.executor = executor if executor is not None else default_executor()
        self.selection = dict(selection or {})

    def record_tables(self) -> None:
        """Store each table's layout and the paper's values, so `report` needs only the DB."""
        record.record_tables(self.engine, self.suite)

    def new_worker(self, label: str = "") -> Worker:
        """A worker of this run in this process (what the default executor runs)."""
        return Worker(self.suite, self.engine, self.settings, out=self.out, label=label,
                      executor=self.executor.registry_name)

    def plan(self, cells: list[Cell], run_id: int, run_started) -> WorkerPlan:
        """What a worker started elsewhere needs to rebuild this run."""
        sel = self.selection
        return WorkerPlan(
            suite=str(Path(self.suite.path).resolve()), suite_sha256=self.suite.sha256,
            cell_keys=[c.key for c in cells], db=self.engine.url.render_as_string(hide_password=False),
            run_id=run_id, run_started=run_started.isoformat(),
            settings=self.settings.portable(), tags=list(sel.get("tags") or []),
            filters=list(sel.get("filters") or []), limit=sel.get("limit"), seed=sel.get("seed"),
            executor=self.executor.registry_name)

    # ------------------------------------------------------------------ the run
    def run(self, cells: list[Cell]) -> RunSummary:
        t0 = time.perf_counter()
        force = self.settings.force
        run_id, run_started = record.start_run(self.engine, self.suite, self.device_desc, cells)
        summary = RunSummary(run_id)
        status, collected = "failed", False
        try:
            self.record_tables()
            state = record.attempts(self.engine, [c.key for c in cells])
            skipped = 0 if force else sum(1 for c in cells if c.key in state
                                          and state[c.key].status == "done")
            summary.skipped = skipped
            if skipped:
                self.out(f"{skipped} of {len(cells)} cells already done (use --force to rerun)")
            detached = False
            if skipped < len(cells):
                ctx = LaunchContext(cells, self.plan(cells, run_id, run_started), self.out,
                                    new_worker=self.new_worker)
                detached = self.executor.launch(ctx) == "detached"
            summary = record.collect_summary(self.engine, run_id, cells, run_started, skipped, force)
            summary.detached, collected = detached, True
            status = "submitted" if detached else "done" if not summary.failed else "failed"
            if summary.unfinished and not detached:
                status = "incomplete"
                self.out(f"{summary.unfinished} cell(s) are still pending: the workers ended before "
                         f"them (see `python -m bench workers`); rerun to finish them")
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if not collected:       # interrupted, or an error: say what was done all the same
                try:
                    summary = record.collect_summary(self.engine, run_id, cells, run_started,
                                                     summary.skipped, force)
                except Exception:
                    pass
            summary.seconds = time.perf_counter() - t0
            record.end_run(self.engine, run_id, status, summary)
        return summary
