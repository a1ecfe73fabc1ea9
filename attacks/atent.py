"""The ATENT sampler used as an attack (Jagatap et al., Table 6).

Source: `GauriJagatap/StochAT:notebooks/ATENT_as_attack.ipynb` and
`adversarial/functional.py` (`entropySmoothing`), anchors §3 "ATENT". With the model in
eval mode, K SGLD steps on the cross-entropy of the input, each
  ℓ∞: x' ← x' + step·sign(∇) + ep·√(2·step)·N(0, I)
  ℓ2: x' ← x' + step·∇/‖∇‖₂ + γ·(x − x') + ep·√(2·step)·N(0, I)   (γ is ignored for ℓ∞)
then clamped to [0, 1]; the ε-ball projection happens only after the last step (the
notebook's `projector=True` on l = L−1). The first step starts from a random corner
x + ε·sign(N(0, I)) (ℓ∞) or a Gaussian direction scaled onto the ε-sphere (ℓ2), not
clamped before the first gradient. Table 6 configuration (the defaults): 20 steps,
step 0.003, ε 0.031, ep 1e-3 → 60.51 % on the ATENT WRN-34-10, weaker than PGD-20's
57.28 %. (`project_every_step: true` gives the training-time MNIST variant.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.attack import Attack
from bench.registry import register_attack
from defenses.atent import atent_chain


@register_attack("atent")
class ATENTAttack(Attack):
    """ATENT's SGLD sampler as an attack; defaults are Table 6 (20 × 0.003, ep 1e-3)."""

    strength = 30   # Table 6: weaker than PGD-20 on the same model (see bench.sanity)

    @dataclass
    class Config:
        norm: Literal["linf", "l2"] = "linf"
        steps: int = 20                  # K SGLD steps
        step_size: float = 0.003
        ep: float = 1e-3                 # noise scale: ep·√(2·step)·N(0, 1)
        gamma: float = 1e-3              # ℓ2 pull towards x (entropySmoothing default; ℓ∞ ignores it)
        project_every_step: bool = False # Table 6: project only after the last step
        restarts: int = 1

        def __post_init__(self):
            if self.steps < 1 or self.restarts < 1:
                raise ValueError("steps and restarts must be ≥ 1")
            if self.step_size <= 0 or self.ep < 0:
                raise ValueError("step_size must be > 0 and ep ≥ 0")

    def perturb(self, model, x, y, eps):
        # The training defense's chain (defenses.atent) with the notebook's choices: the
        # code's start, γ for ℓ2 only, projection after the last step; its last iterate.
        c = self.config
        return atent_chain(model, x, y, norm=self.norm, eps=eps, step=c.step_size,
                           steps=c.steps, noise=c.ep, gamma=c.gamma, gamma_linf=False,
                           project_every_step=c.project_every_step, project_last=True,
                           init="code")[-1]
