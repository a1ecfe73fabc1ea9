"""The Reproduction page: every value the paper prints, next to what bench measured.

One line per value of the paper's own (`reported` in suite.yaml, kind "paper"; values of
other sources, `reported_by`, are not the paper's and stay on the table pages), grouped by
table: the paper's value, the measured one (the result the table page shows), its 95 %
interval and n, Δ, and the verdict of `bench.leaderboard.check.paper_cells` — the same
verdict `check --paper` gives (reproduced / above / below / not run / failed). Beside it:
the notes suite.yaml records for the cell (row, column and cell `notes:`), the view's
sanity explanations (a cross-entropy attack above a stronger column, the softmax saturation
share: `bench.leaderboard.tables`), and for a cell not run what it needs.

What a cell needs is counted when the tables are recorded (`bench.run.record.table_needs`:
the dry run's forward/backward passes, without a device) and timed here only by earlier
training runs of the same architecture and dataset on a recorded device (seconds per
pass, as the dry run's history): nothing is calibrated at report time. Without such a run
the page says "GPU" for inputs of CIFAR-10's size or larger and "CPU-feasible" below it (the
dry run's GPU-sized test counts multiply-accumulates, which needs the network built; the
input size gives the same answer for every architecture of the paper's tables).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from bench.humanize import human_count, human_seconds
from bench.leaderboard.check import (ABOVE, BELOW, FAILED, NOT_RUN, REPRODUCED, PaperVerdict,
                                     paper_cells)
from bench.leaderboard.store import Store
from bench.leaderboard.tables import CellView, ColumnView, RowView, TableView

VERDICT_ORDER = (REPRODUCED, ABOVE, BELOW, NOT_RUN, FAILED)
GPU_INPUT_SIZE = 3 * 32 * 32     # CIFAR-10's input: every such network of the paper is GPU-sized
INNER_STEP_FIELDS = ("steps", "L")   # as bench.run.estimate: inner passes per example


@dataclass
class ReproRow:
    """One printed value of the paper and what became of it."""

    verdict: PaperVerdict
    table: TableView
    row: RowView
    cell: CellView
    column: ColumnView
    needs: str = ""              # for a cell not run: what running it takes
    recipes: list[tuple[PaperVerdict, str]] = field(default_factory=list)  # (verdict, href)

    @property
    def href(self) -> str:
        return f"{self.table.page}#{self.cell.id}"


@dataclass
class ReproTable:
    view: TableView
    rows: list[ReproRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.verdict.verdict for r in self.rows)
        return {k: c.get(k, 0) for k in VERDICT_ORDER}

    @property
    def summary(self) -> str:
        return summary_line(self.counts, len(self.rows))


def summary_line(counts: dict[str, int], total: int) -> str:
    """"k of N reproduced · a above · b below · c not run · f failed" (zero counts but
    reproduced left out)."""
    rest = [f"{counts[k]} {k.replace('_', ' ')}" for k in VERDICT_ORDER[1:] if counts.get(k)]
    return " · ".join([f"{counts.get(REPRODUCED, 0)} of {total} reproduced", *rest])


def build_reproduction(store: Store, views: Sequence[TableView]) -> list[ReproTable]:
    """The page's tables from the paper tables' views (not smoke), in their order."""
    rates = training_rates(store, views)
    trained = {m.name for m in store.models.values() if m.status == "done" and not m.smoke}
    out: dict[str, ReproTable] = {}
    for v, tv, row, cell, col in paper_cells([t for t in views if not t.smoke], references=True):
        rt = out.setdefault(tv.name, ReproTable(tv))
        r = ReproRow(v, tv, row, cell, col)
        by_model = {x.model: x for x in tv.rows}
        r.recipes = [(rv, f"{tv.page}#{by_model[rv.model].cells[col.index].id}")
                     for rv in v.recipes]
        if row.reference:
            r.needs = ("nothing bench can run: a value the paper quotes from elsewhere; the "
                       "suite has no model for it")
        elif v.verdict == NOT_RUN:
            r.needs = needs_text(layout_needs(store, tv.name).get(row.model), col.label,
                                 row.model in trained, rates)
        rt.rows.append(r)
    return list(out.values())


def layout_needs(store: Store, table: str) -> dict[str, dict]:
    """The table's recorded needs (row id → `bench.run.record.table_needs`' entry)."""
    rec = store.table(table)
    needs = (rec.layout or {}).get("needs") if rec is not None else None
    return needs if isinstance(needs, dict) else {}


# ============================================================================ what it needs

def _arch_key(arch: Any) -> str:
    return json.dumps(arch, sort_keys=True, default=str)


def record_passes(config: dict, dataset_size: int) -> int | None:
    """The training passes of a stored model's resolved config, counted as
    `bench.run.estimate.train_work` counts them: epochs × training examples × (1 + the
    defense config's integer `steps` and `L`); None where the config does not say."""
    try:
        train, ds = config["train"], config["dataset"]
        subset = ds.get("train_subset")
        examples = min(dataset_size, int(subset)) if subset else dataset_size
        examples = max(0, examples - int(train.get("val_size") or 0))
        dcfg = config.get("defense_config") or {}
        inner = sum(int(dcfg[k]) for k in INNER_STEP_FIELDS
                    if isinstance(dcfg.get(k), int) and not isinstance(dcfg.get(k), bool)
                    and dcfg[k] >= 0)
        return int(train["epochs"]) * examples * (1 + inner)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass
class Rate:
    """Seconds per example-pass of one architecture on one recorded device."""

    seconds_per_pass: float
    device: str
    runs: int


def training_rates(store: Store, views: Sequence[TableView]) -> dict[str, Rate]:
    """Architecture (its id as the tables record it) → seconds per pass of its earlier
    training runs (the database's and the committed baselines'), on the device with the
    most of them."""
    sizes: dict[str, int] = {}
    for tv in views:
        for nd in layout_needs(store, tv.name).values():
            if isinstance(nd, dict) and isinstance(nd.get("dataset_train_size"), int):
                sizes[str(nd.get("dataset"))] = nd["dataset_train_size"]
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in store.models.values():
        cfg = m.config if isinstance(m.config, dict) else {}
        ds = (cfg.get("dataset") or {}).get("plugin") if isinstance(cfg.get("dataset"), dict) else None
        if m.status != "done" or m.smoke or not m.train_seconds or m.train_seconds <= 0 \
                or ds not in sizes:
            continue
        passes = record_passes(cfg, sizes[ds])
        if passes:
            arch = _arch_key([cfg.get("arch"), cfg.get("arch_config") or {}, ds])
            per[(arch, m.device or "an unrecorded device")].append(m.train_seconds / passes)
    out: dict[str, Rate] = {}
    for (arch, device), xs in sorted(per.items()):
        if arch not in out or len(xs) > out[arch].runs:
            out[arch] = Rate(statistics.median(xs), device, len(xs))
    return out


def needs_text(needs: dict | None, column: str, trained: bool, rates: dict[str, Rate]) -> str:
    """One sentence: what running this cell takes (training unless done or released, then
    its evaluation), in forward/backward passes, timed where an earlier run allows."""
    if not isinstance(needs, dict):
        return ("unknown: the tables were recorded before bench counted what their cells "
                "need (`python -m bench run` records them again)")
    rate = rates.get(_arch_key(needs.get("arch")))

    def timed(passes: int) -> str:
        if rate is None:
            return ""
        return f" ≈ {human_seconds(passes * rate.seconds_per_pass)} on {rate.device}"

    parts = []
    if needs.get("checkpoint"):
        parts.append("a released checkpoint: nothing to train")
    elif trained:
        parts.append("the model is trained")
    elif isinstance(needs.get("train_passes"), int):
        parts.append(f"training {human_count(needs['train_passes'])} passes"
                     + timed(needs["train_passes"])
                     + (f" (fine-tuning {needs['init_from']}, whose training is not counted)"
                        if needs.get("init_from") else ""))
    ev = (needs.get("eval_passes") or {}).get(column)
    if isinstance(ev, dict) and isinstance(ev.get("passes"), int):
        parts.append(f"evaluation {'' if ev.get('exact') else '≥ '}"
                     f"{human_count(ev['passes'])} passes" + timed(ev["passes"]))
    else:
        parts.append("no matrix entry of the suite runs this cell")
    text = "; ".join(parts)
    if rate is None and not needs.get("checkpoint") and not trained:
        big = isinstance(needs.get("input_size"), int) and needs["input_size"] >= GPU_INPUT_SIZE
        text += ("; GPU" if big else "; CPU-feasible") + " (no earlier training of this network to time it)"
    elif rate is not None:
        text += f" (seconds per pass from {rate.runs} earlier training run(s))"
    return text
