"""The Reproduction page, the notes suite.yaml records, and the softmax saturation flag.

* notes on a table row, column or cell: parsed, validated (one located sentence), stored
  with the layout, shown on the table page, the Reproduction page and by `check --paper`;
* the Reproduction page lists every value the paper prints (the real suite's 87): not run
  on an empty database, and the committed baseline's cells as measured on a fresh clone,
  with the verdict `check --paper` gives;
* a model trained to saturation (a tiny linear model whose eval-mode logits are scaled by
  1000, registered here as a test plugin): the saturation share stored with its results,
  the "softmax_saturated" flag, and the cross-entropy cell set against the margin column.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.cli.main import main
from bench.db import database as db
from bench.db import outcomes, schema
from bench.run.record import record_tables
from bench.errors import SuiteError
from bench.leaderboard import check, verdict_writers
from bench.leaderboard.baseline import baseline_records, load_baseline
from bench.leaderboard.fmt import table_page
from bench.leaderboard.reproduction import Rate, needs_text
from bench.leaderboard.site import render_site
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import CE_ABOVE_STRONGER, build_table
from bench.plugins.model import ModelPlugin
from bench.plugins.registry import register_model
from bench.run import sanity
from bench.run.plan import expand
from bench.run.runner import Runner
from bench.suite.load import load_suite
from tests.conftest import REPO
from test_report import add_result, cell_html, correct_range

EVIL = "<b>bold</b> & <script>x</script>"

SUITE = """
version: 1
attacks:
  clean: {plugin: clean, label: Benign}
  pgd: {plugin: pgd, label: PGD-20, config: {steps: 2, step_size: 0.01}}
  cwm: {plugin: cw_linf, label: CW margin, config: {steps: 2, step_size: 0.01}}
models:
  m_a: {dataset: mnist, arch: small_cnn, defense: sgd, label: Alpha, train: {epochs: 1}}
  m_b: {dataset: mnist, arch: small_cnn, defense: sgd, label: Beta, train: {epochs: 1, lr: 0.05}}
matrix:
  - {name: t, models: [m_a, m_b], attacks: [clean, pgd, cwm], eps: [0.3]}
tables:
  tab:
    title: The table
    source: "paper, Table 9"
    rows:
      - {reference: borrowed, label: "Borrowed [7]"}
      - {model: m_a, notes: "row note: trained with the authors' seed"}
      - m_b
    columns:
      - {attack: clean, label: Benign}
      - {attack: pgd, eps: 0.3, label: PGD-20, notes: ["column note one", "column note two"]}
      - {attack: cwm, eps: 0.3, label: CW margin, beyond: true}
    reported:
      borrowed: {Benign: 70.0}
      m_a: {Benign: 99.0, PGD-20: 61.0}
      m_b: {PGD-20: 40.0}
    notes:
      m_b: {PGD-20: "cell note: <b>bold</b> & <script>x</script>"}
