"""Matrix expansion, selection and grouping: Suite → [Cell] → [ModelJob].

A cell's id is readable (`mnist/smallcnn_trades/pgd40/eps=0.3`); its key is the
sha256 of its fully resolved config, so a rerun skips finished cells and any change of
a value (a step size, a plugin version, the number of examples, the seed, the
precision) makes a new cell. Cells that share a model key share one training run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field

from bench.plugins.eps import Eps
from bench.errors import SuiteError
from bench.suite.recipe import EvalConfig
from bench.suite.spec import AttackSpec, ModelSpec, Suite, stable_hash

NO_EPS = Eps(0.0, "0")


@dataclass
class Cell:
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
        return stable_hash(self.resolved())


@dataclass
class ModelJob:
    model: ModelSpec
    cells: list[Cell]

    @property
    def key(self) -> str:
        return self.model.key

    @property
    def smoke(self) -> bool:
        return any(c.smoke for c in self.cells)


def cell_id(model: ModelSpec, attack: AttackSpec, eps: Eps) -> str:
    base = f"{model.dataset.name}/{model.name}/{attack.name}"
    return base if not attack.cls.uses_eps else f"{base}/eps={eps.literal}"


def expand(suite: Suite, *, tags: list[str] | None = None, filters: list[str] | None = None,
           limit: int | None = None, seed: int | None = None) -> list[Cell]:
    """All cells the selection picks, in suite order, deduplicated."""
    tags = list(tags or [])
    unknown = [t for t in tags if t not in suite.tags and t not in {e.name for e in suite.matrix}]
    if unknown:
        from bench.plugins.registry import did_you_mean
        known = sorted(suite.tags | {e.name for e in suite.matrix})
        raise SuiteError(f"unknown tag {unknown[0]!r}{did_you_mean(unknown[0], known)}", file=suite.path)
    cells: dict[str, Cell] = {}
    for entry in suite.matrix:
        if tags and not (set(tags) & (set(entry.tags) | {entry.name})):
            continue
        triples = []
        for m in entry.models:
            for a in entry.attacks:
                eps_list = entry.eps if suite.attacks[a].cls.uses_eps else [NO_EPS]
                for e in eps_list:
                    if not any(x.matches(m, a, e) for x in entry.exclude):
                        triples.append((m, a, e))
        triples += [t for t in entry.include if t not in triples]
        for m, a, e in triples:
            model = suite.models[m]
            cell_seed = seed if seed is not None else (entry.seed if entry.seed is not None else suite.seed)
            if seed is not None:
                model = dataclasses.replace(model, seed=seed)
            ev = entry.eval
            if limit is not None:
                ev = dataclasses.replace(ev, n=min(limit, ev.n) if ev.n else limit)
            attack = suite.attacks[a]
            if not attack.cls.uses_eps:
                e = NO_EPS
            cell = Cell(cell_id(model, attack, e), model, attack, e, ev, cell_seed, entry.smoke,
                        suite.precision, suite.compile, list(entry.tags), [entry.name])
            old = cells.get(cell.id)
            if old is None:
                cells[cell.id] = cell
            elif old.key == cell.key:
                old.tags += [t for t in cell.tags if t not in old.tags]
                old.entries += [x for x in cell.entries if x not in old.entries]
            else:
                raise SuiteError(f"cell {cell.id} is declared by matrix entries {old.entries[0]!r} and "
                                 f"{entry.name!r} with different settings (eval, seed or smoke); "
                                 f"give the models or attacks distinct names", file=suite.path)
    out = list(cells.values())
    if filters:
        out = [c for c in out if any(fnmatch.fnmatchcase(c.id, f) for f in filters)]
    if not out:
        what = " and ".join(filter(None, [f"--tag {' '.join(tags)}" if tags else "",
                                          f"--filter {' '.join(filters)}" if filters else ""]))
        raise SuiteError(f"no cell matches {what or 'the suite'}", file=suite.path)
    return out


def group(cells: list[Cell]) -> list[ModelJob]:
    """Cells grouped by model key, in first-appearance order: each model trains once."""
    jobs: dict[str, ModelJob] = {}
    for c in cells:
        jobs.setdefault(c.model.key, ModelJob(c.model, [])).cells.append(c)
    return list(jobs.values())
