"""Evaluation sanity flags: signs that a robustness number should not be trusted.

Pure functions the worker loop calls; none of them knows an attack by name.

* `model_flags(model, x, y)` — on a small batch: "randomized_outputs" (two identical
  forward passes in eval mode disagree: gradient attacks and single-pass robust
  accuracy are unreliable, use EoT), "zero_gradients" (some sample's input gradient
  of the cross-entropy is exactly zero: masked or shattered gradients),
  "nonfinite_gradients" (NaN/inf in that gradient). These mirror AutoAttack's
  `checks.py` and RobustBench's admission rules.
* `result_flags(rows)` — across stored results: "robust_above_clean" (a cell's robust
  accuracy above its model's clean accuracy on the same examples),
  "not_monotone_in_eps" (robust accuracy of one model/attack increasing with ε),
  "weaker_attack_stronger" (an attack declared weaker finds lower robust accuracy than
  a stronger one on the same model, norm and ε), and "softmax_saturated" (at least
  `SATURATION_THRESHOLD` of the evaluated clean inputs have a true-class softmax
  probability of exactly 1.0 in float32, read from the per-sample `SATURATION_DETAIL`
  the evaluation stores with each result).
* `softmax_saturation(model, x, y)` — that per-sample bool, computed on each evaluated
  batch (bench.run.evaluate). Where p_y rounds to 1, the cross-entropy −log p_y is 0 and
  so is its gradient: every cross-entropy attack (PGD's default loss, APGD-CE) stalls
  there while margin losses (CW, DLR) do not, so a model trained to a tiny loss shows
  cross-entropy PGD far above margin PGD and AutoAttack.
* `worst_case(outcomes)` — the per-sample AND over attacks (robust against all;
  `bench.db.outcomes.worst_case`, beside the packed format it reads).

Importing this module costs numpy only (torch is imported where a model is checked): the
leaderboard reads the flag names and the saturation share from here.

The attack traits the flags read — `strength`, `bounded_by_clean` and `uses_eps` (False
marks the clean-accuracy row) — are declared, with their defaults and meaning, on
`bench.plugins.attack.Attack`.

Per-sample outcomes are compared on the examples two rows have in common: rows with
the same `data` key (split, example selection) and the first min(n₁, n₂) samples —
the evaluation set is the first n test examples in a fixed order.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from bench.db.outcomes import (  # noqa: F401 (worst_case and the saturation names: sanity's API)
    SATURATION_DETAIL, SATURATION_THRESHOLD, saturation_share, unpack_outcomes, worst_case)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.plugins.attack import Attack

RANDOMIZED_OUTPUTS = "randomized_outputs"
ZERO_GRADIENTS = "zero_gradients"
NONFINITE_GRADIENTS = "nonfinite_gradients"
ROBUST_ABOVE_CLEAN = "robust_above_clean"
NOT_MONOTONE_IN_EPS = "not_monotone_in_eps"
WEAKER_ATTACK_STRONGER = "weaker_attack_stronger"
SOFTMAX_SATURATED = "softmax_saturated"
MODEL_FLAGS = (RANDOMIZED_OUTPUTS, ZERO_GRADIENTS, NONFINITE_GRADIENTS)



# ----------------------------------------------------------------------------- model flags

def model_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                rtol: float = 1e-4, atol: float = 1e-5) -> list[str]:
    """Flags of a model measured on a small batch (x in [0, 1], on the model's device).

    Outputs differing between two identical eval-mode passes by more than
    `atol + rtol·|z|` count as randomized (the tolerance absorbs nondeterministic GPU
    kernels). Gradients are of the summed cross-entropy w.r.t. the input only.
    """
    import torch
    import torch.nn.functional as F

    flags: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z1, z2 = model(x), model(x)
        if z1.shape != z2.shape or not torch.allclose(z1.float(), z2.float(), rtol=rtol,
                                                      atol=atol, equal_nan=True):
            flags.append(RANDOMIZED_OUTPUTS)
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg).float(), y, reduction="sum")
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, xg, allow_unused=True)
            else:
                grad = None
        if grad is None:
            grad = torch.zeros_like(xg)
        if not bool(torch.isfinite(grad).all()):
            flags.append(NONFINITE_GRADIENTS)
        per_sample = grad.detach().flatten(1).abs().sum(dim=1)
        if bool((per_sample == 0).any()):
            flags.append(ZERO_GRADIENTS)
    finally:
        model.train(was_training)
    return flags


def softmax_saturation(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample bool: the true class's softmax probability is exactly 1.0 in float32 on
    the clean input (one eval-mode forward pass, no gradient)."""
    import torch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = torch.softmax(model(x).float(), dim=1).gather(1, y.long()[:, None]).squeeze(1)
    finally:
        model.train(was_training)
    return p == 1.0


# ----------------------------------------------------------------------------- result rows

@dataclasses.dataclass
class ResultRow:
    """One stored result as the flags see it.

    key        the result's key (cell key); flags are returned per key
    model_key  the evaluated model
    attack     the attack as configured (suite name): rows of one attack across ε
    norm, eps  the threat model (eps: float; for certification the radius)
    outcomes   per-sample robust outcomes: a bool array, or `np.packbits` bytes with `n`
    clean      True for the clean-accuracy row of the model
    strength   the attack plugin's declared strength tier, None if undeclared
    bounded_by_clean  False where clean accuracy is no upper bound (certification)
    data       which examples (e.g. "test[:1000]"): rows compare only within one data key
    saturation the share of its inputs whose softmax saturates (`saturation_share`), or None
    """

    key: str
    model_key: str
    attack: str
    norm: str | None
    eps: float
    outcomes: Any
    clean: bool = False
    strength: int | None = None
    bounded_by_clean: bool = True
    data: str = ""
    n: int | None = None
    saturation: float | None = None   # share of inputs with a saturated softmax, if recorded

    def __post_init__(self):
        if isinstance(self.outcomes, (bytes, bytearray, memoryview)):
            if self.n is None:
                raise ValueError(f"{self.key}: packed outcomes need n")
            self.outcomes = unpack_outcomes(self.outcomes, self.n)
        self.outcomes = np.asarray(self.outcomes, dtype=bool).reshape(-1)
        if self.n is None:
            self.n = int(self.outcomes.size)
        elif self.n != self.outcomes.size:
            raise ValueError(f"{self.key}: n = {self.n} but {self.outcomes.size} outcomes")
        self.eps = float(self.eps)

    @classmethod
    def coerce(cls, row: "ResultRow | Mapping[str, Any]") -> "ResultRow":
        if isinstance(row, ResultRow):
            return row
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def row_from_record(record: Any, attack_cls: type[Attack] | None = None, *,
                    data: str | None = None) -> ResultRow:
    """A ResultRow from a stored result (attributes cell_key, model_key, attack, norm, eps,
    n, outcomes as packed bits, split, details) and its attack plugin class (for the
    traits; None, a plugin no longer registered, gets the base class's defaults)."""
    if attack_cls is None:
        from bench.plugins.attack import Attack
        attack_cls = Attack
    traits = attack_cls
    return ResultRow(
        key=record.cell_key, model_key=record.model_key, attack=record.attack,
        norm=record.norm, eps=record.eps, outcomes=record.outcomes, n=record.n,
        clean=not traits.uses_eps,
        strength=traits.strength,
        bounded_by_clean=traits.bounded_by_clean,
        data=data if data is not None else f"{getattr(record, 'split', '')}",
        saturation=saturation_share(getattr(record, "details", None)),
    )


# ----------------------------------------------------------------------------- result flags

def _common(a: ResultRow, b: ResultRow) -> tuple[int, int, int]:
    """Robust counts of a and b on their first min(n_a, n_b) samples, and that m."""
    m = min(a.outcomes.size, b.outcomes.size)
    return int(a.outcomes[:m].sum()), int(b.outcomes[:m].sum()), m


def _eps_key(eps: float) -> float:
    return round(float(eps), 12)


def result_flags(rows: Iterable[ResultRow | Mapping[str, Any]], *, slack: int = 1
                 ) -> dict[str, list[str]]:
    """Flags per row key (every key present, possibly with no flags).

    robust_above_clean: robust count > clean count on the same examples (no slack:
        the base class makes a robust sample a clean-correct one, so any excess is a bug
        or a nondeterministic model).
    not_monotone_in_eps: for one (model, data, attack, norm), the robust count at a
        larger ε exceeds that at a smaller ε by more than `slack` samples; the row at
        the larger ε is flagged.
    weaker_attack_stronger: at one (model, data, norm, ε), an attack of lower declared
        strength finds a robust count lower than a stronger attack's by more than
        `slack` samples; both rows are flagged.
    softmax_saturated: the row's recorded saturation share is ≥ SATURATION_THRESHOLD
        (clean rows too: the share is the model's on those inputs).
    """
    rs = [ResultRow.coerce(r) for r in rows]
    flags: dict[str, list[str]] = {r.key: [] for r in rs}

    def add(row: ResultRow, flag: str) -> None:
        if flag not in flags[row.key]:
            flags[row.key].append(flag)

    for r in rs:
        if r.saturation is not None and r.saturation >= SATURATION_THRESHOLD:
            add(r, SOFTMAX_SATURATED)

    clean_rows: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in rs:
        if r.clean:
            clean_rows[(r.model_key, r.data)].append(r)
    attacked = [r for r in rs if not r.clean]

    for r in attacked:
        if not r.bounded_by_clean:
            continue
        for c in clean_rows.get((r.model_key, r.data), []):
            robust, clean, _ = _common(r, c)
            if robust > clean:
                add(r, ROBUST_ABOVE_CLEAN)

    by_attack: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in attacked:
        by_attack[(r.model_key, r.data, r.attack, r.norm)].append(r)
    for group in by_attack.values():
        group.sort(key=lambda r: r.eps)
        for lo, hi in itertools.combinations(group, 2):
            if hi.eps <= lo.eps:
                continue
            a_lo, a_hi, _ = _common(lo, hi)
            if a_hi > a_lo + slack:
                add(hi, NOT_MONOTONE_IN_EPS)

    by_cell: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in attacked:
        if r.strength is not None:
            by_cell[(r.model_key, r.data, r.norm, _eps_key(r.eps))].append(r)
    for group in by_cell.values():
        for a, b in itertools.combinations(group, 2):
            if a.strength == b.strength:
                continue
            weak, strong = (a, b) if a.strength < b.strength else (b, a)
            n_weak, n_strong, _ = _common(weak, strong)
            if n_weak < n_strong - slack:
                add(weak, WEAKER_ATTACK_STRONGER)
                add(strong, WEAKER_ATTACK_STRONGER)
    return flags
