"""The runner: selected cells → trained (or cached) models → evaluated, recorded cells.

Each distinct model key trains once; a cached checkpoint is used only after its sha256
matches the database. Every cell is committed as soon as it is known, so `kill -9`
loses nothing already recorded and the next run resumes (training too: the loop keeps
a per-epoch resume file). A cell that fails (non-finite loss, out of memory, a plugin
error) is recorded as failed with its error and the run goes on.
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench import db
from bench.checkpoints import load_checkpoint, save_checkpoint
from bench.errors import BenchError, CheckpointError
from bench.evaluate import CellOutcome, EvalData, evaluate
from bench.plan import Cell, ModelJob, group
from bench.precision import Policy, device_name
from bench.provenance import code_commit, host, library_versions
from bench import sanity
from bench.registry import ATTACKS
from bench.spec import ModelSpec, Suite
from bench.train import train_model


@dataclass
class RunSummary:
    run_id: int
    done: list[tuple[Cell, float, float]] = field(default_factory=list)  # cell, acc, seconds
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped: int = 0
    trained: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


class Runner:
    def __init__(self, suite: Suite, engine: Engine, *, data_root: Path | str, device: str,
                 results_dir: Path | str = Path("results"), offline: bool = False,
                 force: bool = False, progress: bool = True,
                 out: Callable[[str], None] | None = None):
        self.suite, self.engine = suite, engine
        self.data_root, self.device = Path(data_root), device   # str from the Python API too
        self.ckpt_dir = Path(results_dir) / "checkpoints"
        self.offline, self.force, self.progress = offline, force, progress
        self.out = out or (lambda s: print(s, file=sys.stderr))
        self.policy = Policy(suite.precision, suite.compile, device, compile_mode=suite.compile_mode)
        self.device_desc = device_name(device)

    # ------------------------------------------------------------------ bookkeeping
    def _start_run(self, cells: list[Cell]) -> int:
        # the suite's display labels of what this run touches: the report shows models and
        # attacks by them (labels are not part of any key, so they live here)
        labels = {"models": {c.model.name: c.model.label for c in cells},
                  "attacks": {c.attack.name: c.attack.label for c in cells}}
        with Session(self.engine) as s:
            rec = db.RunRecord(command=shlex.join(sys.argv), suite_path=str(self.suite.path),
                               suite_sha256=self.suite.sha256, commit=code_commit(), host=host(),
                               device=self.device_desc, versions=library_versions(),
                               summary={"labels": labels})
            s.add(rec)
            s.commit()
            return rec.id

    def _end_run(self, run_id: int, status: str, summary: RunSummary) -> None:
        with Session(self.engine) as s:
            rec = s.get(db.RunRecord, run_id)
            rec.ended, rec.status = db.utcnow(), status
            rec.summary = {**(rec.summary or {}),
                           "done": len(summary.done), "failed": len(summary.failed),
                           "skipped": summary.skipped, "trained": summary.trained,
                           "loaded": summary.loaded}
            s.commit()

    def record_tables(self) -> None:
        record_tables(self.engine, self.suite)

    def status(self, cells: list[Cell]) -> dict[str, str]:
        """'done' / 'failed' / 'pending' per cell key."""
        known = db.result_status(self.engine, [c.key for c in cells])
        return {c.key: known.get(c.key, "pending") for c in cells}

    def _record(self, outcome: CellOutcome, run_id: int, model_key: str) -> None:
        c = outcome.cell
        n = (c.eval.n or 0) if outcome.outcomes is None else int(outcome.outcomes.size)
        n_correct = 0 if outcome.outcomes is None else int(outcome.outcomes.sum())
        rec = db.ResultRecord(
            cell_key=c.key, cell_id=c.id, model_key=model_key, model_name=c.model.name,
            dataset=c.model.dataset.name, attack=c.attack.name, attack_plugin=c.attack.plugin,
            norm=c.attack.norm, eps_literal=c.eps.literal, eps=c.eps.value, split=c.eval.split,
            n=n, n_correct=n_correct, robust_acc=(n_correct / n) if n else None,
            outcomes=None if outcome.outcomes is None else db.pack_outcomes(outcome.outcomes),
            details=db.pack_details(outcome.details), flags=list(getattr(outcome, "flags", []) or []),
            config=c.resolved(), tags=c.tags, precision=c.precision, seed=c.seed, smoke=c.smoke,
            seconds=outcome.seconds, status="done" if outcome.ok else "failed", error=outcome.error,
            device=self.device_desc, versions=library_versions(), commit=code_commit(), run_id=run_id)
        with Session(self.engine) as s:
            s.merge(rec)
            s.commit()

    # ------------------------------------------------------------------ models
    def _cached_model(self, job: ModelJob):
        """The model from the checkpoint cache, or None (with a note when it was unusable)."""
        spec = job.model
        with Session(self.engine) as s:
            rec = s.get(db.ModelRecord, job.key)
            if rec is None or rec.status != "done":
                return None
            path, sha = Path(rec.checkpoint_path), rec.checkpoint_sha256
        model = spec.build()
        try:
            load_checkpoint(model, path, sha)
        except CheckpointError as e:
            self.out(f"warning: {e}; retraining {spec.name}")
            return None
        return self.policy.prepare(model).eval()

    def _checkpoint_file(self, spec: ModelSpec) -> tuple[Path, str]:
        """The local file of a model's `checkpoint:` and its sha256: the path as given, or the
        URL's verified copy in the download cache (fetched once; see bench.download)."""
        from bench.checkpoints import sha256_file
        from bench.download import RemoteCheckpoint, fetch_checkpoint
        src = spec.checkpoint
        if not isinstance(src, RemoteCheckpoint):
            path = Path(src).expanduser()
            if not path.is_file():
                raise CheckpointError(f"checkpoint {path} does not exist")
            return path, sha256_file(path)
        recorded = None
        if src.sha256 is None:  # the first download's hash, as this model's record keeps it
            with Session(self.engine) as s:
                rec = s.get(db.ModelRecord, spec.key)
                recorded = rec.checkpoint_sha256 if rec is not None and rec.status == "done" else None
        return fetch_checkpoint(src, self.ckpt_dir / "downloads", offline=self.offline,
                                recorded_sha256=recorded or None, log=self.out, progress=self.progress)

    def _external_model(self, job: ModelJob, run_id: int):
        """A released checkpoint named by the suite (`checkpoint:`), recorded with its sha256."""
        from bench.external import load_external_checkpoint
        model = job.model.build()
        path, sha = self._checkpoint_file(job.model)
        load_external_checkpoint(model, path, rename=job.model.plugin().adapt_state_dict)
        self._record_model(job, path, sha, run_id)
        return self.policy.prepare(model).eval()

    def _record_model(self, job: ModelJob, path: Path, sha: str, run_id: int,
                      seconds: float = 0.0, curves: dict | None = None) -> None:
        spec = job.model
        with Session(self.engine) as s:
            s.merge(db.ModelRecord(
                key=job.key, name=spec.name, dataset=spec.dataset.name, arch=spec.arch,
                defense=spec.defense, config=spec.resolved(), checkpoint_path=str(path.resolve()),
                checkpoint_sha256=sha, train_seconds=seconds, curves=curves or {}, status="done",
                smoke=job.smoke, precision=spec.precision, seed=spec.seed, device=self.device_desc,
                versions=library_versions(), run_id=run_id))
            s.commit()

    def _train(self, job: ModelJob, run_id: int):
        spec = job.model
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        resume = self.ckpt_dir / f"{job.key}.resume.pt"
        init_path = None
        if spec.init_model is not None and spec.init_model.checkpoint:
            init_path = self._checkpoint_file(spec.init_model)[0]
        elif spec.init_model is not None:  # fine-tuning: the starting model first (cached or trained)
            self.model_for(ModelJob(spec.init_model, []), run_id, RunSummary(run_id))
            with Session(self.engine) as s:
                init_path = Path(s.get(db.ModelRecord, spec.init_model.key).checkpoint_path)
        self.out(f"training {spec.name} ({spec.arch}, {spec.defense}, {spec.train.epochs} epochs) on {self.device}")
        res = train_model(spec, data_root=self.data_root, policy=self.policy, resume_path=resume,
                          progress=self.progress, offline=self.offline,
                          robust_eval=_validation_robust_accuracy(spec),
                          log=self.out, init_path=init_path)
        path = self.ckpt_dir / f"{job.key}.pt"
        sha = save_checkpoint(res.model, path)
        curves = dict(res.curves)
        if res.best_epoch is not None:
            curves["best_epoch"] = res.best_epoch
        self._record_model(job, path, sha, run_id, res.seconds, curves)
        resume.unlink(missing_ok=True)
        return res.model.eval()

    def model_for(self, job: ModelJob, run_id: int, summary: RunSummary):
        if job.model.checkpoint:
            model = self._external_model(job, run_id)
            summary.loaded.append(job.model.name)
            return model
        model = self._cached_model(job)
        if model is not None:
            summary.loaded.append(job.model.name)
            return model
        model = self._train(job, run_id)
        summary.trained.append(job.model.name)
        return model

    # ------------------------------------------------------------------ sanity flags
    def _model_flags(self, net, job: ModelJob, data: EvalData) -> list[str]:
        """Randomised outputs or zero/non-finite input gradients, on 64 evaluation images."""
        c = job.cells[0]
        try:
            x, y, _ = next(data.get(c.model.dataset.plugin, c.eval.split).head(64).batches(64))
            return sanity.model_flags(net, x, y)
        except Exception as e:  # a check that cannot run is itself worth a note, not a failure
            self.out(f"warning: model sanity checks for {job.model.name} did not run: {_one_line(e)}")
            return []

    def _update_result_flags(self, model_key: str) -> None:
        """Recompute the cross-result flags of every stored result of this model."""
        with Session(self.engine) as s:
            recs = list(s.scalars(select(db.ResultRecord).where(
                db.ResultRecord.model_key == model_key, db.ResultRecord.status == "done")))
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

    # ------------------------------------------------------------------ the run
    def run(self, cells: list[Cell]) -> RunSummary:
        t0 = time.perf_counter()
        run_id = self._start_run(cells)
        summary = RunSummary(run_id)
        status = "failed"
        try:
            self.record_tables()
            state = self.status(cells)
            pending = [c for c in cells if self.force or state[c.key] != "done"]
            summary.skipped = len(cells) - len(pending)
            if summary.skipped:
                self.out(f"{summary.skipped} of {len(cells)} cells already done (use --force to rerun)")
            data = EvalData(self.data_root, self.device, self.offline)
            for job in group(pending):
                try:
                    model = self.model_for(job, run_id, summary)
                except (Exception, torch.cuda.OutOfMemoryError) as e:  # the job fails, the run goes on
                    msg = _one_line(e)
                    self.out(f"model {job.model.name} failed: {msg}")
                    stage = "loading the checkpoint" if job.model.checkpoint else "training"
                    for c in job.cells:
                        self._record(CellOutcome(c, error=f"{stage} failed: {msg}"), run_id, job.key)
                        summary.failed.append((c, msg))
                    continue
                net = self.policy.wrap(model)
                mflags = self._model_flags(net, job, data)
                self.out(f"evaluating {len(job.cells)} cell(s) of {job.model.name}")
                for outcome in evaluate(net, job.cells, data, progress=self.progress):
                    outcome.flags = mflags
                    self._record(outcome, run_id, job.key)
                    if outcome.ok:
                        acc = float(outcome.outcomes.mean()) if outcome.outcomes.size else float("nan")
                        summary.done.append((outcome.cell, acc, outcome.seconds))
                        self.out(f"  {outcome.cell.id}: {100 * acc:.2f}% of {outcome.outcomes.size}"
                                 f" ({outcome.seconds:.1f}s)")
                    else:
                        summary.failed.append((outcome.cell, outcome.error))
                        self.out(f"  {outcome.cell.id}: FAILED {outcome.error}")
                self._update_result_flags(job.key)
                del net, model
            status = "done" if not summary.failed else "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary.seconds = time.perf_counter() - t0
            self._end_run(run_id, status, summary)
        return summary


