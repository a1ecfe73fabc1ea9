"""The trained model of a job: a released checkpoint, the verified checkpoint cache, or training.

Each distinct model key trains once: the worker holding the job's claim (`bench.db.claims`)
is the only one that trains it, writes `<results-dir>/checkpoints/<key>.pt` atomically
(temporary file, then rename) and only then records the model with the checkpoint's
sha256; any other worker loads it only after the sha256 matches (a missing, half-written
or corrupt file is retrained, never used). Training keeps a per-epoch resume file beside
it (trusted only when its sha256 is the one bench recorded: `bench.run.resume`), so a
worker that takes over a dead worker's job resumes where that one stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.schema import ModelRecord, utcnow
from bench.checkpoints.cache import load_checkpoint, save_checkpoint
from bench.checkpoints.sources import redacted_config
from bench.errors import CheckpointError
from bench.run.plan import ModelJob
from bench.run.precision import Policy, device_name
from bench.run.resume import ResumeFile
from bench.run.settings import RunSettings
from bench.db.provenance import library_versions
from bench.db.retry import with_retry
from bench.suite.spec import ModelSpec
from bench.run.summary import RunSummary
from bench.run.train import train_model


class ModelStore:
    """The models of one worker, on the run's settings; `stage` tells the worker's claim what
    it is doing (training), `worker` is the id its records carry."""

    def __init__(self, engine: Engine, settings: RunSettings, *, policy: Policy,
                 out: Callable[[str], None] = print, worker: str | None = None,
                 stage: Callable[[str], None] = lambda s: None):
        self.engine = engine
        self.data_root, self.device, self.ckpt_dir = settings.data_root, settings.device, settings.ckpt_dir
        self.policy, self.offline, self.progress, self.out = policy, settings.offline, settings.progress, out
        self.device_desc = device_name(settings.device)
        self.worker = worker
        self.stage = stage
        self.resumed: dict[str, int] = {}       # model name → epoch its training resumed at

    def _cached_model(self, job: ModelJob):
        """The model from the checkpoint cache, or None (with a note when it was unusable)."""
        spec = job.model

        def read():
            with Session(self.engine) as s:
                rec = s.get(ModelRecord, job.key)
                if rec is None or rec.status != "done":
                    return None
                return Path(rec.checkpoint_path), rec.checkpoint_sha256
        found = with_retry(read, what=f"looking up {spec.name}")
        if found is None:
            return None
        path, sha = found
        model = spec.build()
        try:
            load_checkpoint(model, path, sha)
        except CheckpointError as e:
            self.out(f"warning: {e}; retraining {spec.name}")
            return None
        return self.policy.prepare(model).eval()

    def _checkpoint_file(self, spec: ModelSpec) -> tuple[Path, str]:
        """The local file of a model's `checkpoint:` and its sha256: the path as given or a
        file:// URL's file (read in place), or an http(s) URL's verified copy in the download
        cache (fetched once; see bench.checkpoints.download)."""
        from bench.checkpoints.download import RemoteCheckpoint, fetch_checkpoint
        from bench.checkpoints.sources import cap_bytes, hash_local
        src = spec.checkpoint
        if not isinstance(src, RemoteCheckpoint):   # read in place: a regular file within the cap
            path = Path(src).expanduser()
            return path, hash_local(path, cap_bytes(None))
        recorded = None
        if src.sha256 is None:  # the first download's hash, as this model's record keeps it
            with Session(self.engine) as s:
                rec = s.get(ModelRecord, spec.key)
                recorded = rec.checkpoint_sha256 if rec is not None and rec.status == "done" else None
        return fetch_checkpoint(src, self.ckpt_dir / "downloads", offline=self.offline,
                                recorded_sha256=recorded or None, log=self.out, progress=self.progress)

    def _external_model(self, job: ModelJob, run_id: int):
        """A released checkpoint named by the suite (`checkpoint:`), recorded with its sha256."""
        from bench.checkpoints.download import RemoteCheckpoint
        from bench.checkpoints.foreign import load_external_checkpoint
        model = job.model.build()
        path, sha = self._checkpoint_file(job.model)
        src = job.model.checkpoint
        load_external_checkpoint(model, path, rename=job.model.plugin().adapt_state_dict, sha256=sha,
                                 max_bytes=src.max_bytes if isinstance(src, RemoteCheckpoint) else None)
        self._record_model(job, path, sha, run_id)
        return self.policy.prepare(model).eval()

    def _record_model(self, job: ModelJob, path: Path, sha: str, run_id: int,
                      seconds: float = 0.0, curves: dict | None = None) -> None:
        spec = job.model
        rec = ModelRecord(
            key=job.key, name=spec.name, dataset=spec.dataset.name, arch=spec.arch,
            defense=spec.defense, config=redacted_config(spec.resolved()), checkpoint_path=str(path.resolve()),
            checkpoint_sha256=sha, train_seconds=seconds, curves=curves or {}, status="done",
            smoke=job.smoke, precision=spec.precision, seed=spec.seed, device=self.device_desc,
            versions=library_versions(), run_id=run_id, created=utcnow(), worker=self.worker)

        def write():
            with self.engine.begin() as conn:
                db.upsert(conn, rec)
        with_retry(write, what=f"recording model {spec.name}")

    def _train(self, job: ModelJob, run_id: int):
        spec = job.model
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        resume = ResumeFile(self.engine, self.ckpt_dir / f"{job.key}.resume.pt", job.key, self.worker)
        init_path = init_sha256 = None
        if spec.init_model is not None and spec.init_model.checkpoint:
            init_path = self._checkpoint_file(spec.init_model)[0]
        elif spec.init_model is not None:  # fine-tuning: the starting model first (cached or trained)
            self.model_for(ModelJob(spec.init_model, []), run_id, RunSummary(run_id))
            with Session(self.engine) as s:
                init_rec = s.get(ModelRecord, spec.init_model.key)
                init_path, init_sha256 = Path(init_rec.checkpoint_path), init_rec.checkpoint_sha256
        self.stage("training")
        self.out(f"training {spec.name} ({spec.arch}, {spec.defense}, {spec.train.epochs} epochs) on {self.device}")
        res = train_model(spec, data_root=self.data_root, policy=self.policy, resume=resume,
                          progress=self.progress, offline=self.offline,
                          robust_eval=_validation_robust_accuracy(spec),
                          log=self.out, init_path=init_path, init_sha256=init_sha256)
        if res.resumed_from is not None:
            self.resumed[spec.name] = res.resumed_from + 1
        path = self.ckpt_dir / f"{job.key}.pt"
        sha = save_checkpoint(res.model, path)
        curves = dict(res.curves)
        if res.best_epoch is not None:
            curves["best_epoch"] = res.best_epoch
        self._record_model(job, path, sha, run_id, res.seconds, curves)
        resume.discard()
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


def _validation_robust_accuracy(spec):
    """Early stopping's measure: the suite's validation attack's robust accuracy at its ε,
    or its mean over the ε list / grid (`bench.suite.recipe.EarlyStopping`); None without one."""
    es = spec.train.early_stopping
    if es is None:
        return None
    attack, eps = spec.early_stopping_attack, es.eps_values()

    def robust_accuracy(net, val):
        a = attack.build()
        ok = [torch.stack(a.run_sweep(net, x, y, eps)) for x, y, _ in val.batches(256)]
        return torch.cat(ok, dim=1).float().mean().item()
    return robust_accuracy
