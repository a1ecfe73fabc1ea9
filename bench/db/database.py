"""Opening the results database: a URL or path to an engine, the schema created or migrated
under a lock, and the statements every writer shares (`exclusive`, `upsert`, `server_now`).

Any SQLAlchemy URL works; the default is a SQLite file under results/ in WAL mode, so
a reader (the report) never blocks the workers, and every recorded cell is committed
at once: `kill -9` loses nothing already recorded. The tables, the schema version and
the migrations are `bench.db.schema`; the per-sample bitmaps `bench.db.outcomes`.

Many processes open, migrate and write one database at once: the schema is created and
migrated under an exclusive lock, results and models are written with an upsert keyed by
their primary key (`upsert`), and a PostgreSQL URL works like a SQLite path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from bench.db.schema import MIGRATIONS, SCHEMA_VERSION, Base, ResultRecord, utcnow
from bench.errors import BenchError, one_line

DEFAULT_DB = Path("results") / "bench.sqlite"
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
    with Session(bind=conn) as s:
        s.merge(record)
        s.flush()



class SchemaError(BenchError):
    """A database that is not (or not this version's) bench results database."""


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
        raise BenchError(f"--db {shown} is not a usable database URL: {one_line(e)}") from None
    from bench.db.retry import with_retry
    try:
        with_retry(lambda: _check_schema(engine, shown, create, hint), what=f"opening {shown}")
    except BenchError:
        engine.dispose()
        raise
    except SQLAlchemyError as e:
        engine.dispose()
        msg = one_line(getattr(e, "orig", None) or e)
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
