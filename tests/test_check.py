"""Regression checks: baselines, significance-gated verdicts, paper checks, CLI exit codes."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from bench.leaderboard import check
from bench.leaderboard.baseline import load_baseline, plugin_versions, save_baseline
from bench.leaderboard.check import compare, check_paper
from bench.cli.main import build_parser, main
from bench.db.database import open_db
from bench.db.outcomes import unpack_outcomes
from bench.errors import BenchError
from test_report import EVIL, add_result, correct_range, make_db


def outcomes(n: int, k: int, shift: int = 0) -> np.ndarray:
    """k of n examples correct, starting at `shift` (wrapping)."""
    return np.roll(correct_range(n, 0, k), shift)


def db_with(path: Path, cells: list[dict]):
    """A database holding the given results (keyword arguments of add_result)."""
    engine = open_db(path)
    with Session(engine) as s:
        for c in cells:
            c = dict(c)
            c.setdefault("model", "M")
            c.setdefault("model_key", "km")
            c.setdefault("attack", "pgd")
            c.setdefault("eps_literal", "0.3")
            c.setdefault("eps", 0.3)
            c.setdefault("run_id", None)
            add_result(s, **c)
        s.commit()
    return engine


def verdict_of(verdicts, cell_id):
    [v] = [v for v in verdicts if v.cell_id == cell_id]
    return v


def baseline_for(tmp_path: Path, cells: list[dict], **kw) -> dict:
    engine = db_with(tmp_path / "base.sqlite", cells)
    path = save_baseline(engine, "base", out_dir=tmp_path / "baselines", **kw)
    return load_baseline(path)


# ============================================================================ baselines

def test_save_baseline_is_readable_and_complete(tmp_path):
    engine = db_with(tmp_path / "b.sqlite", [
        {"cell_id": "mnist/a", "correct": outcomes(100, 90), "tags": ("ci",)},
        {"cell_id": "mnist/b", "correct": outcomes(100, 50), "tags": ("paper",)},
        {"cell_id": "cifar/c", "correct": outcomes(100, 40), "tags": ("ci",)},
        {"cell_id": "mnist/failed", "n": 100, "status": "failed", "error": "boom", "tags": ("ci",)},
    ])
    path = save_baseline(engine, "nightly", out_dir=tmp_path / "bl")
    assert path == tmp_path / "bl" / "nightly.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == "bench-baseline" and doc["name"] == "nightly"
    assert [c["cell_id"] for c in doc["cells"]] == ["cifar/c", "mnist/a", "mnist/b"]  # done only
    a = doc["cells"][1]
    for k in ("cell_key", "cell_id", "config", "n", "n_correct", "robust_acc", "accuracy_pct",
              "outcomes",
              "precision", "smoke", "seed", "plugin_versions", "commit", "created"):
        assert k in a, k
    assert a["n"] == 100 and a["n_correct"] == 90 and a["robust_acc"] == pytest.approx(0.9)
    assert a["accuracy_pct"] == pytest.approx(90.0)
    assert a["plugin_versions"] == {"attack.version": "1", "model.arch_version": "1",
                                    "model.defense_version": "1"}
    assert a["precision"] == "fp32"
    bits = unpack_outcomes(base64.b64decode(a["outcomes"]), 100)
    assert np.array_equal(bits, outcomes(100, 90))
    assert doc["provenance"]["commits"] == {"abc123def4567890": 3}
    assert "  \"cells\"" in path.read_text()                       # indented, readable

    sel = json.loads(save_baseline(engine, "ci", tags=["ci"], filters=["mnist/*"],
                                   out_dir=tmp_path / "bl").read_text())
    assert [c["cell_id"] for c in sel["cells"]] == ["mnist/a"]
    assert sel["selection"] == {"tags": ["ci"], "filters": ["mnist/*"]}


def test_save_baseline_bad_input(tmp_path):
    engine = db_with(tmp_path / "b.sqlite", [{"cell_id": "x", "correct": outcomes(10, 5)}])
    with pytest.raises(BenchError, match="file name"):
        save_baseline(engine, "../evil", out_dir=tmp_path)
    with pytest.raises(BenchError, match="no done results"):
        save_baseline(engine, "empty", filters=["nothing/*"], out_dir=tmp_path)


# ============================================================================ compare

def test_known_drop_on_many_examples_is_worse(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(1000, 900)}])
    cur = db_with(tmp_path / "cur.sqlite", [{"cell_id": "c", "correct": outcomes(1000, 800)}])
    [v] = compare(cur, base)
    assert v.verdict == "worse" and v.test == "mcnemar"
    assert v.baseline == pytest.approx(90.0) and v.current == pytest.approx(80.0)
    assert v.diff_pp == pytest.approx(-10.0) and v.discordant == (100, 0)
    assert v.p_value < 1e-20
    assert check.exit_status([v]) == 1


def test_same_drop_on_few_examples_is_not_significant(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(20, 18)}])
    cur = db_with(tmp_path / "cur.sqlite", [{"cell_id": "c", "correct": outcomes(20, 16)}])
    [v] = compare(cur, base)
    assert v.diff_pp == pytest.approx(-10.0)
    assert v.verdict == "changed_not_significant"
    assert v.p_value == pytest.approx(0.5)                  # b=2, c=0: binomial two-sided
    assert check.exit_status([v]) == 0


def test_better_unchanged_and_threshold(tmp_path):
    base = baseline_for(tmp_path, [
        {"cell_id": "up", "correct": outcomes(1000, 800)},
        {"cell_id": "same", "correct": outcomes(1000, 700)},
        {"cell_id": "swap", "correct": outcomes(1000, 500)},
    ])
    cur = db_with(tmp_path / "cur.sqlite", [
        {"cell_id": "up", "correct": outcomes(1000, 900)},
        {"cell_id": "same", "correct": outcomes(1000, 700)},
        # same accuracy but 200 different examples: McNemar b = c → unchanged
        {"cell_id": "swap", "correct": outcomes(1000, 500, shift=200)},
    ])
    vs = compare(cur, base)
    assert verdict_of(vs, "up").verdict == "better"
    assert verdict_of(vs, "same").verdict == "unchanged"
    assert verdict_of(vs, "same").p_value == 1.0
    swap = verdict_of(vs, "swap")
    assert swap.verdict == "unchanged" and swap.discordant == (200, 200)
    # a significant 10 pp rise is not "better" when the threshold is 20 pp
    assert verdict_of(compare(cur, base, threshold_pp=20), "up").verdict == "unchanged"
    # ... and not significant at a tiny alpha? no: p ~ 1e-23, still better at alpha 1e-6
    assert verdict_of(compare(cur, base, alpha=1e-6), "up").verdict == "better"


def test_z_test_when_outcomes_are_missing(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(1000, 900)}])
    engine = db_with(tmp_path / "cur.sqlite", [{"cell_id": "c", "correct": outcomes(1000, 800)}])
    with Session(engine) as s:
        from bench.db.schema import ResultRecord
        r = s.query(ResultRecord).one()
        r.outcomes = None
        s.commit()
    [v] = compare(engine, base)
    assert v.test == "z-test" and v.verdict == "worse" and v.p_value < 1e-6
    assert check.two_proportion_z(18, 20, 16, 20) > 0.05


@pytest.mark.parametrize("change, field", [
    ({"precision": "bf16"}, "precision"),
    ({"correct": outcomes(500, 400)}, "n"),
    ({"plugin_version": "2"}, "versions"),
    ({"smoke": True}, "smoke"),
    ({"seed": 1}, "seed"),
    ({"split": "val"}, "split"),
    ({"config_extra": {"attack": {"plugin": "pgd", "version": "1", "config": {"steps": 100}}}},
     "config.attack.config.steps"),
])
def test_config_changes_are_not_comparable(tmp_path, change, field):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(1000, 900)}])
    cell = {"cell_id": "c", "correct": outcomes(1000, 500)}
    cell.update(change)
    [v] = compare(db_with(tmp_path / "cur.sqlite", [cell]), base)
    assert v.verdict == "not_comparable"
    assert v.field == field
    assert v.reason
    assert check.exit_status([v]) == 0


def test_plugin_versions_found_anywhere_in_the_config():
    cfg = {"attack": {"plugin": "pgd", "version": "2", "config": {"steps": 40}},
           "model": {"arch_version": "1", "defense_version": "3", "train": {"lr": 0.1}},
           "versions": {"foolbox": "3.3.4"}}
    assert plugin_versions(cfg) == {"attack.version": "2", "model.arch_version": "1",
                                          "model.defense_version": "3",
                                          "versions.foolbox": "3.3.4"}


def test_not_comparable_names_the_plugin(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(100, 90)}])
    [v] = compare(db_with(tmp_path / "cur.sqlite", [{"cell_id": "c", "correct": outcomes(100, 90),
                                                    "plugin_version": "2"}]), base)
    assert "attack.version: 1 → 2" in v.reason


def test_comparable_candidate_is_preferred_over_others(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "c", "correct": outcomes(1000, 900)}])
    cur = db_with(tmp_path / "cur.sqlite", [
        {"cell_id": "c", "correct": outcomes(1000, 895)},
        {"cell_id": "c", "correct": outcomes(2000, 100)},                 # bigger n, other config
    ])
    [v] = compare(cur, base)
    assert v.verdict == "unchanged" and v.n_current == 1000


def test_new_missing_and_failed(tmp_path):
    base = baseline_for(tmp_path, [
        {"cell_id": "kept", "correct": outcomes(100, 90)},
        {"cell_id": "broke", "correct": outcomes(100, 90)},
        {"cell_id": "gone", "correct": outcomes(100, 90)},
    ])
    cur = db_with(tmp_path / "cur.sqlite", [
        {"cell_id": "kept", "correct": outcomes(100, 90)},
        {"cell_id": "broke", "n": 100, "status": "failed", "error": "CUDA error: device lost"},
        {"cell_id": "fresh", "correct": outcomes(100, 10)},
        {"cell_id": "fresh-broken", "n": 100, "status": "failed", "error": "nan loss"},
    ])
    vs = compare(cur, base)
    assert {v.cell_id: v.verdict for v in vs} == {
        "kept": "unchanged", "broke": "failed", "gone": "missing", "fresh": "new",
        "fresh-broken": "failed"}
    assert "device lost" in verdict_of(vs, "broke").reason
    assert check.exit_status(vs) == 1
    assert check.exit_status([v for v in vs if v.verdict != "failed"]) == 0


def test_new_cells_respect_the_baseline_selection(tmp_path):
    base = baseline_for(tmp_path, [{"cell_id": "mnist/a", "correct": outcomes(100, 90)}],
                        filters=["mnist/*"])
    cur = db_with(tmp_path / "cur.sqlite", [
        {"cell_id": "mnist/a", "correct": outcomes(100, 90)},
        {"cell_id": "mnist/b", "correct": outcomes(100, 90)},
        {"cell_id": "cifar/z", "correct": outcomes(100, 90)},
    ])
    assert {v.cell_id: v.verdict for v in compare(cur, base)} == {
        "mnist/a": "unchanged", "mnist/b": "new"}


def test_malformed_baselines_are_bench_errors(tmp_path):
    engine = db_with(tmp_path / "cur.sqlite", [{"cell_id": "c", "correct": outcomes(10, 5)}])
    with pytest.raises(BenchError, match="not a bench baseline"):
        compare(engine, {"cells": []})
    with pytest.raises(BenchError, match="lacks"):
        compare(engine, {"format": "bench-baseline", "version": 1, "cells": [{"cell_id": "c"}]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_baseline(bad)
    with pytest.raises(BenchError, match="does not exist"):
        load_baseline(tmp_path / "absent.json")


# ============================================================================ paper

def test_check_paper_verdicts(tmp_path):
    engine = make_db(tmp_path)
    vs = check_paper(engine)
    got = {(v.model, v.column): v.verdict for v in vs}
    assert got == {
        ("ModelA", "Clean"): "reproduced",       # 99.00 vs 99.0
        ("ModelA", "PGD-40"): "below",           # 80.00 vs 81.5, tolerance 1
        ("ModelB", "PGD-40"): "reproduced",      # 60.00 vs 60.5
        (EVIL, "CW∞"): "above",                  # 85.00 vs 80.0
        ("ModelA", "AA"): "not_run",
        ("ModelB", "CW∞"): "failed",
    }
    below = next(v for v in vs if v.verdict == "below")
    assert below.diff_pp == pytest.approx(-1.5) and below.tolerance == 1.0
    assert below.reported_in_ci is True                     # 81.5 inside [71.1, 86.7]
    wide = {(v.model, v.column): v.verdict for v in check_paper(engine, tolerance=6.0)}
    assert wide[("ModelA", "PGD-40")] == "reproduced" and wide[(EVIL, "CW∞")] == "reproduced"
    assert check.exit_status(vs) == 1
    assert check.exit_status([v for v in vs if v.verdict in ("reproduced", "not_run")]) == 0
    with pytest.raises(BenchError, match="unknown table 'tabel1'.*table1"):
        check_paper(engine, tables=["tabel1"])


# ============================================================================ CLI

def _write_baseline(tmp_path, n, k):
    engine = db_with(tmp_path / "base.sqlite", [{"cell_id": "c", "correct": outcomes(n, k)},
                                                {"cell_id": "d", "correct": outcomes(n, k)}])
    return save_baseline(engine, "main", out_dir=tmp_path / "baselines")


def test_cli_exit_statuses(tmp_path, capsys):
    bl = _write_baseline(tmp_path, 1000, 900)
    same = tmp_path / "same.sqlite"
    db_with(same, [{"cell_id": "c", "correct": outcomes(1000, 900)},
                   {"cell_id": "d", "correct": outcomes(1000, 905)}])
    worse = tmp_path / "worse.sqlite"
    db_with(worse, [{"cell_id": "c", "correct": outcomes(1000, 800)},
                    {"cell_id": "d", "correct": outcomes(1000, 900)}])
    assert main(["check", "--baseline", str(bl), "--db", str(same)]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 cell(s)" in out and "unchanged" in out
    assert main(["check", "--baseline", str(bl), "--db", str(worse)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "worse" in out and "-10.00" in out
    # bad input → 2, one line on stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("[1, 2")
    assert main(["check", "--baseline", str(garbage), "--db", str(same)]) == 2
    assert main(["check", "--baseline", str(tmp_path / "nope.json"), "--db", str(same)]) == 2
    assert main(["check", "--baseline", str(bl), "--db", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "python -m bench run" in err[2]
    assert main(["check", "--baseline", str(bl), "--db", str(same), "--table", "t"]) == 2
    assert main(["check", "--baseline", str(bl), "--db", str(same), "--alpha", "2"]) == 2


def test_cli_paper_mode(tmp_path, capsys):
    make_db(tmp_path)
    db = str(tmp_path / "bench.sqlite")
    md = tmp_path / "paper.md"
    assert main(["check", "--paper", "--db", db, "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    assert "below" in out and "above" in out and "reproduced" in out and "not_run" in out
    text = md.read_text()
    assert "| verdict | cell |" in text and "**below**" in text and "&lt;script&gt;" in text
    assert main(["check", "--paper", "--table", "nosuch", "--db", db]) == 2
    assert main(["check", "--paper", "--threshold", "2", "--db", db]) == 2


def test_cli_baseline_save(tmp_path, capsys):
    engine = db_with(tmp_path / "b.sqlite", [{"cell_id": "mnist/a", "correct": outcomes(10, 9),
                                              "tags": ("ci",)},
                                             {"cell_id": "mnist/b", "correct": outcomes(10, 9)}])
    engine.dispose()
    rc = main(["baseline", "save", "ci", "--tag", "ci", "--filter", "mnist/*",
               "--db", str(tmp_path / "b.sqlite"), "--dir", str(tmp_path / "bl")])
    assert rc == 0 and "1 cell(s)" in capsys.readouterr().out
    doc = json.loads((tmp_path / "bl" / "ci.json").read_text())
    assert [c["cell_id"] for c in doc["cells"]] == ["mnist/a"]
    assert main(["baseline", "save", "x", "--tag", "nope", "--db", str(tmp_path / "b.sqlite"),
                 "--dir", str(tmp_path / "bl")]) == 2


def test_junit_and_markdown_outputs(tmp_path):
    bl = _write_baseline(tmp_path, 1000, 900)
    cur = tmp_path / "cur.sqlite"
    db_with(cur, [{"cell_id": "c", "correct": outcomes(1000, 800)},
                  {"cell_id": "d", "n": 1000, "status": "failed", "error": "oom <&>"},
                  {"cell_id": "e", "correct": outcomes(1000, 800)}])
    junit, md = tmp_path / "out/check.xml", tmp_path / "out/check.md"
    assert main(["check", "--baseline", str(bl), "--db", str(cur), "--junit", str(junit),
                 "--markdown", str(md)]) == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuite" and root.get("tests") == "3" and root.get("failures") == "2"
    cases = {tc.get("name"): tc for tc in root.iter("testcase")}
    assert set(cases) == {"c", "d", "e"}
    assert cases["c"].find("failure").get("type") == "worse"
    assert cases["d"].find("failure").get("type") == "failed"
    assert "oom <&>" in cases["d"].find("failure").get("message")
    assert cases["e"].find("failure") is None
    assert len(root.findall(".//failure")) == 2
    text = md.read_text()
    assert text.count("\n| ") == 4 and "**worse**" in text and "oom &lt;&amp;&gt;" in text


def test_help_texts_have_examples(capsys):
    parser = build_parser()
    for argv in (["check", "--help"], ["report", "--help"], ["baseline", "save", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "examples:" in capsys.readouterr().out
