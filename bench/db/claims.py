"""Claims: how many workers share one suite through the results database, and nothing else.

A worker claims a model job (train once, evaluate its pending cells) with a lease row
keyed by the model key. Claiming is one statement only one worker can win: the INSERT of
the row (the primary key refuses a second one), or, when a row is there but its lease has
expired, an UPDATE … WHERE expires < now whose row count says who won. The holder renews
the lease from a heartbeat thread while it trains and evaluates, and deletes the row when
done. A worker that dies (SIGKILL, a lost node, a Slurm time limit) stops renewing; once
its lease has expired another worker takes the job over and resumes training from the
per-epoch resume file. Lease times come from the database server's clock, so workers on
many hosts agree on what has expired.

Workers also register themselves (host, pid, executor, heartbeat, what they did), which
`bench workers` and `bench ls` show.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Callable, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bench.db import database as db
from bench.db.chunks import select_in
from bench.db.provenance import host
from bench.db.retry import with_retry
from bench.db.schema import LeaseRecord, WorkerRecord
from bench.errors import one_line

DEFAULT_LEASE_SECONDS = 60.0


def new_worker_id() -> str:
    return f"{host()}:{os.getpid()}#{secrets.token_hex(2)}"


@dataclass
class Lease:
    model_key: str
    model_name: str
    owner: str
    host: str
    pid: int
    acquired: dt.datetime
    heartbeat: dt.datetime
    expires: dt.datetime
    stage: str
    previous_owner: str | None
    takeovers: int
    now: dt.datetime            # the server's clock when this was read

    @property
    def expired(self) -> bool:
        return self.expires < self.now

    @property
    def seconds_left(self) -> float:
        return (self.expires - self.now).total_seconds()


@dataclass(frozen=True)
class Claim:
    """A won claim: a fresh lease ("new"), or an expired one taken over from `previous_owner`."""
    key: str
    kind: Literal["new", "takeover"]
    previous_owner: str | None = None


_GONE = object()      # a takeover found no row: the lease was released meanwhile


def leases(engine: Engine, keys: list[str] | None = None) -> dict[str, Lease]:
    """The lease rows (live or expired) of these model keys, or all, by model key."""
    def read():
        with engine.connect() as c:
            now = db.server_now(c)
            q = select(LeaseRecord)
            rows = (list(c.execute(q)) if keys is None
                    else select_in(c, q, LeaseRecord.model_key, keys))
            return {r.model_key: Lease(r.model_key, r.model_name, r.owner, r.host, r.pid, r.acquired,
                                       r.heartbeat, r.expires, r.stage, r.previous_owner,
                                       r.takeovers, now) for r in rows}
    return with_retry(read, what="reading leases")


class Claims:
    """One worker's leases: claim, renew (from `Heartbeat`), release; thread-safe."""

    def __init__(self, engine: Engine, worker_id: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 run_id: int | None = None, log: Callable[[str], None] = lambda s: None):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.engine, self.worker_id, self.lease_seconds = engine, worker_id, float(lease_seconds)
        self.run_id, self.log = run_id, log
        self._held: dict[str, str] = {}      # model key → stage
        self._lost: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ claiming
    def claim(self, key: str, name: str = "") -> Claim | None:
        """Claim the job of model `key`: None if another worker holds a live lease on it, else
        how it was won (a new lease, or an expired one taken over from its owner)."""
        lease = dt.timedelta(seconds=self.lease_seconds)

        def fresh():
            with self.engine.begin() as c:
                now = db.server_now(c)
                c.execute(insert(LeaseRecord).values(
                    model_key=key, model_name=name, owner=self.worker_id, host=host(),
                    pid=os.getpid(), run_id=self.run_id, acquired=now, heartbeat=now,
                    expires=now + lease, stage="claimed", takeovers=0))

        def take_over():
            with self.engine.begin() as c:
                now = db.server_now(c)
                row = c.execute(select(LeaseRecord.owner, LeaseRecord.expires)
                                .where(LeaseRecord.model_key == key)).one_or_none()
                if row is None:
                    return _GONE                    # released meanwhile: try a fresh claim again
                if row.owner == self.worker_id:     # our own claim, committed before a retry
                    return Claim(key, "new")
                if row.expires >= now:
                    return None
                won = c.execute(update(LeaseRecord).where(
                    LeaseRecord.model_key == key, LeaseRecord.owner == row.owner,
                    LeaseRecord.expires < now).values(
                    owner=self.worker_id, host=host(), pid=os.getpid(), run_id=self.run_id,
                    model_name=name, acquired=now, heartbeat=now, expires=now + lease,
                    stage="claimed", previous_owner=row.owner,
                    takeovers=LeaseRecord.takeovers + 1)).rowcount
                return Claim(key, "takeover", row.owner) if won == 1 else None

        for _ in range(3):
            try:
                with_retry(fresh, what=f"claiming {name or key[:12]}", log=self.log)
                won = Claim(key, "new")
            except IntegrityError:
                won = with_retry(take_over, what=f"claiming {name or key[:12]}", log=self.log)
                if won is _GONE:
                    continue
            if won is not None:
                with self._lock:
                    self._held[key] = "claimed"
                    self._lost.discard(key)
            return won
        return None

    def set_stage(self, key: str, stage: str) -> None:
        """What the holder is doing (shown by `bench ls`), written with a renewal now."""
        with self._lock:
            if key not in self._held or self._held[key] == stage:
                return
            self._held[key] = stage
        self.renew([key])

    def renew(self, keys: list[str] | None = None) -> None:
        """Push the held leases' expiry forward; a lease taken over meanwhile is lost."""
        with self._lock:
            held = {k: v for k, v in self._held.items() if keys is None or k in keys}
        lease = dt.timedelta(seconds=self.lease_seconds)
        for key, stage in held.items():
            def push():
                with self.engine.begin() as c:
                    now = db.server_now(c)
                    return c.execute(update(LeaseRecord).where(
                        LeaseRecord.model_key == key, LeaseRecord.owner == self.worker_id)
                        .values(heartbeat=now, expires=now + lease, stage=stage)).rowcount
            if with_retry(push, what="renewing a lease", log=self.log) == 0:
                with self._lock:
                    if key in self._held:        # not released in the meantime: someone took it
                        self._lost.add(key)
                        self.log(f"warning: the lease on {key[:12]} was taken over by another worker")

    def lost(self, key: str) -> bool:
        with self._lock:
            return key in self._lost

    def release(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)
            self._lost.discard(key)

        def drop():
            with self.engine.begin() as c:
                c.execute(delete(LeaseRecord).where(LeaseRecord.model_key == key,
                                                    LeaseRecord.owner == self.worker_id))
        with_retry(drop, what="releasing a lease", log=self.log)

    def release_all(self) -> None:
        with self._lock:
            keys = list(self._held)
        for k in keys:
            self.release(k)


