"""The ATENT sampler used as an attack (Jagatap et al., A.3 "ATENT as Attack", Table 6).

Sources: the paper, A.3: "we also test ℓ∞-ATENT as an attack. We keep the same
configuration as that of PGD-20" — Table 3's PGD-20: 20 steps of 0.003 (§4.2) at each ε
of Table 6's sweep; the sampler is Algorithm 2's. Where the paper is silent, the authors'
`notebooks/ATENT_as_attack.ipynb` (cells 6, 15) and `adversarial/functional.py`.

It runs the training defense's chain (`defenses.atent.atent_chain`, one copy of the code)
on the model in eval mode (the base class; the notebook's `model.eval()`), and returns the
last iterate:

* ℓ∞ (Algorithm 2): x′ ← x′ + step·sign(∇) + ep·√(2·step)·N(0, I), no γ pull, clamped to
  [0, 1]; the clip onto the ε-ball of the sweep at the last step only (Eq. 14; the
  notebook's `projector=True` at l = L − 1). The clip radius is the attack's ε: the paper's
  1/γ plays the role of ε (Table 2: 1/γ = ε), and an attack has no γ of its own;
* start (`init`): the paper's (end of §3, as `defenses.atent` reads it): N(0, I) clipped to
  ±ε, x + δ clamped to [0, 1] (`paper`); the notebook's: a random corner x + ε·sign(N(0, I))
  (`code`);
* noise ep = 1e-3: paper silent; the notebook's `ep=1e-3` (cell 15);
* ℓ2 (not in the paper, nor in the notebook): `entropySmoothing`'s ℓ2 branch — the
  normalised gradient step and the pull γ·(x − x′) added without η′ (`pull: code`), γ = 1e-3
  its default argument.

Table 6 (paper): ATENT-20 59.69 % at 8/255 on the ℓ∞-ATENT WRN-34-10 vs PGD-20's 57.23 %;
the notebook prints 60.5 % at ε = 0.031. (`project: every` gives the MNIST training-time
variant of the chain.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.plugins.attack import Attack
from bench.plugins.registry import register_attack
from defenses.atent import atent_chain


@register_attack("atent")
class ATENTAttack(Attack):
    """ATENT's SGLD sampler as an attack; defaults are Table 6's (20 × 0.003, ep 1e-3)."""

    # 2: the paper's start (N(0, I) clipped to ±ε, clamped) replaces the notebook's corner
    # as the default (`init: code` keeps it); `project` replaces `project_every_step`.
    version = "2"
    strength = 30   # Table 6: weaker than PGD-20 on the same model (see Attack.strength)

    @dataclass
    class Config:
        norm: Literal["linf", "l2"] = "linf"         # paper A.3 / Table 6: ℓ∞
        steps: int = 20                              # paper A.3: PGD-20's configuration
        step_size: float = 0.003                     # paper §4.2: PGD-20 step 0.003
        ep: float = 1e-3                             # paper silent; notebook ATENT_as_attack cell 15
        gamma: float = 1e-3                          # ℓ2 only: not in the paper; entropySmoothing's default
        pull: Literal["paper", "code"] = "code"      # ℓ2 only: code (the only source of an ℓ2 attack)
        init: Literal["paper", "code"] = "paper"     # paper end of §3; notebook: code (corner)
        project: Literal["last", "every"] = "last"   # paper Algorithm 2 / Eq. 14; notebook: last
        restarts: int = 1                            # paper silent; notebook: one run

        def __post_init__(self):
            if self.steps < 1 or self.restarts < 1:
                raise ValueError("steps and restarts must be ≥ 1")
            if self.step_size <= 0 or self.ep < 0 or self.gamma < 0:
                raise ValueError("step_size must be > 0, ep and gamma ≥ 0")

    def perturb(self, model, x, y, eps):
        c = self.config
        return atent_chain(model, x, y, norm=self.norm, step=c.step_size, steps=c.steps,
                           noise=c.ep, radius=eps, gamma=c.gamma, pull=c.pull,
                           project=c.project, init=c.init)[-1]
