"""The runner: a selection of cells → a run record → workers (started by an executor) → a summary.

Each distinct model key trains once; a cached checkpoint is used only after its sha256
matches the database. Every cell is committed as soon as it is known, so `kill -9`
loses nothing already recorded and the next run resumes (training too: the loop keeps
a per-epoch resume file). A cell that fails (non-finite loss, out of memory, a plugin
error) is recorded as failed with its error and the run goes on.

What happens to one model job is sequenced in one place, the worker loop
(`bench.run.worker`); by default one worker runs in this process, and an executor
(`executors/`) may start workers elsewhere instead; the results database coordinates
them (`bench.db.claims`). The runner only opens and closes the run and says what it did.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from sqlalchemy.engine import Engine

from bench.db import record
from bench.db.claims import DEFAULT_LEASE_SECONDS
from bench.plugins.executor import Executor, LaunchContext
from bench.run.plan import Cell
from bench.run.precision import device_name
from bench.suite.spec import Suite
from bench.run.summary import RunSummary, WorkerSummary  # noqa: F401  (the public names)
from bench.run.worker import Worker, WorkerPlan, _one_line  # noqa: F401


class Runner:
    def __init__(self, suite: Suite, engine: Engine, *, data_root: Path | str, device: str,
                 results_dir: Path | str = Path("results"), offline: bool = False,
                 force: bool = False, progress: bool = True,
                 out: Callable[[str], None] | None = None, executor: Executor | None = None,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, selection: dict | None = None,
                 device_request: str | None = None):
        self.suite, self.engine = suite, engine
        self.data_root, self.device = Path(data_root), device   # str from the Python API too
        self.results_dir = Path(results_dir)
        self.ckpt_dir = self.results_dir / "checkpoints"
        self.offline, self.force, self.progress = offline, force, progress
        self.out = out or (lambda s: print(s, file=sys.stderr))
        self.device_desc = device_name(device)
        self.executor, self.lease_seconds = executor, lease_seconds   # None: a worker in this process
        self.selection = dict(selection or {})     # tags, filters, limit, seed: for workers elsewhere
        self.device_request = device_request or device
        self.run_started = None

    def record_tables(self) -> None:
        """Store each table's layout and the paper's values, so `report` needs only the DB."""
        record.record_tables(self.engine, self.suite)

    def status(self, cells: list[Cell]) -> dict[str, str]:
        """'done' / 'failed' / 'pending' per cell key."""
        known = record.attempts(self.engine, [c.key for c in cells])
        return {c.key: known[c.key].status if c.key in known else "pending" for c in cells}

    def worker(self, label: str = "") -> Worker:
        """A worker in this process, on this runner's settings."""
        return Worker(self.suite, self.engine, data_root=self.data_root, device=self.device,
                      results_dir=self.results_dir, offline=self.offline, force=self.force,
                      progress=self.progress, out=self.out, lease_seconds=self.lease_seconds,
                      label=label, executor=self._executor_name())

    def _executor_name(self) -> str:
        return getattr(self.executor, "registry_name", "") if self.executor is not None else ""

    def plan(self, cells: list[Cell], run_id: int) -> WorkerPlan:
        """What a worker started elsewhere needs to rebuild this run."""
        return WorkerPlan(
            suite=str(Path(self.suite.path).resolve()), suite_sha256=self.suite.sha256,
            cell_keys=[c.key for c in cells],
            db=self.engine.url.render_as_string(hide_password=False), data_root=str(self.data_root.resolve()),
            results_dir=str(self.results_dir.resolve()), device=self.device_request, run_id=run_id,
            run_started=self.run_started.isoformat(), tags=list(self.selection.get("tags") or []),
            filters=list(self.selection.get("filters") or []), limit=self.selection.get("limit"),
            seed=self.selection.get("seed"), offline=self.offline, force=self.force,
            lease_seconds=self.lease_seconds, executor=self._executor_name())

    # ------------------------------------------------------------------ the run
    def run(self, cells: list[Cell]) -> RunSummary:
        t0 = time.perf_counter()
        run_id, self.run_started = record.start_run(self.engine, self.suite, self.device_desc, cells)
        summary = RunSummary(run_id)
        status, collected = "failed", False
        try:
            self.record_tables()
            state = record.attempts(self.engine, [c.key for c in cells])
            skipped = 0 if self.force else sum(1 for c in cells if c.key in state
                                               and state[c.key].status == "done")
            summary.skipped = skipped
            if skipped:
                self.out(f"{skipped} of {len(cells)} cells already done (use --force to rerun)")
            detached = False
            if skipped < len(cells) and self.executor is None:     # the default: this process
                self.worker().run(cells, run_id, self.run_started)
            elif skipped < len(cells):
                ctx = LaunchContext(self, cells, self.plan(cells, run_id), self.out)
                detached = self.executor.launch(ctx) == "detached"
            summary = record.collect_summary(self.engine, run_id, cells, self.run_started, skipped,
                                             self.force)
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
                    summary = record.collect_summary(self.engine, run_id, cells, self.run_started,
                                                     summary.skipped, self.force)
                except Exception:
                    pass
            summary.seconds = time.perf_counter() - t0
            record.end_run(self.engine, run_id, status, summary)
        return summary
