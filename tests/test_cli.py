"""The command line on every kind of input: each option explains itself, and every input a
user can get wrong (URLs, paths, files that exist but are something else, empty or
truncated files, permissions) ends in one clear sentence and exit status 2, never a
traceback."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

from bench.db import database as db
from bench.db.outcomes import pack_outcomes
from bench.db.schema import ReportedValue, ResultRecord, TableRecord
from bench.cli.main import build_parser
from tests.cli_runner import run_cli
from tests.conftest import REPO



# ============================================================================ help

def _parsers(parser: argparse.ArgumentParser, path=("bench",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


ALL_PARSERS = list(_parsers(build_parser()))


def test_the_parser_tree_is_complete():
    names = {" ".join(p) for p, _ in ALL_PARSERS}
    assert {"bench run", "bench ls", "bench validate", "bench report", "bench check",
            "bench baseline save", "bench data fetch", "bench data verify"} <= names


@pytest.mark.parametrize("path,parser", ALL_PARSERS, ids=[" ".join(p) for p, _ in ALL_PARSERS])
def test_every_option_and_argument_explains_itself(path, parser):
    missing = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not (a.help or "").strip() or a.help == argparse.SUPPRESS:
            missing.append("/".join(a.option_strings) or a.dest)
    assert not missing, f"{' '.join(path)}: no help text for {', '.join(missing)}"


@pytest.mark.parametrize("path", [p for p, _ in ALL_PARSERS], ids=[" ".join(p) for p, _ in ALL_PARSERS])
def test_every_help_page_prints(path):
    rc, out, err = run_cli([*path[1:], "--help"])
    assert rc == 0 and "usage: bench" in out and err == ""
    if len(path) > 1 and path[-1] not in ("baseline", "data"):     # a real subcommand
        assert "examples:" in out, f"{' '.join(path)} --help shows no example"


# ============================================================================ bad input

@pytest.fixture
def files(tmp_path, monkeypatch, suite_file):
    """A working folder with a valid suite and one of each kind of wrong file."""
    monkeypatch.chdir(tmp_path)
    f = {"dir": tmp_path}
    suite_file()
    (tmp_path / "junk").write_bytes(bytes(range(256)) * 8)          # binary, not text
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_text("just some text\n")
    (tmp_path / "a_dir").mkdir()
    real = REPO / "suite.yaml"
    text = real.read_text(encoding="utf-8")
    (tmp_path / "truncated.yaml").write_text(text[: len(text) // 3] + "\n  - [unclosed")
    good = db.open_db(tmp_path / "good.sqlite")
    good.dispose()
    data = (tmp_path / "good.sqlite").read_bytes()
    (tmp_path / "truncated.sqlite").write_bytes(data[: len(data) // 4])
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE customers (id INTEGER)")
    other.commit()
    other.close()
    (tmp_path / "truncated.json").write_text('{"format": "bench-baseline", "cells": [')
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    return f


# (argv, phrase the one line must contain). FILE stands for a regular file ("text").
CASES = [
    # the results database: URLs, paths, and files that are something else
    (["ls", "suite.yaml", "--db", "foo://nowhere"], "no database dialect 'foo'"),
    (["ls", "suite.yaml", "--db", "://nowhere"], "neither a database URL"),
    (["ls", "suite.yaml", "--db", "sqlite:///junk"], "not a readable SQLite database"),
    (["ls", "suite.yaml", "--db", "text"], "not a readable SQLite database"),
    (["run", "suite.yaml", "--db", "sqlite:///junk", "--no-report"], "not a readable SQLite database"),
    (["report", "--out", "site", "--db", "truncated.sqlite"], "not a readable SQLite database"),
    (["report", "--out", "site", "--db", "empty"], "not a bench results database (it is empty)"),
    (["report", "--out", "site", "--db", "other.sqlite"], "a database of something else"),
    (["run", "suite.yaml", "--db", "other.sqlite", "--no-report"], "a database of something else"),
    (["report", "--out", "site", "--db", "a_dir"], "is a directory, not a SQLite file"),
    (["report", "--out", "site", "--db", "missing.sqlite"], "no results database at missing.sqlite"),
    (["run", "suite.yaml", "--db", "text/r.sqlite", "--no-report"], "text is a file, not a directory"),
    (["baseline", "save", "x", "--db", "sqlite:///a_dir"], "is a directory"),
    (["check", "--paper", "--db", "foo://nowhere"], "no database dialect"),
    # the suite file
    (["validate", "missing.yaml"], "cannot read the suite file"),
    (["validate", "a_dir"], "cannot read the suite file"),
    (["validate", "empty"], "the suite must be a YAML mapping"),
    (["validate", "junk"], "junk"),
    (["validate", "truncated.yaml"], "truncated.yaml"),
    (["ls", "text"], "the suite must be a YAML mapping"),
    (["run", "suite.yaml", "--tag", "nosuch", "--db", "r.sqlite"], "unknown tag 'nosuch'"),
    (["run", "suite.yaml", "--filter", "zzz/*", "--db", "r.sqlite"], "no cell matches"),
    (["run", "suite.yaml", "--limit", "0"], "must be ≥ 1"),
    (["run", "suite.yaml", "--limit", "ten"], "is not a whole number"),
    (["run", "suite.yaml", "--device", "bogus", "--db", "r.sqlite"], "is not a device"),
    (["run", "suite.yaml", "--device", "cuda:99", "--db", "r.sqlite"], "cuda"),
    (["run", "suite.yaml", "--results-dir", "text", "--db", "r.sqlite"], "is a file, not a directory"),
    (["run", "suite.yaml", "--site", "text", "--db", "r.sqlite"], "is a file, not a directory"),
    (["run", "suite.yaml", "--data-root", "text", "--db", "r.sqlite"], "is a file, not a directory"),
    (["run", "suite.yaml", "--data-root", "text", "--dry-run"], "is a file, not a directory"),
    (["ls", "suite.yaml", "--plugins"], "not both"),
    (["ls"], "needs a suite file"),
    # data
    (["data", "fetch", "nosuch"], "unknown dataset 'nosuch'"),
    (["data", "fetch", "mnist", "--data-root", "text"], "is a file, not a directory"),
    (["data", "fetch", "mnist", "--data-root", "text/sub"], "cannot create the data root"),
    (["data", "fetch", "mnist", "--source", "ftp"], "invalid choice"),
    (["data", "verify", "--data-root", "text"], "is a file, not a directory"),
    (["data", "verify", "nosuch"], "unknown dataset 'nosuch'"),
    # report, baseline, check
    (["report", "--out", "text", "--db", "good.sqlite"], "text is a file"),
    (["report", "--out", "text/site", "--db", "good.sqlite"], "text is a file"),
    (["report", "--out", "site", "--export", "pdf", "--db", "good.sqlite"], "--export takes"),
    (["baseline", "save", "bad name!", "--db", "good.sqlite"], "must be letters"),
    (["baseline", "save", "x", "--dir", "text", "--db", "good.sqlite"], "text is a file"),
    (["check", "--baseline", "missing.json", "--db", "good.sqlite"], "does not exist"),
    (["check", "--baseline", "a_dir", "--db", "good.sqlite"], "cannot read baseline"),
    (["check", "--baseline", "empty", "--db", "good.sqlite"], "not valid JSON"),
    (["check", "--baseline", "junk", "--db", "good.sqlite"], "cannot read baseline"),
    (["check", "--baseline", "truncated.json", "--db", "good.sqlite"], "not valid JSON"),
    (["check", "--baseline", "list.json", "--db", "good.sqlite"], "list.json"),
    (["check", "--baseline", "list.json", "--tolerance", "1"], "apply to --paper"),
    (["check", "--paper", "--db", "good.sqlite"], "no paper tables"),
    (["check", "--paper", "--threshold", "2", "--db", "good.sqlite"], "apply to --baseline"),
    (["check"], "one of the arguments --baseline --paper is required"),
]


@pytest.mark.parametrize("argv,phrase", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_sentence_and_exit_2(files, argv, phrase):
    rc, out, err = run_cli(argv)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err                          # one line (after argparse's usage)
    assert "error:" in lines[0] and phrase in lines[0], err


def test_database_errors_for_drivers_and_servers(files):
    """A missing driver and a server that refuses: one line; a password is never printed."""
    rc, _, err = run_cli(["ls", "suite.yaml", "--db", "postgresql://u:secret@127.0.0.1:1/x"])
    assert rc == 2 and "Traceback" not in err and "secret" not in err
    assert "cannot open the results database" in err or "driver module" in err
    if importlib.util.find_spec("MySQLdb") is None:          # mysql's default driver
        rc, _, err = run_cli(["ls", "suite.yaml", "--db", "mysql://u@h/x"])
        assert rc == 2 and "driver module MySQLdb" in err and len(err.splitlines()) == 1


def test_a_database_of_a_newer_bench_is_refused(files):
    con = sqlite3.connect(files["dir"] / "good.sqlite")
    con.execute("UPDATE schema_info SET version = 99")
    con.commit()
    con.close()
    rc, _, err = run_cli(["report", "--out", "site", "--db", "good.sqlite"])
    assert rc == 2 and "newer than this bench" in err and "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="runs as root, and file permissions do not stop root; the same "
                           "failures are tested through a file in place of a folder")
def test_permission_denied_is_one_sentence(files):
    ro = files["dir"] / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for argv in (["report", "--out", "read_only/site", "--db", "good.sqlite"],
                     ["data", "fetch", "mnist", "--data-root", "read_only/data"],
                     ["run", "suite.yaml", "--db", "read_only/sub/r.sqlite", "--no-report"],
                     ["baseline", "save", "x", "--dir", "read_only/b", "--db", "good.sqlite"]):
            rc, out, err = run_cli(argv)
            assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, argv
    finally:
        ro.chmod(0o700)


def test_a_folder_that_cannot_be_written_is_one_sentence_even_for_root(files):
    """What a read-only folder does to a non-root user, a file in place of the folder
    does to everyone: the report, a baseline and a fetch each say so in one line."""
    _paper_db(files["dir"] / "paper.sqlite", measured=True)
    for argv in (["report", "--out", "text/site", "--db", "good.sqlite"],
                 ["baseline", "save", "x", "--dir", "text/b", "--db", "good.sqlite"],
                 ["data", "fetch", "mnist", "--data-root", "text/data"],
                 ["check", "--paper", "--junit", "text/j.xml", "--db", "paper.sqlite"],
                 ["check", "--paper", "--markdown", "a_dir", "--db", "paper.sqlite"],
                 # /proc takes no new folders, not even from root
                 *([["report", "--out", "/proc/bench-site", "--db", "good.sqlite"],
                    ["run", "suite.yaml", "--db", "/proc/bench/r.sqlite", "--no-report"]]
                   if os.path.isdir("/proc/self") else [])):
        rc, _, err = run_cli(argv)
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


# ============================================================================ data verify

def test_data_verify_reports_missing_as_missing(tmp_path, data_root):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(data_root / "mnist-test.npz", root / "mnist-test.npz")      # partly fetched
    rc, out, err = run_cli(["data", "verify", "--data-root", str(root)])
    assert rc == 0, err
    assert out.splitlines()[0] == f"data root: {root}"
    assert "mnist          test   ok" in out and "mnist          train  missing" in out
    assert "cifar10" in out and "not fetched" in err
    rc, out, err = run_cli(["data", "verify", "mnist", "--data-root", str(root)])
    assert rc == 1 and "asked-for mnist missing" in err          # asked for, and not all there
    (root / "fashion-mnist-test.npz").write_bytes(b"not a zip")  # a corrupt file fails
    rc, out, err = run_cli(["data", "verify", "--data-root", str(root)])
    assert rc == 1 and "corrupt" in out and "1 split(s) corrupt" in err
    rc, out, _ = run_cli(["data", "verify", "--data-root", str(tmp_path / "never")])
    assert rc == 0 and "does not exist yet" in out.splitlines()[0]


# ============================================================================ check --paper

def _paper_db(path, measured: bool):
    from sqlalchemy.orm import Session
    engine = db.open_db(path)
    layout = {"title": "T", "order": 1, "tolerance": 1.0,
              "rows": [{"model": "m", "label": "M"}],
              "columns": [{"label": "Clean", "attack": "clean", "eps": None, "eps_value": None}]}
    with Session(engine) as s:
        s.add(TableRecord(name="t1", title="T", layout=layout))
        s.add(ReportedValue(table="t1", row="m", column="Clean", value=99.0, source="paper"))
        if measured:
            outcomes = np.ones(100, dtype=bool)
            outcomes[:2] = False
            s.add(ResultRecord(cell_key="k", cell_id="mnist/m/clean", model_key="mk",
                               model_name="m", dataset="mnist", attack="clean",
                               attack_plugin="clean", norm="none", eps_literal="0", eps=0.0,
                               n=100, n_correct=98, robust_acc=0.98,
                               outcomes=pack_outcomes(outcomes), config={}, status="done"))
        s.commit()
    engine.dispose()


def test_check_paper_with_nothing_measured_fails_unless_allowed(tmp_path):
    _paper_db(tmp_path / "e.sqlite", measured=False)
    rc, out, err = run_cli(["check", "--paper", "--db", str(tmp_path / "e.sqlite")])
    assert rc == 2 and "nothing measured" in err and "OK" not in out + err
    assert "NOTHING MEASURED: 1 cell(s): not_run 1" in out
    assert "legend: (blank) reproduced · v below · ^ above · . not run · ! failed" in out
    rc, out, err = run_cli(["check", "--paper", "--allow-empty", "--db", str(tmp_path / "e.sqlite")])
    assert rc == 0 and "allowed by --allow-empty" in err
    _paper_db(tmp_path / "m.sqlite", measured=True)
    rc, out, err = run_cli(["check", "--paper", "--db", str(tmp_path / "m.sqlite")])
    assert rc == 0 and "reproduced" in out and "nothing measured" not in err
    assert "legend:" in out


def test_check_baseline_output_has_a_legend(tmp_path):
    _paper_db(tmp_path / "m.sqlite", measured=True)
    rc, _, err = run_cli(["baseline", "save", "b", "--dir", str(tmp_path), "--db",
                          str(tmp_path / "m.sqlite")])
    assert rc == 0, err
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["n_cells"] == 1
    rc, out, _ = run_cli(["check", "--baseline", str(tmp_path / "b.json"), "--db",
                          str(tmp_path / "m.sqlite")])
    assert rc == 0 and "legend: + worse · - better · (blank) unchanged" in out