"""


def _suite(tmp_path, text=SUITE):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return load_suite(path)


# ============================================================================ notes: parsing

def test_notes_on_rows_columns_and_cells_reach_the_layout(tmp_path):
    t = _suite(tmp_path).tables["tab"]
    assert t.rows[1].notes == ["row note: trained with the authors' seed"]
    assert t.rows[2].notes == [] and t.rows[0].notes == []
    assert t.columns[1].notes == ["column note one", "column note two"]
    assert t.cell_notes == {"m_b": {"PGD-20": [f"cell note: {EVIL}"]}}
    layout = t.layout()
    assert layout["rows"][1]["notes"] == t.rows[1].notes
    assert layout["columns"][1]["notes"] == t.columns[1].notes
    assert layout["notes"] == {"m_b": {"PGD-20": [f"cell note: {EVIL}"]}}
    # the attack traits the page reads: PGD's cross-entropy, the CW margin
    assert [(c["loss"], c["strength"]) for c in layout["columns"]] == [
        (None, None), ("ce", 50), ("margin", 50)]


@pytest.mark.parametrize("old,new,needle,message", [
    ("      m_b: {PGD-20: \"cell note:", "      m_c: {PGD-20: \"cell note:", "m_c: {PGD-20",
     "not a row of this table"),
    ("      m_b: {PGD-20: \"cell note:", "      m_bb: {PGD-20: \"cell note:", "m_bb: {PGD-20",
     "did you mean 'm_b'"),
    ("      m_b: {PGD-20: \"cell note:", "      m_b: {PGD-40: \"cell note:", "m_b: {PGD-40",
     "not a column label"),
    ("notes: \"row note: trained with the authors' seed\"", "notes: 12", "notes: 12",
     "a text or a list of texts"),
    ("notes: [\"column note one\", \"column note two\"]", "notes: [\"fine\", \"  \"]",
     "notes: [\"fine\"", "must not be empty"),
    ("notes: \"row note: trained with the authors' seed\"", "notes: \"" + "x" * 2001 + "\"",
     "x" * 100, "at most 2000 characters, got 2001"),
    ("notes: [\"column note one\", \"column note two\"]", "notes: [" + ", ".join(["a"] * 21) + "]",
     "notes: [a, a", "at most 20 notes"),
    ("      m_b: {PGD-20: \"cell note:", "      m_b: {PGD-20: {why: \"cell note:", "{why:",
     "a text or a list of texts"),
])
def test_bad_notes_are_one_located_sentence(tmp_path, old, new, needle, message):
    assert old in SUITE
    text = SUITE.replace(old, new)
    if "{why:" in new:
        text = text.replace('</script>"}\n', '</script>"}}\n')
    with pytest.raises(SuiteError) as ei:
        _suite(tmp_path, text)
    assert message in str(ei.value)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if needle in s)
    assert ei.value.line == line, str(ei.value)
    assert "\n" not in str(ei.value)


def test_notes_keep_lines_and_refuse_control_characters(tmp_path):
    row = "notes: \"row note: trained with the authors' seed\""
    text = SUITE.replace(row, "notes: \"first line\\n\\tsecond line\"")
    assert _suite(tmp_path, text).tables["tab"].rows[1].notes == ["first line\n\tsecond line"]
    with pytest.raises(SuiteError, match="control characters"):
        _suite(tmp_path, SUITE.replace(row, "notes: \"row note \\x1b[31m red\""))


# ============================================================================ notes: shown

def _record(tmp_path, text: str = SUITE, beta_pgd: int = 45):
    """The suite's tables and three results: Alpha clean 99/100 and PGD-20 60/100, Beta
    PGD-20 `beta_pgd`/100."""
    suite = _suite(tmp_path, text)
    engine = db.open_db(tmp_path / "bench.sqlite")
    record_tables(engine, suite)
    with Session(engine) as s:
        add_result(s, model="m_a", model_key="ka", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(100, 0, 99))
        add_result(s, model="m_a", model_key="ka", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(100, 0, 60))
        add_result(s, model="m_b", model_key="kb", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(100, 0, beta_pgd))
        s.commit()
    return suite, engine


@pytest.fixture()
def recorded(tmp_path):
    return _record(tmp_path)


def test_notes_on_the_table_page_escaped(recorded, tmp_path):
    _, engine = recorded
    site = render_site(engine, tmp_path / "site").parent
    page = (site / table_page("tab")).read_text()
    _, inner = cell_html(page, "c-2-1")                      # m_b / PGD-20: the cell's note
    assert 'class="badge explain"' in inner and "cell note: &lt;b&gt;bold&lt;/b&gt;" in inner
    notes = page.split('id="table-notes"')[1].split("</table>")[0]
    assert "row note: trained with the authors&#39; seed" in notes
    assert "column note one" in notes and "column note two" in notes
    assert "cell note: &lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in notes
    assert "<script>x</script>" not in page and "<b>bold</b>" not in page


def test_notes_on_the_reproduction_page(recorded, tmp_path):
    _, engine = recorded
    site = render_site(engine, tmp_path / "site").parent
    page = (site / "reproduction.html").read_text()
    assert 'href="reproduction.html"' in (site / "index.html").read_text()
    rows = dict(re.findall(r'<tr id="v-tab-(c-\d+-\d+)" class="verdict-\w+">(.*?)</tr>', page, re.S))
    # every printed value of the paper: the reference row's too (nothing to run)
    assert set(rows) == {"c-0-0", "c-1-0", "c-1-1", "c-2-1"}
    assert "no model for it" in rows["c-0-0"] and ">not run<" in rows["c-0-0"]
    a_pgd = rows["c-1-1"]                 # Alpha / PGD-20: the row's and the column's notes
    assert "row note: trained with the authors&#39; seed" in a_pgd
    assert "column note one" in a_pgd and "column note two" in a_pgd and "cell note" not in a_pgd
    assert ">60.00<" in a_pgd and ">61.00<" in a_pgd and "−1.00" in a_pgd and ">reproduced<" in a_pgd
    b_pgd = rows["c-2-1"]                 # Beta / PGD-20: the column's and the cell's
    assert "column note one" in b_pgd and "cell note: &lt;b&gt;bold&lt;/b&gt;" in b_pgd
    assert "row note" not in b_pgd and ">above<" in b_pgd
    assert "2 of 4 reproduced · 1 above · 1 not run" in page.split('id="t-tab"')[1]
    assert "<script>x</script>" not in page


def test_check_paper_prints_the_notes(recorded, tmp_path, capsys):
    suite, engine = recorded
    verdicts = check.check_paper(engine)
    got = {(v.row, v.column): v.notes for v in verdicts}
    assert got == {("Alpha", "Benign"): ["row note: trained with the authors' seed"],
                   ("Alpha", "PGD-20"): ["row note: trained with the authors' seed",
                                         "column note one", "column note two"],
                   ("Beta", "PGD-20"): ["column note one", "column note two", f"cell note: {EVIL}"]}
    text = verdict_writers.format_table(verdicts).splitlines()
    i = next(i for i, line in enumerate(text) if "Beta / PGD-20" in line)
    assert text[i + 1:i + 4] == ["    note: column note one", "    note: column note two",
                                 f"    note: cell note: {EVIL}"]
    # through the CLI, with the JUnit and Markdown writers
    junit, md = tmp_path / "paper.xml", tmp_path / "paper.md"
    assert main(["check", "--paper", "--db", str(tmp_path / "bench.sqlite"), "--junit", str(junit),
                 "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    assert "    note: row note: trained with the authors' seed" in out
    cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
    beta = cases["tab: Beta / PGD-20"]
    assert beta.find("failure") is not None
    assert f"note: cell note: {EVIL}" in beta.find("system-out").text
    assert "reproduced: " in cases["tab: Alpha / PGD-20"].find("system-out").text
    table = md.read_text()
    assert "| notes |" in table
    assert "note: column note one · note: column note two · note: cell note: &lt;b&gt;" in table


# ============================================================================ the real suite

@pytest.fixture(scope="module")
def paper_suite():
    return load_suite(REPO / "suite.yaml")


def _repro_rows(page: str) -> dict[str, tuple[str, str]]:
    """Row id → (verdict, the row's text)."""
    out = {}
    for rid, verdict, inner in re.findall(r'<tr id="(v-[^"]+)" class="verdict-(\w+)">(.*?)</tr>',
                                          page, re.S):
        text = html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inner))).strip()
        out[rid] = (verdict, text)
    return out


