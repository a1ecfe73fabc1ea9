"""MMA's validation adversary: PGD at a fixed ε, then a bisection along its direction for
the decision boundary (BorealisAI/mma_training `anpgd.py` `ANPGDForTest`, built in
`train.py` `get_adversaries` from `config.py`).

`ANPGDForTest.perturb` (run in eval mode by `trainer.Evaluator.test_one_epoch`):

1. PGD (advertorch LinfPGDAttack / L2PGDAttack) maximising the summed soft logit margin
   ("slm") at ε = `pgd_eps` (config `test_eps`), `steps` (`nb_iter`) steps of `step_size`
   (`test_eps_iter`), random start;
2. direction u = (x_pgd − x)/(pgd_eps + 1e-12);
3. bisection (`search_steps` = 10) for the sign change of the logit margin
   max_{j≠y} z_j − z_y of f(clamp(x + t·u)) over t ∈ [0, maxeps], maxeps = 1.05·d_max;
   the bracket starts from t = maxeps/2 with the margin measured at x_pgd (a quirk of the
   reference, kept). Its last midpoint is the example's margin ε; MMA selects the epoch
   with the largest mean of it over the validation split.

As a plugin it is a minimisation attack: `perturb` returns one point per example, the
base class projects it onto each ε of a sweep and asks the model. The point is the one
nearest x on the ray x + t·u known to be misclassified (the smallest bisection midpoint
with margin ≥ 0, or x_pgd when no midpoint crossed but PGD did), or x + maxeps·u when
none is known. At ε below its t the (ℓ2) projection is the ray's point x + ε·u, at ε
above it the point itself: over the grid ε_k = E·(k − ½)/N with E = maxeps
(`early_stopping: {grid: N}`) the robust accuracy scans the ray and is min(d, E)/E
within 1/(2N) for an example whose ray crosses the boundary once, at d: MMA's mean margin
divided by E, measured on the grid instead of by the bisection. The two agree within
the resolutions except where the reference's first bracket is wrong — PGD at pgd_eps did
not cross and d ∈ (pgd_eps, maxeps/2), or it crossed and d ∈ (maxeps/2, pgd_eps) (MNIST ℓ∞:
pgd_eps 0.3 > maxeps/2 = 0.236) — where the reference reports ≈ maxeps/2 and the grid d.
For ℓ∞ the projection clips x + t·u per coordinate; PGD's sign steps leave most |u_j| = 1,
where the clipped point is the ray's. For ℓ2 the ray's radius is t·‖u‖₂, t when PGD ends
on the sphere.

Defaults: MNIST ℓ∞ with d_max 0.45 (`config.py` LinfMNIST: test_eps 0.3, test_eps_iter
0.01, nb_iter 40; rand_init; attack_maxeps 1.05·0.45). MNIST ℓ2: pgd_eps 2, step_size
0.125, steps 40 (L2MNIST). CIFAR-10: steps 10, ℓ∞ 8/255 step 2/255, ℓ2 1 step 0.25.
The random start and the ℓ2 step are `bench.plugins.perturb`'s (see `defenses/mma.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.plugins.attack import Attack
from bench.plugins.config import EpsValue
from bench.plugins.perturb import pgd_ascent, random_init
from bench.plugins.registry import register_attack
from defenses.mma import bisection_search, logit_margin, soft_logit_margin


@register_attack("anpgd")
class ANPGDForTest(Attack):
    """MMA's validation AN-PGD (PGD, then a bisection along its direction); a minimisation attack."""

    minimization = True

    @dataclass
    class Config:
        norm: Literal["linf", "l2"] = "linf"
        pgd_eps: EpsValue = 0.3             # test_eps
        step_size: EpsValue = 0.01          # test_eps_iter
        steps: int = 40                     # nb_iter
        d_max: EpsValue = 0.45              # hinge_maxeps of the model being selected
        maxeps_factor: float = 1.05         # attack_maxeps = factor · d_max
        search_steps: int = 10
        random_start: bool = True

        def __post_init__(self):
            if self.steps < 1 or self.search_steps < 1:
                raise ValueError("steps and search_steps must be ≥ 1")

    def perturb(self, model, x, y, eps):
        cfg = self.config
        e = cfg.pgd_eps
        start = random_init(x, e, self.norm) if cfg.random_start else x
        x_pgd = pgd_ascent(lambda xa: soft_logit_margin(model(xa), y).sum(), x, start,
                           eps=e, step=cfg.step_size, steps=cfg.steps, norm=self.norm)
        unit = (x_pgd - x) / (e + 1e-12)
        maxeps = torch.full((x.shape[0],), cfg.maxeps_factor * cfg.d_max, device=x.device)
        with torch.no_grad():
            m0 = logit_margin(model(x_pgd), y)
            _, t = bisection_search(model, x, y, unit, maxeps / 2, m0, maxeps, cfg.search_steps,
                                    margin_fn=logit_margin, crossing=True)
        t = torch.where(m0 >= 0, torch.minimum(t, torch.full_like(t, e)), t)
        t = torch.where(torch.isinf(t), maxeps, t)
        return (x + t.view(-1, *([1] * (x.dim() - 1))) * unit).clamp(0.0, 1.0).detach()
