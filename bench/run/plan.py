"""Matrix expansion, selection and grouping: Suite → [Cell] → [ModelJob].

A cell's id is readable (`mnist/smallcnn_trades/pgd40/eps=0.3`); its key is the
sha256 of its fully resolved config, so a rerun skips finished cells and any change of
a value (a step size, a plugin version, the number of examples, the seed, the
precision) makes a new cell. Cells that share a model key share one training run.

Planning scales to millions of cells (issue 16 §7): each spec is resolved once per
`expand` (`_KeyParts`) and a cell's key is one sha256 of those pieces' JSON text, needed
only where a key is (not to plan: ids decide duplicates); include and exclude checks are
set look-ups; the cells of one matrix entry share their eval config, re-seeded model,
tags and entries lists.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gc
from hashlib import sha256
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.plugins.eps import Eps
from bench.errors import SuiteError
from bench.suite.recipe import EvalConfig
from bench.suite.spec import AttackSpec, MatrixEntry, ModelSpec, Suite, stable_hash

NO_EPS = Eps(0.0, "0")


def _dumps(obj: Any) -> str:
    """JSON text exactly as `stable_hash` writes it (same arguments), for one part of a config."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


class _KeyParts:
    """The JSON text of each spec, eval config and constant the cells of one plan share,
    made once per object. A cell's key is then one sha256 of a few joined strings: the
    same bytes `stable_hash(cell.resolved())` hashes (the keys of `Cell.resolved` in
    sorted order, each value as `_dumps` writes it), without resolving the model (plugin
    look-ups, config conversions) again for every cell, as it did 3-5 times before.

    Memoised by object identity, each entry keeping its object alive (an id is never
    reused). Specs are not changed after `load_suite` (nothing in bench does; a changed
    copy, as `--seed` makes with `dataclasses.replace`, is a new object with its own text)."""

    def __init__(self) -> None:
        self._models: dict[int, tuple[ModelSpec, tuple[str, str, str]]] = {}
        self._texts: dict[int, tuple[Any, str]] = {}        # attacks, ε, eval configs
        self._consts: dict[tuple, tuple[str, str]] = {}

    def model(self, spec: ModelSpec) -> tuple[str, str, str]:
        """(JSON of spec.resolved(), spec.key, the `"model":…,"model_key":…` part of a cell)."""
        hit = self._models.get(id(spec))
        if hit is None:
            text = _dumps(spec.resolved())
            key = sha256(text.encode()).hexdigest()
            hit = self._models[id(spec)] = (spec, (text, key, f'"model":{text},"model_key":{_dumps(key)}'))
        return hit[1]

    def _text(self, obj: Any, make: Callable[[Any], Any]) -> str:
        hit = self._texts.get(id(obj))
        if hit is None:
            hit = self._texts[id(obj)] = (obj, _dumps(make(obj)))
        return hit[1]

    def _frame(self, c: "Cell") -> tuple[str, str]:
        """The text of `c`'s resolved config before its ε's and after it: the keys in
        sorted order are attack, compile, eps, eval, model, model_key, precision, seed, smoke."""
        # with the types: True == 1 would otherwise share an entry and its text
        consts = (c.compile, type(c.compile), c.precision, type(c.precision), c.seed, type(c.seed),
                  c.smoke, type(c.smoke))
        tail = self._consts.get(consts)
        if tail is None:
            tail = self._consts[consts] = (_dumps(c.compile),
                                           f'"precision":{_dumps(c.precision)},"seed":{_dumps(c.seed)},'
                                           f'"smoke":{_dumps(c.smoke)}}}')
        attack = self._text(c.attack, AttackSpec.resolved)
        ev = self._text(c.eval, lambda v: {"split": v.split, "n": v.n})
        return (f'{{"attack":{attack},"compile":{tail[0]},"eps":',
                f',"eval":{ev},{self.model(c.model)[2]},{tail[1]}')

    def _eps(self, e: Eps) -> str:
        return self._text(e, lambda e: {"literal": e.literal, "value": e.value})

    def cell_key(self, c: "Cell") -> str:
        """sha256 of `_dumps(c.resolved())`."""
        head, tail = self._frame(c)
        return sha256(f"{head}{self._eps(c.eps)}{tail}".encode()).hexdigest()

    def cell_keys(self, cells: list["Cell"]) -> list[str]:
        """`cell_key` of each cell, the frame made again only when a cell's attack, eval,
        model or constants are other objects than the previous cell's (in a plan the ε
        varies fastest): about twice as fast as one `cell_key` per cell."""
        out: list[str] = []
        last = head = tail = None
        texts = self._texts
        for c in cells:
            if c._parts is not self:
                out.append(c.key)
                continue
            if (last is None or c.attack is not last.attack or c.eval is not last.eval
                    or c.model is not last.model or c.compile is not last.compile
                    or c.precision is not last.precision or c.seed is not last.seed
                    or c.smoke is not last.smoke):
                head, tail = self._frame(c)
                last = c
            eps = texts.get(id(c.eps))
            eps = self._eps(c.eps) if eps is None else eps[1]
            out.append(sha256(f"{head}{eps}{tail}".encode()).hexdigest())
        return out


