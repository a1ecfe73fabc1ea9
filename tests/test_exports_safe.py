"""The site and the exports are safe where they are opened (issue 16 §5/§6): CSV cells that a
spreadsheet would run as formulas are neutralised (numbers stay numbers), LaTeX tabulars get
no blank line from a name, a long name cannot make a file name too long, and an interrupted
`bench report` leaves every page and export it had written before whole."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy.orm import Session

from bench.atomic import stale_temporaries
from bench.db.database import open_db
from bench.db.schema import ReportedValue, TableRecord
from bench.leaderboard.escape import csv_cell, tex_escape
from bench.leaderboard.export import export_tables
from bench.leaderboard.fmt import slug, table_page
from bench.leaderboard.site import render_site
from bench.leaderboard.stats import wilson
from test_report import add_model, add_result, correct_range, make_db

REPO = Path(__file__).resolve().parents[1]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TEX_ESCAPES = [r"\textbackslash{}", r"\&", r"\%", r"\$", r"\#", r"\_", r"\{", r"\}",
               r"\textasciitilde{}", r"\textasciicircum{}", r"\textless{}", r"\textgreater{}",
               r"\textbar{}", r"$\varepsilon$", r"$\epsilon$", r"$\ell$", r"$\infty$", r"$\pm$",
               r"$-$", r"$\Delta$"]
HOSTILE = ['=HYPERLINK("http://evil.example","click")', "+1", "-2+3", "@SUM(A1:A9)",
           "\tTAB", "\rCR"]
NUMERIC = ["measured", "reported", "diff", "ci_low", "ci_high", "n", "n_correct"]


def hostile_db(tmp_path: Path):
    """One paper table whose models, labels and column carry formula-looking names (and a
    measured value below the paper's, so the difference is a negative number), plus a smoke
    result of each model so the smoke grid carries the names too."""
    engine = open_db(tmp_path / "bench.sqlite")
    layout = {"title": "=1+1 Table", "rows": [{"model": m, "label": m} for m in HOSTILE],
              "columns": [{"label": "@PGD", "attack": "pgd", "eps": "0.3", "eps_value": 0.3}]}
    with Session(engine) as s:
        for i, m in enumerate(HOSTILE):
            add_model(s, f"k{i}", m)
            add_result(s, model=m, model_key=f"k{i}", attack="pgd", eps_literal="0.3", eps=0.3,
                       correct=correct_range(100, 0, 60), cell_id=f"c{i}")
            add_result(s, model=m, model_key=f"k{i}", attack="pgd", eps_literal="0.3", eps=0.3,
                       correct=correct_range(10, 0, 5), smoke=True, cell_id=f"s{i}")
            s.add(ReportedValue(table="=evil", row=m, column="@PGD", value=60.59, source="-x"))
        add_result(s, model="failing", model_key="kf", attack="pgd", eps_literal="0.3", eps=0.3,
                   status="failed", n=100, error="=cmd|' /C calc'!A0", cell_id="cf")
        layout["rows"].append({"model": "failing", "label": "failing"})
        s.add(TableRecord(name="=evil", title=layout["title"], layout=layout,
                          suite_path="suite.yaml"))
        s.commit()
    return engine


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_neutralises_formulas_and_keeps_numbers(tmp_path):
    engine = hostile_db(tmp_path)
    export_tables(engine, tmp_path / "export", ["csv"])
    for name in (slug("=evil"), "smoke-mnist"):
        rows = read_csv(tmp_path / "export" / f"{name}.csv")
        assert rows, name
        for r in rows:
            for k, v in r.items():
                if k in NUMERIC and v:
                    float(v)                         # a number, as written: not quoted away
                else:
                    assert not v.startswith(FORMULA_START), (name, k, v)
    rows = read_csv(tmp_path / "export" / f"{slug('=evil')}.csv")
    models = [r["model"] for r in rows if r["attack"] == "pgd"]
    assert models == ["'" + m for m in HOSTILE] + ["failing"]
    cell = rows[0]
    assert cell["table"] == "'=evil" and cell["column"] == "'@PGD"
    assert cell["measured"] == "60.0" and cell["reported"] == "60.59"
    assert cell["diff"] == "-0.59"                    # a negative number stays a number
    failed = next(r for r in rows if r["model"] == "failing" and r["attack"] == "pgd")
    assert failed["error"] == "'=cmd|' /C calc'!A0"
    smoke = read_csv(tmp_path / "export" / "smoke-mnist.csv")
    assert {r["row"] for r in smoke} == {"'" + m for m in HOSTILE}


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.none()))
def test_csv_cell_never_starts_a_formula(value):
    out = csv_cell(value)
    if isinstance(value, (int, float)):
        assert out == value                           # numbers are written as numbers
    elif value is None:
        assert out == ""
    else:
        assert not out.startswith(FORMULA_START) and out.endswith(value)


def tex_lines(tex: str) -> list[str]:
    lines = tex.split("\n")
    assert lines[-1] == "" and all(line.strip() for line in lines[:-1]), tex
    return lines[:-1]


def test_latex_has_no_blank_line_from_a_name(tmp_path):
    engine = open_db(tmp_path / "bench.sqlite")
    layout = {"title": "Title\n\nwith a paragraph", "source": "p.\r\n\r\n3",
              "rows": [{"model": "M", "label": "first\n\nsecond"}],
              "columns": [{"label": "PGD\n\n", "attack": "pgd", "eps": "0.3", "eps_value": 0.3}]}
    with Session(engine) as s:
        add_result(s, model="M", model_key="km", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(10, 0, 4), cell_id="a")
        add_result(s, model="M\r\n\r\nN", model_key="kn", attack="pgd", eps_literal="0.3",
                   eps=0.3, correct=correct_range(10, 0, 4), smoke=True, cell_id="b")
        s.add(TableRecord(name="tab\n\nle", title=layout["title"], layout=layout,
                          suite_path="suite.yaml"))
        s.commit()
    paths = export_tables(engine, tmp_path / "export", ["tex"])
    assert len(paths) == 2
    for path in paths:
        lines = tex_lines(path.read_text(encoding="utf-8"))
        body = lines[lines.index(next(x for x in lines if x.startswith(r"\begin{tabular}"))):]
        assert all(x.startswith(("%", "\\")) for x in lines[:len(lines) - len(body)]), lines
        assert any("first second" in x for x in body) or "smoke" in path.name
        assert all(x.startswith("\\") or x.endswith(r" \\") for x in body), body


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40))
def test_tex_escape_is_one_line_of_plain_text(text):
    out = tex_escape(text)
    assert all(ord(c) >= 0x20 and not 0x7f <= ord(c) < 0xa0 for c in out)   # no newline
    plain = out
    for escaped in sorted(TEX_ESCAPES, key=len, reverse=True):
        plain = plain.replace(escaped, "")
    assert not set(plain) & set("\\&%$#_{}~^")          # every special is escaped


def test_slug_caps_long_names_and_keeps_them_apart():
    a, b = "t" * 250, "t" * 249 + "u"
    assert len(slug(a)) <= 90 and len(slug(b)) <= 90 and slug(a) != slug(b)
    assert slug("table1") == "table1" and slug("t" * 80) == "t" * 80


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def bench_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, env=child_env(), timeout=120)


# The report again, in a child whose files cannot grow past `limit` bytes (RLIMIT_FSIZE: a
# write past it fails, like a full disk); the database is read before the limit is set.
INTERRUPTED_REPORT = """
import resource, sys
from pathlib import Path
from bench.db.database import open_db
from bench.leaderboard.export import export_tables
from bench.leaderboard.site import render_site
from bench.leaderboard.store import load_store
db, out, limit, what = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
engine = open_db(db)
load_store(engine)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    if what == "exports":
        export_tables(engine, out / "export")
    render_site(engine, out)
except OSError as e:
    sys.exit(f"interrupted: {e}")
"""


def test_a_long_table_name_renders_and_exports(tmp_path):
    long = "t" * 250
    engine = open_db(tmp_path / "bench.sqlite")
    with Session(engine) as s:
        add_result(s, model="M", model_key="km", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(10, 0, 4))
        s.add(TableRecord(name=long, title="long", suite_path="suite.yaml", layout={
            "rows": [{"model": "M"}],
            "columns": [{"label": "PGD", "attack": "pgd", "eps": "0.3", "eps_value": 0.3}]}))
        s.commit()
    engine.dispose()
    out = tmp_path / "site"
    p = bench_cli("report", "--out", str(out), "--db", str(tmp_path / "bench.sqlite"),
                  "--no-baselines", "--export", "csv,json,md,tex")
    assert p.returncode == 0, p.stderr
    assert all(len(f.name) <= 100 for f in out.rglob("*")), [f.name for f in out.rglob("*")]
    page = out / table_page(long)
    assert page.is_file() and f'href="{page.name}"' in (out / "index.html").read_text()
    assert (out / "export" / f"{slug(long)}.csv").is_file()


def test_an_interrupted_report_leaves_what_it_had_written_whole(tmp_path):
    engine = make_db(tmp_path)
    out = tmp_path / "site"
    export_tables(engine, out / "export")
    render_site(engine, out)
    engine.dispose()
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert len(before) > 8
    # a file-size limit below every file: the first write of the second run fails
    limit = min(len(b) for b in before.values()) // 2
    for what in ("site", "exports"):          # the first page, the first export
        p = subprocess.run([sys.executable, "-c", INTERRUPTED_REPORT,
                            str(tmp_path / "bench.sqlite"), str(out), str(limit), what],
                           capture_output=True, text=True, env=child_env(), timeout=120)
        assert p.returncode == 1 and "interrupted" in p.stderr, p.stderr
        after = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
        assert after == before, what
        assert not stale_temporaries(out) and not stale_temporaries(out / "export")


def test_wilson_is_scipys_and_equals_the_closed_form():
    """The interval comes from scipy (binomtest's Wilson); it equals the closed form the
    site used before, kept here as the reference."""
    z = 1.959963984540054

    def closed_form(k, n):
        p, denom = k / n, 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo = 0.0 if k <= 0 else max(0.0, centre - half)
        hi = 1.0 if k >= n else min(1.0, centre + half)
        return 100 * lo, 100 * hi

    for k, n in [(0, 1), (1, 1), (80, 100), (0, 7), (7, 7), (1, 20), (999, 1000),
                 (5000, 10000), (3, 1_000_000)]:
        assert wilson(k, n) == pytest.approx(closed_form(k, n), abs=1e-9)
    assert wilson(0, 0) is None
