"""The results database: SQLAlchemy 2 models, a schema version and its migrations.

Any SQLAlchemy URL works; the default is a SQLite file under results/ in WAL mode, so
a reader (the report) never blocks the runner, and every recorded cell is committed
at once: `kill -9` loses nothing already recorded.

Tables: runs (one per command), models (one per trained model key, with its
checkpoint's sha256 and training curves), results (one per cell key: outcome per
sample as a bitmap, provenance), reported (the paper's values from suite.yaml).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        create_engine, event, inspect, select, text)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.errors import BenchError

SCHEMA_VERSION = 2
DEFAULT_DB = Path("results") / "bench.sqlite"


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
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/done/failed/killed
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


# ------------------------------------------------------------------------- per-sample data

def pack_outcomes(outcomes: np.ndarray) -> bytes:
    return np.packbits(np.asarray(outcomes, dtype=bool)).tobytes()


def unpack_outcomes(blob: bytes | None, n: int) -> np.ndarray | None:
    if blob is None:
        return None
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n).astype(bool)


def pack_details(details: dict[str, np.ndarray]) -> bytes | None:
    if not details:
        return None
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in details.items()})
    return buf.getvalue()


def unpack_details(blob: bytes | None) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    import io
    with np.load(io.BytesIO(blob), allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


# ------------------------------------------------------------------------- engine + schema

OPEN_HINT = "run `python -m bench run suite.yaml` first, or pass --db"


def db_url(url_or_path: str | Path | None) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file (its folder is not created here)."""
    s = str(DEFAULT_DB if url_or_path is None else url_or_path)
    return s if "://" in s else f"sqlite:///{Path(s).expanduser()}"


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _v1_to_v2(conn) -> None:
    """reported.kind: who published a value (version 1 held the paper's values only)."""
    conn.execute(text("ALTER TABLE reported ADD COLUMN kind VARCHAR(64) DEFAULT 'paper'"))
    conn.execute(text("UPDATE reported SET kind = 'paper' WHERE kind IS NULL"))


# Migrations: MIGRATIONS[v] takes a connection at schema version v to v + 1.
MIGRATIONS: dict[int, Callable] = {1: _v1_to_v2}


class SchemaError(BenchError):
    """A database that is not (or not this version's) bench results database."""


def _first_line(e: BaseException) -> str:
    text_ = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text_[0] if text_ else type(e).__name__


def _sqlite_file(target: str, url: URL | None, *, create: bool, hint: str) -> Path | None:
    """Check (and with `create`, prepare the folder of) a SQLite file; None for :memory:."""
    raw = url.database if url is not None else target
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        return None
    path = Path(raw).expanduser()
    if path.is_dir():
        raise BenchError(f"the results database {path} is a directory, not a SQLite file; "
                         f"pass --db a file path such as {path / 'bench.sqlite'}")
    if path.exists():
        return path
    if not create:
        raise BenchError(f"no results database at {path}: {hint}")
    folder = path.parent
    for up in (folder, *folder.parents):       # a file where a folder must go
        if up.exists():
            if not up.is_dir():
                raise BenchError(f"cannot create the results database {path}: {up} is a "
                                 f"file, not a directory")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create the folder {folder} for the results database: "
                         f"{e.strerror or e}") from None
    return path


def open_db(url_or_path: str | Path | None = None, *, create: bool = True,
            hint: str = OPEN_HINT) -> Engine:
    """Open (with `create`, create or migrate) the results database: the one entry point
    of every command and of the Python API.

    A plain path is a SQLite file; anything with `://` a SQLAlchemy URL. Every way this
    can fail on user input (an unparsable URL, an unknown dialect or missing driver, a
    server that refuses, a file that is no SQLite database or is truncated, a directory
    or a file where the database or its folder should be, a database of another program,
    a newer schema) raises BenchError (SchemaError) in one sentence; `hint` ends the one
    about a missing database (`create=False`).
    """
    target = str(DEFAULT_DB if url_or_path is None else url_or_path)
    url: URL | None = None
    shown = target
    if "://" in target:
        try:
            url = make_url(target)
        except ArgumentError:
            raise BenchError(f"--db {target!r} is neither a database URL "
                             f"(dialect://user@host/name) nor a file path") from None
        shown = url.render_as_string(hide_password=True)
        if url.get_backend_name() == "sqlite":
            _sqlite_file(target, url, create=create, hint=hint)
    else:
        _sqlite_file(target, None, create=create, hint=hint)
    try:
        engine = create_engine(db_url(target), future=True)
    except NoSuchModuleError:
        name = url.drivername if url is not None else "?"
        raise BenchError(f"--db {shown}: SQLAlchemy has no database dialect {name!r} (use "
                         f"sqlite:///FILE, postgresql://…, mysql://… or a file path)") from None
    except ImportError as e:
        raise BenchError(f"--db {shown} needs the database driver module "
                         f"{getattr(e, 'name', None) or e}, which is not installed") from None
    except (ArgumentError, ValueError, TypeError) as e:
        raise BenchError(f"--db {shown} is not a usable database URL: {_first_line(e)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _prepare_schema(engine, shown, create=create, hint=hint)
    except BenchError:
        engine.dispose()
        raise
    except SQLAlchemyError as e:
        engine.dispose()
        msg = _first_line(e)
        if engine.dialect.name == "sqlite" and ("not a database" in msg or "malformed" in msg):
            raise BenchError(f"{shown} is not a readable SQLite database ({msg}); pass --db "
                             f"a bench results database or a new file name") from None
        raise BenchError(f"cannot open the results database {shown}: {msg}") from None
    return engine


def _prepare_schema(engine: Engine, shown: str, *, create: bool, hint: str) -> None:
    tables = set(inspect(engine).get_table_names())
    if "schema_info" not in tables:
        if "results" in tables:
            raise SchemaError(f"{shown} has bench tables but no schema version; it was not "
                              f"written by this version of bench")
        if tables:
            listed = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
            raise SchemaError(f"{shown} is a database of something else (tables {listed}), "
                              f"not a bench results database; pass --db a new file")
        if not create:
            raise SchemaError(f"{shown} is not a bench results database (it is empty): {hint}")
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            s.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
            s.commit()
        return
    with engine.begin() as conn:
        version = conn.execute(text("SELECT version FROM schema_info WHERE id = 1")).scalar()
        if version is None:
            raise SchemaError(f"{shown} has an empty schema_info table; it was not written "
                              f"by bench")
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{shown} has schema version {version}, newer than this bench "
                              f"({SCHEMA_VERSION}); upgrade bench")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(text("UPDATE schema_info SET version = :v WHERE id = 1"), {"v": version})
    Base.metadata.create_all(engine)  # tables added by later versions


def result_status(engine: Engine, keys: list[str]) -> dict[str, str]:
    """status ('done'/'failed') of each cell key present in the database."""
    out: dict[str, str] = {}
    with Session(engine) as s:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for key, status in s.execute(select(ResultRecord.cell_key, ResultRecord.status)
                                         .where(ResultRecord.cell_key.in_(chunk))):
                out[key] = status
    return out


def result_summaries(engine: Engine, keys: list[str]) -> dict[str, tuple[str, int, int]]:
    """(status, n, n_correct) of each cell key present in the database."""
    out: dict[str, tuple[str, int, int]] = {}
    with Session(engine) as s:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for key, status, n, k in s.execute(
                    select(ResultRecord.cell_key, ResultRecord.status, ResultRecord.n,
                           ResultRecord.n_correct).where(ResultRecord.cell_key.in_(chunk))):
                out[key] = (status, n or 0, k or 0)
    return out