def test_all_87_printed_values_not_run_on_an_empty_database(paper_suite, tmp_path):
    engine = db.open_db("sqlite://")
    record_tables(engine, paper_suite)
    with Session(engine) as s:
        printed = s.scalars(select(schema.ReportedValue).where(schema.ReportedValue.kind == "paper")).all()
    assert len(printed) == 87
    site = render_site(engine, tmp_path / "site").parent
    page = (site / "reproduction.html").read_text()
    rows = _repro_rows(page)
    assert len(rows) == 87 and {v for v, _ in rows.values()} == {"not_run"}
    assert "0 of 87 reproduced · 87 not run" in page
    # what a cell not run needs: passes counted without a device; no earlier run to time them
    text = rows["v-table3-c-0-0"][1]                                  # WRN-34-10, CIFAR-10
    assert "training 82 M passes" in text and "GPU" in text
    text = rows["v-table2-c-0-1"][1]                                  # SmallCNN, MNIST
    assert "passes" in text and "CPU-feasible" in text


def test_a_fresh_clone_shows_the_committed_baseline_as_check_paper_does(paper_suite, tmp_path,
                                                                       capsys, monkeypatch):
    out = tmp_path / "site"
    monkeypatch.chdir(tmp_path)                 # no results/bench.sqlite here
    assert main(["report", "--out", str(out), "--suite", str(REPO / "suite.yaml"),
                 "--baselines-dir", str(REPO / "results" / "baselines")]) == 0
    assert "no database at" in capsys.readouterr().out
    rows = _repro_rows((out / "reproduction.html").read_text())
    assert len(rows) == 87
    verdict, text = rows["v-table2-c-0-0"]                            # Table 2, SGD, Benign
    assert verdict == "reproduced"
    assert "mnist_smallcnn_sgd Benign 99.39 98.80 [98.57, 99.00] 10000 −0.59 reproduced" in text
    assert "saturation share unknown" in text
    # the SGD baseline's pattern: cross-entropy PGD far above margin PGD and AutoAttack
    verdict, text = rows["v-table2-c-0-1"]                            # ℓ∞ PGD-20
    assert verdict == "above" and "15.87" in text
    assert "⚑ cross-entropy attack ℓ∞ PGD-20 finds 15.87 %" in text
    assert "AutoAttack (a stronger attack) finds 0.00 %" in text
    assert "ℓ∞ CW margin (PGD-40) (a margin loss) finds 3.20 %" in text
    assert "unknown for this result" in text
    table2 = (out / table_page("table2")).read_text()
    _, inner = cell_html(table2, "c-0-1")
    assert CE_ABOVE_STRONGER in inner and "⚑ cross-entropy above AutoAttack" in inner
    # check --paper on a database holding the same cells says the same
    engine = db.open_db(tmp_path / "b.sqlite")
    record_tables(engine, paper_suite)
    results, models = baseline_records(load_baseline(REPO / "results/baselines/paper-sgd.json"))
    with Session(engine) as s:
        for r in results + models:
            s.merge(r)
        s.commit()
    got = {(v.model, v.column): v for v in check.check_paper(engine, tables=["table2"])}
    v = got[("mnist_smallcnn_sgd", "Benign")]
    assert (v.verdict, round(v.measured, 2), round(v.diff_pp, 2)) == ("reproduced", 98.8, -0.59)
    pgd = got[("mnist_smallcnn_sgd", "ℓ∞ PGD-20")]
    assert pgd.verdict == "above" and "AutoAttack (a stronger attack)" in pgd.sanity[0]


