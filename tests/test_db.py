"""The results database: schema version, migrations, WAL, per-sample packing."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import inspect, text

from bench.db import database as db
from bench.db.outcomes import pack_details, pack_outcomes, unpack_details, unpack_outcomes
from bench.db.schema import MIGRATIONS, SCHEMA_VERSION, ModelRecord, ResultRecord, ResumeRecord
from bench.cli.main import main


def test_new_database_has_the_current_schema_version_and_wal(tmp_path):
    engine = db.open_db(tmp_path / "a.sqlite")
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == SCHEMA_VERSION
        assert c.execute(text("PRAGMA journal_mode")).scalar_one().lower() == "wal"
    assert {"runs", "models", "results", "reported", "tables"} <= set(inspect(engine).get_table_names())


def test_a_newer_schema_is_refused(tmp_path, capsys):
    path = tmp_path / "b.sqlite"
    engine = db.open_db(path)
    with engine.begin() as c:
        c.execute(text("UPDATE schema_info SET version = 99"))
    engine.dispose()
    with pytest.raises(db.SchemaError, match="newer than this bench"):
        db.open_db(path)
    assert main(["report", "--out", str(tmp_path / "site"), "--db", str(path)]) == 2
    assert "newer than this bench" in capsys.readouterr().err


def test_migrations_run_in_order_and_bump_the_version(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    db.open_db(path).dispose()
    ran = []

    def to_2(conn):
        ran.append(2)
        conn.execute(text("ALTER TABLE results ADD COLUMN note TEXT"))

    new = SCHEMA_VERSION + 1
    monkeypatch.setattr(db, "SCHEMA_VERSION", new)
    monkeypatch.setitem(MIGRATIONS, new - 1, to_2)
    engine = db.open_db(path)
    assert ran == [2]
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == new
    assert "note" in {col["name"] for col in inspect(engine).get_columns("results")}
    db.open_db(path)            # already migrated: nothing runs again
    assert ran == [2]


def test_a_version_1_database_gains_the_kind_of_its_reported_values(tmp_path):
    """Version 1 → 2: the paper's values recorded before keep kind 'paper'."""
    path = tmp_path / "v1.sqlite"
    engine = db.open_db(path)
    with engine.begin() as c:      # make it a version-1 file: no kind column, one value
        c.execute(text("DROP TABLE reported"))
        c.execute(text("CREATE TABLE reported (id INTEGER PRIMARY KEY, \"table\" VARCHAR(128), "
                       "row VARCHAR(255), \"column\" VARCHAR(255), value FLOAT, source TEXT)"))
        c.execute(text("INSERT INTO reported VALUES (1, 't', 'm', 'Benign', 99.0, 'paper')"))
        c.execute(text("UPDATE schema_info SET version = 1"))
    engine.dispose()
    engine = db.open_db(path)
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == SCHEMA_VERSION
        assert c.execute(text("SELECT kind, value FROM reported")).one() == ("paper", 99.0)


def test_a_version_2_database_gains_leases_workers_and_who_made_each_result(tmp_path):
    """Version 2 → 3: the coordination tables appear, results and models gain `worker`
    (NULL for what was recorded before), and the old rows are kept."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    path = tmp_path / "v2.sqlite"
    engine = db.open_db(path)
    with Session(engine) as s:     # a result recorded by version 2
        s.add(ResultRecord(cell_key="k", cell_id="d/m/clean", model_key="mk", model_name="m",
                           dataset="d", attack="clean", attack_plugin="clean", norm="linf",
                           eps_literal="0", eps=0.0, n=4, n_correct=3, config={}, status="done"))
        s.commit()
    with engine.begin() as c:      # make it a version-2 file
        c.execute(text("DROP TABLE leases"))
        c.execute(text("DROP TABLE workers"))
        c.execute(text("ALTER TABLE results DROP COLUMN worker"))
        c.execute(text("ALTER TABLE models DROP COLUMN worker"))
        c.execute(text("UPDATE schema_info SET version = 2"))
    engine.dispose()
    assert "worker" not in {col["name"] for col in inspect(create_engine(f"sqlite:///{path}"))
                            .get_columns("results")}
    engine = db.open_db(path)
    insp = inspect(engine)
    assert {"leases", "workers"} <= set(insp.get_table_names())
    assert "worker" in {col["name"] for col in insp.get_columns("results")}
    assert "worker" in {col["name"] for col in insp.get_columns("models")}
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == SCHEMA_VERSION
        assert c.execute(text("SELECT cell_id, n_correct, worker FROM results")).one() == ("d/m/clean", 3, None)


def test_a_version_3_database_gains_the_record_of_resume_files(tmp_path):
    """Version 3 → 4: resume_states appears (empty: a resume file written by version 3 has
    no record, so it is not trusted) and the rows recorded before are kept."""
    from sqlalchemy.orm import Session
    path = tmp_path / "v3.sqlite"
    engine = db.open_db(path)
    with Session(engine) as s:     # a model recorded by version 3
        s.add(ModelRecord(key="mk", name="m", dataset="d", arch="a", defense="sgd", config={},
                          checkpoint_path="/x.pt", checkpoint_sha256="ab" * 32))
        s.commit()
    with engine.begin() as c:      # make it a version-3 file
        c.execute(text("DROP TABLE resume_states"))
        c.execute(text("UPDATE schema_info SET version = 3"))
    engine.dispose()
    engine = db.open_db(path)
    assert "resume_states" in inspect(engine).get_table_names()
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == 4
        assert c.execute(text("SELECT key, checkpoint_sha256 FROM models")).one() == ("mk", "ab" * 32)
    with Session(engine) as s:
        assert s.get(ResumeRecord, "mk") is None
        s.add(ResumeRecord(model_key="mk", sha256="cd" * 32, epoch=2))
        s.commit()
        assert s.get(ResumeRecord, "mk").previous_sha256 is None


def test_postgresql_urls_use_psycopg_3():
    assert db.db_url("postgresql://bench@db-host/bench") == "postgresql+psycopg://bench@db-host/bench"
    assert db.db_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"


def test_outcome_bitmaps_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1000):
        x = rng.random(n) < 0.5
        assert np.array_equal(unpack_outcomes(pack_outcomes(x), n), x)
    d = {"radius": np.array([0.0, 0.5, 1.25]), "prediction": np.array([-1, 3, 7])}
    back = unpack_details(pack_details(d))
    assert all(np.array_equal(back[k], v) for k, v in d.items())
    assert pack_details({}) is None and unpack_details(None) == {}
