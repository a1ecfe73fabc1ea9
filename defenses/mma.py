"""MMA training (Ding et al., ICLR 2020): max-margin adversarial training.

Sources: BorealisAI/mma_training `trainer.py` (`Trainer.train_one_batch`, `get_eps`,
`update_eps`), `anpgd.py` (`ANPGD`, `bisection_search`), `config.py`, `train.py`
(`attack_maxeps = 1.05 · hinge_maxeps`), advertorch `loss.py` (soft logit margin) and
`attacks/iterative_projected_gradient.py` (the PGD it runs).

One batch, as `train_one_batch`:

1. clean forward (train mode): clean CE (batch mean); an example is "correct" when its
   soft logit margin SLM = logsumexp_{j≠y} z_j − z_y is < 0;
2. AN-PGD on the correct examples, each at its remembered ε (≥ `mineps`; per-example
   state indexed by `ctx.index`, kept across epochs and saved in `state_dict`):
   PGD maximising the summed SLM (eval mode, no parameter gradients), ε per example, step
   2.5·ε/nb_iter, random start; unit direction u = (x_adv − x)/(ε + 1e-12); then a
   bisection (10 steps, bracket [0, maxeps], maxeps = 1.05·d_max) on t for the sign
   change of SLM(f(clamp(x + t·u))) → the new ε of the example and the boundary point
   x + ε·u; misclassified examples get ε = 0 (so they restart at `mineps`);
3. MMA forward on the batch with correct examples replaced by their boundary points:
   loss_mma = (Σ_{correct, ε < d_max} CE_i + Σ_{wrong} CE_i) / N;
4. objective = (1 − c)·loss_mma + c·clean CE with c = `clean_loss_coeff` = 1/3 (the
   reference combines the two gradients with these weights; the forwards are separate,
   so one backward of the weighted sum gives the same gradient). c = 0 is "OMMA".

Defaults = CIFAR-10 ℓ∞ (`config.py` LinfCIFAR10, `run_cifar10_training.sh`): d_max = 32/255
(MMA-32; the paper also trains 12/255 and 20/255), mineps 0.005, nb_iter 10; recipe
WRN-28-4, SGD lr 0.3 → 0.09 (20k steps) → 0.03 (30k) → 0.009 (40k), 50k steps, batch 128,
wd 2e-4, momentum 0.9. Every other default is `config.py`'s BaseConfig: clean_loss_coeff
1/3, eps_iter_scale 2.5, num_search_steps 10, rand_init, attack and search losses "slm",
and `train.py`'s attack_maxeps = 1.05·hinge_maxeps. `mineps: null` means the CIFAR value
of the norm (0.005 for ℓ∞, 0.5 for ℓ2).

Presets (`config.py`, `run_*_training.sh`):
* `cifar_linf`: the defaults. `cifar_l2`: L2CIFAR10, d_max 1 (cifar10-L2-MMA-1.0, the
  "d = 1" model of the ATENT paper's Table 4), mineps 0.5;
* `mnist_linf`: LinfMNIST (nb_iter 40, mineps 0.1), d_max 0.45 (mnist-Linf-MMA-0.45, the
  released model; the ATENT authors load it, StochAT `additional_notebooks/ESGD.ipynb`);
* `mnist_l2`: L2MNIST (nb_iter 40, mineps 0.5), d_max 4: the ℓ2 model the ATENT authors
  load for their MNIST-ℓ2 comparison (`mnist-L2-MMA-4.0-sd0/model_best.pt` in StochAT
  `additional_notebooks/ESGD.ipynb` and `evaluateAllNewNetworks_final.ipynb`); MMA
  releases d_max 2, 4 and 6. MMA's paper table behind Table 1's printed MMA row (99.27 /
  73.02) was not at hand to confirm which of the three it is.
MNIST recipe (the suite's train block): LeNet5Madry, Adam 1e-4, batch 50, 100k steps,
a 5,000-image validation split. The steps run on the 55,000 images left after the split
(advertorch_examples/utils.py @e063e34 l.128-134): 1,100 per epoch, so 91 epochs (100,100
steps; `trainer.py` stops at 100,000, l.267-269). CIFAR-10: 45,000 images, 352 steps of
128 per epoch: 142 epochs, the lr changes from epochs 58, 86, 115. The schedule's factors
×0.3, ×1/3, ×0.3 (config.py l.33-34) need an lr per milestone; the suite's one `gamma`
(0.3) gives 0.027 and 0.0081 for the last two (suite.yaml cifar_wrn_mma says so).

Checkpoint selection (`train.py`): after every epoch MMA evaluates `ANPGDForTest` on the
validation split (the first 5,000 training images) and keeps as `model_best.pt` the epoch
with the largest mean AN-PGD margin `val_avgeps`. That is the generic loop's early stopping
with the `anpgd` attack (`attacks/anpgd.py`) and `grid: N` up to eps = 1.05·d_max: the
mean robust accuracy over N evenly spaced ε in (0, 1.05·d_max] is the mean margin capped
at 1.05·d_max, divided by it, within 1/N (see `attacks/anpgd.py`). The loop holds out a
fixed pseudo-random 5,000 (`bench.data.read.carve_validation`), not the first 5,000.

Where this file differs from the reference:
* `search_mode`: the reference runs the PGD in eval mode but the bisection (and the
  margin of the PGD point) in the model's train mode — BatchNorm then uses the statistics
  of the correct subset and updates its running averages 11 more times per batch. That is
  the default here ("train"); "eval" runs the search in eval mode;
* the boundary point x + ε·u is clamped to [0, 1] (the reference returns it unclamped,
  although its bisection evaluated the margins at the clamped points);
* the ℓ2 random start and projection are the shared `bench.plugins.perturb` ones (uniform in the
  ball; ball then box) where advertorch starts from a box-uniform point clamped to the
  ball and clamps box then ball;
* the bisection runs under `torch.no_grad()` (the reference builds unused graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.config import EpsValue
from bench.plugins.defense import Defense
from bench.plugins.perturb import ascent_step, project, random_init
from bench.plugins.registry import register_defense


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def soft_logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample logsumexp_{j≠y} z_j − z_y (advertorch's SoftLogitMarginLoss, 'none')."""
    logits = _upcast(logits)
    mask = F.one_hot(y, logits.shape[1]).bool()
    others = logits.masked_fill(mask, float("-inf"))
    return torch.logsumexp(others, dim=1) - logits.gather(1, y.unsqueeze(1)).squeeze(1)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample max_{j≠y} z_j − z_y (advertorch's `elementwise_margin`)."""
    logits = _upcast(logits)
    mask = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1)


