"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), ℓ∞ and ℓ2, through Foolbox 3.

Source: `foolbox.attacks.LinfDeepFoolAttack` / `L2DeepFoolAttack` (anchors §3(j)):
each step linearises z_k − z_y for the top-`candidates` classes (by clean logits),
moves to the closest linearised boundary (ℓ2: |loss|/‖∇‖₂, ℓ∞: |loss|/‖∇‖₁), scales
the accumulated step by (1 + overshoot) and stops once every sample is adversarial.
Foolbox defaults: steps 50, candidates 10, overshoot 0.02, loss "logits".

A minimisation attack: it runs once (ε = ∞) and the base class clips the minimal
perturbation to each ε and re-queries the model — robust accuracy at ε is
1 − success(clipped), the evaluation behind the TRADES README's "DeepFool (L∞)" 61.38 %
and "DeepFool (L2)" 81.55 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.plugins.attack import Attack
from bench.plugins.registry import register_attack


@register_attack("deepfool")
class DeepFool(Attack):
    """DeepFool (Foolbox); defaults are Foolbox's: 50 steps, 10 candidates, overshoot 0.02."""

    minimization = True
    strength = 10   # a one-shot linearisation attack, weaker than PGD (see Attack.strength)

    @dataclass
    class Config:
        norm: Literal["linf", "l2"] = "linf"
        steps: int = 50
        candidates: int | None = 10       # null: all classes
        overshoot: float = 0.02
        loss: Literal["logits", "crossentropy"] = "logits"

        def __post_init__(self):
            if self.steps < 1:
                raise ValueError("steps must be ≥ 1")
            if self.candidates is not None and self.candidates < 2:
                raise ValueError("candidates must be ≥ 2 (or null for all classes)")
            if self.overshoot < 0:
                raise ValueError("overshoot must be ≥ 0")

    def perturb(self, model, x, y, eps):
        import foolbox as fb

        c = self.config
        cls = fb.attacks.LinfDeepFoolAttack if c.norm == "linf" else fb.attacks.L2DeepFoolAttack
        attack = cls(steps=c.steps, candidates=c.candidates, overshoot=c.overshoot, loss=c.loss)
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
        return attack.run(fmodel, x, fb.criteria.Misclassification(y)).detach()
