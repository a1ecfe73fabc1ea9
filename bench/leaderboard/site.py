"""The published leaderboard: a static site rendered from the results database alone.

`render_site(engine, out_dir)` writes

* ``index.html``   the smoke grid (the smoke results as a table: models by label × attack and
  ε, with intervals and worst cases; above the paper tables while those have no results),
  the paper tables (cells done / pending / failed), the models;
* ``table-<name>.html`` one page per paper table, laid out like the paper: rows and columns in
  layout order; each cell shows the measured robust accuracy (%), the paper's value, the
  difference, a 95 % Wilson interval from the number of examples, the sanity flags; best and
  second best per column in bold / underlined; one worst-case column per ε of the table
  (per-sample AND over every attack run on the model at that ε: RobustBench's ranking number);
* ``reproduction.html`` every value the paper prints next to the measured one, with the
  verdict of `check --paper`, the notes suite.yaml records, the sanity explanations and, for
  a cell not run, what it needs (`bench.leaderboard.reproduction`);
* ``smoke.html``   the smoke grid, the paper tables filled with smoke results only, and every
  smoke result as a flat list, all marked as such (smoke results never enter the paper
  tables);
* ``model-<key>.html`` one page per model: resolved config, training curves and robustness
  curves (inline SVG drawn here, no JavaScript library), checkpoint sha256, the runs.

Every page carries a provenance footer and works offline from disk: CSS and the small column
sorter are inline, nothing is fetched. All templates are rendered with autoescape on; markup
lives in the templates only, so names from suite.yaml are always shown as text.

The data model (`bench.leaderboard.store`, `.tables`, `.smoke`) is shared with
`bench.leaderboard.export` and `bench.leaderboard.check`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine

from bench.checkpoints.sources import redacted_config
from bench import __version__
from bench.atomic import atomic_write_text
from bench.db.schema import ResultRecord
from bench.leaderboard.fmt import (fmt_pct, fmt_signed, fmt_when, model_page, result_anchor, slug,
                                   table_page)
from bench.leaderboard.plots import certified_plots, robustness_plots, training_plots
from bench.leaderboard.reproduction import VERDICT_ORDER, build_reproduction, summary_line
from bench.leaderboard.smoke import build_smoke_grids
from bench.leaderboard.stats import MIN_TIME, accuracy_pct, wilson
from bench.leaderboard.store import Store, load_store, run_labels
from bench.leaderboard.tables import build_table

TEMPLATE_DIR = Path(__file__).with_name("templates")
EXPORT_DIRNAME = "export"        # render_site links <out>/export/<table>.<fmt> when present


def provenance(results: Sequence[ResultRecord], generated: str, *,
               smoke_elsewhere: int = 0) -> dict:
    commits = Counter(r.commit for r in results if r.commit)
    versions: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for lib, v in (r.versions or {}).items():
            versions[str(lib)].add(str(v))
    return {
        "generated": generated,
        "bench_version": __version__,
        "n_results": len(results),
        "commits": commits.most_common(),
        "devices": Counter(r.device for r in results if r.device).most_common(),
        "precisions": Counter(r.precision for r in results if r.precision).most_common(),
        "n_examples": sorted(Counter(r.n for r in results).items()),
        "versions": [(k, ", ".join(sorted(v))) for k, v in sorted(versions.items())],
        "smoke": sum(1 for r in results if r.smoke),
        "smoke_elsewhere": smoke_elsewhere,
        "runs": sorted({r.run_id for r in results if r.run_id is not None}),
    }


# ============================================================================ rendering

def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["pct"] = fmt_pct
    env.filters["signed"] = fmt_signed
    env.filters["when"] = fmt_when
    env.filters["short"] = lambda s, k=10: (s or "")[:k]
    env.filters["clip"] = lambda s, k=1500: s if len(s or "") <= k else s[:k] + " …"
    env.globals.update(model_page=model_page, table_page=table_page,
                       result_anchor=result_anchor, wilson=wilson, accuracy_pct=accuracy_pct)
    return env


def _model_view(store: Store, key: str, results: list[ResultRecord]) -> dict:
    m = store.models.get(key)
    results = sorted(results, key=lambda r: (r.attack, r.norm, r.eps, r.n, r.created or MIN_TIME))
    full = [r for r in results if not r.smoke]
    curve_src = full or results
    run_ids = {r.run_id for r in results if r.run_id is not None}
    if m is not None and m.run_id is not None:
        run_ids.add(m.run_id)
    runs = []
    for rid in sorted(run_ids):
        role = []
        if m is not None and m.run_id == rid:
            role.append("trained")
        if any(r.run_id == rid for r in results):
            role.append("evaluated")
        runs.append({"run": store.runs.get(rid), "id": rid, "role": " + ".join(role)})
    name = m.name if m is not None else (results[0].model_name if results else key)
    return {
        "key": key, "name": name, "record": m,
        "config_json": json.dumps(redacted_config(m.config), indent=2, sort_keys=True, default=str)
        if m is not None else "",
        "training_plots": training_plots(m.curves if m is not None else None),
        "robustness_plots": robustness_plots(curve_src),
        "certified_plots": certified_plots(curve_src),
        "curves_smoke": not full and bool(results),
        "results": results,
        "runs": runs,
        "tables": [],
    }


def render_site(engine: Engine, out_dir: Path, baselines: Sequence[dict] = ()) -> Path:
    """Write the static site into out_dir (with the cells of `baselines` the database
    lacks, see `load_store`); return the path of index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = load_store(engine, baselines)
    env = environment()
    generated = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    smoke_results = [r for r in store.results if r.smoke]
    full_results = [r for r in store.results if not r.smoke]

    tables = [build_table(store, t) for t in store.tables]
    smoke_tables = [build_table(store, t, smoke=True) for t in store.tables]

    by_model: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in store.results:
        by_model[r.model_key].append(r)
    keys = sorted(set(store.models) | set(by_model),
                  key=lambda k: ((store.models[k].name if k in store.models
                                  else by_model[k][0].model_name), k))
    models = {k: _model_view(store, k, by_model.get(k, [])) for k in keys}
    model_labels, _ = run_labels(store)
    for mv in models.values():
        mv["label"] = model_labels.get(mv["name"], "")
    for tv in tables:
        for row in tv.rows:
            for k in row.model_keys:
                if k in models and tv.name not in [t.name for t in models[k]["tables"]]:
                    models[k]["tables"].append(tv)

    def write(name: str, template: str, **ctx) -> Path:
        path = out_dir / name
        html = env.get_template(template).render(generated=generated, models=models, **ctx)
        atomic_write_text(path, html)      # a browser or a full disk never sees half a page
        return path

    export_dir = out_dir / EXPORT_DIRNAME
    for tv in tables:
        exports = [(fmt, f"{EXPORT_DIRNAME}/{slug(tv.name)}.{fmt}")
                   for fmt in ("csv", "json", "md", "tex")
                   if (export_dir / f"{slug(tv.name)}.{fmt}").exists()]
        write(tv.page, "table.html", table=tv, exports=exports,
              prov=provenance(tv.results, generated,
                              smoke_elsewhere=sum(len(st.results) for st in smoke_tables
                                                  if st.name == tv.name)))
    for key, mv in models.items():
        write(model_page(key), "model.html", model=mv,
              prov=provenance(mv["results"], generated))
    repro = build_reproduction(store, tables)
    total = sum(len(rt.rows) for rt in repro)
    counts = {k: sum(rt.counts[k] for rt in repro) for k in VERDICT_ORDER}
    repro_summary = summary_line(counts, total) if repro else ""
    write("reproduction.html", "reproduction.html", repro=repro, total=total,
          summary=repro_summary,
          prov=provenance([r.cell.result for rt in repro for r in rt.rows
                           if r.cell.result is not None], generated))
    smoke_grids = build_smoke_grids(store)
    smoke_exports = {g.name: [(fmt, f"{EXPORT_DIRNAME}/{slug(g.name)}.{fmt}")
                              for fmt in ("csv", "json", "md", "tex")
                              if (export_dir / f"{slug(g.name)}.{fmt}").exists()]
                     for g in smoke_grids}
    write("smoke.html", "smoke.html", tables=smoke_tables, smoke_results=smoke_results,
          smoke_grids=smoke_grids, smoke_exports=smoke_exports,
          prov=provenance(smoke_results, generated))
    return write("index.html", "index.html", tables=tables, smoke_results=smoke_results,
                 repro_summary=repro_summary,
                 smoke_tables=smoke_tables, full_results=full_results,
                 smoke_grids=smoke_grids, smoke_exports=smoke_exports,
                 prov=provenance(store.results, generated))