def test_what_a_cell_needs():
    needs = {"arch": ["small_cnn", {}, "mnist"], "input_size": 784, "checkpoint": False,
             "train_passes": 3_000_000, "eval_passes": {"PGD": {"passes": 210_000, "exact": True},
                                                        "AA": {"passes": 10_000, "exact": False}}}
    assert needs_text(needs, "PGD", False, {}) == (
        "training 3 M passes; evaluation 210 k passes; CPU-feasible (no earlier training of "
        "this network to time it)")
    assert "GPU" in needs_text({**needs, "input_size": 3072}, "PGD", False, {})
    rate = {json.dumps(needs["arch"], sort_keys=True): Rate(0.002, "cpu (2 threads)", 1)}
    assert needs_text(needs, "AA", False, rate) == (
        "training 3 M passes ≈ 1.7 h on cpu (2 threads); evaluation ≥ 10 k passes ≈ 20 s on "
        "cpu (2 threads) (seconds per pass from 1 earlier training run(s))")
    assert needs_text(needs, "PGD", True, {}).startswith("the model is trained; evaluation 210 k")
    assert needs_text({**needs, "checkpoint": True}, "X", False, {}) == (
        "a released checkpoint: nothing to train; no matrix entry of the suite runs this cell")
    assert needs_text(None, "X", False, {}).startswith("unknown")


# ============================================================================ saturation

def test_saturation_share_and_flag_from_details():
    blob = outcomes.pack_details({sanity.SATURATION_DETAIL: np.array([1, 1, 0, 0] * 5, dtype=bool)})
    assert sanity.saturation_share(blob) == 0.5
    assert sanity.saturation_share(None) is None
    assert sanity.saturation_share(outcomes.pack_details({"radius": np.zeros(3)})) is None
    assert sanity.saturation_share(b"not an npz") is None
    few = outcomes.pack_details({sanity.SATURATION_DETAIL: np.array([1] + [0] * 10, dtype=bool)})

    @dataclass
    class Rec:
        cell_key: str
        details: bytes | None
        model_key: str = "m"
        attack: str = "pgd"
        norm: str = "linf"
        eps: float = 0.3
        n: int = 20
        outcomes: bytes = outcomes.pack_outcomes(np.ones(20, dtype=bool))
        split: str = "test"

    rows = [sanity.row_from_record(Rec(key, details))
            for key, details in (("sat", blob), ("few", few), ("old", None))]
    assert [r.saturation for r in rows] == [0.5, pytest.approx(1 / 11), None]
    flags = sanity.result_flags(rows)
    assert flags == {"sat": [sanity.SOFTMAX_SATURATED], "few": [], "old": []}   # 1/11 < 10 %


