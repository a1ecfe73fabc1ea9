"""The results database: schema version, migrations, WAL, per-sample packing."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import inspect, text

from bench import db
from bench.cli import main


def test_new_database_has_the_current_schema_version_and_wal(tmp_path):
    engine = db.open_db(tmp_path / "a.sqlite")
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == db.SCHEMA_VERSION
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

    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(db.MIGRATIONS, 1, to_2)
    engine = db.open_db(path)
    assert ran == [2]
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM schema_info")).scalar_one() == 2
    assert "note" in {col["name"] for col in inspect(engine).get_columns("results")}
    db.open_db(path)            # already migrated: nothing runs again
    assert ran == [2]


def test_outcome_bitmaps_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1000):
        x = rng.random(n) < 0.5
        assert np.array_equal(db.unpack_outcomes(db.pack_outcomes(x), n), x)
    d = {"radius": np.array([0.0, 0.5, 1.25]), "prediction": np.array([-1, 3, 7])}
    back = db.unpack_details(db.pack_details(d))
    assert all(np.array_equal(back[k], v) for k, v in d.items())
    assert db.pack_details({}) is None and db.unpack_details(None) == {}
