"""The baseline file format (`bench baseline save`, read by `check --baseline` and `report`).

* `save_baseline` freezes the done results of a selection into a readable JSON file
  (per cell: key, id, resolved config, n, n_correct, accuracy, the per-sample outcomes as
  base64 of the packed bits, precision, smoke, seed, plugin versions, commit, created).
* `load_baseline` reads one back (a bounded regular file, checked against the schema of
  `bench.leaderboard.baseline_schema`); `committed_baselines` reads every file of
  results/baselines/ and skips, with a warning, those that are not baselines;
  `baseline_records` turns a document into database records for the report.

Bad input (unreadable or malformed baseline) raises BenchError.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import os
import re
import stat
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench import __version__
from bench.atomic import atomic_write_text
from bench.checkpoints.sources import redacted_config
from bench.db.chunks import select_in
from bench.db.schema import ModelRecord, ResultRecord
from bench.errors import BenchError, one_line, printable
from bench.leaderboard.baseline_schema import (  # noqa: F401  (its names, from here too)
    BASELINE_FORMAT, BASELINE_VERSION, MAX_BYTES, validate_baseline)
from bench.protected_files import database_files, refuse_overwrite

DEFAULT_BASELINE_DIR = Path("results") / "baselines"


def in_selection(r: ResultRecord, tags: Sequence[str] | None, filters: Sequence[str] | None) -> bool:
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


def _accuracy_pct(r: ResultRecord) -> float | None:
    """A done result's robust accuracy in percent, as `report.accuracy_pct` gives it (kept
    here so that the file format does not import the report, which imports it)."""
    if r.n and r.n > 0:
        return 100.0 * r.n_correct / r.n
    if r.robust_acc is None:
        return None
    return 100.0 * r.robust_acc if r.robust_acc <= 1.0 else float(r.robust_acc)


def _baseline_cell(r: ResultRecord) -> dict[str, Any]:
    cfg = redacted_config(r.config or {})     # also for a database written before redaction
    return {
        "cell_id": r.cell_id, "cell_key": r.cell_key,
        "model_name": r.model_name, "model_key": r.model_key, "dataset": r.dataset,
        "attack": r.attack, "attack_plugin": r.attack_plugin, "norm": r.norm,
        "eps_literal": r.eps_literal, "eps": r.eps, "split": r.split,
        "n": r.n, "n_correct": r.n_correct, "robust_acc": r.robust_acc,
        "accuracy_pct": _accuracy_pct(r),
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
                   if in_selection(r, tags, filters)]
        keys = sorted({r.model_key for r in results})
        models = [row[0] for row in select_in(s, select(ModelRecord), ModelRecord.key, keys)]
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
    path = refuse_overwrite(Path(out_dir) / f"{name}.json", "baseline", database_files(engine))
    try:    # a full disk or a kill leaves the previous baseline as it was
        atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=False,
                                           ensure_ascii=False) + "\n")
    except OSError as e:
        raise BenchError(f"cannot write baseline {printable(path)}: "
                         f"{e.strerror or one_line(e)}; the previous file is unchanged") from None
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


def committed_baselines(directory: str | Path = DEFAULT_BASELINE_DIR, *,
                        warn: Callable[[str], None] | None = None) -> list[dict]:
    """Every valid baseline document in `directory` (results/baselines/ by default), by
    name. A file that is not one is named in one warning line (stderr by default) and
    skipped: a bad file in a shared folder must not stop `run` or `report`."""
    d = Path(directory)
    if not d.is_dir():
        return []
    warn = warn or (lambda line: print(line, file=sys.stderr))
    docs = []
    for p in sorted(d.glob("*.json")):
        try:
            docs.append(load_baseline(p))
        except BenchError as e:
            warn(f"warning: skipping baseline {printable(p)}: {one_line(e)}")
    return docs


def load_baseline(path: str | Path) -> dict:
    """Read and validate a baseline file: a regular file of at most MAX_BYTES of JSON."""
    path = Path(path)
    name = printable(path)
    try:    # O_NONBLOCK: a FIFO in place of the file must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BenchError(f"baseline {name} does not exist; create one with "
                         f"`bench baseline save NAME`") from None
    except OSError as e:
        raise BenchError(f"cannot read baseline {name}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise BenchError(f"cannot read baseline {name}: it is {kind}")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > MAX_BYTES:
            raise BenchError(f"baseline {name} is larger than {MAX_BYTES // 2**20} MiB "
                             f"({st.st_size} bytes); not read")
        try:
            data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise BenchError(f"cannot read baseline {name}: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise BenchError(f"baseline {name} is larger than {MAX_BYTES // 2**20} MiB; not read")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BenchError(f"cannot read baseline {name}: it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BenchError(f"baseline {name} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except (ValueError, RecursionError) as e:   # 5000-digit numbers, 100000 nested lists
        raise BenchError(f"baseline {name} cannot be read as JSON: {one_line(e)}") from None
    return validate_baseline(doc, str(path))
