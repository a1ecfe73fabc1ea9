"""What a run would cost, for `bench run --dry-run`: the work of each model and cell in
forward/backward passes, and a time for it on the chosen device.

Work, read generically from the resolved configs (no plugin is named):

* training a model: epochs × training examples × (1 + inner steps), where the inner
  steps are the defense config's integer `steps` and `L` fields (an adversarial or SGLD
  inner loop runs one forward/backward pass per step and example);
* evaluating a cell: n × (1 + steps × restarts × binary_search_steps) for an attack whose
  config has `steps`; one pass per example otherwise (then the count is a lower bound).

Seconds per example-pass come from earlier runs in the database (a model of the same
architecture and dataset trained on the same device: train_seconds over its passes) or,
when there is none, from a short calibration: a few forward/backward passes of the
architecture on the device. A model is GPU-sized when one forward pass of one example
takes ≥ `GPU_SIZED_MACS` multiply-accumulates (convolution and linear layers, counted
with hooks): the parameter count weighted by the input size each weight is applied to.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.db.schema import ModelRecord
from bench.run.plan import Cell, ModelJob
from bench.plugins.registry import DATASETS
from bench.suite.spec import ModelSpec

# ResNet-20 on CIFAR-10 takes 41 M multiply-accumulates per image, WRN-34-10 6.3 G, the
# MNIST CNNs of Tables 1-2 (SmallCNN, LeNet5Madry) 10-14 M: adversarial training of the
# former for the paper's epochs is days of a CPU, of the latter hours.
GPU_SIZED_MACS = 20e6
CALIBRATION_SECONDS = 0.5        # per architecture: time at least this long (after a warm-up)
CALIBRATION_MACS_PER_BATCH = 2e9  # a batch small enough to calibrate a WRN on a CPU quickly
INNER_STEP_FIELDS = ("steps", "L")


def _int_fields(config: Any, names: Iterable[str]) -> dict[str, int]:
    from bench.plugins.config import config_dict
    cfg = config_dict(config) if config is not None else {}
    if not isinstance(cfg, dict):
        return {}
    return {k: int(cfg[k]) for k in names
            if isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool) and cfg[k] >= 0}


def inner_steps(defense_config: Any) -> int:
    """Inner forward/backward passes per example and training step: the config's `steps` + `L`."""
    return sum(_int_fields(defense_config, INNER_STEP_FIELDS).values())


def train_examples(dataset_plugin: str, train_subset: int | None, val_size: int) -> int:
    plugin = DATASETS.get(dataset_plugin)()
    n = sum(p.n for p in plugin.splits.get("train", ()))
    if train_subset:
        n = min(n, train_subset)
    return max(0, n - (val_size or 0))


@dataclass
class TrainWork:
    epochs: int
    examples: int
    inner: int

    @property
    def passes(self) -> int:
        return self.epochs * self.examples * (1 + self.inner)


def train_work(spec: ModelSpec) -> TrainWork:
    return TrainWork(spec.train.epochs,
                     train_examples(spec.dataset.plugin, spec.dataset.train_subset,
                                    spec.train.val_size),
                     inner_steps(spec.defense_config))


def _record_work(config: dict) -> TrainWork | None:
    """The training work of a stored model (its resolved config), or None if unreadable."""
    try:
        ds, train = config["dataset"], config["train"]
        return TrainWork(int(train["epochs"]),
                         train_examples(ds["plugin"], ds.get("train_subset"),
                                        int(train.get("val_size") or 0)),
                         inner_steps(config.get("defense_config") or {}))
    except Exception:
        return None


@dataclass
class EvalWork:
    n: int
    per_example: int
    exact: bool                 # False: the attack's config names no steps (a lower bound)

    @property
    def passes(self) -> int:
        return self.n * self.per_example


def eval_work(cell: Cell) -> EvalWork:
    n = cell.eval.n
    if not n:
        plugin = DATASETS.get(cell.model.dataset.plugin)()
        n = sum(p.n for p in plugin.splits.get(cell.eval.split, ()))
    f = _int_fields(cell.attack.config, ("steps", "restarts", "binary_search_steps"))
    if "steps" not in f:
        return EvalWork(n, 1, exact=not cell.attack.cls.uses_eps)
    per = 1 + f["steps"] * max(1, f.get("restarts", 1)) * max(1, f.get("binary_search_steps", 1))
    return EvalWork(n, per, exact=True)


# ------------------------------------------------------------------------- model size

def forward_macs(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one example (conv and linear layers)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.modules.conv._ConvNd):
            k = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, torch.nn.Linear):
            total += out.numel() * mod.in_features
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return total


@dataclass
class ArchCost:
    """Seconds per example-pass (forward + backward) of one architecture on one device."""

    label: str
    macs: int
    params: int
    seconds_per_pass: float | None = None
    source: str = ""

    @property
    def gpu_sized(self) -> bool:
        return self.macs >= GPU_SIZED_MACS


def _arch_id(spec: ModelSpec) -> str:
    from bench.plugins.config import config_dict
    return json.dumps([spec.arch, config_dict(spec.arch_config), spec.dataset.plugin],
                      sort_keys=True, default=str)


def calibrate(model: torch.nn.Module, shape: tuple[int, int, int], num_classes: int,
              device: str, batch: int) -> float:
    """Seconds per example of a forward/backward pass, timed on the device."""
    model = model.to(device).train()
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    step()                                   # warm-up: allocations, kernel choice
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or (time.perf_counter() - t0 < CALIBRATION_SECONDS and reps < 50):
        step()
        reps += 1
    return (time.perf_counter() - t0) / (reps * batch)


