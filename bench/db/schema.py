"""The results database's tables (SQLAlchemy 2 models), its schema version and migrations.

Tables: runs (one per command), models (one per trained model key, with its
checkpoint's sha256 and training curves), results (one per cell key: outcome per
sample as a bitmap, `bench.db.outcomes`, and provenance), reported (the paper's values
from suite.yaml), tables (the paper tables' layouts), leases (one per model job a worker
holds) and workers (one per worker process): the registry is also the coordinator of many
workers (`bench.db.claims`); resume_states (the sha256 of each per-epoch resume file bench
wrote, `bench.run.resume`). `bench.db.database` opens the database and creates or migrates
these tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        inspect, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class RunRecord(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    started: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # running/done/failed/interrupted; incomplete (its workers ended before some cells),
    # submitted (the executor left its workers running)
    status: Mapped[str] = mapped_column(String(16), default="running")
    command: Mapped[str] = mapped_column(Text, default="")
    suite_path: Mapped[str] = mapped_column(Text, default="")
    suite_sha256: Mapped[str] = mapped_column(String(64), default="")
    commit: Mapped[str] = mapped_column(String(64), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    device: Mapped[str] = mapped_column(String(255), default="")
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ModelRecord(Base):
    __tablename__ = "models"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    dataset: Mapped[str] = mapped_column(String(64))
    arch: Mapped[str] = mapped_column(String(128))
    defense: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)          # resolved model spec
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    curves: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # per-epoch lists
    status: Mapped[str] = mapped_column(String(16), default="done")   # done/failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    smoke: Mapped[bool] = mapped_column(default=False)
    precision: Mapped[str] = mapped_column(String(16), default="fp32")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str] = mapped_column(String(255), default="")
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)   # who trained it (v3)


class ResultRecord(Base):
    __tablename__ = "results"
    cell_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    cell_id: Mapped[str] = mapped_column(Text, index=True)
    model_key: Mapped[str] = mapped_column(String(64), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    dataset: Mapped[str] = mapped_column(String(64))
    attack: Mapped[str] = mapped_column(String(255))        # suite name of the attack
    attack_plugin: Mapped[str] = mapped_column(String(128))
    norm: Mapped[str] = mapped_column(String(8))
    eps_literal: Mapped[str] = mapped_column(String(64))
    eps: Mapped[float] = mapped_column(Float)
    split: Mapped[str] = mapped_column(String(16), default="test")
    n: Mapped[int] = mapped_column(Integer, default=0)
    n_correct: Mapped[int] = mapped_column(Integer, default=0)
    robust_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcomes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # np.packbits
    details: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)   # npz of per-sample arrays
    flags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)    # resolved cell config (what the key hashes)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    precision: Mapped[str] = mapped_column(String(16), default="fp32")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    smoke: Mapped[bool] = mapped_column(default=False)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16))          # done/failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    device: Mapped[str] = mapped_column(String(255), default="")
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    commit: Mapped[str] = mapped_column(String(64), default="")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)   # who evaluated it (v3)


class ReportedValue(Base):
    """A published value for a table cell (row = the row's id, column = its label).

    `kind` names who published it: "paper" (the ATENT paper's tables: what `check --paper`
    compares against) or another source of the suite's `reported_by` ("authors_code",
    "robustbench", …), always shown apart. `source` is the citation of this one value.
    """

    __tablename__ = "reported"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    table: Mapped[str] = mapped_column(String(128), index=True)
    row: Mapped[str] = mapped_column(String(255))
    column: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(64), default="paper")


class TableRecord(Base):
    """A paper table's layout from suite.yaml, so `bench report` needs only the database.

    layout = {"title", "source", "order", "tags", "tolerance",
              "rows": [{"model", "label"}],
              "columns": [{"label", "attack", "eps" (literal or null), "eps_value"}]}
    """

    __tablename__ = "tables"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    layout: Mapped[dict[str, Any]] = mapped_column(JSON)
    suite_path: Mapped[str] = mapped_column(Text, default="")
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LeaseRecord(Base):
    """A worker's claim on a model job (train once, evaluate its pending cells).

    One row per model key: the INSERT that creates it, or the UPDATE that takes over an
    expired one, is the single statement only one worker can win (`bench.db.claims`). The
    holder renews `expires` while it works and deletes the row when done. Times are the
    database server's clock, so workers on many hosts agree on what has expired.
    """

    __tablename__ = "leases"
    model_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255), default="")
    owner: Mapped[str] = mapped_column(String(255))              # the worker id
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acquired: Mapped[dt.datetime] = mapped_column(DateTime)
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime)
    expires: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    stage: Mapped[str] = mapped_column(String(255), default="")  # "training", "evaluating 2/6"
    previous_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    takeovers: Mapped[int] = mapped_column(Integer, default=0)


class WorkerRecord(Base):
    """One worker process: where it runs, who started it, its heartbeat and what it did."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)   # host:pid#token
    label: Mapped[str] = mapped_column(String(255), default="")      # "gpu 3", "slurm 4242_7"
    executor: Mapped[str] = mapped_column(String(64), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str] = mapped_column(String(255), default="")
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    lease_seconds: Mapped[float] = mapped_column(Float, default=60.0)
    started: Mapped[dt.datetime] = mapped_column(DateTime)
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime)
    ended: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/done/failed/interrupted
    job: Mapped[str | None] = mapped_column(String(255), nullable=True)  # model name it holds now
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # trained, loaded, cells…


class ResumeRecord(Base):
    """What bench last wrote as a model key's per-epoch resume file (v4): one is loaded only
    if its sha256 is `sha256` or `previous_sha256` (the file it replaced)."""

    __tablename__ = "resume_states"
    model_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    previous_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)          # 0-based, as the file holds
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# ------------------------------------------------------------------------- migrations

def _v1_to_v2(conn) -> None:
    """reported.kind: who published a value (version 1 held the paper's values only)."""
    conn.execute(text("ALTER TABLE reported ADD COLUMN kind VARCHAR(64) DEFAULT 'paper'"))
    conn.execute(text("UPDATE reported SET kind = 'paper' WHERE kind IS NULL"))


def _v2_to_v3(conn) -> None:
    """Many workers: results and models say which worker made them (NULL before version 3);
    the leases and workers tables are created beside them by `create_all`."""
    for table in ("results", "models"):
        if "worker" not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN worker VARCHAR(255)"))


def _v3_to_v4(conn) -> None:
    """Resume files are trusted only as recorded: `create_all` adds the resume_states table."""


# Migrations: MIGRATIONS[v] takes a connection at schema version v to v + 1.
MIGRATIONS: dict[int, Callable] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}