def bisection_search(model, x: torch.Tensor, y: torch.Tensor, unit_ptb: torch.Tensor,
                     cur_eps: torch.Tensor, margin_init: torch.Tensor, maxeps: torch.Tensor,
                     steps: int = 10,
                     margin_fn: Callable = soft_logit_margin, *, crossing: bool = False):
    """Per-sample bisection for the smallest t in [0, maxeps] where
    margin_fn(f(clamp(x + t·u))) ≥ 0 (the decision boundary along u).

    `margin_init` is the margin at t = cur_eps. As `anpgd.bisection_search`: each step
    first narrows the bracket with the last margin, then evaluates the midpoint; the last
    midpoint is returned, so |result − t*| ≤ maxeps / 2**steps. With `crossing`, also the
    smallest evaluated midpoint whose margin is ≥ 0 (inf where none was): a point known
    to be across the boundary."""
    margin = margin_init
    lo = torch.zeros_like(margin)
    hi = maxeps.clone()
    across = torch.full_like(margin, float("inf"))
    for _ in range(steps):
        inside = margin < 0
        lo = torch.where(inside, torch.maximum(cur_eps, lo), lo)
        hi = torch.where(inside, torch.minimum(maxeps, hi), torch.minimum(cur_eps, hi))
        cur_eps = (lo + hi) / 2
        with torch.no_grad():
            margin = margin_fn(model((x + _view(cur_eps, x) * unit_ptb).clamp(0.0, 1.0)), y)
        across = torch.where(margin >= 0, torch.minimum(across, cur_eps), across)
    return (cur_eps, across) if crossing else cur_eps


