"""TRADES (Zhang et al., 2019): natural cross-entropy plus β·KL to the adversarial output.

Sources: yaodongyu/TRADES `trades.py` (`trades_loss`), `train_trades_cifar10.py`,
`train_trades_mnist.py`.

Recipe (as `trades_loss`):

* objective = CE(f(x), y) + β · KL(softmax f(x) ‖ softmax f(x_adv)), the KL summed over
  classes and samples and divided by the batch size (`KLDivLoss(size_average=False)/B`,
  i.e. `reduction="batchmean"`). The target distribution softmax f(x) is *not* detached:
  the gradient flows through both arguments;
* inner maximisation of the KL with the model in **eval()**, the clean output f(x) as the
  fixed target, starting from x + 0.001·N(0, I) (not clamped before the first step);
  - ℓ∞: K steps x_adv ← clamp(Π_box(x_adv + step·sign ∇KL), 0, 1);
  - ℓ2: δ ← 0.001·N(0, I); K steps of SGD on −KL with lr 2ε/K and the gradient
    renormalised per sample (a random direction where it is exactly zero), then
    δ ← clamp(x + δ, 0, 1) − x and δ ← renorm(δ, ‖δ‖₂ ≤ ε) (box first, then ball);
* back to train(); the outer pass calls the model on x (CE), on x_adv and on x again (the
  KL target), in that order, so BatchNorm running statistics see three batches and
  dropout draws two masks for x, exactly as the reference (`reuse_clean_logits: true`
  uses the CE forward as the KL target instead: one forward fewer, not the reference).

Defaults = the CIFAR-10 recipe: β = 6, ε = 0.031 (not 8/255), step 0.007, K = 10 (ℓ∞);
recipe: WRN-34-10, SGD lr 0.1 momentum 0.9 wd 2e-4, batch 128, 76 epochs, lr ×0.1 at 75.
MNIST (`train_trades_mnist.py`): ε = 0.3, step 0.01, K = 40, **script default β = 1.0**
(the paper's MNIST row is reported with 1/λ = 6, i.e. β = 6 — the released SmallCNN
checkpoint's β is not stated in the repo: set `beta` explicitly), SmallCNN, SGD lr 0.01
momentum 0.9, batch 128, 100 epochs, lr ×0.1 at 55, 75, 90.

The ℓ2 step size is `2ε/K` in the reference whatever `step_size` says; here `step_size:
null` (the default) means "the reference's rule": 0.007 for ℓ∞, 2ε/K for ℓ2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.config import EpsValue
from bench.plugins.defense import Defense, crafting
from bench.plugins.perturb import ascent_step, norms, pgd_ascent, project_delta
from bench.plugins.registry import register_defense


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def trades_kl(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits_nat) ‖ softmax(logits_adv)) summed over classes, mean over the
    batch (TRADES' `KLDivLoss(size_average=False)(log_softmax(adv), softmax(nat)) / B`)."""
    return F.kl_div(F.log_softmax(_upcast(logits_adv), dim=1), F.softmax(_upcast(logits_nat), dim=1),
                    reduction="sum") / logits_nat.shape[0]


def trades_adversarial(model, x: torch.Tensor, *, eps: float, step: float, steps: int,
                       norm: str, box: bool = True, init_std: float = 0.001) -> torch.Tensor:
    """TRADES' inner maximisation of the KL, in whatever mode `model` is in (the caller
    switches to eval). `box=False` skips the [0, 1] clamps (for inputs already noised
    outside the box, see `trades_smooth`). Returns x_adv, detached."""
    x = x.detach()
    with torch.no_grad():
        target = F.softmax(model(x).float(), dim=1)

    def kl_sum(x_adv):
        return F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), target, reduction="sum")

    if norm == "linf":
        x_adv = pgd_ascent(kl_sum, x, x + init_std * torch.randn_like(x), eps=eps, step=step,
                           steps=steps, norm="linf", box=box)
    elif norm == "l2":
        delta = init_std * torch.randn_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(kl_sum(x + delta), delta)
            delta = delta.detach()
            zero = norms(grad, "l2") == 0  # reference: a random direction where it vanishes
            grad = torch.where(zero.view(-1, *([1] * (x.dim() - 1))), torch.randn_like(grad), grad)
            delta = ascent_step(delta, grad, step, "l2")
            if box:
                delta = (x + delta).clamp(0.0, 1.0) - x
            delta = project_delta(delta, eps, "l2")
        x_adv = x + delta
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return (x_adv.clamp(0.0, 1.0) if box else x_adv).detach()


@register_defense("trades")
class TRADES(Defense):
    """TRADES; defaults are the CIFAR-10 ℓ∞ recipe (`train_trades_cifar10.py`)."""

    @dataclass
    class Config:
        # The suite's rows (β = 6 throughout; ℓ2 step 2ε/K by default).
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "eps": 2, "steps": 40, "beta": 6.0},
            "mnist_linf": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40,
                           "beta": 6.0},
            "cifar_linf": {"norm": "linf", "eps": 0.031, "step_size": 0.007, "steps": 10,
                           "beta": 6.0},
            "cifar_l2": {"norm": "l2", "eps": 0.435, "steps": 10, "beta": 6.0},
        }

        norm: Literal["linf", "l2"] = "linf"
        eps: EpsValue = EpsValue("0.031")    # TRADES CIFAR ε (MNIST: 0.3)
        step_size: EpsValue | None = None    # None: 0.007 (ℓ∞) or 2ε/K (ℓ2), as trades.py
        steps: int = 10                      # K (MNIST: 40)
        beta: float = 6.0                    # 1/λ (MNIST script default: 1.0)
        inner_mode: Literal["eval", "train"] = "eval"
        reuse_clean_logits: bool = False     # True: one clean forward (not the reference)

        def __post_init__(self):
            if self.steps < 0:
                raise ValueError("steps must be ≥ 0")

    box: bool = True

    @property
    def step_size(self) -> float:
        """The inner step: the config's, or the reference's rule (0.007 for ℓ∞, 2ε/K for ℓ2)."""
        cfg = self.config
        if cfg.step_size is not None:
            return cfg.step_size
        return 0.007 if cfg.norm == "linf" else 2 * cfg.eps / max(1, cfg.steps)

    def adversarial(self, model, x):
        cfg = self.config
        with crafting(model, cfg.inner_mode):
            return trades_adversarial(model, x, eps=cfg.eps, step=self.step_size,
                                      steps=cfg.steps, norm=cfg.norm, box=self.box)

    def trades_objective(self, model, x, y):
        x_adv = self.adversarial(model, x)
        logits = model(x)
        loss_natural = F.cross_entropy(logits.float(), y)
        logits_adv = model(x_adv)
        logits_target = logits if self.config.reuse_clean_logits else model(x)
        return loss_natural + self.config.beta * trades_kl(logits_target, logits_adv)

    def loss(self, model, x, y, ctx):
        return self.trades_objective(model, x, y)