def test_attack_loss_traits():
    from attacks.autoattack import AutoAttackStandard
    from attacks.cw_linf import CWLinf
    from attacks.pgd import PGD
    from bench.plugins.attack import Attack
    assert PGD.loss_for({"loss": "ce"}) == "ce" and PGD.loss_for({"loss": "cw"}) == "margin"
    assert CWLinf.loss_for({"kappa": 50.0}) == "margin"
    assert AutoAttackStandard.loss_for({}) == "mixed" and Attack.loss_for({}) is None


class _Saturating(torch.nn.Module):
    """A linear classifier whose eval-mode logits are `scale` times its training ones: trained
    as usual, it evaluates with a saturated softmax (a model trained to a tiny loss)."""

    def __init__(self, d: int, k: int, scale: float):
        super().__init__()
        self.fc, self.scale = torch.nn.Linear(d, k), scale

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return z if self.training else z * self.scale


@register_model("test_saturating")
class SaturatingModel(ModelPlugin):
    """Test plugin: a linear model whose eval-mode logits are scaled up (softmax saturation)."""

    @dataclass
    class Config:
        scale: float = 1000.0

    def build(self, info):
        d = 1
        for s in info.shape:
            d *= s
        return _Saturating(d, info.num_classes, self.config.scale)


SATURATING = """
version: 1
seed: 0
datasets:
  tiny: {plugin: mnist, train_subset: 512}
attacks:
  clean: {plugin: clean, label: Benign}
  pgd_ce: {plugin: pgd, label: PGD-5, config: {steps: 5, step_size: 0.1}}
  pgd_margin: {plugin: cw_linf, label: CW margin, config: {steps: 5, step_size: 0.1}}
models:
  sat:
    dataset: tiny
    arch: test_saturating
    defense: sgd
    train: {epochs: 2, batch_size: 64, lr: 0.1}
matrix:
  - {name: t, models: [sat], attacks: [clean, pgd_ce, pgd_margin], eps: [0.3], eval: {n: 200}}
tables:
  tab:
    title: Saturated
    source: "paper, Table 0"
    rows: [sat]
    columns:
      - {attack: clean, label: Benign}
      - {attack: pgd_ce, eps: 0.3, label: PGD-5}
      - {attack: pgd_margin, eps: 0.3, label: CW margin}
    reported:
      sat: {Benign: 80.0, PGD-5: 10.0}
"""


def test_a_saturated_model_is_flagged_and_its_cross_entropy_cell_explained(tmp_path, data_root,
                                                                         capsys):
    suite = _suite(tmp_path, SATURATING)
    engine = db.open_db(tmp_path / "bench.sqlite")
    runner = Runner(suite, engine, data_root=data_root, device="cpu",
                    results_dir=tmp_path / "res", progress=False, out=lambda s: None)
    assert runner.run(expand(suite)).exit_status == 0
    with Session(engine) as s:
        got = {r.attack: r for r in s.scalars(select(db.ResultRecord))}
    shares = {a: sanity.saturation_share(r.details) for a, r in got.items()}
    # the same clean inputs under every attack: most of them saturate
    assert len(set(shares.values())) == 1 and shares["clean"] >= 0.5
    assert all(sanity.SOFTMAX_SATURATED in r.flags for r in got.values())
    acc = {a: r.n_correct / r.n for a, r in got.items()}
    assert acc["pgd_ce"] > acc["pgd_margin"] + 0.3        # cross-entropy PGD stalls
    store = load_store(engine)
    tv = build_table(store, store.table("tab"))
    ce, margin = tv.rows[0].cells[1], tv.rows[0].cells[2]
    assert CE_ABOVE_STRONGER in ce.flags and CE_ABOVE_STRONGER not in margin.flags
    assert ce.saturation == pytest.approx(shares["clean"])
    why = ce.sanity[0]
    assert "cross-entropy attack PGD-5" in why and "CW margin (a margin loss) finds" in why
    assert f"The softmax saturates on {100 * shares['clean']:.1f} % of the inputs" in why
    site = render_site(engine, tmp_path / "site").parent
    _, inner = cell_html((site / table_page("tab")).read_text(), "c-0-1")
    assert "softmax_saturated" in inner and "⚑ cross-entropy above CW margin" in inner
    repro = _repro_rows((site / "reproduction.html").read_text())
    assert "⚑ cross-entropy attack PGD-5" in repro["v-tab-c-0-1"][1]
    assert f"softmax saturated on {100 * shares['clean']:.1f} % of the inputs ⚑" in repro["v-tab-c-0-0"][1]
    assert main(["check", "--paper", "--db", str(tmp_path / "bench.sqlite")]) in (0, 1)
    assert "    ⚑ cross-entropy attack PGD-5" in capsys.readouterr().out


