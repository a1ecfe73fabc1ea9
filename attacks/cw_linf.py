"""CW-ℓ∞: PGD on the Carlini–Wagner margin loss, as in the TRADES/MART-style tables.

Source: anchors §3(j). The "CW∞" column of robustness tables is not the original CW
optimiser but the PGD loop of `attacks/pgd.py` with the cross-entropy replaced by the
margin loss −max(z_y − max_{j≠y} z_j + κ, 0) (true logit masked with −1e4, the
`MadryLab/mnist_challenge#10` fix). κ = 50 is Madry's challenge value and the widely
copied `cwloss(confidence=50)` (CAT → FAT/GAIRAT code); Madry's loop takes 20 steps
of 2/255, the PyTorch copies use the TRADES PGD-20 loop (step 0.003, ε 0.031, uniform
random start), which are our defaults so CW∞ and PGD-20 columns differ only in the loss. With κ = 50 the hinge never
saturates in practice, so the step keeps pushing past the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from attacks.pgd import PGD, cw_margin_loss
from bench.plugins.config import EpsNumber
from bench.plugins.registry import register_attack


@register_attack("cw_linf")
class CWLinf(PGD):
    """PGD-k on the CW margin loss; defaults: κ 50, 20 steps of 0.003, random start."""

    strength = 50   # same tier as PGD (see Attack.strength): a fixed-budget gradient attack
    loss = "margin"   # the CW margin, whatever the config (it has no `loss` option)

    @dataclass
    class Config:
        norm: Literal["linf"] = "linf"
        steps: int = 20                           # Madry cifar10_challenge eval / CAT code
        step_size: EpsNumber | None = 0.003      # absolute; null → 2.5·ε/steps
        random_start: bool = True
        start: Literal["ball", "box"] = "ball"   # as attacks/pgd.py (box: unclamped)
        restarts: int = 1
        kappa: float = 50.0                       # CW confidence κ (Madry's challenge)

        def __post_init__(self):
            if self.steps < 0 or self.restarts < 1:
                raise ValueError("steps must be ≥ 0 and restarts ≥ 1")

    def objective(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cw_margin_loss(logits.float(), y, self.config.kappa).sum()
