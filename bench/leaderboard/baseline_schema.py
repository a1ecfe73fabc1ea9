"""The schema of a baseline document (`bench.leaderboard.baseline`), checked on every load:
version, types, required keys, 0 ≤ n_correct ≤ n, per-sample outcomes that match n and
n_correct, finite numbers, bounded sizes. A file that breaks it is refused with one
sentence naming the file and the JSON path ($.cells[3].n_correct), never compared or
rendered: whatever a baseline holds, `check` and `report` end in a verdict or that sentence.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from typing import Any

import numpy as np

from bench.errors import BenchError, printable

BASELINE_FORMAT = "bench-baseline"
BASELINE_VERSION = 1
MAX_BYTES = 64 * 2**20          # a baseline of the whole suite is a few MiB
MAX_CELLS = 100_000             # cells, and models, per file
MAX_DEPTH = 64                  # nesting of any value (a resolved config is ~6 deep)
MAX_N = 2**31 - 1               # examples per cell
_REQUIRED = ("cell_id", "cell_key", "n", "n_correct", "config", "precision", "smoke")
_CELL_TEXT = ("model_key", "model_name", "dataset", "attack", "attack_plugin", "norm",
              "eps_literal", "split", "commit", "device")
_MODEL_TEXT = ("name", "dataset", "arch", "defense", "checkpoint_sha256", "precision", "device")


class _Bad(Exception):
    """One schema violation at a JSON path ($.cells[3].n_correct)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path} {problem}")


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return f"{len(v)} entries"
    if isinstance(v, str):
        return json.dumps(v[:40] + ("…" if len(v) > 40 else ""), ensure_ascii=False)
    return json.dumps(v)[:40]


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), "a number")