@dataclass(slots=True)
class Cell:
    """One evaluation: a model, an attack, an ε. `tags` and `entries` may be shared by the
    cells of one matrix entry: replace them, do not change them in place."""

    id: str
    model: ModelSpec
    attack: AttackSpec
    eps: Eps
    eval: EvalConfig
    seed: int
    smoke: bool
    precision: str
    compile: bool = False
    tags: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    _parts: _KeyParts | None = field(default=None, repr=False, compare=False)   # set by expand

    def resolved(self) -> dict:
        return {
            "model": self.model.resolved(), "model_key": self.model.key,
            "attack": self.attack.resolved(),
            "eps": {"literal": self.eps.literal, "value": self.eps.value},
            "eval": {"split": self.eval.split, "n": self.eval.n},
            "seed": self.seed, "smoke": self.smoke, "precision": self.precision,
            "compile": self.compile,
        }

    @property
    def key(self) -> str:
        """sha256 of `resolved()`; from the plan's shared parts when it has them (a few µs).
        Not stored: a cell changed by assignment has the key of its new config."""
        parts = self._parts
        return stable_hash(self.resolved()) if parts is None else parts.cell_key(self)

    @property
    def model_key(self) -> str:
        """`self.model.key`, resolved once per plan rather than once per cell."""
        parts = self._parts
        if parts is None:
            return self.model.key
        hit = parts._models.get(id(self.model))
        return (parts.model(self.model) if hit is None else hit[1])[1]


@dataclass
class ModelJob:
    model: ModelSpec
    cells: list[Cell]

    @property
    def key(self) -> str:
        return self.cells[0].model_key if self.cells else self.model.key

    @property
    def smoke(self) -> bool:
        return any(c.smoke for c in self.cells)


def _cell_base(model: ModelSpec, attack: AttackSpec) -> str:
    return f"{model.dataset.name}/{model.name}/{attack.name}"


def cell_id(model: ModelSpec, attack: AttackSpec, eps: Eps) -> str:
    base = _cell_base(model, attack)
    return base if not attack.cls.uses_eps else f"{base}/eps={eps.literal}"


class _Excluded:
    """An entry's `exclude:` as sets, one per shape of match (which of model, attack, ε it
    names): whether a triple is excluded costs at most 7 set look-ups, whatever the number
    of excludes. Same test as `Match.matches` (ε compared by value)."""

    def __init__(self, matches: list) -> None:
        self.by_shape: dict[tuple[bool, bool, bool], set] = {}
        for x in matches:
            shape = (x.model is not None, x.attack is not None, x.eps is not None)
            self.by_shape.setdefault(shape, set()).add(
                (x.model, x.attack, x.eps.value if x.eps is not None else None))

    def __call__(self, m: str, a: str, e: Eps) -> bool:
        return any((m if sm else None, a if sa else None, e.value if se else None) in keys
                   for (sm, sa, se), keys in self.by_shape.items())


def _triples(entry: MatrixEntry, uses_eps: dict[str, bool]):
    """The entry's (model, attack, [ε…]) in order: the cross product less the excludes,
    then each include not already in it (a membership test by construction, not a search
    of the cells so far: linear in the number of includes)."""
    excluded = _Excluded(entry.exclude)
    no_eps = [NO_EPS]
    for m in entry.models:
        for a in entry.attacks:
            eps = entry.eps if uses_eps[a] else no_eps
            yield m, a, eps if not excluded.by_shape else [e for e in eps if not excluded(m, a, e)]
    models, attacks, eps_set = set(entry.models), set(entry.attacks), set(entry.eps)
    for m, a, e in entry.include:
        crossed = m in models and a in attacks and (e in eps_set if uses_eps[a] else e == NO_EPS)
        if not crossed or excluded(m, a, e):
            yield m, a, [e]


def expand(suite: Suite, *, tags: list[str] | None = None, filters: list[str] | None = None,
           limit: int | None = None, seed: int | None = None) -> list[Cell]:
    """All cells the selection picks, in suite order, deduplicated."""
    # The cyclic garbage collector would walk the growing set of cells again and again
    # (half the time of 10⁶ cells); what is made here holds no cycle to collect.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _expand(suite, tags=tags, filters=filters, limit=limit, seed=seed)
    finally:
        if enabled:
            gc.enable()


