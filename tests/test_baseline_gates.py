"""Gates that cannot lie (issue 16 §3, §5): `check --baseline` that compared no cell exits
2 (unless --allow-empty) and says how many it compared; thresholds and tolerances are
finite numbers; a full disk during `baseline save` leaves the old baseline whole (a real
kernel file-size limit, RLIMIT_FSIZE, in a forked child); no report is written over the
results database, a SQLite file or the baseline being checked."""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import signal
import sqlite3
from pathlib import Path

import pytest

from bench.errors import BenchError
from test_baseline_schema import _in_child
from tests.cli_runner import run_cli
from test_check import db_with, outcomes
from test_report import make_db


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """A baseline of two cells at 90 % and databases: the same, a 75-point drop, none of
    its cells, only cells of another n."""
    db_with(tmp_path / "base.sqlite", [{"cell_id": "c", "correct": outcomes(1000, 900)},
                                       {"cell_id": "d", "correct": outcomes(1000, 900)}]).dispose()
    rc, _, err = run_cli(["baseline", "save", "main", "--db", str(tmp_path / "base.sqlite"),
                          "--dir", str(tmp_path)])
    assert rc == 0, err
    db_with(tmp_path / "drop.sqlite", [{"cell_id": "c", "correct": outcomes(1000, 150)},
                                       {"cell_id": "d", "correct": outcomes(1000, 900)}]).dispose()
    db_with(tmp_path / "other.sqlite", [{"cell_id": "x", "correct": outcomes(1000, 900)}]).dispose()
    db_with(tmp_path / "small.sqlite", [{"cell_id": "c", "correct": outcomes(100, 90)},
                                        {"cell_id": "d", "correct": outcomes(100, 10)}]).dispose()
    return tmp_path