def _at(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", key)
    return f"{path}.{key}" if plain else f"{path}[{_show(key)}]"


def _walk(doc: Any) -> None:
    """Every value of the document: nested at most MAX_DEPTH deep, numbers finite."""
    stack = [(doc, "$", 0)]
    while stack:
        v, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Bad(path, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(v, float) and not math.isfinite(v):
            raise _Bad(path, f"is {v}, not a finite number")
        if isinstance(v, dict):
            stack += [(x, _at(path, k), depth + 1) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(x, _at(path, i), depth + 1) for i, x in enumerate(v)]


def _typed(d: dict, key: str, path: str, types: tuple, what: str, *, optional: bool = True):
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise _Bad(_at(path, key), f"must be {what}, not {_kind(v)} ({_show(v)})")
    return v


def _text(d, key, path, optional=True):
    v = _typed(d, key, path, (str,), "a string", optional=optional)
    if not optional and not v:
        raise _Bad(_at(path, key), "must be a non-empty string")
    return v


def _whole(d, key, path, lo, hi, optional=True):
    v = _typed(d, key, path, (int,), "a whole number", optional=optional)
    if v is not None and not lo <= v <= hi:
        raise _Bad(_at(path, key), f"is {_show(v)}, outside {lo}..{hi}")
    return v


def _number(d, key, path, lo=-math.inf, hi=math.inf):
    v = _typed(d, key, path, (int, float), "a number")
    try:        # an integer of 400 digits is no float (the report converts)
        ok = v is None or lo <= float(v) <= hi
    except OverflowError:
        ok = False
    if not ok:
        raise _Bad(_at(path, key), f"is {_show(v)}, outside {lo:g}..{hi:g}")
    return v


def _strings(d, key, path):
    for i, x in enumerate(_typed(d, key, path, (list,), "a list of strings") or []):
        if not isinstance(x, str):
            raise _Bad(_at(_at(path, key), i), f"must be a string, not {_kind(x)}")


def _flat(d, key, path):
    """A mapping of names to plain values (library versions)."""
    for k, x in (_typed(d, key, path, (dict,), "an object") or {}).items():
        if isinstance(x, (dict, list)):
            raise _Bad(_at(_at(path, key), k), f"must be a plain value, not {_kind(x)}")


def _when(d, key, path):
    v = _text(d, key, path)
    try:
        t = None if v is None else dt.datetime.fromisoformat(v.rstrip("Z"))
    except ValueError:
        raise _Bad(_at(path, key), f"is {_show(v)}, not an ISO date and time") from None
    if t is not None and t.tzinfo is not None:
        raise _Bad(_at(path, key), f"is {_show(v)}: UTC with a Z, not an offset")


def _outcomes(c: dict, path: str, n: int, k: int) -> None:
    """The per-sample outcomes: base64 of n packed bits (zero padding), k of them set."""
    blob = _text(c, "outcomes", path)
    if not blob:
        return
    where = _at(path, "outcomes")
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise _Bad(where, "is not base64") from None
    if len(raw) != (n + 7) // 8:
        raise _Bad(where, f"holds {len(raw) * 8} bits; n={n} needs {(n + 7) // 8} bytes")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[n:].any():
        raise _Bad(where, f"has bits set beyond the n={n} examples")
    if int(bits.sum()) != k:
        raise _Bad(where, f"marks {int(bits.sum())} examples correct, but n_correct is {k}")


def _check_cell(c: Any, path: str) -> None:
    if not isinstance(c, dict):
        raise _Bad(path, f"must be an object, not {_kind(c)}")
    missing = [k for k in _REQUIRED if k not in c]
    if missing:
        raise _Bad(path, f"lacks {', '.join(missing)}")
    _text(c, "cell_id", path, optional=False)
    _text(c, "cell_key", path, optional=False)
    n = _whole(c, "n", path, 0, MAX_N, optional=False)
    k = _whole(c, "n_correct", path, 0, MAX_N, optional=False)
    if k > n:
        raise _Bad(_at(path, "n_correct"), f"is {k}, more than n ({n})")
    _typed(c, "config", path, (dict,), "an object", optional=False)
    _text(c, "precision", path, optional=False)
    _typed(c, "smoke", path, (bool,), "true or false", optional=False)
    for key in _CELL_TEXT:
        _text(c, key, path)
    _number(c, "eps", path)
    _number(c, "seconds", path, 0)
    _whole(c, "seed", path, -2**63, 2**64)
    _whole(c, "run_id", path, -2**63, 2**63)
    for key, scale in (("robust_acc", 1.0), ("accuracy_pct", 100.0)):
        v = _number(c, key, path, 0, scale)
        if v is not None and n > 0 and abs(v - scale * k / n) > 1e-6 * scale:
            raise _Bad(_at(path, key), f"is {v}, but n_correct/n is {scale * k / n:g}")
    _strings(c, "flags", path)
    _strings(c, "tags", path)
    _typed(c, "plugin_versions", path, (dict,), "an object")
    _flat(c, "versions", path)
    _when(c, "created", path)
    _outcomes(c, path, n, k)


def _check_model(m: Any, path: str) -> None:
    if not isinstance(m, dict):
        raise _Bad(path, f"must be an object, not {_kind(m)}")
    _text(m, "key", path, optional=False)
    for key in _MODEL_TEXT:
        _text(m, key, path)
    _typed(m, "config", path, (dict,), "an object")
    _number(m, "train_seconds", path, 0)
    _typed(m, "smoke", path, (bool,), "true or false")
    _whole(m, "seed", path, -2**63, 2**64)
    _flat(m, "versions", path)
    _when(m, "created", path)
    for name, v in (_typed(m, "curves", path, (dict,), "an object") or {}).items():
        # the report plots lists of numbers; anything else it could not draw
        if isinstance(v, dict) or isinstance(v, list) and any(
                x is not None and (isinstance(x, (bool, str, list, dict))) for x in v):
            raise _Bad(_at(_at(path, "curves"), name), "must be a number or a list of numbers")


def _check_document(doc: dict) -> None:
    version = doc.get("version")
    if type(version) is int and version > BASELINE_VERSION:
        raise _Bad("$.version", f"is {_show(version)}, newer than this bench reads "
                                f"({BASELINE_VERSION}); upgrade bench")
    if type(version) is not int or version != BASELINE_VERSION:
        raise _Bad("$.version", f"is {_show(version)}, not {BASELINE_VERSION}")
    _walk(doc)
    for key in ("name", "created", "bench_version"):
        _text(doc, key, "$")
    sel = _typed(doc, "selection", "$", (dict,), "an object") or {}
    _strings(sel, "tags", "$.selection")
    _strings(sel, "filters", "$.selection")
    _typed(doc, "provenance", "$", (dict,), "an object")
    cells = _typed(doc, "cells", "$", (list,), "a list of cells", optional=False)
    models = _typed(doc, "models", "$", (list,), "a list of models") or []
    for key, items in (("cells", cells), ("models", models)):
        if len(items) > MAX_CELLS:
            raise _Bad(f"$.{key}", f"holds {len(items)} entries, more than {MAX_CELLS}")
    if _whole(doc, "n_cells", "$", 0, MAX_CELLS) not in (None, len(cells)):
        raise _Bad("$.n_cells", f"is {doc['n_cells']}, but $.cells holds {len(cells)}")
    seen: set[str] = set()
    for i, c in enumerate(cells):
        _check_cell(c, f"$.cells[{i}]")
        if c["cell_key"] in seen:
            raise _Bad(f"$.cells[{i}].cell_key", f"repeats {_show(c['cell_key'])}")
        seen.add(c["cell_key"])
    for i, m in enumerate(models):
        _check_model(m, f"$.models[{i}]")


def validate_baseline(doc: Any, source: str = "the baseline") -> dict:
    """Check a baseline document against its schema (version, types, required keys,
    0 ≤ n_correct ≤ n, outcomes that match n and n_correct, finite numbers, bounded
    sizes); raise BenchError, one sentence naming `source` and the JSON path."""
    source = printable(source)
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise BenchError(f"{source} is not a bench baseline (no \"format\": "
                         f"\"{BASELINE_FORMAT}\"); create one with `bench baseline save NAME`")
    try:
        _check_document(doc)
    except _Bad as e:
        raise BenchError(printable(f"{source}: {e}")) from None
    return doc