def record_tables(engine: Engine, suite: Suite) -> None:
    """Store each table's layout and its published values, so `report` needs only the DB."""
    with Session(engine) as s:
        for t in suite.tables.values():
            s.merge(db.TableRecord(name=t.name, title=t.title, layout=t.layout(),
                                   suite_path=str(suite.path), updated=db.utcnow()))
            s.execute(delete(db.ReportedValue).where(db.ReportedValue.table == t.name))
            for v in t.values:
                s.add(db.ReportedValue(table=t.name, row=v.row, column=v.column, value=v.value,
                                       source=v.source, kind=v.kind))
        s.commit()


def _validation_robust_accuracy(spec):
    """Early stopping's measure: the suite's validation attack's robust accuracy at its ε,
    or its mean over the ε list / grid (`bench.recipe.EarlyStopping`); None without one."""
    es = spec.train.early_stopping
    if es is None:
        return None
    attack, eps = spec.early_stopping_attack, es.eps_values()

    def robust_accuracy(net, val):
        a = attack.build()
        ok = [torch.stack(a.run_sweep(net, x, y, eps)) for x, y, _ in val.batches(256)]
        return torch.cat(ok, dim=1).float().mean().item()
    return robust_accuracy


def _one_line(e: BaseException) -> str:
    if isinstance(e, BenchError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"