def check(files: Path, db: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(["check", "--baseline", str(files / "main.json"), "--db",
                    str(files / db), *extra])


# ============================================================================ finite numbers

@pytest.mark.parametrize("flag, value", [("--threshold", "nan"), ("--threshold", "inf"),
                                         ("--threshold", "-1"), ("--alpha", "nan"),
                                         ("--alpha", "inf")])
def test_thresholds_must_be_finite(files, flag, value):
    rc, out, err = check(files, "drop.sqlite", flag, value)
    assert rc == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {flag} must be a finite number") and value in line
    # the same drop with the default threshold is a failure
    assert check(files, "drop.sqlite")[0] == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5"])
def test_paper_tolerance_must_be_finite(tmp_path, value):
    make_db(tmp_path)
    rc, out, err = run_cli(["check", "--paper", "--tolerance", value, "--db",
                            str(tmp_path / "bench.sqlite")])
    assert rc == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: --tolerance must be a finite number")


def test_the_python_api_refuses_them_too(files):
    from bench.leaderboard.baseline import load_baseline
    from bench.leaderboard.check import check_paper, compare
    from bench.db.database import open_db
    base = load_baseline(files / "main.json")
    engine = open_db(files / "drop.sqlite", create=False)
    for kw in ({"threshold_pp": math.nan}, {"threshold_pp": math.inf}, {"alpha": math.nan}):
        with pytest.raises(BenchError, match="must be a finite number"):
            compare(engine, base, **kw)
    with pytest.raises(BenchError, match="must be a finite number"):
        check_paper(engine, tolerance=math.nan)
    assert {v.verdict for v in compare(engine, base)} == {"worse", "unchanged"}


# ============================================================================ nothing compared

def test_a_check_that_compared_nothing_exits_2(files):
    rc, out, err = check(files, "other.sqlite")                # every baseline cell missing
    assert rc == 2
    assert "NOTHING COMPARED" in out and "0 of 2 baseline cell(s) compared" in out
    assert "OK" not in out
    [line] = err.strip().splitlines()
    assert line.startswith("nothing compared: none of the 2 baseline cell(s)")
    assert "2 missing" in line and "--allow-empty" in line
    rc, out, err = check(files, "small.sqlite")                # n differs: not comparable
    assert rc == 2 and "2 not comparable" in err
    assert "0 of 2 baseline cell(s) compared" in out
    db_with(files / "failed.sqlite", [{"cell_id": "c", "n": 1000, "status": "failed",
                                       "error": "nan loss"}]).dispose()
    rc, out, _ = check(files, "failed.sqlite")                 # a failure is still a failure
    assert rc == 1 and "FAIL" in out


def test_allow_empty_lets_it_pass(files):
    rc, out, err = check(files, "other.sqlite", "--allow-empty")
    assert rc == 0 and "nothing compared (allowed by --allow-empty)" in err
    assert "NOTHING COMPARED" in out


def test_the_summary_says_how_many_cells_were_compared(files, tmp_path):
    rc, out, _ = check(files, "base.sqlite")
    assert rc == 0 and "OK: 2 cell(s): unchanged 2; 2 of 2 baseline cell(s) compared" in out
    db_with(tmp_path / "half.sqlite", [{"cell_id": "c", "correct": outcomes(1000, 900)}]).dispose()
    rc, out, _ = check(files, "half.sqlite")
    assert rc == 0 and "1 of 2 baseline cell(s) compared" in out
    rc, out, _ = check(files, "drop.sqlite", "--allow-empty")  # a regression still fails
    assert rc == 1 and "FAIL" in out


# ============================================================================ writes

def _save_under_a_file_size_limit(files: Path, limit: int) -> int:
    """`bench baseline save main` (of a bigger selection) with writes capped at `limit`
    bytes by the kernel; SIGXFSZ ignored so that a write past it fails with EFBIG."""
    from bench.cli.main import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    return main(["baseline", "save", "main", "--db", str(files / "many.sqlite"), "--dir",
                 str(files)])


def test_a_full_disk_during_baseline_save_keeps_the_old_baseline(files):
    db_with(files / "many.sqlite", [{"cell_id": f"c{i}", "correct": outcomes(1000, 900)}
                                    for i in range(40)]).dispose()
    old = (files / "main.json").read_bytes()
    limit = 40_000      # above SQLite's 32 KiB WAL index, below the new baseline's ~70 kB
    rc, text = _in_child(lambda: _save_under_a_file_size_limit(files, limit), timeout=120)
    assert rc == 2, text[-2000:]
    assert (files / "main.json").read_bytes() == old                   # whole, still valid
    [line] = text.strip().splitlines()
    assert line.startswith("error: cannot write baseline") and "File too large" in line
    assert "Traceback" not in text
    assert json.loads(old)["n_cells"] == 2
    assert not [p for p in os.listdir(files) if ".tmp-" in p]          # no temporary left
    rc, _, err = run_cli(["baseline", "save", "main", "--db", str(files / "many.sqlite"),
                          "--dir", str(files)])                       # without the cap: fine
    assert rc == 0, err
    assert json.loads((files / "main.json").read_text())["n_cells"] == 40
    assert (files / "main.json").stat().st_size > limit


@pytest.mark.parametrize("flag", ["--junit", "--markdown"])
def test_no_report_over_the_results_database(files, flag):
    db = files / "drop.sqlite"
    before = sha(db)
    rc, out, err = check(files, "drop.sqlite", flag, str(db))
    assert rc == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {flag} {db} would overwrite") and "reads" in line
    assert sha(db) == before
    assert sqlite3.connect(db).execute("select count(*) from results").fetchone() == (2,)


def test_no_report_over_any_sqlite_file_or_the_baseline(files):
    other = files / "other.sqlite"
    before = sha(other)
    rc, _, err = check(files, "drop.sqlite", "--junit", str(other))
    assert rc == 2 and "is a SQLite database" in err and sha(other) == before
    base = files / "main.json"
    before = sha(base)
    rc, _, err = check(files, "drop.sqlite", "--markdown", str(base))
    assert rc == 2 and "would overwrite" in err and sha(base) == before
    rc, _, err = check(files, "drop.sqlite", "--junit", str(files / "r.out"), "--markdown",
                       str(files / "r.out"))
    assert rc == 2 and "would overwrite" in err and not (files / "r.out").exists()
    rc, _, err = run_cli(["check", "--paper", "--db", str(files / "drop.sqlite"), "--junit",
                          str(files / "drop.sqlite")])
    assert rc == 2 and "would overwrite" in err


def test_no_baseline_or_site_over_the_database(files):
    # a database whose name is the baseline's file name
    db = files / "nightly.json"
    (files / "drop.sqlite").rename(db)
    before = sha(db)
    rc, _, err = run_cli(["baseline", "save", "nightly", "--db", str(db), "--dir", str(files)])
    assert rc == 2 and "would overwrite" in err and sha(db) == before
    # ... and one where the site writes its index page
    site = files / "site"
    site.mkdir()
    db = site / "index.html"
    (files / "small.sqlite").rename(db)
    before = sha(db)
    rc, _, err = run_cli(["report", "--out", str(site), "--db", str(db), "--no-baselines"])
    assert rc == 2 and "would overwrite the results database" in err and sha(db) == before