def _expand(suite: Suite, *, tags: list[str] | None, filters: list[str] | None,
            limit: int | None, seed: int | None) -> list[Cell]:
    tags = list(tags or [])
    unknown = [t for t in tags if t not in suite.tags and t not in {e.name for e in suite.matrix}]
    if unknown:
        from bench.plugins.registry import did_you_mean
        known = sorted(suite.tags | {e.name for e in suite.matrix})
        raise SuiteError(f"unknown tag {unknown[0]!r}{did_you_mean(unknown[0], known)}", file=suite.path)
    parts = _KeyParts()
    cells: dict[str, Cell] = {}
    models: dict[str, ModelSpec] = {}           # --seed: one re-seeded copy of each model
    uses_eps = {a: spec.cls.uses_eps for a, spec in suite.attacks.items()}
    precision, compile_ = suite.precision, suite.compile
    for entry in suite.matrix:
        if tags and not (set(tags) & (set(entry.tags) | {entry.name})):
            continue
        cell_seed = seed if seed is not None else (entry.seed if entry.seed is not None else suite.seed)
        ev, smoke = entry.eval, entry.smoke
        if limit is not None:
            ev = dataclasses.replace(ev, n=min(limit, ev.n) if ev.n else limit)
        entry_tags, entry_names = list(entry.tags), [entry.name]    # shared by the entry's cells
        for m, a, eps in _triples(entry, uses_eps):
            model = models.get(m)
            if model is None:
                model = models[m] = (suite.models[m] if seed is None
                                     else dataclasses.replace(suite.models[m], seed=seed))
            attack = suite.attacks[a]
            base = _cell_base(model, attack)
            with_eps = uses_eps[a]
            for e in eps:
                cid = f"{base}/eps={e.literal}" if with_eps else base
                cell = Cell(cid, model, attack, e if with_eps else NO_EPS, ev, cell_seed, smoke,
                            precision, compile_, entry_tags, entry_names, parts)
                old = cells.get(cid)
                if old is None:
                    cells[cid] = cell
                elif old.key == cell.key:
                    _merge_into(old, cell)
                else:
                    raise SuiteError(f"cell {cid} is declared by matrix entries {old.entries[0]!r} and "
                                     f"{entry.name!r} with different settings (eval, seed or smoke); "
                                     f"give the models or attacks distinct names", file=suite.path)
    out = list(cells.values())
    del cells
    if filters:
        globs = [re.compile(fnmatch.translate(f)).match for f in filters]   # as fnmatchcase
        out = [c for c in out if any(g(c.id) for g in globs)]
    if not out:
        what = " and ".join(filter(None, [f"--tag {' '.join(tags)}" if tags else "",
                                          f"--filter {' '.join(filters)}" if filters else ""]))
        raise SuiteError(f"no cell matches {what or 'the suite'}", file=suite.path)
    return out


def _merge_into(old: Cell, new: Cell) -> None:
    """The same cell declared again: add the tags and entry names (new lists: the old ones
    may be shared with other cells of their entry)."""
    more_tags = [t for t in new.tags if t not in old.tags]
    more_entries = [x for x in new.entries if x not in old.entries]
    if more_tags:
        old.tags = old.tags + more_tags
    if more_entries:
        old.entries = old.entries + more_entries


def group(cells: list[Cell]) -> list[ModelJob]:
    """Cells grouped by model key, in first-appearance order: each model trains once."""
    jobs: dict[str, ModelJob] = {}
    of_spec: dict[int, ModelJob] = {}     # cells share spec objects: a key per spec, not per cell
    for c in cells:
        job = of_spec.get(id(c.model))
        if job is None:
            key = c.model_key
            job = jobs.get(key)
            if job is None:
                job = jobs[key] = ModelJob(c.model, [])
            of_spec[id(c.model)] = job
        job.cells.append(c)
    return list(jobs.values())


def model_keys(cells: list[Cell]) -> list[str]:
    """The distinct model keys of `cells`, in first-appearance order (a key per spec object)."""
    specs = {id(c.model): c for c in cells}
    return list(dict.fromkeys(c.model_key for c in specs.values()))


def cell_keys(cells: list[Cell]) -> list[str]:
    """`[c.key for c in cells]`, faster for cells that one `expand` made (one frame of
    text per run of cells that differ only in ε)."""
    parts = cells[0]._parts if cells else None
    return parts.cell_keys(cells) if parts is not None else [c.key for c in cells]
