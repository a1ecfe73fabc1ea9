"""Regression checks that CI can trust.

* `save_baseline` freezes the done results of a selection into a readable JSON file
  (per cell: key, id, resolved config, n, n_correct, accuracy, the per-sample outcomes as
  base64 of the packed bits, precision, smoke, seed, plugin versions, commit, created).
* `compare` puts the current database next to a baseline, cell by cell (matched by cell
  id). A cell is *not comparable* when its resolved config, plugin version, precision,
  number of examples or smoke/full mode differs (the verdict names the field). A change
  counts only when it is both large (≥ threshold_pp) and significant at alpha (like asv's
  factor + significance): an exact McNemar test on the per-sample outcomes when the
  examples are the same, a two-proportion z-test when outcomes are missing; a large change
  that is not significant is *changed_not_significant*.
* `check_paper` puts each paper-table cell next to the paper's value with the table's
  tolerance: reproduced / below / above / not_run (and failed).

Verdicts print as a terminal table, JUnit XML (one testcase per cell) or Markdown.
Bad input (unreadable baseline, unknown table) raises BenchError.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench import __version__
from bench.checkpoints.sources import redacted_config
from bench.db.database import ModelRecord, ResultRecord, unpack_outcomes
from bench.errors import BenchError
from bench.plugins.registry import did_you_mean
from bench.leaderboard.stats import accuracy_pct, preference
from bench.leaderboard.store import load_store
from bench.leaderboard.tables import build_table

BASELINE_FORMAT = "bench-baseline"
BASELINE_VERSION = 1
DEFAULT_BASELINE_DIR = Path("results") / "baselines"

WORSE, BETTER, UNCHANGED, NEW, MISSING, FAILED = \
    "worse", "better", "unchanged", "new", "missing", "failed"
NOT_COMPARABLE, CHANGED_NS = "not_comparable", "changed_not_significant"
VERDICTS = (WORSE, BETTER, UNCHANGED, NEW, MISSING, FAILED, NOT_COMPARABLE, CHANGED_NS)
FAILING = (WORSE, FAILED)                       # verdicts that make `check` exit with 1

REPRODUCED, BELOW, ABOVE, NOT_RUN = "reproduced", "below", "above", "not_run"
PAPER_FAILING = (BELOW, ABOVE, FAILED)          # not reproduced within the tolerance

_MARK = {WORSE: "+", BETTER: "-", UNCHANGED: " ", NEW: "n", MISSING: "?", FAILED: "!",
         NOT_COMPARABLE: "x", CHANGED_NS: "~", REPRODUCED: " ", BELOW: "v", ABOVE: "^",
         NOT_RUN: "."}


# ============================================================================ baselines

def _selected(r: ResultRecord, tags: Sequence[str] | None, filters: Sequence[str] | None) -> bool:
    """A result is selected when it has any of the tags and matches any of the globs."""
    if tags and not set(tags) & set(r.tags or []):
        return False
    if filters and not any(fnmatch.fnmatchcase(r.cell_id, g) for g in filters):
        return False
    return True


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.isoformat() + ("Z" if t.tzinfo is None else "")


def plugin_versions(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every plugin version inside a resolved config, by dotted path: keys named `version`
    or `*_version` (attack.version, model.arch_version, model.defense_version, ...) and the
    entries of any `versions` mapping."""
    out: dict[str, Any] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if k == "versions" and isinstance(v, dict):
                out.update({f"{path}.{name}": ver for name, ver in v.items()})
            elif isinstance(k, str) and (k == "version" or k.endswith("_version")) \
                    and not isinstance(v, (dict, list)):
                out[path] = v
            else:
                out.update(plugin_versions(v, path))
    return out