# ---------------------------------------------------------------------- the workers table

def register_worker(engine: Engine, worker_id: str, *, label: str = "", executor: str = "",
                    device: str = "", run_id: int | None = None,
                    lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
    def add():
        with engine.begin() as c:
            now = db.server_now(c)
            c.execute(insert(WorkerRecord).values(
                id=worker_id, label=label, executor=executor, host=host(), pid=os.getpid(),
                device=device, run_id=run_id, lease_seconds=lease_seconds, started=now,
                heartbeat=now, status="running", summary={}))
    with_retry(add, what="registering the worker")


def beat_worker(engine: Engine, worker_id: str, *, job: str | None = None,
                summary: dict | None = None, status: str | None = None, ended: bool = False) -> None:
    def beat():
        with engine.begin() as c:
            now = db.server_now(c)
            values: dict = {"heartbeat": now, "job": job}
            if summary is not None:
                values["summary"] = summary
            if status is not None:
                values["status"] = status
            if ended:
                values["ended"] = now
            c.execute(update(WorkerRecord).where(WorkerRecord.id == worker_id).values(**values))
    with_retry(beat, what="the worker's heartbeat")


@dataclass
class WorkerView:
    """A workers row and its state by the server's clock: live, dead (no heartbeat for longer
    than its lease), or how it ended (done / failed / interrupted)."""
    record: WorkerRecord
    state: str
    heartbeat_age: float


def workers(engine: Engine, *, run_id: int | None = None) -> list[WorkerView]:
    def read():
        from sqlalchemy.orm import Session
        with Session(engine) as s:
            now = db.server_now(s.connection())
            q = select(WorkerRecord).order_by(WorkerRecord.started, WorkerRecord.id)
            if run_id is not None:
                q = q.where(WorkerRecord.run_id == run_id)
            out = []
            for w in s.scalars(q):
                age = (now - w.heartbeat).total_seconds()
                if w.ended is not None:
                    state = w.status
                else:
                    state = "dead" if age > w.lease_seconds else "live"
                out.append(WorkerView(w, state, age))
            s.expunge_all()
            return out
    return with_retry(read, what="reading workers")


class Heartbeat(threading.Thread):
    """Renews a worker's leases and its own heartbeat every lease/4 seconds until stopped."""

    def __init__(self, claims: Claims, beat: Callable[[], None], *, interval: float | None = None):
        super().__init__(name=f"heartbeat {claims.worker_id}", daemon=True)
        self.claims, self.beat = claims, beat
        self.interval = interval if interval is not None else max(0.2, claims.lease_seconds / 4)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.claims.renew()
                self.beat()
            except Exception as e:   # a beat that fails after its retries: say so, keep beating
                self.claims.log(f"warning: heartbeat failed: {one_line(e, limit=200)}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
