"""Per-epoch resume files (`<results-dir>/checkpoints/<model key>.resume.pt`), trusted only
as far as bench recorded writing them.

A shared results folder is writable by others, so a file under a resume name proves
nothing. Each time bench writes one, the sha256 of the bytes it wrote goes into the results
database (`resume_states`, one row per model key); a resume file is loaded only when its
bytes match that record (`bench.checkpoints.cache.load_verified`), else it is ignored with
a one-line warning and training starts from the beginning. The record is written before the
file takes its name and keeps the sha256 of the file it replaces, so a writer killed between
the two leaves a file that still matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from bench.checkpoints.cache import load_verified, save_state
from bench.db import database as db
from bench.db.retry import with_retry
from bench.db.schema import ResumeRecord, utcnow
from bench.errors import CheckpointError


class ResumeFile:
    """The resume file of one model key and its record in the results database."""

    def __init__(self, engine: Engine, path: Path, key: str, worker: str | None = None):
        self.engine, self.path, self.key, self.worker = engine, Path(path), key, worker

    def _recorded(self) -> tuple[str, ...]:
        def read():
            with self.engine.connect() as conn:
                row = conn.execute(select(ResumeRecord.sha256, ResumeRecord.previous_sha256)
                                   .where(ResumeRecord.model_key == self.key)).one_or_none()
            return tuple(s for s in (row or ()) if s)
        return with_retry(read, what=f"looking up the resume state of {self.path.name}")

    def load(self, map_location: Any, log: Callable[[str], None]) -> dict | None:
        """The state bench saved, or None (with a warning when a file was there but unusable)."""
        if not self.path.exists():
            return None
        try:
            state = load_verified(self.path, self._recorded(), what="resume file",
                                  map_location=map_location)
        except CheckpointError as e:
            log(f"warning: {e}; training from the first epoch")
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            log(f"warning: ignoring resume file {self.path.name}: it holds another model's "
                f"state; training from the first epoch")
            return None
        return state

    def save(self, state: dict) -> None:
        """Write `state` atomically, recording its sha256 before it takes the file's name."""
        def record(sha: str) -> None:
            def write():
                with self.engine.begin() as conn:
                    prev = conn.execute(select(ResumeRecord.sha256).where(
                        ResumeRecord.model_key == self.key)).scalar_one_or_none()
                    db.upsert(conn, ResumeRecord(
                        model_key=self.key, sha256=sha, previous_sha256=prev,
                        epoch=int(state.get("epoch", 0)), worker=self.worker, updated=utcnow()))
            with_retry(write, what=f"recording the resume state {self.path.name}")
        save_state(state, self.path, before_rename=record)

    def discard(self) -> None:
        """Remove the file and its record (the model is trained and recorded)."""
        self.path.unlink(missing_ok=True)

        def forget():
            with self.engine.begin() as conn:
                conn.execute(delete(ResumeRecord).where(ResumeRecord.model_key == self.key))
        with_retry(forget, what=f"forgetting the resume state {self.path.name}")