def _baseline_cell(r: ResultRecord) -> dict[str, Any]:
    cfg = redacted_config(r.config or {})     # also for a database written before redaction
    return {
        "cell_id": r.cell_id, "cell_key": r.cell_key,
        "model_name": r.model_name, "model_key": r.model_key, "dataset": r.dataset,
        "attack": r.attack, "attack_plugin": r.attack_plugin, "norm": r.norm,
        "eps_literal": r.eps_literal, "eps": r.eps, "split": r.split,
        "n": r.n, "n_correct": r.n_correct, "robust_acc": r.robust_acc,
        "accuracy_pct": accuracy_pct(r),
        "outcomes": base64.b64encode(r.outcomes).decode("ascii") if r.outcomes else None,
        "flags": list(r.flags or []), "tags": list(r.tags or []),
        "precision": r.precision, "smoke": bool(r.smoke), "seed": r.seed,
        "plugin_versions": plugin_versions(cfg), "versions": dict(r.versions or {}),
        "commit": r.commit, "device": r.device, "run_id": r.run_id, "seconds": r.seconds,
        "created": _iso(r.created), "config": cfg,
    }


def save_baseline(engine: Engine, name: str, *, tags: Sequence[str] | None = None,
                  filters: Sequence[str] | None = None,
                  out_dir: Path = DEFAULT_BASELINE_DIR) -> Path:
    """Freeze the done results of the selection into <out_dir>/<name>.json."""
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise BenchError(f"baseline name {name!r} must be letters, digits, '.', '_' or '-' "
                         f"(it becomes a file name)")
    with Session(engine) as s:
        results = [r for r in s.scalars(select(ResultRecord).where(ResultRecord.status == "done"))
                   if _selected(r, tags, filters)]
        keys = sorted({r.model_key for r in results})
        models = [m for m in s.scalars(select(ModelRecord).where(ModelRecord.key.in_(keys)))]
        s.expunge_all()
    if not results:
        what = []
        if tags:
            what.append("tag " + " or ".join(tags))
        if filters:
            what.append("cell ids matching " + " or ".join(filters))
        raise BenchError("no done results to save" + (" with " + " and ".join(what) if what else "")
                         + "; run `python -m bench run suite.yaml` first or widen the selection")
    results.sort(key=lambda r: (r.cell_id, r.smoke, r.n, r.cell_key))
    doc = {
        "format": BASELINE_FORMAT, "version": BASELINE_VERSION, "name": name,
        "created": _iso(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)),
        "bench_version": __version__,
        "selection": {"tags": list(tags or []), "filters": list(filters or [])},
        "provenance": {
            "commits": dict(Counter(r.commit for r in results if r.commit)),
            "devices": dict(Counter(r.device for r in results if r.device)),
            "precisions": dict(Counter(r.precision for r in results)),
            "n_examples": {str(k): v for k, v in sorted(Counter(r.n for r in results).items())},
            "smoke": sum(1 for r in results if r.smoke),
            "runs": sorted({r.run_id for r in results if r.run_id is not None}),
            "library_versions": _merged_versions(results),
            "database": _safe_url(engine),
        },
        "n_cells": len(results),
        "cells": [_baseline_cell(r) for r in results],
        "models": [_baseline_model(m) for m in models],
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


