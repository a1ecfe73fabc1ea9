"""A paper table's layout from suite.yaml to the page and to `check --paper`: reference rows,
rows and columns beyond the paper, blocks, info columns, the paper's orientation, and the
published values of other sources kept apart from the paper's."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.orm import Session

from bench.leaderboard import check
from bench.db import database as db
from bench.db.schema import ModelRecord
from bench.errors import SuiteError
from bench.leaderboard.fmt import table_page
from bench.leaderboard.site import render_site
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import build_table
from bench.run.runner import Runner
from bench.suite.load import load_suite
from test_report import add_result, cell_html, correct_range

SUITE = """
version: 1
attacks:
  clean: {plugin: clean, label: Benign}
  pgd: {plugin: pgd, label: PGD-20, config: {steps: 2, step_size: 0.01}}
models:
  m_a: {dataset: mnist, arch: small_cnn, defense: sgd, label: Alpha, train: {epochs: 1}}
  m_b: {dataset: mnist, arch: small_cnn, defense: sgd, label: Beta, train: {epochs: 1, lr: 0.05}}
  m_c: {dataset: mnist, arch: small_cnn, defense: sgd, label: Gamma, train: {epochs: 1, lr: 0.02}}
matrix:
  - {name: t, models: [m_a, m_b, m_c], attacks: [clean, pgd], eps: [0.3, 0.1]}
tables:
  tab:
    title: The table
    source: "paper, Table 9"
    orientation: transposed
    info: [Net]
    rows:
      - {reference: borrowed, label: "Borrowed [7]", info: {Net: 110}}
      - {model: m_a, info: {Net: 20}}
      - {model: m_b, block: "second block"}
      - {model: m_c, beyond: true}
    columns:
      - {attack: clean, label: Benign}
      - {attack: pgd, eps: 0.3, label: PGD-20}
      - {attack: pgd, eps: 0.1, label: PGD-20 (0.1), beyond: true}
    reported:
      borrowed: {Benign: {value: 70.0, source: "paper, Table 9 (from Someone et al.)"}, PGD-20: 50.0}
      m_a: {Benign: 99.0, PGD-20: 61.0}
      m_b: {PGD-20: 40.0}
    reported_by:
      authors_code:
        label: "authors' code"
        source: "their notebook, cell 3"
        values: {m_a: {PGD-20: 66.6}}
