"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

Sources: YisenWang/MART `mart.py` (`mart_loss`), `train_wideresnet.py`, `train_resnet.py`.

Recipe (as `mart_loss`):

* inner maximisation of the **cross-entropy** (not the KL) with the model in **eval()**,
  from x + 0.001·N(0, I): K sign steps, box projection, clamp to [0, 1]; back to train();
* outer pass: logits = f(x), then logits_adv = f(x_adv) (train mode, in that order);
  p_adv = softmax(logits_adv), p_nat = softmax(logits);
  - boosted CE: BCE = CE(logits_adv, y) + NLL(log(1.0001 − p_adv + 1e-12), y′), with y′
    the most probable *wrong* class of p_adv (of the top-2 by argsort, the second if the
    first is y), the NLL averaged over the batch;
  - robust term: (1/B) Σ_i KL_i · (1.0000001 − p_nat,i[y_i]), where
    KL_i = Σ_c p_nat,ic (log p_nat,ic − log(p_adv,ic + 1e-12)) (`KLDivLoss(reduction=
    'none')` summed over classes, with 0·log 0 = 0). Nothing is detached;
  - objective = BCE + β · robust term.

Defaults = the WRN-34-10 recipe: β = 6, ε = 0.031, step 0.007, K = 10; recipe lr 0.1,
momentum 0.9, wd 7e-4, batch 128, 90 epochs, lr ×0.1 at 75 and ×0.01 at 90. ResNet-18
recipe: β = 5.0, lr 0.01, wd 3.5e-3, 120 epochs, same decay points.

The reference implements ℓ∞ only; `norm: l2` (ℓ2-normalised ascent steps and ℓ2
projection from the shared perturbation code) is an extension, not MART's.

The `mnist_*` presets have no MART source: YisenWang/MART @2d83e17 holds CIFAR-10 scripts
only and releases no MNIST model. They take TRADES' MNIST attack (train_trades_mnist.py:
ε 0.3, 40 steps of 0.01; for ℓ2 ε 2, 40 steps of 2.5·ε/40) and the WRN recipe's β 6: our
choice. The `cifar_l2` preset (ResNet-20, ε 0.435, 10 steps of ε/10, β 5 of the ResNet-18
recipe) is ours too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.config import EpsValue
from bench.plugins.defense import Defense, crafting
from bench.plugins.perturb import pgd_ascent
from bench.plugins.registry import register_defense


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def mart_weight(logits_nat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample weight of the KL term: 1.0000001 − p_nat[y]."""
    p_nat = F.softmax(_upcast(logits_nat), dim=1)
    return 1.0000001 - p_nat.gather(1, y.unsqueeze(1)).squeeze(1)


def boosted_ce(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(logits_adv, y) + mean_i −log(1.0001 − p_adv,i[y′_i] + 1e-12), y′ the most
    probable wrong class."""
    p_adv = F.softmax(_upcast(logits_adv), dim=1)
    top2 = torch.argsort(p_adv, dim=1)[:, -2:]
    y_wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    return F.cross_entropy(_upcast(logits_adv), y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), y_wrong)


def mart_objective(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                   beta: float) -> torch.Tensor:
    p_adv = F.softmax(_upcast(logits_adv), dim=1)
    p_nat = F.softmax(_upcast(logits_nat), dim=1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(dim=1)
    robust = (kl * mart_weight(logits_nat, y)).sum() / logits_nat.shape[0]
    return boosted_ce(logits_adv, y) + beta * robust


@register_defense("mart")
class MART(Defense):
    """MART; defaults are the WRN-34-10 CIFAR-10 recipe (`train_wideresnet.py`)."""

    @dataclass
    class Config:
        # The suite's rows (the ResNet-18 recipe's β = 5 for the CIFAR ℓ2 ResNet).
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "eps": 2, "step_size": 0.125, "steps": 40, "beta": 6.0},
            "mnist_linf": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40,
                           "beta": 6.0},
            "cifar_linf": {"norm": "linf", "eps": 0.031, "step_size": 0.007, "steps": 10,
                           "beta": 6.0},
            "cifar_l2": {"norm": "l2", "eps": 0.435, "step_size": 0.0435, "steps": 10,
                         "beta": 5.0},
        }

        norm: Literal["linf", "l2"] = "linf"  # l2: an extension (the reference is ℓ∞ only)
        eps: EpsValue = EpsValue("0.031")
        step_size: EpsValue = EpsValue("0.007")
        steps: int = 10
        beta: float = 6.0                     # ResNet-18 recipe: 5.0
        inner_mode: Literal["eval", "train"] = "eval"

    def adversarial(self, model, x, y):
        cfg = self.config
        with crafting(model, cfg.inner_mode):
            x = x.detach()
            start = x + 0.001 * torch.randn_like(x)
            x_adv = pgd_ascent(lambda xa: F.cross_entropy(model(xa).float(), y), x, start,
                               eps=cfg.eps, step=cfg.step_size, steps=cfg.steps, norm=cfg.norm)
        return x_adv.clamp(0.0, 1.0)

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        return mart_objective(logits, logits_adv, y, self.config.beta)