def _merged_versions(results: Iterable[ResultRecord]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for k, v in (r.versions or {}).items():
            out[str(k)].add(str(v))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _safe_url(engine: Engine) -> str:
    try:
        return engine.url.render_as_string(hide_password=True)
    except Exception:
        return ""


def _baseline_model(m) -> dict[str, Any]:
    """How a baseline cell's model was obtained (the training provenance of its numbers)."""
    return {"key": m.key, "name": m.name, "dataset": m.dataset, "arch": m.arch,
            "defense": m.defense, "config": redacted_config(m.config), "checkpoint_sha256": m.checkpoint_sha256,
            "train_seconds": m.train_seconds, "curves": m.curves, "smoke": bool(m.smoke),
            "precision": m.precision, "seed": m.seed, "device": m.device,
            "versions": dict(m.versions or {}), "created": _iso(m.created)}


def baseline_records(doc: dict) -> tuple[list[ResultRecord], list[ModelRecord]]:
    """A baseline's cells and models as (detached) database records, for the report."""
    def when(text):
        if not text:
            return None
        return dt.datetime.fromisoformat(str(text).rstrip("Z"))

    results = []
    for c in doc.get("cells") or []:
        blob = c.get("outcomes")
        results.append(ResultRecord(
            cell_key=c["cell_key"], cell_id=c["cell_id"], model_key=c.get("model_key") or "",
            model_name=c.get("model_name") or "", dataset=c.get("dataset") or "",
            attack=c.get("attack") or "", attack_plugin=c.get("attack_plugin") or "",
            norm=c.get("norm") or "", eps_literal=c.get("eps_literal") or "0",
            eps=float(c.get("eps") or 0.0), split=c.get("split") or "test", n=int(c["n"]),
            n_correct=int(c["n_correct"]), robust_acc=c.get("robust_acc"),
            outcomes=base64.b64decode(blob) if blob else None, details=None,
            flags=list(c.get("flags") or []), config=c.get("config") or {},
            tags=list(c.get("tags") or []), precision=c.get("precision") or "fp32",
            seed=int(c.get("seed") or 0), smoke=bool(c.get("smoke")),
            seconds=float(c.get("seconds") or 0.0), status="done", error=None,
            device=c.get("device") or "", versions=dict(c.get("versions") or {}),
            commit=c.get("commit") or "", run_id=None, created=when(c.get("created"))))
    models = []
    for m in doc.get("models") or []:
        models.append(ModelRecord(
            key=m["key"], name=m.get("name") or "", dataset=m.get("dataset") or "",
            arch=m.get("arch") or "", defense=m.get("defense") or "", config=m.get("config") or {},
            checkpoint_path="", checkpoint_sha256=m.get("checkpoint_sha256") or "",
            train_seconds=float(m.get("train_seconds") or 0.0), curves=m.get("curves") or {},
            status="done", smoke=bool(m.get("smoke")), precision=m.get("precision") or "fp32",
            seed=int(m.get("seed") or 0), device=m.get("device") or "",
            versions=dict(m.get("versions") or {}), run_id=None, created=when(m.get("created"))))
    return results, models


def committed_baselines(directory: str | Path = DEFAULT_BASELINE_DIR) -> list[dict]:
    """Every baseline document in `directory` (results/baselines/ by default), by name."""
    d = Path(directory)
    return [load_baseline(p) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


_REQUIRED = ("cell_id", "cell_key", "n", "n_correct", "config", "precision", "smoke")


def validate_baseline(doc: Any, source: str = "baseline") -> dict:
    """Check the structure of a baseline document; raise BenchError naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise BenchError(f"{source} is not a bench baseline (no \"format\": "
                         f"\"{BASELINE_FORMAT}\"); create one with `bench baseline save NAME`")
    if doc.get("version", 0) > BASELINE_VERSION:
        raise BenchError(f"{source} has baseline version {doc.get('version')}, newer than this "
                         f"bench ({BASELINE_VERSION}); upgrade bench")
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise BenchError(f"{source} has no list of cells")
    for i, c in enumerate(cells):
        missing = [k for k in _REQUIRED if not isinstance(c, dict) or k not in c]
        if missing:
            raise BenchError(f"{source}: cell {i + 1} lacks {', '.join(missing)}")
    return doc


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"baseline {path} does not exist; create one with "
                         f"`bench baseline save NAME`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read baseline {path}: {e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(f"baseline {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    return validate_baseline(doc, str(path))


# ============================================================================ comparison

@dataclass
class Verdict:
    cell_id: str
    verdict: str
    baseline: float | None = None       # accuracy, %
    current: float | None = None
    diff_pp: float | None = None        # current − baseline
    p_value: float | None = None
    test: str | None = None             # mcnemar / z-test
    n_baseline: int | None = None
    n_current: int | None = None
    discordant: tuple[int, int] | None = None   # (lost, gained) examples, McNemar's b and c
    field: str | None = None            # what makes the cells not comparable
    reason: str = ""
    cell_key_baseline: str | None = None
    cell_key_current: str | None = None
    smoke: bool = False

    @property
    def name(self) -> str:
        return self.cell_id + (" [smoke]" if self.smoke else "")

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING

    def as_dict(self) -> dict:
        return asdict(self)


def _diff_paths(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in a:
                out.append((p, "<absent>", b[k]))
            elif k not in b:
                out.append((p, a[k], "<absent>"))
            else:
                out += _diff_paths(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _diff_paths(x, y, f"{prefix}[{i}]")
        return out
    return [] if a == b else [(prefix or "<root>", a, b)]


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def comparability(base: dict, cur: ResultRecord) -> tuple[str, str] | None:
    """None when comparable, else (field, sentence) for the first relevant difference."""
    bcfg, ccfg = base.get("config") or {}, cur.config or {}
    if bool(base.get("smoke")) != bool(cur.smoke):
        mode = lambda s: "smoke" if s else "full"   # noqa: E731
        return "smoke", f"smoke/full differs: baseline {mode(base.get('smoke'))}, current {mode(cur.smoke)}"
    bp = base.get("precision") or bcfg.get("precision")
    cp = cur.precision or ccfg.get("precision")
    if bp != cp:
        return "precision", f"precision differs: baseline {bp}, current {cp}"
    if int(base.get("n") or 0) != int(cur.n or 0):
        return "n", f"number of examples differs: baseline n={base.get('n')}, current n={cur.n}"
    if (base.get("split") or "test") != (cur.split or "test"):
        return "split", f"split differs: baseline {base.get('split')}, current {cur.split}"
    bv, cv = plugin_versions(bcfg), plugin_versions(ccfg)
    if bv != cv:
        diffs = _diff_paths(bv, cv)
        detail = ", ".join(f"{p}: {_short(a)} → {_short(b)}" for p, a, b in diffs[:3])
        return "versions", f"plugin version differs: {detail}"
    if (base.get("seed") is not None and cur.seed is not None
            and int(base["seed"]) != int(cur.seed)):
        return "seed", f"seed differs: baseline {base['seed']}, current {cur.seed}"
    if bcfg != ccfg:
        diffs = _diff_paths(bcfg, ccfg)
        detail = ", ".join(f"{p}: {_short(a)} → {_short(b)}" for p, a, b in diffs[:3])
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        first = diffs[0][0] if diffs else "config"
        return f"config.{first}", f"resolved config differs: {detail}{more}"
    return None


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> tuple[float, int, int]:
    """Two-sided exact McNemar test: (p, b, c), b = lost (correct → wrong), c = gained."""
    b = int(np.sum(before & ~after))
    c = int(np.sum(~before & after))
    if b + c == 0:
        return 1.0, b, c
    return float(stats.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue), b, c


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2, p = k1 / n1, k2 / n2, (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    return float(2 * stats.norm.sf(abs(p2 - p1) / se))


def _base_acc(c: dict) -> float | None:
    n = int(c.get("n") or 0)
    if n > 0:
        return 100.0 * int(c.get("n_correct") or 0) / n
    if c.get("accuracy_pct") is not None:
        return float(c["accuracy_pct"])
    ra = c.get("robust_acc")
    return None if ra is None else 100.0 * ra if ra <= 1.0 else float(ra)


def _base_outcomes(c: dict) -> np.ndarray | None:
    blob = c.get("outcomes")
    if not blob:
        return None
    try:
        return unpack_outcomes(base64.b64decode(blob, validate=True), int(c["n"]))
    except (ValueError, TypeError) as e:
        raise BenchError(f"baseline cell {c.get('cell_id')}: outcomes are not valid base64 "
                         f"packed bits ({e})") from None


def _judge(base: dict, cur: ResultRecord, threshold_pp: float, alpha: float) -> Verdict:
    v = Verdict(cell_id=base["cell_id"], verdict=UNCHANGED, n_baseline=int(base["n"]),
                n_current=cur.n, cell_key_baseline=base["cell_key"], cell_key_current=cur.cell_key,
                baseline=_base_acc(base), smoke=bool(base.get("smoke")))
    if cur.status != "done":
        v.verdict, v.reason = FAILED, (cur.error or "failed (no error recorded)").strip()
        return v
    v.current = accuracy_pct(cur)
    why = comparability(base, cur)
    if why is not None:
        v.verdict, (v.field, v.reason) = NOT_COMPARABLE, why
        return v
    if v.baseline is None or v.current is None:
        v.verdict, v.field, v.reason = NOT_COMPARABLE, "robust_acc", "no accuracy recorded"
        return v
    v.diff_pp = v.current - v.baseline
    before, after = _base_outcomes(base), unpack_outcomes(cur.outcomes, cur.n)
    if before is not None and after is not None and len(before) == len(after):
        v.test = "mcnemar"
        v.p_value, b, c = mcnemar_exact(before, after)
        v.discordant = (b, c)
    else:
        v.test = "z-test"
        v.p_value = two_proportion_z(int(base["n_correct"]), int(base["n"]), cur.n_correct, cur.n)
    large = abs(v.diff_pp) >= threshold_pp - 1e-9 and v.diff_pp != 0
    significant = v.p_value < alpha
    if large and significant:
        v.verdict = WORSE if v.diff_pp < 0 else BETTER
    elif large:
        v.verdict = CHANGED_NS
    if v.test == "mcnemar":
        v.reason = (f"{v.discordant[0]} example(s) lost, {v.discordant[1]} gained; "
                    f"exact McNemar p={v.p_value:.3g}")
    else:
        v.reason = f"two-proportion z-test p={v.p_value:.3g} (per-sample outcomes missing)"
    if v.verdict == CHANGED_NS:
        v.reason += f" ≥ alpha {alpha:g}: not significant"
    elif v.verdict == UNCHANGED and significant and v.diff_pp != 0:
        v.reason += f"; below the {threshold_pp:g} pp threshold"
    lib_b, lib_c = base.get("versions") or {}, cur.versions or {}
    changed = sorted(k for k in set(lib_b) & set(lib_c) if lib_b[k] != lib_c[k])
    if changed:
        v.reason += "; library versions changed: " + ", ".join(
            f"{k} {lib_b[k]}→{lib_c[k]}" for k in changed[:4])
    return v


def _pick_current(base: dict, cands: list[ResultRecord]) -> ResultRecord:
    same = [r for r in cands if r.cell_key == base["cell_key"]]
    if same:
        return same[0]
    comparable = [r for r in cands if comparability(base, r) is None]
    if comparable:
        return max(comparable, key=preference)
    return max(cands, key=lambda r: (bool(r.smoke) == bool(base.get("smoke")),) + preference(r))


def compare(engine: Engine, baseline: dict, *, threshold_pp: float = 1.0,
            alpha: float = 0.05) -> list[Verdict]:
    """Verdicts for every baseline cell and every new current cell of the selection."""
    baseline = validate_baseline(baseline)
    if threshold_pp < 0 or not (0 < alpha < 1):
        raise BenchError(f"threshold must be ≥ 0 pp and alpha in (0, 1), got {threshold_pp} "
                         f"and {alpha}")
    sel = baseline.get("selection") or {}
    tags, filters = sel.get("tags") or None, sel.get("filters") or None
    with Session(engine) as s:
        current = list(s.scalars(select(ResultRecord)))
        s.expunge_all()
    by_id: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in current:
        by_id[r.cell_id].append(r)
    out: list[Verdict] = []
    used: set[str] = set()
    base_ids = set()
    for base in baseline["cells"]:
        base_ids.add(base["cell_id"])
        cands = [r for r in by_id.get(base["cell_id"], []) if r.cell_key not in used]
        if not cands:
            out.append(Verdict(cell_id=base["cell_id"], verdict=MISSING,
                               baseline=_base_acc(base), n_baseline=int(base["n"]),
                               cell_key_baseline=base["cell_key"], smoke=bool(base.get("smoke")),
                               reason="in the baseline, not in the database"))
            continue
        cur = _pick_current(base, cands)
        used.add(cur.cell_key)
        out.append(_judge(base, cur, threshold_pp, alpha))
    new: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in current:
        if r.cell_id not in base_ids and _selected(r, tags, filters):
            new[r.cell_id].append(r)
    for cell_id in sorted(new):
        r = max(new[cell_id], key=preference)
        v = Verdict(cell_id=cell_id, verdict=NEW, current=accuracy_pct(r), n_current=r.n,
                    cell_key_current=r.cell_key, smoke=bool(r.smoke), reason="not in the baseline")
        if r.status != "done":
            v.verdict, v.reason = FAILED, "new cell failed: " + (r.error or "no error recorded")
        out.append(v)
    return out


# ============================================================================ paper check

@dataclass
class PaperVerdict:
    table: str
    row: str
    model: str
    column: str
    attack: str
    eps: str | None
    verdict: str
    measured: float | None = None
    reported: float | None = None
    diff_pp: float | None = None
    tolerance: float = 0.0
    ci: tuple[float, float] | None = None
    n: int | None = None
    reported_in_ci: bool | None = None
    cell_id: str | None = None
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.table}: {self.row} / {self.column}"

    @property
    def failing(self) -> bool:
        return self.verdict in PAPER_FAILING

    def as_dict(self) -> dict:
        return asdict(self)


def check_paper(engine: Engine, *, tables: Sequence[str] | None = None,
                tolerance: float | None = None) -> list[PaperVerdict]:
    """Each paper-table cell with a reported value against it, within the table's tolerance."""
    if tolerance is not None and tolerance < 0:
        raise BenchError(f"tolerance must be ≥ 0 pp, got {tolerance}")
    store = load_store(engine)
    names = [t.name for t in store.tables]
    if not names:
        raise BenchError("the database has no paper tables; they are recorded by "
                         "`python -m bench run suite.yaml`")
    for t in tables or []:
        if t not in names:
            raise BenchError(f"unknown table {t!r}{did_you_mean(t, names)}; known: "
                             f"{', '.join(names)}")
    out: list[PaperVerdict] = []
    for rec in store.tables:
        if tables and rec.name not in tables:
            continue
        tv = build_table(store, rec)
        tol = tv.tolerance if tolerance is None else float(tolerance)
        for row in tv.rows:
            if row.reference:            # a published value with no model: nothing to measure
                continue
            for cell, col in zip(row.cells, tv.columns):
                if cell.reported is None:   # the paper's own values only (kind "paper")
                    continue
                v = PaperVerdict(table=tv.name, row=row.label, model=row.model,
                                 column=col.label, attack=col.attack, eps=col.eps,
                                 verdict=NOT_RUN, reported=cell.reported, tolerance=tol,
                                 n=cell.n or None,
                                 cell_id=cell.result.cell_id if cell.result else None)
                if cell.state == "failed":
                    v.verdict, v.reason = FAILED, cell.error
                elif cell.state == "done" and cell.value is not None:
                    v.measured, v.ci = cell.value, cell.ci
                    v.diff_pp = cell.value - cell.reported
                    v.reported_in_ci = (None if cell.ci is None
                                        else cell.ci[0] <= cell.reported <= cell.ci[1])
                    if abs(v.diff_pp) <= tol + 1e-9:
                        v.verdict = REPRODUCED
                    else:
                        v.verdict = BELOW if v.diff_pp < 0 else ABOVE
                    v.reason = (f"Δ {v.diff_pp:+.2f} pp, tolerance ±{tol:g} pp"
                                + ("" if v.reported_in_ci is None else
                                   "; paper value inside the 95 % interval" if v.reported_in_ci
                                   else "; paper value outside the 95 % interval"))
                else:
                    v.reason = "not run yet"
                out.append(v)
    return out


# ============================================================================ output

def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def _rows(verdicts: Sequence[Verdict | PaperVerdict]) -> tuple[list[str], list[list[str]]]:
    if verdicts and isinstance(verdicts[0], PaperVerdict):
        head = ["", "verdict", "cell", "measured", "paper", "Δ pp", "tol", "n", "note"]
        rows = [[_MARK.get(v.verdict, "?"), v.verdict, v.name, _fmt(v.measured),
                 _fmt(v.reported), _fmt(v.diff_pp, "+.2f"), _fmt(v.tolerance, "g"),
                 "" if v.n is None else str(v.n), v.reason] for v in verdicts]
    else:
        head = ["", "verdict", "cell", "baseline", "current", "Δ pp", "p", "n", "note"]
        rows = [[_MARK.get(v.verdict, "?"), v.verdict, v.name, _fmt(v.baseline),
                 _fmt(v.current), _fmt(v.diff_pp, "+.2f"), _fmt(v.p_value, ".3g"),
                 "/".join(str(x) for x in (v.n_baseline, v.n_current) if x is not None),
                 v.reason] for v in verdicts]
    return head, rows


def summary(verdicts: Sequence[Verdict | PaperVerdict]) -> str:
    counts = Counter(v.verdict for v in verdicts)
    failing = sum(1 for v in verdicts if v.failing)
    parts = ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
    status = "FAIL" if failing else "OK"
    if not failing and verdicts and isinstance(verdicts[0], PaperVerdict) \
            and not measured_count(verdicts):
        status = "NOTHING MEASURED"              # not OK: a gate that compared nothing
    return f"{status}: {len(verdicts)} cell(s): {parts or 'nothing to check'}"


_PAPER_MARKS = (REPRODUCED, BELOW, ABOVE, NOT_RUN, FAILED)
_BASELINE_MARKS = (WORSE, BETTER, UNCHANGED, CHANGED_NS, NEW, MISSING, NOT_COMPARABLE, FAILED)


def legend(verdicts: Sequence[Verdict | PaperVerdict]) -> str:
    """One line explaining the symbols of the table's first column."""
    kinds = _PAPER_MARKS if verdicts and isinstance(verdicts[0], PaperVerdict) else _BASELINE_MARKS
    marks = [f"{'(blank)' if _MARK[k] == ' ' else _MARK[k]} {k.replace('_', ' ')}" for k in kinds]
    return "legend: " + " · ".join(marks)


def measured_count(verdicts: Sequence[PaperVerdict]) -> int:
    """How many paper cells have a measured value (a gate that measured none proves nothing)."""
    return sum(1 for v in verdicts if v.measured is not None)


def format_table(verdicts: Sequence[Verdict | PaperVerdict], *, width: int = 160) -> str:
    """A plain-text table for the terminal, a legend of its first column, a summary line."""
    head, rows = _rows(verdicts)
    if not rows:
        return summary(verdicts)
    note_cap = 90
    rows = [r[:-1] + [r[-1] if len(r[-1]) <= note_cap else r[-1][:note_cap - 1] + "…"]
            for r in rows]
    rows = [[" ".join(c.split()) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    numeric = {3, 4, 5, 6, 7}
    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out + ["", legend(verdicts), summary(verdicts)])


def write_junit(verdicts: Sequence[Verdict | PaperVerdict], path: str | Path, *,
                suite: str = "bench.check") -> Path:
    """JUnit XML: one testcase per cell; worse/failed (paper: below/above/failed) are
    failures, missing/not comparable/not run are skipped."""
    path = Path(path)
    failures = sum(1 for v in verdicts if v.failing)
    skipped_kinds = (MISSING, NOT_COMPARABLE, NOT_RUN)
    skipped = sum(1 for v in verdicts if v.verdict in skipped_kinds)
    ts = ET.Element("testsuite", name=suite, tests=str(len(verdicts)), failures=str(failures),
                    errors="0", skipped=str(skipped),
                    timestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    for v in verdicts:
        classname = f"{suite}.{v.table}" if isinstance(v, PaperVerdict) else f"{suite}.baseline"
        tc = ET.SubElement(ts, "testcase", classname=classname, name=v.name, time="0")
        detail = json.dumps(v.as_dict(), default=str, sort_keys=True)
        if v.failing:
            f = ET.SubElement(tc, "failure", type=v.verdict, message=f"{v.verdict}: {v.reason}")
            f.text = detail
        elif v.verdict in skipped_kinds:
            ET.SubElement(tc, "skipped", message=f"{v.verdict}: {v.reason}")
        else:
            so = ET.SubElement(tc, "system-out")
            so.text = f"{v.verdict}: {v.reason}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(ts).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _md(s: Any) -> str:
    s = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(s.split()).replace("|", "\\|")


def write_markdown(verdicts: Sequence[Verdict | PaperVerdict], path: str | Path, *,
                   title: str = "bench check") -> Path:
    path = Path(path)
    head, rows = _rows(verdicts)
    lines = [f"### {_md(title)}", "", f"**{_md(summary(verdicts))}**", ""]
    if rows:
        lines.append("| " + " | ".join(_md(h) or " " for h in head[1:]) + " |")
        lines.append("|" + "|".join(":---" if i in (0, 1, 7) else "---:"
                                    for i in range(len(head) - 1)) + "|")
        for r, v in zip(rows, verdicts):
            cells = [_md(c) for c in r[1:]]
            if v.failing:
                cells[0] = f"**{cells[0]}**"
            lines.append("| " + " | ".join(cells) + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def exit_status(verdicts: Sequence[Verdict | PaperVerdict]) -> int:
    return 1 if any(v.failing for v in verdicts) else 0
