"""The static leaderboard and the table exports, on a synthetic results database."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from bench.db.database import open_db
from bench.db.outcomes import pack_details, pack_outcomes
from bench.db.schema import ModelRecord, ReportedValue, ResultRecord, RunRecord, TableRecord
from bench.leaderboard.escape import md_escape, tex_escape
from bench.leaderboard.export import export_tables
from bench.leaderboard.fmt import slug, table_page
from bench.leaderboard.site import render_site
from bench.leaderboard.stats import wilson
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import worst_case

EVIL = "<script>alert(1)</script>"
T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


# ============================================================================ synthetic DB

def correct_range(n: int, lo: int, hi: int) -> np.ndarray:
    """Per-sample outcomes: examples lo..hi-1 still correct."""
    out = np.zeros(n, dtype=bool)
    out[lo:hi] = True
    return out


def add_result(s: Session, *, model: str, model_key: str, attack: str, eps_literal: str,
               eps: float, correct: np.ndarray | None = None, n: int | None = None,
               status: str = "done", error: str | None = None, flags=(), smoke: bool = False,
               precision: str = "fp32", seed: int = 0, created: dt.datetime = T0,
               split: str = "test", tags=("paper",), plugin_version: str = "1",
               cell_id: str | None = None, run_id: int | None = 1, details=None,
               norm: str = "linf", config_extra: dict | None = None) -> ResultRecord:
    n = len(correct) if correct is not None else (n or 0)
    cell_id = cell_id or f"mnist/{model}/{attack}/eps={eps_literal}"
    # the shape of bench.run.plan.Cell.resolved()
    config = {"model": {"dataset": {"plugin": "mnist", "train_subset": None}, "arch": "smallcnn",
                        "arch_version": "1", "defense": "trades", "defense_version": "1",
                        "seed": 0, "precision": "fp32", "checkpoint": None},
              "model_key": model_key,
              "attack": {"plugin": attack, "version": plugin_version, "config": {"steps": 40}},
              "eps": {"literal": eps_literal, "value": eps},
              "eval": {"split": split, "n": n}, "seed": seed, "smoke": smoke,
              "precision": precision}
    config.update(config_extra or {})
    key = hashlib.sha256(json.dumps([cell_id, config], sort_keys=True).encode()).hexdigest()
    r = ResultRecord(
        cell_key=key, cell_id=cell_id, model_key=model_key, model_name=model, dataset="mnist",
        attack=attack, attack_plugin=attack, norm=norm, eps_literal=eps_literal, eps=eps,
        split=split, n=n, n_correct=int(correct.sum()) if correct is not None else 0,
        robust_acc=float(correct.mean()) if correct is not None and n else None,
        outcomes=pack_outcomes(correct) if correct is not None else None,
        details=pack_details(details) if details else None,
        flags=list(flags), config=config, tags=list(tags), precision=precision, seed=seed,
        smoke=smoke, seconds=1.5, status=status, error=error, device="cpu",
        versions={"torch": "2.4.0", "numpy": "2.0.0"}, commit="abc123def4567890",
        run_id=run_id, created=created)
    s.add(r)
    return r


def add_model(s: Session, key: str, name: str, *, smoke: bool = False, curves=None) -> None:
    s.add(ModelRecord(key=key, name=name, dataset="mnist", arch="smallcnn", defense="trades",
                      config={"arch": "smallcnn", "defense": {"name": "trades", "beta": 6.0},
                              "name": name},
                      checkpoint_path=f"results/ckpt/{key}.pt",
                      checkpoint_sha256=hashlib.sha256(key.encode()).hexdigest(),
                      train_seconds=12.0, curves=curves or {}, smoke=smoke, run_id=1,
                      device="cpu", versions={"torch": "2.4.0"}))


TABLE_LAYOUT = {
    "title": "Table 1: MNIST & friends_1 (ε = 0.3)", "source": "Zhang et al. 2019, Table 1",
    "order": 1, "tags": ["paper"], "tolerance": 1.0,
    "rows": [{"model": "ModelA", "label": "TRADES (A)"}, {"model": "ModelB", "label": "ModelB"},
             {"model": EVIL, "label": EVIL}],
    "columns": [{"label": "Clean", "attack": "clean", "eps": None, "eps_value": None},
                {"label": "PGD-40", "attack": "pgd", "eps": "0.3", "eps_value": 0.3},
                {"label": "CW∞", "attack": "cw", "eps": "0.3", "eps_value": 0.3},
                {"label": "AA", "attack": "aa", "eps": "0.3", "eps_value": 0.3}],
}
CUDA_ERROR = 'RuntimeError: CUDA out of memory "tried" <alloc> & more'


def make_db(tmp_path: Path):
    """A database with one table (3 models × 4 columns), a failed cell, a not-run column,
    flags, a smoke result, a duplicate (smaller n) result and training curves."""
    engine = open_db(tmp_path / "bench.sqlite")
    n = 100
    with Session(engine) as s:
        s.add(RunRecord(id=1, command="bench run suite.yaml", status="done", commit="abc123def4567890",
                        host="ci-host", device="cpu", suite_path="suite.yaml",
                        suite_sha256="f" * 64, ended=T0))
        s.flush()
        curves = {"epoch": [1, 2, 3, 4], "loss": [2.3, 1.1, 0.7, 0.5],
                  "train_acc": [0.5, 0.8, 0.9, 0.95], "val_clean_acc": [0.55, 0.82, 0.91, 0.96],
                  "val_robust_acc": [0.2, 0.5, 0.6, 0.7], "lr": [0.01, 0.01, 0.001, 0.001],
                  "seconds": [3.1, 3.0, 3.2, 3.0], "best_epoch": 4}
        add_model(s, "ka", "ModelA", curves=curves)
        add_model(s, "kb", "ModelB", curves={"loss": [1.0, 0.5]})
        add_model(s, "kx", EVIL, curves={"loss": [1.0, 0.4]})
        add_model(s, "ksmoke", "ModelA", smoke=True)
        # ModelA: clean 99, pgd 80 (flagged), cw 90; worst case = AND = 70
        add_result(s, model="ModelA", model_key="ka", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(n, 0, 99))
        add_result(s, model="ModelA", model_key="ka", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(50, 0, 25), created=T0 - dt.timedelta(days=3),
                   cell_id="mnist/ModelA/clean/0/n50")
        add_result(s, model="ModelA", model_key="ka", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 80), flags=["acc_not_monotone_in_eps",
                                                           "pgd_above_aa"])
        add_result(s, model="ModelA", model_key="ka", attack="cw", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 10, 100))
        add_result(s, model="ModelA", model_key="ka", attack="pgd", eps_literal="0.1", eps=0.1,
                   correct=correct_range(n, 0, 95))
        add_result(s, model="ModelA", model_key="ka", attack="pgd", eps_literal="0.2", eps=0.2,
                   correct=correct_range(n, 0, 88))
        # smoke: must never reach the paper table (value 42.86 is unique)
        add_result(s, model="ModelA", model_key="ksmoke", attack="pgd", eps_literal="0.3",
                   eps=0.3, correct=correct_range(7, 0, 3), smoke=True, tags=("smoke",),
                   cell_id="mnist/ModelA/pgd/0.3/smoke")
        # ModelB: clean 98, pgd 60, cw failed; worst case = 60 (pgd only)
        add_result(s, model="ModelB", model_key="kb", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(n, 0, 98))
        add_result(s, model="ModelB", model_key="kb", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 60))
        add_result(s, model="ModelB", model_key="kb", attack="cw", eps_literal="0.3", eps=0.3,
                   status="failed", error=CUDA_ERROR, n=n)
        # a smoke evaluation of ModelB on the same n: the only AA result (31.00, unique); it
        # must leave the AA cell "not run" and stay out of B's worst case (60)
        add_result(s, model="ModelB", model_key="kb", attack="aa", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 31), smoke=True, tags=("smoke",),
                   cell_id="mnist/ModelB/aa/0.3/smoke")
        # EVIL: clean 97, pgd 70, cw 85 (15..99); worst case = 15..69 = 55
        add_result(s, model=EVIL, model_key="kx", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(n, 0, 97))
        add_result(s, model=EVIL, model_key="kx", attack="pgd", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 0, 70))
        add_result(s, model=EVIL, model_key="kx", attack="cw", eps_literal="0.3", eps=0.3,
                   correct=correct_range(n, 15, 100),
                   details={"radius": np.linspace(0, 0.5, n)})
        s.add(TableRecord(name="table1", title=TABLE_LAYOUT["title"], layout=TABLE_LAYOUT,
                          suite_path="suite.yaml"))
        for row, col, val in [("ModelA", "Clean", 99.0), ("ModelA", "PGD-40", 81.5),
                              ("ModelB", "PGD-40", 60.5), (EVIL, "CW∞", 80.0),
                              ("ModelA", "AA", 75.0), ("ModelB", "CW∞", 70.0)]:
            s.add(ReportedValue(table="table1", row=row, column=col, value=val,
                                source="Table 1"))
        s.commit()
    return engine


def cell_html(html: str, cell_id: str) -> tuple[str, str]:
    """(attributes, inner HTML) of the <td> with this id."""
    m = re.search(rf'<td id="{re.escape(cell_id)}"(.*?)>(.*?)</td>', html, re.S)
    assert m, f"no cell {cell_id}"
    return m.group(1), m.group(2)


@pytest.fixture()
def site(tmp_path):
    engine = make_db(tmp_path)
    index = render_site(engine, tmp_path / "site")
    return engine, index.parent


# ============================================================================ tests

def test_index_lists_tables_with_counts_and_models(site):
    _, out = site
    html = (out / "index.html").read_text()
    assert f'href="{table_page("table1")}"' in html
    # 12 cells: 8 done, 3 not run (AA column), 1 failed (ModelB CW)
    assert re.search(r'class="count-done"[^>]*>8<', html)
    assert re.search(r'class="count-pending"[^>]*>3<', html)
    assert re.search(r'class="count-failed"[^>]*>.*?1<', html)
    assert 'href="model-ka.html"' in html and 'href="model-kx.html"' in html
    # smoke section present, marked, with the smoke value
    assert 'id="smoke"' in html and "SMOKE" in html and "42.86" in html


def test_table_values_reported_diff_and_interval(site):
    _, out = site
    html = (out / table_page("table1")).read_text()
    attrs, inner = cell_html(html, "c-0-1")          # ModelA PGD-40
    assert "80.00" in inner and "paper 81.50" in inner and "Δ −1.50" in inner
    lo, hi = wilson(80, 100)
    assert f"[{lo:.2f}, {hi:.2f}]" in inner and "n=100" in inner
    assert 'class="off"' in inner                     # outside the ±1 pp tolerance
    _, inner = cell_html(html, "c-1-1")              # ModelB PGD-40 reproduced
    assert "60.00" in inner and 'class="ok"' in inner and "Δ −0.50" in inner
    for cid, value in [("c-0-0", "99.00"), ("c-1-0", "98.00"), ("c-2-0", "97.00"),
                       ("c-0-2", "90.00"), ("c-2-1", "70.00"), ("c-2-2", "85.00")]:
        assert value in cell_html(html, cid)[1], cid
    # rows and columns in layout order
    assert html.index("TRADES (A)") < html.index("ModelB") < html.index("&lt;script&gt;")
    heads = re.findall(r'<th data-col="\d+"[^>]*>(.*?)</th>', html)
    assert heads == ["Clean", "PGD-40", "CW∞", "AA"]


def test_best_and_second_best_highlighting(site):
    _, out = site
    html = (out / table_page("table1")).read_text()
    assert "<strong>80.00</strong>" in cell_html(html, "c-0-1")[1]   # PGD best: A
    assert "<u>70.00</u>" in cell_html(html, "c-2-1")[1]             # second: EVIL
    plain = cell_html(html, "c-1-1")[1]                               # third: B
    assert "<strong>" not in plain and "<u>" not in plain
    assert "<strong>90.00</strong>" in cell_html(html, "c-0-2")[1]   # CW: A best, EVIL second
    assert "<u>85.00</u>" in cell_html(html, "c-2-2")[1]
    assert "<strong>99.00</strong>" in cell_html(html, "c-0-0")[1]


def test_worst_case_column_is_per_sample_and(site):
    engine, out = site
    html = (out / table_page("table1")).read_text()
    # A: pgd correct on 0..79, cw on 10..99 → both on 10..79 = 70 %, below both (80, 90)
    attrs, inner = cell_html(html, "w-0-0")
    assert "<strong>70.00</strong>" in inner and "2 attack(s)" in inner
    assert "cw, pgd" in attrs
    assert "<u>60.00</u>" in cell_html(html, "w-1-0")[1]      # B: pgd only
    assert "55.00" in cell_html(html, "w-2-0")[1]             # EVIL: 15..69
    store = load_store(engine)
    wc = worst_case(store.results, "ModelA", "0.3", smoke=False)
    assert wc.value == pytest.approx(70.0) and wc.n == 100 and wc.attacks == ["cw", "pgd"]


def test_flags_failed_and_not_run_cells(site):
    _, out = site
    html = (out / table_page("table1")).read_text()
    _, inner = cell_html(html, "c-0-1")
    m = re.search(r'<span class="badge flag" title="([^"]*)">', inner)
    assert m and "acc_not_monotone_in_eps" in m.group(1) and "pgd_above_aa" in m.group(1)
    attrs, inner = cell_html(html, "c-1-2")                   # ModelB CW failed
    assert "failed" in inner and "80.00" not in inner
    assert 'title="RuntimeError: CUDA out of memory &#34;tried&#34; &lt;alloc&gt; &amp; more"' \
        in attrs
    for row in range(3):                                       # AA never run
        attrs, inner = cell_html(html, f"c-{row}-3")
        assert "not run" in inner
    assert "paper 75.00" in cell_html(html, "c-0-3")[1]


def test_smoke_results_stay_out_of_the_paper_table(site):
    _, out = site
    html = (out / table_page("table1")).read_text()
    assert "42.86" not in html and "31.00" not in html
    assert "not run" in cell_html(html, "c-1-3")[1]           # only a smoke AA result exists
    assert "60.00" in cell_html(html, "w-1-0")[1]              # smoke AA not in the worst case
    assert "SMOKE" not in html.split('id="provenance"')[0]
    smoke = (out / "smoke.html").read_text()
    assert "42.86" in smoke and "31.00" in smoke and "SMOKE" in smoke
    assert "not paper numbers" in smoke
    assert "paper 81.50" not in smoke and "Δ" not in smoke.split('id="provenance"')[0]


def test_duplicate_results_prefer_largest_n_and_say_so(site):
    _, out = site
    html = (out / table_page("table1")).read_text()
    _, inner = cell_html(html, "c-0-0")
    assert "99.00" in inner and "n=100" in inner and "50.00" not in inner
    m = re.search(r'<span class="badge note" title="([^"]*)">2×', inner)
    assert m and "largest n (n=100)" in m.group(1) and "n=50" in m.group(1)


def test_names_cannot_inject_markup(site):
    _, out = site
    for page in out.glob("*.html"):
        html = page.read_text()
        assert "<script>alert" not in html, page.name
    table = (out / table_page("table1")).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    model = (out / "model-kx.html").read_text()
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; — bench</title>" in model


def test_model_page_curves_config_sha_and_runs(site):
    _, out = site
    html = (out / "model-ka.html").read_text()
    train = html.split('id="training-curves"')[1].split("</div>")[0]
    assert train.count("<svg") == 4                     # accuracy, loss, learning rate, seconds
    for name in ("train_acc", "val_clean_acc", "val_robust_acc", "loss", "lr"):
        assert f"<li><span class=\"sw\"" in train and f"</span>{name}</li>" in train
    assert re.search(r'<polyline fill="none" stroke="#[0-9a-f]{6}" stroke-width="1.8" '
                     r'points="[\d.]+,[\d.]+ [\d.]+,[\d.]+ [\d.]+,[\d.]+ [\d.]+,[\d.]+"', train)
    robust = html.split('id="robustness-curves"')[1]
    assert "robust accuracy vs ε (linf)" in robust and "<svg" in robust
    # pgd has 3 ε (0.1, 0.2, 0.3) → a 3-point line; its markers carry the values
    assert "pgd — 0.1: 95" in robust and "pgd — 0.2: 88" in robust and "pgd — 0.3: 80" in robust
    assert hashlib.sha256(b"ka").hexdigest() in html
    assert "&#34;beta&#34;: 6.0" in html                     # resolved config, pretty-printed
    assert "bench run suite.yaml" in html and "trained + evaluated" in html
    # the smoke model has its own page, marked
    assert "SMOKE" in (out / "model-ksmoke.html").read_text()
    # certified radii → a certified-accuracy plot on the EVIL model
    assert "certified accuracy vs radius" in (out / "model-kx.html").read_text()


def test_provenance_footer_on_every_page(site):
    _, out = site
    pages = list(out.glob("*.html"))
    assert len(pages) == 8                  # index, smoke, reproduction, table, 4 models
    for page in pages:
        foot = page.read_text().split('id="provenance"')[1]
        assert "generated" in foot and "UTC" in foot, page.name
        assert "abc123def456" in foot or "results on this page</dt><dd>0" in foot, page.name
    foot = (out / table_page("table1")).read_text().split('id="provenance"')[1]
    assert "cpu" in foot and "fp32" in foot and "n=100" in foot and "torch 2.4.0" in foot
    assert "no smoke results on this page" in foot
    assert "smoke result(s) on this page" in (out / "smoke.html").read_text()


def test_site_is_self_contained_and_sortable(site):
    _, out = site
    for page in out.glob("*.html"):
        html = page.read_text()
        assert not re.search(r'(src|href)="(https?:)?//', html), page.name
        assert "<link" not in html and "@import" not in html
    html = (out / table_page("table1")).read_text()
    assert 'class="grid sortable paper"' in html and "function sortBy" in html
    assert re.search(r'<td id="c-0-1"[^>]*data-sort="80\.000000"', html)


def test_reproduction_page_gives_check_papers_verdicts(site):
    """One verdict for the page and `check --paper`; a layout recorded before bench counted
    what cells need (no "needs") says so; names from the suite stay text."""
    from bench.leaderboard.check import check_paper
    engine, out = site
    assert all('href="reproduction.html"' in p.read_text() for p in out.glob("*.html"))
    page = (out / "reproduction.html").read_text()
    rows = re.findall(r'<tr id="v-table1-(c-\d+-\d+)" class="verdict-(\w+)">(.*?)</tr>', page, re.S)
    verdicts = {(v.model, v.column): v.verdict for v in check_paper(engine)}
    names = {"c-0-0": ("ModelA", "Clean"), "c-0-1": ("ModelA", "PGD-40"), "c-0-3": ("ModelA", "AA"),
             "c-1-1": ("ModelB", "PGD-40"), "c-1-2": ("ModelB", "CW∞"), "c-2-2": (EVIL, "CW∞")}
    assert {names[cid]: verdict for cid, verdict, _ in rows} == verdicts
    inner = {cid: text for cid, _, text in rows}
    assert "unknown: the tables were recorded before" in inner["c-0-3"]
    assert "failed: RuntimeError: CUDA out of memory &#34;tried&#34; &lt;alloc&gt;" in inner["c-1-2"]
    assert "2 of 6 reproduced · 1 above · 1 below · 1 not run · 1 failed" in page
    assert EVIL not in page and "&lt;script&gt;" in page


def test_templates_autoescape_everything():
    from bench.leaderboard.site import environment
    env = environment()
    assert env.autoescape is True
    t = env.from_string("{{ x }}")
    assert t.render(x="<b>") == "&lt;b&gt;"


def test_exports_contain_values_and_escape(tmp_path):
    engine = make_db(tmp_path)
    paths = export_tables(engine, tmp_path / "export")
    assert sorted(p.name for p in paths) == ["smoke-mnist.csv", "smoke-mnist.json",
                                             "smoke-mnist.md", "smoke-mnist.tex",
                                             "table1.csv", "table1.json", "table1.md",
                                             "table1.tex"]
    with (tmp_path / "export/table1.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by = {(r["model"], r["column"]): r for r in rows}
    assert by[("ModelA", "PGD-40")]["measured"] == "80.0"
    assert by[("ModelA", "PGD-40")]["reported"] == "81.5"
    assert by[("ModelB", "CW∞")]["state"] == "failed" and "CUDA" in by[("ModelB", "CW∞")]["error"]
    assert by[("ModelA", "AA")]["state"] == "not_run"
    assert by[("ModelA", "Worst case")]["measured"] == "70.0"
    assert not any(r["measured"] == "42.8571" for r in rows)            # smoke excluded
    doc = json.loads((tmp_path / "export/table1.json").read_text())
    assert doc["rows"][0]["cells"][1]["measured"] == 80.0
    assert doc["rows"][2]["model"] == EVIL and doc["rows"][0]["cells"][4]["measured"] == 70.0
    md = (tmp_path / "export/table1.md").read_text()
    assert "**80.00** (81.50)" in md and "<u>70.00</u>" in md and "not run" in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "MNIST &amp; friends\\_1" in md
    tex = (tmp_path / "export/table1.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\textbf{80.00}" in tex and r"\underline{70.00}" in tex
    assert r"MNIST \& friends\_1" in tex and r"$\varepsilon$" in tex
    assert r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in tex
    assert "MNIST & friends" not in tex


def test_latex_and_markdown_escaping():
    assert tex_escape(r"a&b%c$d#e_f{g}h~i^j\k") == (r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde{}"
                                                    r"i\textasciicircum{}j\textbackslash{}k")
    assert md_escape("a|b <i>x</i> *y*") == r"a\|b &lt;i&gt;x&lt;/i&gt; \*y\*"


def test_report_cli_with_exports(tmp_path, capsys):
    from bench.cli.main import main
    make_db(tmp_path)
    rc = main(["report", "--out", str(tmp_path / "site"), "--db", str(tmp_path / "bench.sqlite"),
               "--export", "csv,tex"])
    assert rc == 0
    assert (tmp_path / "site/export/table1.csv").exists()
    assert not (tmp_path / "site/export/table1.json").exists()
    html = (tmp_path / "site" / table_page("table1")).read_text()
    assert 'href="export/table1.csv"' in html and 'href="export/table1.tex"' in html
    assert main(["report", "--out", str(tmp_path / "s2"), "--db", str(tmp_path / "bench.sqlite"),
                 "--export", "csv,xls"]) == 2
    assert main(["report", "--out", str(tmp_path / "s3"), "--db", str(tmp_path / "nope.sqlite"),
                 "--suite", str(tmp_path / "no-suite.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no results database" in err and "python -m bench run" in err
    assert not (tmp_path / "nope.sqlite").exists()


def test_empty_database_renders(tmp_path):
    engine = open_db(tmp_path / "empty.sqlite")
    index = render_site(engine, tmp_path / "site")
    html = index.read_text()
    assert "No tables recorded yet" in html and "No smoke results" in html


def test_training_plots_use_recorded_epochs():
    from bench.leaderboard.plots import training_plots
    plots = training_plots({"epoch": [10, 20, 30], "loss": [3.0, 2.0, 1.0], "best_epoch": 2,
                            "val_robust_acc": [0.25, 0.5], "val_robust_acc_epoch": [20, 30]})
    assert [p["title"] for p in plots] == ["accuracy", "loss"]
    acc, loss = plots
    assert [m[2] for m in loss["series"][0]["markers"]] == ["10: 3", "20: 2", "30: 1"]
    assert [m[2] for m in acc["series"][0]["markers"]] == ["20: 0.25", "30: 0.5"]
    assert acc["series"][0]["name"] == "val_robust_acc" and len(acc["series"]) == 1


def test_slug_keeps_names_apart():
    assert slug("table1") == "table1"
    assert slug("a/b") != slug("a_b") and "/" not in slug("a/b")


# ============================================================================ the smoke grid

def make_smoke_db(tmp_path: Path):
    """Smoke results as a smoke run records them: two models (zeta run first), the clean
    attack, PGD at two ε, an FGSM at 0.3 on alpha only; labels in the run record."""
    engine = open_db(tmp_path / "smoke.sqlite")
    n = 100
    labels = {"models": {"zeta": "Zeta (smoke)", "alpha": "Alpha & co (smoke)"},
              "attacks": {"clean": "Natural", "spgd": "PGD-10", "fgsm": "FGSM"}}
    with Session(engine) as s:
        s.add(RunRecord(id=1, command="bench run suite.yaml --tag smoke", status="done",
                        summary={"labels": labels}))
        s.flush()
        add_model(s, "kz", "zeta", smoke=True, curves={"epoch": [1, 2], "loss": [1.5, 0.4],
                                                        "seconds": [60.0, 55.0]})
        add_model(s, "ka", "alpha", smoke=True, curves={"epoch": [1], "loss": [0.9]})
        t = T0
        for model, key, rows in [
                ("zeta", "kz", [("clean", "0", 0.0, (0, 95)), ("spgd", "0.1", 0.1, (0, 60)),
                                ("spgd", "0.3", 0.3, (0, 10))]),
                ("alpha", "ka", [("clean", "0", 0.0, (0, 90)), ("spgd", "0.1", 0.1, (0, 70)),
                                 ("spgd", "0.3", 0.3, (20, 50)), ("fgsm", "0.3", 0.3, (0, 40))])]:
            for attack, lit, eps, (lo, hi) in rows:
                t += dt.timedelta(seconds=1)
                add_result(s, model=model, model_key=key, attack=attack, eps_literal=lit,
                           eps=eps, correct=correct_range(n, lo, hi), smoke=True,
                           tags=("smoke",), created=t, norm="none" if attack == "clean" else "linf",
                           cell_id=f"mnist_smoke/{model}/{attack}" + ("" if attack == "clean" else f"/eps={lit}"))
        s.commit()
    return engine


def test_smoke_grid_on_the_index_page(tmp_path):
    engine = make_smoke_db(tmp_path)
    html = render_site(engine, tmp_path / "site").read_text()
    grid = html[html.index('id="grid-smoke-mnist"'):]
    grid = grid[:grid.index("</table>")]
    head = grid[:grid.index("</thead>")]
    heads = [h.strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", head, re.S)][1:]
    # attack × ε by the suite's labels, the ε-less attack first, then a worst case per ε
    assert heads == ["Natural", "PGD-10 ε=0.1", "PGD-10 ε=0.3", "FGSM ε=0.3",
                     "Worst case (ε = 0.1)", "Worst case (ε = 0.3)"]
    # models by label, in the order they were run (not alphabetical), escaped
    assert re.findall(r'scope="row">\s*<a [^>]*>(.*?)</a>', grid) == ["Zeta (smoke)",
                                                                       "Alpha &amp; co (smoke)"]
    cells = dict(re.findall(r'<td id="(s-mnist-\d-\d)"[^>]*>(.*?)</td>', grid, re.S))
    assert "<strong>95.00</strong>" in cells["s-mnist-0-0"] and "90.00" in cells["s-mnist-1-0"]
    assert "<strong>70.00</strong>" in cells["s-mnist-1-1"] and "60.00" in cells["s-mnist-0-1"]
    lo, hi = wilson(30, 100)
    assert "30.00" in cells["s-mnist-1-2"] and f"[{lo:.2f}, {hi:.2f}] n=100" in cells["s-mnist-1-2"]
    assert "not run" in cells["s-mnist-0-3"]                     # zeta has no FGSM result
    worst = dict(re.findall(r'<td id="(sw-mnist-\d-\d)"[^>]*>(.*?)</td>', grid, re.S))
    assert "<strong>20.00</strong>" in worst["sw-mnist-1-1"]     # alpha: 20..49 AND 0..39
    assert "2 attack(s)" in worst["sw-mnist-1-1"] and "10.00" in worst["sw-mnist-0-1"]
    assert "SMOKE" in grid and "badge smoke" in head
    # above the paper tables (none has a result), and the flat list is on its own page
    assert html.index('id="grid-smoke-mnist"') < html.index("<h2>Tables</h2>")
    assert 'class="grid sortable results"' not in html
    smoke = (tmp_path / "site" / "smoke.html").read_text()
    assert 'id="grid-smoke-mnist"' in smoke and 'class="grid sortable results"' in smoke
    assert "Zeta (smoke)" in (tmp_path / "site" / "model-kz.html").read_text()


def test_smoke_grid_follows_paper_tables_with_results(site):
    _, out = site
    html = (out / "index.html").read_text()
    assert html.index("<h2>Tables</h2>") < html.index('id="grid-smoke-mnist"')


def test_smoke_export_is_marked(tmp_path):
    engine = make_smoke_db(tmp_path)
    paths = export_tables(engine, tmp_path / "export")
    assert sorted(p.name for p in paths) == ["smoke-mnist.csv", "smoke-mnist.json",
                                             "smoke-mnist.md", "smoke-mnist.tex"]
    doc = json.loads((tmp_path / "export/smoke-mnist.json").read_text())
    assert doc["smoke"] is True and "SMOKE" in doc["note"]
    assert [r["label"] for r in doc["rows"]] == ["Zeta (smoke)", "Alpha & co (smoke)"]
    assert [c["label"] for c in doc["columns"]][:2] == ["Natural", "PGD-10 ε=0.1"]
    assert doc["rows"][1]["cells"][2]["measured"] == 30.0
    with (tmp_path / "export/smoke-mnist.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["smoke"] == "True" for r in rows)
    assert {r["measured"] for r in rows if r["row"] == "Alpha & co (smoke)"} >= {"90.0", "20.0"}
    md = (tmp_path / "export/smoke-mnist.md").read_text()
    assert "(SMOKE)" in md.splitlines()[0] and "**95.00" in md and "Alpha &amp; co" in md
    assert "not comparable with the paper" in (tmp_path / "export/smoke-mnist.tex").read_text()
    # the site links the smoke exports
    render_site(engine, tmp_path)
    assert 'href="export/smoke-mnist.csv"' in (tmp_path / "index.html").read_text()


def test_model_page_draws_curves_only_where_there_is_a_curve(tmp_path):
    engine = make_smoke_db(tmp_path)
    render_site(engine, tmp_path / "site")
    alpha = (tmp_path / "site" / "model-ka.html").read_text()
    robust = alpha.split('id="robustness-curves"')[1].split("</div>")[0]
    # one plot, one series: PGD at two ε; the clean attack and the one-ε FGSM are no curves
    assert robust.count("<svg") == 1 and "robust accuracy vs ε (linf)" in robust
    assert re.findall(r'</span>(\w+)</li>', robust) == ["spgd"]
    assert "(none)" not in alpha
    # a training curve of one or two epochs is drawn as points, without a line
    for page, k in (("model-ka.html", 1), ("model-kz.html", 2)):
        train = (tmp_path / "site" / page).read_text().split('id="training-curves"')[1]
        loss = [f for f in train.split("<figure")[1:] if "<figcaption>loss<" in f][0]
        assert 'points=""' in loss and loss.count('r="4.5"') == k
    # a model evaluated with the clean attack only: no plot, and the page says why
    from sqlalchemy.orm import Session as S
    with S(engine) as s:
        add_result(s, model="solo", model_key="ks", attack="clean", eps_literal="0", eps=0.0,
                   correct=correct_range(10, 0, 9), smoke=True, norm="none",
                   cell_id="mnist_smoke/solo/clean")
        s.commit()
    render_site(engine, tmp_path / "site")
    solo = (tmp_path / "site" / "model-ks.html").read_text()
    assert 'id="robustness-curves"' not in solo and "single ε" in solo