"""


@pytest.fixture()
def recorded(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    engine = db.open_db(tmp_path / "bench.sqlite")
    Runner(suite, engine, data_root=tmp_path, device="cpu").record_tables()
    n = 100
    with Session(engine) as s:
        add_result(s, model="m_a", model_key="ka", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(n, 0, 99))
        add_result(s, model="m_a", model_key="ka", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 60))
        add_result(s, model="m_b", model_key="kb", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 45))
        add_result(s, model="m_c", model_key="kc", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 30))
        s.commit()
    return suite, engine


def test_the_layout_reaches_the_database_with_kinds_and_sources(recorded):
    suite, engine = recorded
    t = suite.tables["tab"]
    assert [r.id for r in t.rows] == ["borrowed", "m_a", "m_b", "m_c"]
    assert t.rows[0].model is None and t.rows[3].beyond and t.rows[2].block == "second block"
    assert t.reported == {("borrowed", "Benign"): 70.0, ("borrowed", "PGD-20"): 50.0,
                          ("m_a", "Benign"): 99.0, ("m_a", "PGD-20"): 61.0, ("m_b", "PGD-20"): 40.0}
    store = load_store(engine)
    kinds = {(k[1], k[2], k[3]): (v.value, v.source) for k, v in store.reported.items()}
    assert kinds[("borrowed", "Benign", "paper")] == (70.0, "paper, Table 9 (from Someone et al.)")
    assert kinds[("borrowed", "PGD-20", "paper")] == (50.0, "paper, Table 9")
    assert kinds[("m_a", "PGD-20", "authors_code")] == (66.6, "their notebook, cell 3")
    assert store.table("tab").layout["sources"] == {"paper": "paper", "authors_code": "authors' code"}


def test_the_view_keeps_reference_rows_and_other_sources_apart(recorded):
    _, engine = recorded
    store = load_store(engine)
    tv = build_table(store, store.table("tab"))
    ref, a, b, c = tv.rows
    assert ref.reference and [x.state for x in ref.cells] == ["reference"] * 3
    assert ref.cells[0].reported == 70.0 and ref.worst[0].value is None
    # a's PGD-20: measured 60, the paper's 61 (Δ −1), the authors' code 66.6 shown apart
    pgd = a.cells[1]
    assert (pgd.value, pgd.reported, round(pgd.diff, 6)) == (60.0, 61.0, -1.0)
    assert [(o.label, o.value) for o in pgd.others] == [("authors' code", 66.6)]
    # the reference row neither ranks nor counts: best PGD-20 among models is a's 60
    assert pgd.rank == 1 and b.cells[1].rank == 2
    assert tv.counts == {"done": 4, "pending": 5, "failed": 0}
    assert c.beyond and tv.columns[2].beyond and b.block == "second block"
    assert a.info == {"Net": "20"} and tv.info == ["Net"]
    view = tv.paper_view                         # transposed: attacks as rows
    assert view["headers"] == ["Borrowed [7]", "Alpha", "Beta", "Gamma"]
    assert [label for label, _, _ in view["rows"]] == ["Benign", "PGD-20", "PGD-20 (0.1)"]
    assert view["rows"][1][2][1] is pgd and view["rows"][2][1]    # the 0.1 column is beyond


def test_the_page_shows_sources_marks_and_both_orientations(recorded, tmp_path):
    _, engine = recorded
    site = render_site(engine, tmp_path / "site").parent
    html = (site / table_page("tab")).read_text()
    _, inner = cell_html(html, "c-0-0")
    assert "70.00" in inner and "published, not measured" in inner
    _, inner = cell_html(html, "c-1-1")
    assert "paper 61.00" in inner and "authors&#39; code 66.60" in inner
    assert 'title="paper, Table 9"' in inner and 'title="their notebook, cell 3"' in inner
    assert html.count("beyond the paper") >= 3          # the row, the column, the legend
    assert ">second block<" in html and ">Net<" in html and ">110<" in html
    assert 'id="paper-orientation"' in html and "Show the paper's orientation" in html
    # the column list states each attack's settings
    assert re.search(r"pgd\(norm=linf, steps=2, step_size=0\.01", html)


def test_check_paper_compares_the_papers_values_only(recorded):
    _, engine = recorded
    verdicts = check.check_paper(engine)
    got = {(v.row, v.column): (v.verdict, v.reported) for v in verdicts}
    # no verdict for the reference row, none for the authors' code value (66.6)
    assert got == {("Alpha", "Benign"): ("reproduced", 99.0), ("Alpha", "PGD-20"): ("reproduced", 61.0),
                   ("Beta", "PGD-20"): ("above", 40.0)}


@pytest.mark.parametrize("old,new,needle,message", [
    ("      - {model: m_c, beyond: true}\n",
     "      - {model: m_c, beyond: true}\n      - {model: m_a, beyond: true}\n",
     "{model: m_a, beyond: true}", "listed twice"),
    ("      - {model: m_b, block: \"second block\"}\n      - {model: m_c, beyond: true}",
     "      - {model: m_c, beyond: true}\n      - {model: m_b, block: \"second block\"}",
     "{model: m_b, block", "must come before those marked beyond"),
    ("{reference: borrowed, label: \"Borrowed [7]\", info: {Net: 110}}", "{reference: borrowed}",
     "{reference: borrowed}", "needs a label"),
    ("{model: m_a, info: {Net: 20}}", "{model: m_a, info: {Nett: 20}}", "Nett", "not an info column"),
    ("orientation: transposed", "orientation: sideways", "orientation", "must be one of"),
    ("      authors_code:", "      paper:", "      paper:", "go under 'reported'"),
    ("m_b: {PGD-20: 40.0}", "m_b: {PGD-20: 140.0}", "140.0", "percentage in [0, 100]"),
    ("    source: \"paper, Table 9\"\n", "", "PGD-20: 50.0", "needs a source"),
])
def test_bad_layouts_are_located_errors(tmp_path, old, new, needle, message):
    assert old in SUITE
    text = SUITE.replace(old, new)
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    assert message in str(ei.value)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if needle in s)
    assert ei.value.line == line, str(ei.value)


def test_a_fresh_clone_renders_the_committed_baselines(recorded, tmp_path, capsys, monkeypatch):
    """No database: the tables come from the suite and the committed baseline's cells
    (with their models' training provenance) fill them, exactly as the database did."""
    from bench.leaderboard.baseline import save_baseline
    from bench.cli.main import main
    suite, engine = recorded
    with Session(engine) as s:      # a training record for m_a: it travels with the baseline
        s.add(ModelRecord(key="ka", name="m_a", dataset="mnist", arch="small_cnn",
                          defense="sgd", config={"train": {"epochs": 1}}, checkpoint_path="x",
                          checkpoint_sha256="0" * 64, curves={"best_epoch": 3}))
        s.commit()
    base_dir = tmp_path / "baselines"
    save_baseline(engine, "published", out_dir=base_dir)
    out = tmp_path / "fresh-site"
    monkeypatch.chdir(tmp_path)     # a fresh clone: the default database does not exist
    assert main(["report", "--out", str(out), "--suite", str(suite.path),
                 "--baselines-dir", str(base_dir)]) == 0
    said = capsys.readouterr().out
    assert "no database at" in said and "1 committed baseline(s) (4 cells)" in said
    html = (out / table_page("tab")).read_text()
    _, inner = cell_html(html, "c-1-1")
    assert "60.00" in inner and "paper 61.00" in inner
    assert "best epoch 3" in html
    assert not (tmp_path / "results" / "bench.sqlite").exists()   # the report writes no database
    # a database named with --db must exist: a typo is not a fresh clone
    assert main(["report", "--out", str(out), "--db", str(tmp_path / "typo.sqlite")]) == 2
    # with a database, the baseline adds nothing it already holds (no duplicate "2×")
    site = render_site(engine, tmp_path / "again", [__import__("json").loads(
        (base_dir / "published.json").read_text())]).parent
    _, inner = cell_html((site / table_page("tab")).read_text(), "c-1-1")
    assert "60.00" in inner and "×</span>" not in inner