# ============================================================================ recipe rows

RECIPES = (SUITE
           .replace("  m_b: {dataset: mnist", "  m_c: {dataset: mnist, arch: small_cnn, defense: sgd, "
                    "label: Alpha (authors' code), train: {epochs: 2}}\n  m_b: {dataset: mnist")
           .replace("models: [m_a, m_b]", "models: [m_a, m_b, m_c]")
           .replace("      - m_b\n", "      - m_b\n      - {model: m_c, beyond: true, recipe_for: m_a}\n"))


@pytest.mark.parametrize("old,new,message", [
    ("recipe_for: m_a}", "recipe_for: m_aa}", "did you mean 'm_a'"),
    ("recipe_for: m_a}", "recipe_for: borrowed}", "not a model row of the paper"),
    ("recipe_for: m_a}", "recipe_for: m_c}", "not a model row of the paper"),
    ("{model: m_c, beyond: true, recipe_for: m_a}", "{model: m_c, recipe_for: m_a}",
     "only a model row marked beyond: true"),
])
def test_bad_recipe_for_is_one_located_sentence(tmp_path, old, new, message):
    text = RECIPES.replace(old, new)
    with pytest.raises(SuiteError) as ei:
        _suite(tmp_path, text)
    assert message in str(ei.value) and "recipe_for" in str(ei.value)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "{model: m_c" in s)
    assert ei.value.line == line, str(ei.value)


def test_recipe_rows_are_judged_against_the_paper_row_never_gating(tmp_path, capsys):
    suite, engine = _record(tmp_path, RECIPES, beta_pgd=40)
    assert suite.tables["tab"].layout()["rows"][3]["recipe_for"] == "m_a"
    with Session(engine) as s:
        # the recipe row: far above the paper's PGD-20 61.0, its Benign not run
        add_result(s, model="m_c", model_key="kc", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(200, 0, 150))
        s.commit()
    verdicts = check.check_paper(engine)
    by = {(v.row, v.column): v for v in verdicts}
    assert len(verdicts) == 3               # the recipe row is no paper cell (nor the reference)
    pgd = by[("Alpha", "PGD-20")]
    assert [(r.row, r.verdict, r.measured, r.reported, r.n) for r in pgd.recipes] == [
        ("Alpha (authors' code)", check.ABOVE, 75.0, 61.0, 200)]
    assert pgd.recipes[0].diff_pp == pytest.approx(14.0)
    assert [(r.verdict, r.measured) for r in by[("Alpha", "Benign")].recipes] == [(check.NOT_RUN, None)]
    assert by[("Beta", "PGD-20")].recipes == []
    # the recipe's verdict never gates: every paper cell of the table is reproduced
    assert not any(v.failing for v in verdicts)
    assert main(["check", "--paper", "--db", str(tmp_path / "bench.sqlite")]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(out) if "Alpha / PGD-20" in line)
    assert "    recipe Alpha (authors' code): 75.00 (n 200), Δ +14.00 pp: above" in out[i + 1:i + 5]
    # the Reproduction page: the recipe under the value it tries, linked to its cell
    site = render_site(engine, tmp_path / "site").parent
    page = (site / "reproduction.html").read_text()
    rows = dict(re.findall(r'<tr id="v-tab-(c-\d+-\d+)" class="verdict-\w+">(.*?)</tr>', page, re.S))
    assert set(rows) == {"c-0-0", "c-1-0", "c-1-1", "c-2-1"}
    recipes = rows["c-1-1"].split('class="name recipes"')[1].split("</td>")[0]
    assert f'href="{table_page("tab")}#c-3-1"' in recipes
    assert "Alpha (authors&#39; code)" in recipes and "75.00" in recipes and "above" in recipes
    assert "recipes" in rows["c-2-1"] and "<li" not in rows["c-2-1"].split('class="name recipes"')[1].split("</td>")[0]
