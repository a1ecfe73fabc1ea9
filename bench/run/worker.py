"""The worker loop: the one place that sequences a model job, top to bottom.

    loop { claim a model job with pending cells (bench.db.claims)
           → its model: released, cached or trained (bench.run.weights)
           → evaluate its pending cells (bench.run.evaluate)
           → record each as soon as it is known (bench.run.record)
           → release the claim }

Any number of workers, started by any executor (`executors/`: in this process, one per
GPU, a Slurm job array, …), run this loop on the same selection of cells and share the
work through the results database without talking to each other: a job another worker
holds is skipped, then dropped once its cells are recorded, or taken over once its
lease expires. When nothing is left to claim and nothing is held, the worker ends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from sqlalchemy.engine import Engine

from bench.db import claims as claims_mod
from bench.run import record
from bench.run import sanity
from bench.errors import BenchError, one_line
from bench.run.evaluate import CellOutcome, EvalData, evaluate
from bench.run.weights import ModelStore
from bench.run.plan import Cell, ModelJob, group
from bench.run.precision import Policy, device_name
from bench.run.settings import RunSettings
from bench.suite.spec import Suite
from bench.run.summary import WorkerSummary

ERROR_CHARS = 2000     # what a failed model job's records keep of its error (one line)


def jobs_of(cells: list[Cell]) -> list[ModelJob]:
    """The model jobs of these cells; a fine-tuned model's starting model comes first, as a
    job of its own (train only) when no selected cell evaluates it."""
    jobs = group(cells)
    keys = {j.key for j in jobs}
    out: list[ModelJob] = []
    for j in jobs:
        init = j.model.init_model
        while init is not None and not init.checkpoint and init.key not in keys:
            out.append(ModelJob(init, []))
            keys.add(init.key)
            init = init.init_model
        out.append(j)
    return out


class Worker:
    """One worker of a run, on the run's settings; `label` prefixes its messages and names
    it in `bench workers`, `executor` names what started it."""

    def __init__(self, suite: Suite, engine: Engine, settings: RunSettings, *,
                 out: Callable[[str], None] | None = None, label: str = "", executor: str = "",
                 poll_seconds: float | None = None):
        self.suite, self.engine, self.settings = suite, engine, settings
        self.id = claims_mod.new_worker_id()
        self.label, self.executor = label, executor
        base = out or (lambda s: print(s, file=sys.stderr))
        self.out = (lambda s: base(f"[{label}] {s}")) if label else base
        self.policy = Policy(suite.precision, suite.compile, settings.device,
                             compile_mode=suite.compile_mode)
        self.device_desc = device_name(settings.device)
        self.data = EvalData(settings)
        self.claims: claims_mod.Claims | None = None
        self.models = ModelStore(engine, settings, policy=self.policy, out=self.out, worker=self.id,
                                 stage=self._stage)
        lease = settings.lease_seconds
        self.poll = poll_seconds if poll_seconds is not None else min(5.0, max(0.5, lease / 6))
        self.summary = WorkerSummary(self.id, label)
        self._job: ModelJob | None = None
        self._attempted: set[str] = set()     # train-only jobs this worker already tried

    # ------------------------------------------------------------------ the loop
    def run(self, cells: list[Cell], run_id: int, run_started: dt.datetime) -> WorkerSummary:
        """Claim and do model jobs of these cells until none is left; return what it did."""
        lease = self.settings.lease_seconds
        self.claims = claims_mod.Claims(self.engine, self.id, lease_seconds=lease, run_id=run_id,
                                        log=self.out)
        claims_mod.register_worker(self.engine, self.id, label=self.label, executor=self.executor,
                                   device=self.device_desc, run_id=run_id, lease_seconds=lease)
        heartbeat = claims_mod.Heartbeat(self.claims, self._beat)
        heartbeat.start()
        previous = _interrupt_on_sigterm()
        status = "failed"
        try:
            jobs = jobs_of(cells)
            while (claimed := self.next_job(jobs, run_id, run_started)) is not None:
                job, pending, claim = claimed
                self._job = job
                try:
                    if claim.previous_owner is not None:
                        frm = claim.previous_owner
                        self.summary.takeovers[job.model.name] = frm
                        self.out(f"taking over {job.model.name} from {frm} (its lease expired)")
                    self.do_job(job, pending, run_id)
                finally:
                    self._job = None
                    self.claims.release(job.key)
                    self._beat()
            status = "done" if not self.summary.failed else "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            heartbeat.stop()
            try:
                self.claims.release_all()
                self.summary.state = status
                claims_mod.beat_worker(self.engine, self.id, job=None, summary=self.summary.as_dict(),
                                       status=status, ended=True)
            except Exception as e:  # the database is gone: the leases expire on their own
                self.out(f"warning: could not sign off: {one_line(e)}")
        return self.summary

    def next_job(self, jobs: list[ModelJob], run_id: int, run_started: dt.datetime
                 ) -> tuple[ModelJob, list[Cell], claims_mod.Claim] | None:
        """Claim the next job that still owes results: (job, its pending cells, how it was won),
        waiting while other workers hold what is left; None when nothing is left."""
        waiting_for: tuple = ()
        while True:
            todo = self._todo(jobs, run_id, run_started)
            if not todo:
                return None
            held = claims_mod.leases(self.engine, [j.key for j, _ in todo])
            trained = record.models_done(self.engine, [j.key for j, _ in todo])
            todo_keys = {j.key for j, _ in todo}
            blocked = []
            for job, _ in todo:
                init = job.model.init_model
                if (init is not None and not init.checkpoint and init.key in todo_keys
                        and init.key not in trained):
                    blocked.append((job, held.get(init.key)))   # its starting model comes first
                    continue
                lease = held.get(job.key)
                if lease is not None and not lease.expired and lease.owner != self.id:
                    blocked.append((job, lease))
                    continue
                claim = self.claims.claim(job.key, job.model.name)
                if claim is None:
                    blocked.append((job, None))
                    continue
                pending = self._still_pending(job, run_id, run_started)   # re-read after winning
                if pending is None:
                    self.claims.release(job.key)
                    continue
                return job, pending, claim
            note = tuple(sorted((j.model.name, l.owner if l else "") for j, l in blocked))
            if blocked and note != waiting_for:
                waiting_for = note
                self.out(f"waiting for {len(blocked)} model job(s) other workers hold: " + "; ".join(
                    f"{j.model.name} ({l.owner}, {l.stage}, lease {max(0.0, l.seconds_left):.0f}s)"
                    if l else j.model.name for j, l in blocked[:4]) + (" …" if len(blocked) > 4 else ""))
            time.sleep(self.poll)

    def _todo(self, jobs, run_id, run_started) -> list[tuple[ModelJob, list[Cell]]]:
        keys = [c.key for j in jobs for c in j.cells]
        state = record.attempts(self.engine, keys)
        trained = record.models_done(self.engine, [j.key for j in jobs if not j.cells])
        out = []
        for j in jobs:
            if j.cells:
                pend = [c for c in j.cells if record.is_pending(
                    state.get(c.key), force=self.settings.force, run_id=run_id, run_started=run_started)]
                if pend:
                    out.append((j, pend))
            elif j.key not in trained and j.key not in self._attempted:
                out.append((j, []))
        return out

    def _still_pending(self, job, run_id, run_started) -> list[Cell] | None:
        if not job.cells:
            return None if (job.key in record.models_done(self.engine, [job.key])
                            or job.key in self._attempted) else []
        state = record.attempts(self.engine, [c.key for c in job.cells])
        pend = [c for c in job.cells if record.is_pending(
            state.get(c.key), force=self.settings.force, run_id=run_id, run_started=run_started)]
        return pend or None

    # ------------------------------------------------------------------ one job
    def do_job(self, job: ModelJob, cells: list[Cell], run_id: int) -> None:
        """A claimed model job: its model (released, cached or trained), then each pending cell
        evaluated and recorded as soon as it is known, then the cross-result flags."""
        if not cells:
            self._attempted.add(job.key)
        self._stage("model")
        try:
            model = self.models.model_for(job, run_id, self.summary)
        except (Exception, torch.cuda.OutOfMemoryError) as e:  # the job fails, the run goes on
            msg = one_line(e, limit=ERROR_CHARS, where=True)
            self.out(f"model {job.model.name} failed: {msg}")
            stage = "loading the checkpoint" if job.model.checkpoint else "training"
            for c in cells:
                record.record_result(self.engine, CellOutcome(c, error=f"{stage} failed: {msg}"), run_id,
                                     job.key, device_desc=self.device_desc, worker=self.id)
                self.summary.failed += 1
            return
        if job.model.name in self.models.resumed:
            self.summary.resumed[job.model.name] = self.models.resumed[job.model.name]
        if not cells:
            return
        net = self.policy.wrap(model)
        mflags = self._model_flags(net, job, cells)
        self._stage(f"evaluating 0/{len(cells)}")
        self.out(f"evaluating {len(cells)} cell(s) of {job.model.name}")
        for i, outcome in enumerate(evaluate(net, cells, self.data, progress=self.settings.progress), 1):
            if self.claims.lost(job.key):
                self.out(f"warning: {job.model.name} was taken over by another worker; leaving it")
                return
            outcome.flags = mflags
            record.record_result(self.engine, outcome, run_id, job.key, device_desc=self.device_desc,
                                 worker=self.id)
            if outcome.ok:
                self.summary.done += 1
                acc = float(outcome.outcomes.mean()) if outcome.outcomes.size else float("nan")
                self.out(f"  {outcome.cell.id}: {100 * acc:.2f}% of {outcome.outcomes.size}"
                         f" ({outcome.seconds:.1f}s)")
            else:
                self.summary.failed += 1
                self.out(f"  {outcome.cell.id}: FAILED {outcome.error}")
            self._stage(f"evaluating {i}/{len(cells)}")
        record.update_result_flags(self.engine, job.key)
        del net, model

    def _model_flags(self, net, job: ModelJob, cells: list[Cell]) -> list[str]:
        """Randomised outputs or zero/non-finite input gradients, on 64 evaluation images."""
        c = cells[0]
        try:
            x, y, _ = next(self.data.get(c.model.dataset.plugin, c.eval.split).head(64).batches(64))
            return sanity.model_flags(net, x, y)
        except Exception as e:  # a check that cannot run is itself worth a note, not a failure
            self.out(f"warning: model sanity checks for {job.model.name} did not run: "
                     f"{one_line(e, where=True)}")
            return []

    # ------------------------------------------------------------------ heartbeat
    def _stage(self, stage: str) -> None:
        if self.claims is not None and self._job is not None:
            self.claims.set_stage(self._job.key, stage)

    def _beat(self) -> None:
        job = self._job
        claims_mod.beat_worker(self.engine, self.id, job=job.model.name if job else None,
                               summary=self.summary.as_dict())


# ---------------------------------------------------------------------- workers started elsewhere

@dataclass(frozen=True)
class WorkerPlan:
    """What a worker started by an executor (another process, another node) needs to rebuild
    the run: the suite and the selection, the database, the run it belongs to, the run's
    settings. JSON-able (`to_json`), and picklable for executors that pickle calls."""
    suite: str
    suite_sha256: str
    cell_keys: list[str]
    db: str
    run_id: int
    run_started: str                       # ISO time: results since then are this run's
    settings: RunSettings
    tags: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    limit: int | None = None
    seed: int | None = None
    executor: str = ""
    label: str = ""

    @property
    def started(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.run_started)

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps({**d, "settings": self.settings.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> "WorkerPlan":
        d = json.loads(text)
        return cls(**{**d, "settings": RunSettings.from_dict(d["settings"])})

    def replace(self, **kw) -> "WorkerPlan":
        return dataclasses.replace(self, **kw)

    def on_device(self, device: str) -> "WorkerPlan":
        """This plan for a worker asked to run on `device` (resolved where it runs)."""
        return self.replace(settings=self.settings.on_device(device))


def run_worker(plan: WorkerPlan) -> dict:
    """Rebuild the run from the plan and run one worker loop; return its summary (a dict)."""
    from bench.db import database as db
    from bench.run.plan import expand
    from bench.suite.load import load_suite
    suite = load_suite(plan.suite)
    if suite.sha256 != plan.suite_sha256:
        raise BenchError(f"{plan.suite} changed since run {plan.run_id} started; "
                         f"start a new run to use the edited suite")
    wanted = set(plan.cell_keys)
    cells = [c for c in expand(suite, tags=plan.tags, filters=plan.filters, limit=plan.limit,
                               seed=plan.seed) if c.key in wanted]
    if len(cells) != len(wanted):
        raise BenchError(f"a worker rebuilt {len(cells)} of the run's {len(wanted)} cells from "
                         f"{plan.suite}; pass the run's selection (tags, filters, limit, seed)")
    engine = db.open_db(plan.db)
    worker = Worker(suite, engine, plan.settings.here(), label=plan.label, executor=plan.executor)
    summary = worker.run(cells, plan.run_id, plan.started)
    engine.dispose()
    return {"worker": summary.worker, **summary.as_dict()}


def _interrupt_on_sigterm():
    """SIGTERM (a Slurm time limit, preemption, scancel, an executor stopping its workers)
    unwinds like Ctrl-C: the worker releases its claims and signs off as interrupted.
    Returns the previous handler (None where handlers cannot be set: not the main thread)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.run.worker PLAN.json [LABEL]`: one worker of a run (what executors start)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m bench.run.worker PLAN.json [LABEL]", file=sys.stderr)
        return 2
    plan = WorkerPlan.from_json(Path(args[0]).read_text())
    if len(args) > 1:
        plan = plan.replace(label=args[1])
    _interrupt_on_sigterm()          # also while the worker starts up
    try:
        summary = run_worker(plan)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"[{plan.label}] interrupted: its claims are released", file=sys.stderr)
        return 130
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
