"""The results database: SQLAlchemy 2 models, a schema version and its migrations.

Any SQLAlchemy URL works; the default is a SQLite file under results/ in WAL mode, so
a reader (the report) never blocks the runner, and every recorded cell is committed
at once: `kill -9` loses nothing already recorded.

Tables: runs (one per command), models (one per trained model key, with its
checkpoint's sha256 and training curves), results (one per cell key: outcome per
sample as a bitmap, provenance), reported (the paper's values from suite.yaml),
leases (one per model job a worker holds) and workers (one per worker process): the
registry is also the coordinator of many workers (`bench.db.claims`).

Many processes open, migrate and write one database at once: the schema is created and
migrated under an exclusive lock, results and models are written with an upsert keyed by
their primary key (`upsert`), and a PostgreSQL URL works like a SQLite path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        create_engine, event, inspect, select, text)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.errors import BenchError

SCHEMA_VERSION = 3
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
POSTGRES_HINT = "PostgreSQL needs psycopg: pip install 'bench[postgres]'"


def db_url(url_or_path: str | Path | None) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file (its folder is not created here),
    and `postgresql://` means psycopg 3 (SQLAlchemy's default driver is psycopg2)."""
    s = str(DEFAULT_DB if url_or_path is None else url_or_path)
    if "://" not in s:
        return f"sqlite:///{Path(s).expanduser()}"
    scheme, rest = s.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else s


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")      # first: switching to WAL may wait for a lock
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url_or_path: str | Path | None) -> Engine:
    """An engine for the URL: SQLite with WAL and a busy timeout; a server with pre-ping, so a
    connection the server dropped is replaced at checkout instead of failing a query."""
    url = db_url(url_or_path)
    backend = make_url(url).get_backend_name()     # open_db has checked the URL parses
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)   # open_db words a missing driver


@contextlib.contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[Connection]:
    """A transaction no other process holds at the same time under the same name.

    SQLite: BEGIN IMMEDIATE takes the file's write lock (waiting up to the busy timeout).
    PostgreSQL: a transaction-scoped advisory lock on the name. Other servers: a plain
    transaction (their callers tolerate the race).
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(name.encode())})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def server_now(conn: Connection) -> dt.datetime:
    """The database server's clock (naive UTC): the one clock all workers of a lease agree on."""
    name = conn.dialect.name
    if name == "sqlite":
        raw = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
        return dt.datetime.fromisoformat(raw)
    if name == "postgresql":
        return conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
    return utcnow()


def upsert(conn: Connection, record: Base) -> None:
    """Insert `record`, or overwrite the row with its primary key, in one statement.

    Two workers recording the same cell never duplicate it and never fail on the race
    (ON CONFLICT DO UPDATE on SQLite and PostgreSQL; a merge elsewhere).
    """
    table = record.__table__
    values = {c.key: getattr(record, c.key) for c in table.columns
              if getattr(record, c.key) is not None or c.nullable}
    keys = [c.name for c in table.primary_key.columns]
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={k: stmt.excluded[k] for k in values if k not in keys})
        conn.execute(stmt)
        return
    from sqlalchemy.orm import Session
    with Session(bind=conn) as s:
        s.merge(record)
        s.flush()


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


# Migrations: MIGRATIONS[v] takes a connection at schema version v to v + 1.
MIGRATIONS: dict[int, Callable] = {1: _v1_to_v2, 2: _v2_to_v3}


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
        engine = make_engine(target)
    except NoSuchModuleError:
        name = url.drivername if url is not None else "?"
        raise BenchError(f"--db {shown}: SQLAlchemy has no database dialect {name!r} (use "
                         f"sqlite:///FILE, postgresql://…, mysql://… or a file path)") from None
    except ImportError as e:
        postgres = url is not None and url.get_backend_name() == "postgresql"
        raise BenchError(f"--db {shown} needs the database driver module "
                         f"{getattr(e, 'name', None) or e}, which is not installed"
                         + (f" ({POSTGRES_HINT})" if postgres else "")) from None
    except (ArgumentError, ValueError, TypeError) as e:
        raise BenchError(f"--db {shown} is not a usable database URL: {_first_line(e)}") from None
    from bench.db.retry import with_retry
    try:
        with_retry(lambda: _check_schema(engine, shown, create, hint), what=f"opening {shown}")
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


def _schema_state(conn: Connection, url: str) -> tuple[set[str], int | None]:
    tables = set(inspect(conn).get_table_names())
    if "schema_info" not in tables:
        if "results" in tables:
            raise SchemaError(f"{url} has bench tables but no schema version; it was not "
                              f"written by this version of bench")
        bench_tables = set(Base.metadata.tables)
        if tables - bench_tables:
            others = sorted(tables - bench_tables)
            listed = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            raise SchemaError(f"{url} is a database of something else (tables {listed}), "
                              f"not a bench results database; pass --db a new file")
        return tables, None
    version = conn.execute(text("SELECT version FROM schema_info WHERE id = 1")).scalar_one_or_none()
    if version is None:      # created by a process that died before writing its version
        return tables, None
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{url} has schema version {version}, newer than this bench "
                          f"({SCHEMA_VERSION}); upgrade bench")
    return tables, version


def _check_schema(engine: Engine, url: str, create: bool, hint: str = OPEN_HINT) -> None:
    """Create or migrate the schema. Safe when many processes open a new or old database at
    the same instant: creation and migration run under `exclusive`, and whoever comes second
    finds the work done."""
    with engine.connect() as conn:      # the common case, without a lock: all is in place
        tables, version = _schema_state(conn, url)
    if version == SCHEMA_VERSION and set(Base.metadata.tables) <= tables:
        return
    if version is None and not create:
        raise SchemaError(f"{url} is not a bench results database (it is empty): {hint}")
    with exclusive(engine, "bench schema") as conn:
        tables, version = _schema_state(conn, url)     # again: another process may have done it
        if version is None:
            Base.metadata.create_all(conn)
            conn.execute(text("DELETE FROM schema_info"))
            conn.execute(text("INSERT INTO schema_info (id, version) VALUES (1, :v)"),
                         {"v": SCHEMA_VERSION})
            return
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(text("UPDATE schema_info SET version = :v WHERE id = 1"), {"v": version})
        Base.metadata.create_all(conn)  # tables added by later versions


def result_summaries(engine: Engine, keys: list[str] | None) -> dict[str, tuple[str, int, int]]:
    """(status, n, n_correct) of each cell key present in the database; of every result
    with keys None (one pass: what a caller with more keys than the table has rows wants,
    `bench.db.chunks`)."""
    from bench.db.chunks import select_in
    q = select(ResultRecord.cell_key, ResultRecord.status, ResultRecord.n, ResultRecord.n_correct)
    with Session(engine) as s:
        rows = s.execute(q) if keys is None else select_in(s, q, ResultRecord.cell_key, keys)
        return {key: (status, n or 0, k or 0) for key, status, n, k in rows}


def count_results(engine: Engine) -> int:
    """The number of stored results (done or failed)."""
    from bench.db.chunks import count_rows
    with Session(engine) as s:
        return count_rows(s, ResultRecord)
