"""The evaluation loop: a trained model and its pending cells → per-sample outcomes.

Each result also stores, per sample, whether the model's softmax saturates on the clean
input (`bench.run.sanity.softmax_saturation`: one more forward pass a batch), from which the
"softmax_saturated" flag and the leaderboard's saturation share are read.

Cells of one model that share an attack and an evaluation set form one sweep: a
minimisation attack (or one that ignores ε) runs once per batch for all ε; a fixed-ε
attack runs once per ε. Random draws are seeded per (cell seed, batch, ε literal), so a
cell's outcome does not depend on which other cells run beside it.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from bench.data.read import DeviceData
from bench.data.fetch import load_or_fetch
from bench.run.plan import Cell
from bench.plugins.perturb import frozen_parameters
from bench.run.precision import eval_batch_size
from bench.run.sanity import SATURATION_DETAIL, softmax_saturation
from bench.run.settings import RunSettings


@dataclass
class CellOutcome:
    cell: Cell
    outcomes: np.ndarray | None = None          # per-sample bool: still correct
    details: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def _batch_seed(seed: int, batch: int, tag: str = "") -> int:
    return (seed * 1_000_003 + batch * 7919 + zlib.crc32(tag.encode())) % (2 ** 63)


class EvalData:
    """Evaluation splits loaded once per dataset and kept on the device (the run's settings
    say which root, which device, and whether a missing split may be downloaded)."""

    def __init__(self, settings: RunSettings):
        self.data_root, self.device, self.offline = settings.data_root, settings.device, settings.offline
        self._cache: dict[tuple[str, str], DeviceData] = {}

    def get(self, dataset_plugin: str, split: str) -> DeviceData:
        k = (dataset_plugin, split)
        if k not in self._cache:
            x, y = load_or_fetch(dataset_plugin, split, self.data_root, offline=self.offline)
            self._cache[k] = DeviceData(x, y, self.device)
        return self._cache[k]


def sweep_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells that one pass of an attack answers together: the ε of a minimisation attack
    (or of one that ignores ε). A fixed-ε attack is a group of one, so each of its cells
    is recorded as soon as it is done."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        one_pass = c.attack.cls.minimization or not c.attack.cls.uses_eps
        k = (c.attack.name, c.eval.split, c.eval.n, c.eval.batch_size, c.seed,
             None if one_pass else c.eps.literal)
        groups.setdefault(k, []).append(c)
    return list(groups.values())


def evaluate(net: nn.Module, cells: list[Cell], data: EvalData, *,
             progress: bool = True, describe: Callable[[Cell], str] = lambda c: c.id
             ) -> Iterator[CellOutcome]:
    """Yield one CellOutcome per cell, as soon as it is known (the worker records each)."""
    for group in sweep_groups(cells):
        first = group[0]
        t0 = time.perf_counter()
        try:
            evset = data.get(first.model.dataset.plugin, first.eval.split).head(first.eval.n)
            # attacks need input gradients only: frozen weights spare compiled graphs
            # the weight gradients they would otherwise compute (bench.run.precision)
            with frozen_parameters(net):
                results = _run_group(net, group, evset, progress)
        except Exception as e:  # one broken attack fails its cells; the run goes on
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            msg = f"{type(e).__name__}: {e}"
            for c in group:
                yield CellOutcome(c, error=msg, seconds=time.perf_counter() - t0)
            continue
        per_cell = (time.perf_counter() - t0) / len(group)
        for c, (out, details) in zip(group, results):
            yield CellOutcome(c, out, details, per_cell)


def _run_group(net, group: list[Cell], evset: DeviceData, progress: bool):
    first = group[0]
    attack = first.attack.build()
    eps_values = [c.eps.value for c in group]
    one_pass = attack.minimization or not attack.uses_eps
    outs: list[list[torch.Tensor]] = [[] for _ in group]
    details: list[dict[str, list[torch.Tensor]]] = [{} for _ in group]
    bs = first.eval.batch_size
    if bs == "auto":
        bs = eval_batch_size(net, str(evset.device))
    total = (len(evset) + bs - 1) // bs
    it = evset.batches(bs)
    if progress:
        from tqdm.auto import tqdm
        label = first.id if len(group) == 1 else f"{first.model.name}/{first.attack.name} ×{len(group)} ε"
        it = tqdm(it, total=total, desc=f"eval {label}", leave=False, dynamic_ncols=True, mininterval=0.5)
    # a fixed-ε attack's group is a single cell (sweep_groups); its draws are seeded by ε too
    tag = "" if one_pass else first.eps.literal
    for b, (x, y, _) in enumerate(it):
        torch.manual_seed(_batch_seed(first.seed, b, tag))
        res = attack.run_sweep(net, x, y, eps_values)
        det = dict(getattr(attack, "details", {}) or {})
        det[SATURATION_DETAIL] = softmax_saturation(net, x, y)
        for i in range(len(group)):
            outs[i].append(res[i])
            for k, v in det.items():
                details[i].setdefault(k, []).append(v)
    return [(torch.cat(o).cpu().numpy().astype(bool),
             {k: torch.cat(v).detach().cpu().numpy() for k, v in d.items()})
            for o, d in zip(outs, details)]
