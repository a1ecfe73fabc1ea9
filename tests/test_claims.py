"""Claims in the registry, on SQLite and on a real PostgreSQL server: one winner, renewal,
takeover after expiry, release; a new database opened by many at once; retried connections."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.schema import SCHEMA_VERSION, ResultRecord, utcnow
from bench.db.claims import Claim, Claims, Heartbeat, leases, new_worker_id
from bench.db.retry import with_retry


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "claims.sqlite")
    return request.getfixturevalue("pg_url")


def _together(n, fn):
    """Run fn(i) in n threads released at the same instant; return their results."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def go(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_only_one_of_many_simultaneous_claims_wins(url):
    engine = db.open_db(url)
    engines = [db.open_db(url) for _ in range(8)]       # eight workers, eight connections
    claims = [Claims(e, new_worker_id(), lease_seconds=30) for e in engines]
    won = _together(8, lambda i: claims[i].claim("k" * 64, "m"))
    assert sorted(w is not None for w in won) == [False] * 7 + [True]
    owner = leases(engine)["k" * 64].owner
    assert owner == claims[won.index(Claim("k" * 64, "new"))].worker_id


def test_a_lease_is_renewed_taken_over_after_expiry_and_released(url):
    engine = db.open_db(url)
    a = Claims(engine, "worker-a", lease_seconds=1.0)
    b = Claims(db.open_db(url), "worker-b", lease_seconds=1.0)
    assert a.claim("m1", "model one") == Claim("m1", "new", None)
    assert b.claim("m1", "model one") is None            # live: refused
    for _ in range(3):                                     # renewed past its first expiry
        time.sleep(0.5)
        a.renew()
        assert b.claim("m1") is None
    assert not a.lost("m1")
    time.sleep(1.3)                                        # a stops renewing: the lease expires
    assert leases(engine)["m1"].expired
    assert b.claim("m1", "model one") == Claim("m1", "takeover", previous_owner="worker-a")
    rec = leases(engine)["m1"]
    assert rec.owner == "worker-b" and rec.previous_owner == "worker-a" and rec.takeovers == 1
    a.renew()                                              # a wakes up: it has lost the job
    assert a.lost("m1")
    a.release("m1")                                        # and cannot release b's lease
    assert leases(engine)["m1"].owner == "worker-b"
    b.release("m1")
    assert "m1" not in leases(engine)
    assert a.claim("m1") == Claim("m1", "new")


def test_a_new_database_opened_by_many_at_once(url):
    """Before: `sqlite3.OperationalError: table schema_info already exists` (issue 11)."""
    engines = _together(6, lambda i: db.open_db(url))
    with engines[0].connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalars().all() == [SCHEMA_VERSION]
    assert {"runs", "results", "leases", "workers"} <= set(inspect(engines[0]).get_table_names())


def test_a_new_sqlite_file_opened_by_processes_started_together(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO
    path, go = tmp_path / "new.sqlite", tmp_path / "go"
    code = ("import sys, time, pathlib; from bench.db import database as db; go = pathlib.Path(sys.argv[2])\n"
            "while not go.exists(): time.sleep(0.005)\n"
            "db.open_db(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(go)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(3)          # let them import and wait on the file
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    engine = db.open_db(path)
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalars().all() == [SCHEMA_VERSION]


def test_record_upsert_never_duplicates_a_cell(url):
    engine = db.open_db(url)

    def rec(i):
        r = ResultRecord(cell_key="c" * 64, cell_id="d/m/a", model_key="m" * 64, model_name="m",
                         dataset="d", attack="a", attack_plugin="clean", norm="linf",
                         eps_literal="0", eps=0.0, n=8, n_correct=i, config={"i": i},
                         status="done", created=utcnow(), worker=f"w{i}")
        with engine.begin() as c:
            db.upsert(c, r)
        return i
    _together(6, lambda i: with_retry(lambda: rec(i)))
    with Session(engine) as s:
        rows = list(s.scalars(select(ResultRecord)))
    assert len(rows) == 1 and rows[0].worker == f"w{rows[0].n_correct}"


def test_a_terminated_connection_is_retried(pg_url, postgres_server):
    """pg_terminate_backend on the worker's connection mid-query: the operation is retried on
    a new connection and succeeds; an error that is not transient is raised at once."""
    engine = db.open_db(pg_url)
    calls = []

    def op():
        with engine.connect() as c:
            pid = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
            calls.append(pid)
            if len(calls) == 1:
                killer = threading.Timer(0.5, lambda: postgres_server.admin(pg_url.rsplit("/", 1)[1])
                                         .execute("SELECT pg_terminate_backend(%s)", (pid,)))
                killer.start()
                c.execute(text("SELECT pg_sleep(5)"))   # killed half a second in
            return c.execute(text("SELECT 42")).scalar_one()
    notes = []
    assert with_retry(op, log=notes.append) == 42
    assert len(calls) == 2 and calls[0] != calls[1]
    assert notes and "terminating connection" in notes[0]
    from sqlalchemy.exc import ProgrammingError
    with pytest.raises(ProgrammingError):
        with_retry(lambda: engine.connect().execute(text("SELECT * FROM no_such_table")))


def test_claims_survive_a_server_restart(pg_url, postgres_server):
    """The server goes down for a second and comes back: claims and records retry through it."""
    engine = db.open_db(pg_url)
    a = Claims(engine, "worker-a", lease_seconds=30)
    assert a.claim("m1") == Claim("m1", "new")
    postgres_server.stop()
    threading.Timer(1.5, postgres_server.restart).start()
    t0 = time.time()
    a.renew()                                 # retried until the server is back
    assert time.time() - t0 > 1.0 and not a.lost("m1")
    assert Claims(engine, "worker-b", lease_seconds=30).claim("m1") is None


def test_a_heartbeat_goes_on_after_a_failure_without_a_message(tmp_path):
    """A beat that fails with an empty message is logged as one line and the heartbeat keeps
    beating (taking the first line of an empty message used to end the thread)."""
    notes, calls, third = [], [], threading.Event()
    claims = Claims(db.open_db(tmp_path / "hb.sqlite"), "worker-a", lease_seconds=30, log=notes.append)

    def beat():
        calls.append(1)
        if len(calls) == 3:
            third.set()
        raise RuntimeError()
    heartbeat = Heartbeat(claims, beat, interval=0.01)
    heartbeat.start()
    try:
        assert third.wait(30), notes
    finally:
        heartbeat.stop()
        heartbeat.join(30)
    assert notes[0] == "warning: heartbeat failed: RuntimeError"


def test_a_transient_error_without_a_message_is_retried():
    from sqlalchemy.exc import OperationalError

    notes, calls = [], []

    def op():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception(""), connection_invalidated=True)
        return 7
    assert with_retry(op, first_delay=0.01, log=notes.append) == 7
    assert len(calls) == 2 and len(notes) == 1
    assert notes[0].endswith("after a transient error (1/7): Exception"), notes