def anpgd(model, x: torch.Tensor, y: torch.Tensor, prev_eps: torch.Tensor, *, norm: str,
          nb_iter: int, maxeps: float, eps_iter_scale: float = 2.5, search_steps: int = 10,
          rand_init: bool = True, search_mode: Literal["train", "eval"] = "train"
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """AN-PGD: PGD on the soft logit margin at per-sample ε = prev_eps (eval mode), then a
    bisection along the PGD direction. Returns (boundary point clamped to [0, 1], ε)."""
    was_training = model.training
    x = x.detach()
    step = eps_iter_scale * prev_eps / nb_iter
    model.eval()
    try:
        x_adv = random_init(x, prev_eps, norm) if rand_init else x.clone()
        for _ in range(nb_iter):
            x_adv.requires_grad_(True)
            loss = soft_logit_margin(model(x_adv), y).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project(ascent_step(x_adv.detach(), grad, step, norm), x, prev_eps, norm)
        model.train(was_training if search_mode == "train" else False)
        with torch.no_grad():
            unit = (x_adv - x) / _view(prev_eps + 1e-12, x)
            margin = soft_logit_margin(model(x_adv), y)
            eps = bisection_search(model, x, y, unit, prev_eps, margin,
                                   torch.full_like(prev_eps, float(maxeps)), search_steps)
    finally:
        model.train(was_training)
    return (x + _view(eps, x) * unit).clamp(0.0, 1.0).detach(), eps


@register_defense("mma")
class MMA(Defense):
    """MMA training; defaults are the CIFAR-10 ℓ∞ recipe with d_max = 32/255."""

    @dataclass
    class Config:
        # The suite's rows: MMA's MNIST ℓ∞ d_max 0.45 and ℓ2 d_max 4 (40 iterations),
        # CIFAR ℓ∞ d_max 32/255 and ℓ2 d_max 1 (10 iterations); see the module docstring.
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "d_max": 4, "mineps": 0.5, "nb_iter": 40},
            "mnist_linf": {"norm": "linf", "d_max": 0.45, "mineps": 0.1, "nb_iter": 40},
            "cifar_linf": {"norm": "linf", "d_max": "32/255", "nb_iter": 10},
            "cifar_l2": {"norm": "l2", "d_max": 1, "mineps": 0.5, "nb_iter": 10},
        }

        norm: Literal["linf", "l2"] = "linf"
        d_max: EpsValue = EpsValue("32/255")    # hinge_maxeps (CIFAR ℓ∞: 12, 20 or 32 /255)
        mineps: EpsValue | None = None          # None: 0.005 (ℓ∞) or 0.5 (ℓ2), the CIFAR values
        nb_iter: int = 10                       # PGD iterations (MNIST: 40)
        eps_iter_scale: float = 2.5             # PGD step = scale · ε / nb_iter
        search_steps: int = 10                  # bisection steps
        maxeps_factor: float = 1.05             # attack maxeps = factor · d_max
        clean_loss_coeff: float = 1.0 / 3       # 0: OMMA
        rand_init: bool = True
        search_mode: Literal["train", "eval"] = "train"  # reference: bisection in train mode

        def __post_init__(self):
            if not 0.0 <= self.clean_loss_coeff <= 1.0:
                raise ValueError("clean_loss_coeff must be in [0, 1]")
            if self.nb_iter < 1:
                raise ValueError("nb_iter must be ≥ 1")

    def __init__(self, config=None, *, num_classes: int = 10, dataset_size: int = 0):
        super().__init__(config, num_classes=num_classes, dataset_size=dataset_size)
        self.eps_table: torch.Tensor | None = None   # ε of each training example (0: unset)

    @property
    def mineps(self) -> float:
        """The smallest ε an example starts from: the config's, or the CIFAR value of its norm."""
        if self.config.mineps is not None:
            return self.config.mineps
        return 0.005 if self.config.norm == "linf" else 0.5

    # ------------------------------------------------------------- per-example state
    def _table(self, size: int, device) -> torch.Tensor:
        if self.eps_table is None:
            self.eps_table = torch.zeros(size, device=device)
        elif self.eps_table.numel() < size:
            grown = torch.zeros(size, device=self.eps_table.device)
            grown[: self.eps_table.numel()] = self.eps_table
            self.eps_table = grown
        if self.eps_table.device != torch.device(device):
            self.eps_table = self.eps_table.to(device)
        return self.eps_table

    def get_eps(self, index: torch.Tensor, device) -> torch.Tensor:
        table = self._table(int(index.max()) + 1, device)
        return table[index.to(device)].clamp_min(self.mineps)

    def update_eps(self, index: torch.Tensor, eps: torch.Tensor) -> None:
        table = self._table(int(index.max()) + 1, eps.device)
        table[index.to(eps.device)] = eps.detach().float()

    def state_dict(self) -> dict:
        return {} if self.eps_table is None else {"eps": self.eps_table.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        eps = state.get("eps")
        self.eps_table = None if eps is None else eps.clone().float()

    # ------------------------------------------------------------------- objective
    def loss(self, model, x, y, ctx):
        cfg = self.config
        n = x.shape[0]
        index = ctx.index if ctx is not None else None
        if index is not None and self.eps_table is None:
            self._table(max(int(ctx.dataset_size or self.dataset_size or 0), int(index.max()) + 1),
                        x.device)

        logits_cln = model(x)
        loss_cln = F.cross_entropy(logits_cln.float(), y)
        correct = soft_logit_margin(logits_cln.detach(), y) < 0

        x_mma = x.detach().clone()
        eps = torch.zeros(n, device=x.device)
        if bool(correct.any()):
            if index is None:
                prev = torch.full((int(correct.sum()),), self.mineps, device=x.device)
            else:
                prev = self.get_eps(index[correct.to(index.device)], x.device)
            x_b, eps_b = anpgd(model, x[correct], y[correct], prev, norm=cfg.norm,
                               nb_iter=cfg.nb_iter, maxeps=cfg.maxeps_factor * cfg.d_max,
                               eps_iter_scale=cfg.eps_iter_scale, search_steps=cfg.search_steps,
                               rand_init=cfg.rand_init, search_mode=cfg.search_mode)
            x_mma[correct] = x_b
            eps[correct] = eps_b

        ce = F.cross_entropy(model(x_mma).float(), y, reduction="none")
        keep = ~correct | (eps < cfg.d_max)
        loss_mma = (ce * keep).sum() / n
        if index is not None:
            self.update_eps(index, eps)
        c = cfg.clean_loss_coeff
        return (1 - c) * loss_mma + c * loss_cln if c > 0 else loss_mma
