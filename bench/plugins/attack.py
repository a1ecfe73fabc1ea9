"""The attack base class: the part of every evaluation that plugins must not get wrong.

A plugin implements `perturb(model, x, y, eps) -> x_adv`. The base class, not the
plugin, puts the model in eval mode, skips samples the model already gets wrong,
projects the result onto the ε-ball and [0, 1], checks that the norm really holds,
runs restarts only on still-robust samples (keeping the worst case per sample), and
decides success by querying the model again.

A *minimisation* attack (DeepFool, CW-ℓ2) sets `minimization = True`: it runs once
with eps = inf and its minimal perturbation is clipped to each ε of a sweep.

Robust means: correct on the clean input *and* on every adversarial input tried.

Traits: class attributes a plugin overrides to tell the engine and the sanity flags
(`bench.run.sanity`) what kind of attack it is; each is declared, with its default, on
`Attack` below.

Per-sample extra outputs: an attack that produces numbers besides the bool outcome
(the smoothing certifier's radii and predictions) assigns, in each `run_sweep` call,
a new dict `self.details = {name: tensor}` with one value per input sample in input
order; the evaluation loop reads it right after the call, concatenates it across
batches and stores it with the result. Plugins assign a fresh dict, never mutate the
shared class default.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from bench.errors import BenchError
from bench.plugins.base import Plugin
from bench.plugins.perturb import NORMS, Norm, project, within


class AttackError(BenchError):
    """An attack broke its contract (for example, an adversarial input outside the ε-ball)."""


def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        if batch_size is None or x.shape[0] <= batch_size:
            return model(x).argmax(dim=1)
        return torch.cat([model(c).argmax(dim=1) for c in x.split(batch_size)])


class Attack(Plugin):
    """Base class of attack plugins. Subclasses set `Config` (a dataclass) and `perturb`."""

    # ------------------------------------------------------------------ traits
    uses_eps: ClassVar[bool] = True
    """False: the result does not depend on ε, one row per model (clean accuracy)."""

    minimization: ClassVar[bool] = False
    """True: `perturb` runs once with ε = inf and returns a minimal perturbation, which
    the base class clips to each ε of a sweep (DeepFool, CW-ℓ2, certification)."""

    crafts_inputs: ClassVar[bool] = True
    """False: no adversarial inputs; the plugin overrides `run_sweep` and answers by another
    procedure (randomized-smoothing certification), so `perturb` is never called."""

    strength: ClassVar[int | None] = None
    """The declared strength tier, or None (not compared). Where two attacks on the same
    model, norm and ε differ in it, the weaker one finding fewer robust samples flags both
    ("weaker_attack_stronger"). Scale: 100 the reference (AutoAttack); 50 fixed-budget
    multi-step gradient attacks (PGD, CW-ℓ∞, CW-ℓ2); lower is weaker by design (ATENT as
    an attack 30, DeepFool 10, ART's CW-ℓ∞ 5). Same tier: not compared."""

    bounded_by_clean: ClassVar[bool] = True
    """False where the evaluated classifier is not the model whose clean accuracy is stored
    (the smoothed classifier of certification), so robust accuracy may exceed it."""

    loss: ClassVar[str | None] = None
    """The loss whose gradient the attack ascends: "ce" (cross-entropy: its gradient
    vanishes where the softmax saturates, so it weakens on a model trained to a tiny
    loss, flag "softmax_saturated"), "margin" (a logit margin: CW, DLR; unaffected),
    "mixed" (an ensemble that includes margin losses: AutoAttack), or None (undeclared,
    or no loss gradient). Where a config option chooses the loss, the plugin overrides
    `loss_for`. The leaderboard sets a cross-entropy cell of a saturated model against the
    margin-based or stronger columns of the same model and ε."""

    @classmethod
    def loss_for(cls, config: Mapping[str, Any]) -> str | None:
        """The `loss` trait of this attack with this resolved config (a plain dict)."""
        return cls.loss

    details: dict[str, torch.Tensor] = {}  # per-sample extras of the last run_sweep (see above)

    # ----------------------------------------------------------------- plugin API
    @property
    def norm(self) -> Norm:
        norm = getattr(self.config, "norm", "linf")
        if norm not in NORMS:
            raise AttackError(f"unknown norm {norm!r}")
        return norm

    @property
    def restarts(self) -> int:
        return int(getattr(self.config, "restarts", 1))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                eps: float) -> torch.Tensor:
        """Return adversarial inputs for (x, y) at budget eps. The model is in eval mode."""
        raise NotImplementedError

    # ----------------------------------------------------------------- engine API
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            eps: float) -> torch.Tensor:
        """Per-sample bool: still correctly classified after the attack at budget eps."""
        return self.run_sweep(model, x, y, [eps])[0]

    def run_sweep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  eps_list: Sequence[float]) -> list[torch.Tensor]:
        """Per-sample outcomes for each ε. Fixed-ε attacks run once per ε; minimisation
        attacks run once and are clipped to each ε."""
        was_training = model.training
        model.eval()
        try:
            clean_ok = predict(model, x) == y
            if not self.uses_eps:
                return [clean_ok.clone() for _ in eps_list]
            if self.minimization:
                return self._run_minimization(model, x, y, eps_list, clean_ok)
            return [self._run_fixed(model, x, y, float(e), clean_ok) for e in eps_list]
        finally:
            model.train(was_training)

    def _checked(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        if x_adv.shape != x.shape:
            raise AttackError(f"{self.describe()} returned shape {tuple(x_adv.shape)} "
                              f"for inputs of shape {tuple(x.shape)}")
        x_adv = project(x_adv.detach().to(x.dtype), x, eps, self.norm)
        ok = within(x_adv, x, eps, self.norm)
        if not bool(ok.all()):
            raise AttackError(f"{self.describe()}: {(~ok).sum().item()} adversarial inputs "
                              f"outside the {self.norm} ball of radius {eps} or [0, 1]")
        return x_adv

    def _run_fixed(self, model, x, y, eps, clean_ok):
        robust = clean_ok.clone()
        if eps == 0:
            return robust
        for _ in range(max(1, self.restarts)):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xs, ys = x[idx], y[idx]
            x_adv = self._checked(self.perturb(model, xs, ys, eps), xs, eps)
            robust[idx] = predict(model, x_adv) == ys
        return robust

    def _run_minimization(self, model, x, y, eps_list, clean_ok):
        idx = clean_ok.nonzero().squeeze(1)
        outcomes = [clean_ok.clone() for _ in eps_list]
        if idx.numel() == 0:
            return outcomes
        xs, ys = x[idx], y[idx]
        x_min = self.perturb(model, xs, ys, math.inf).detach().to(x.dtype).clamp(0, 1)
        for out, eps in zip(outcomes, eps_list):
            if eps == 0:
                continue
            x_adv = self._checked(x_min, xs, float(eps))
            out[idx] = predict(model, x_adv) == ys
        return outcomes