def _history(engine: Engine | None, device_desc: str) -> dict[str, list[float]]:
    """Seconds per pass of models trained earlier on this device, by architecture id."""
    out: dict[str, list[float]] = {}
    if engine is None:
        return out
    with Session(engine) as s:
        recs = list(s.scalars(select(ModelRecord).where(ModelRecord.status == "done")))
    for r in recs:
        cfg = r.config or {}
        if r.device != device_desc or not r.train_seconds or r.train_seconds <= 0:
            continue
        work = _record_work(cfg)
        if work is None or work.passes <= 0:
            continue
        key = json.dumps([cfg.get("arch"), cfg.get("arch_config") or {},
                          (cfg.get("dataset") or {}).get("plugin")], sort_keys=True, default=str)
        out.setdefault(key, []).append(r.train_seconds / work.passes)
    return out


def arch_costs(specs: Iterable[ModelSpec], device: str, device_desc: str,
               engine: Engine | None) -> dict[str, ArchCost]:
    """One ArchCost per distinct (architecture, its config, dataset) of `specs`."""
    history = _history(engine, device_desc)
    out: dict[str, ArchCost] = {}
    # the cells of a plan share their spec objects: each distinct one once
    for spec in {id(s): s for s in specs}.values():
        key = _arch_id(spec)
        if key in out:
            continue
        info = DATASETS.get(spec.dataset.plugin).info
        model = spec.build()
        macs = forward_macs(model, info.shape)
        cost = ArchCost(f"{spec.arch} on {spec.dataset.plugin}", macs,
                        sum(p.numel() for p in model.parameters()))
        past = history.get(key)
        if past:
            cost.seconds_per_pass = statistics.median(past)
            cost.source = f"{len(past)} earlier training run(s) in the database"
        else:
            batch = int(max(1, min(spec.train.batch_size, CALIBRATION_MACS_PER_BATCH // max(1, macs))))
            cost.seconds_per_pass = calibrate(model, info.shape, info.num_classes, device, batch)
            cost.source = f"calibrated: forward/backward passes of batch {batch}"
        out[key] = cost
        del model
    return out


@dataclass
class EvalGroup:
    """The cells of one (attack, eval config, model): one work, one cost, `n` cells."""

    work: EvalWork
    cost: ArchCost
    n: int = 0


@dataclass
class Estimate:
    """What a run would cost. The cells to evaluate are kept with their group (shared:
    no object per cell, so 10⁶ cells cost two lists of references)."""

    train: list[tuple[ModelJob, TrainWork, ArchCost]] = field(default_factory=list)
    eval_cells: list[Cell] = field(default_factory=list)
    eval_groups: list[EvalGroup] = field(default_factory=list)     # parallel to eval_cells
    groups: list[EvalGroup] = field(default_factory=list)          # the distinct ones

    @property
    def evals(self) -> Iterator[tuple[Cell, EvalWork, ArchCost]]:
        """(cell, its work, its architecture's cost) of each cell to evaluate, in order."""
        return ((c, g.work, g.cost) for c, g in zip(self.eval_cells, self.eval_groups))

    @property
    def train_passes(self) -> int:
        return sum(w.passes for _, w, _ in self.train)

    @property
    def eval_passes(self) -> int:
        return sum(g.work.passes * g.n for g in self.groups)

    @property
    def train_seconds(self) -> float:
        return sum(w.passes * (c.seconds_per_pass or 0.0) for _, w, c in self.train)

    @property
    def eval_seconds(self) -> float:
        return sum(g.work.passes * g.n * (g.cost.seconds_per_pass or 0.0) for g in self.groups)

    @property
    def eval_exact(self) -> bool:
        return all(g.work.exact for g in self.groups)


def estimate(to_train: list[ModelJob], cells: list[Cell], device: str, device_desc: str,
             engine: Engine | None) -> tuple[Estimate, dict[str, ArchCost]]:
    """The work and time of training `to_train` and evaluating `cells`. The work of a cell
    depends on its attack, eval config and dataset only, its cost on its model's
    architecture: each is worked out once per distinct object, the cells grouped by
    (attack, eval, model) objects (10⁶ cells of a plan share ~10⁴ such groups)."""
    specs = [j.model for j in to_train] + [c.model for c in cells]
    costs = arch_costs(specs, device, device_desc, engine)
    del specs
    arch_of: dict[int, ArchCost] = {}
    works: dict[tuple[int, int, str], EvalWork] = {}
    groups: dict[tuple[int, int, int], EvalGroup] = {}

    def cost(spec: ModelSpec) -> ArchCost:
        c = arch_of.get(id(spec))
        if c is None:
            c = arch_of[id(spec)] = costs[_arch_id(spec)]
        return c

    est = Estimate(eval_cells=list(cells))
    for j in to_train:
        est.train.append((j, train_work(j.model), cost(j.model)))
    of_cell = est.eval_groups
    for c in cells:              # the cells keep the objects whose ids key these memos alive
        k = (id(c.attack), id(c.eval), id(c.model))
        g = groups.get(k)
        if g is None:
            wk = (id(c.attack), id(c.eval), c.model.dataset.plugin)
            w = works.get(wk)
            if w is None:
                w = works[wk] = eval_work(c)
            g = groups[k] = EvalGroup(w, cost(c.model))
        g.n += 1
        of_cell.append(g)
    est.groups = list(groups.values())
    return est, costs
