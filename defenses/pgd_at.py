"""PGD adversarial training (Madry et al., 2018), ℓ∞ and ℓ2.

Sources: MadryLab/mnist_challenge `config.json` (ε 0.3, 40 steps of 0.01, random
start), MadryLab/cifar10_challenge `config.json` (ε 8/255, step 2/255, random start;
the paper trains with 7 steps, the repo now shows 10), locuslab/robust_overfitting
`train_cifar.py` (PGD-10, ε 8/255, step 2/255, uniform start, **model left in train
mode while crafting**, CE). The model is trained on the adversarial inputs only, with
the batch-mean cross-entropy. Early stopping (Rice et al.'s "PGD-AT (E)") is the
generic loop's `early_stopping` option, not part of this file.

`inner_mode` chooses the mode of the model while crafting: "train" follows Rice's CIFAR
code (BatchNorm uses batch statistics), "eval" follows TRADES/MART. The MNIST presets
craft in eval mode: Madry's MNIST network (MadryLab/mnist_challenge `model.py`: two
conv + pool layers and two dense layers) has neither dropout nor BatchNorm, so its
`train.py` crafts (`attack.perturb(x_batch, y_batch, sess)`) on the same deterministic
function it then trains; the suite's MNIST nets may have dropout (TRADES' SmallCNN:
Dropout(0.5)), and eval mode is what computes Madry's attack on them (no dropout while
crafting; the update itself is in train mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch.nn.functional as F

from bench.plugins.config import EpsValue
from bench.plugins.defense import Defense, crafting
from bench.plugins.perturb import pgd_ascent, random_init
from bench.plugins.registry import register_defense


@register_defense("pgd_at")
class PGDAT(Defense):
    """Madry PGD-AT; defaults are the CIFAR-10 ℓ∞ recipe (Rice et al.)."""

    @dataclass
    class Config:
        # The suite's rows: Table 1 MNIST ℓ2, Table 2 MNIST ℓ∞ (the TRADES/Madry MNIST
        # inner loop), Table 3 CIFAR ℓ∞ (Rice et al.), Tables 4–5 CIFAR ℓ2 (step ε/10).
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "eps": 2, "step_size": 0.125, "steps": 40,
                         "inner_mode": "eval"},
            "mnist_linf": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40,
                           "inner_mode": "eval"},
            "cifar_linf": {"norm": "linf", "eps": "8/255", "step_size": "2/255", "steps": 10},
            "cifar_l2": {"norm": "l2", "eps": 0.435, "step_size": 0.0435, "steps": 10},
            # Madry et al.'s CIFAR-10 model (MadryLab/cifar10_challenge config.json: ε 8,
            # k 7 steps of a = 2, in 0–255 pixels): Table 3's PGD-AT row.
            "cifar_linf_madry": {"norm": "linf", "eps": "8/255", "step_size": "2/255",
                                 "steps": 7},
            # MMA's PGD-AT baselines at ε2 = 1 (BorealisAI/mma_training: nb_iter 10, eps_iter
            # 2.5·ε/nb_iter = 0.25): Table 4's PGD-AT row ("pretrained models of MMA and PGD-AT").
            "cifar_l2_mma": {"norm": "l2", "eps": 1, "step_size": 0.25, "steps": 10},
        }

        norm: Literal["linf", "l2"] = "linf"
        eps: EpsValue = EpsValue("8/255")
        step_size: EpsValue = EpsValue("2/255")
        steps: int = 10
        random_start: bool = True
        inner_mode: Literal["train", "eval"] = "train"

    def adversarial(self, model, x, y):
        cfg = self.config
        with crafting(model, cfg.inner_mode):
            start = random_init(x, cfg.eps, cfg.norm) if cfg.random_start else x
            return pgd_ascent(lambda xa: F.cross_entropy(model(xa).float(), y), x, start,
                              eps=cfg.eps, step=cfg.step_size, steps=cfg.steps, norm=cfg.norm)

    def loss(self, model, x, y, ctx):
        return F.cross_entropy(model(self.adversarial(model, x, y)), y)
