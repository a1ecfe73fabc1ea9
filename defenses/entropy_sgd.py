"""Entropy-SGD: SGD on the local entropy, estimated by SGLD on the weights.

Default: the ATENT paper's version (Jagatap et al., Appendix A.1 and Algorithm 3 of
Appendix B.2), which the paper's Tables 1 and 2 train ("Entropy SGD"). Presets keep
Chaudhari et al.'s original (ICLR 2017; ucla-vision/entropy-sgd `python/optim.py`,
`train.lua`) and the ATENT authors' optimizer (GauriJagatap/StochAT
`adversarial/ESGD_optim.py`, a verbatim copy of Chaudhari's `optim.py`, driven by the
closure of `additional_notebooks/ESGD.ipynb` cell 34).

Algorithm 3, for each batch X_B of the loop (its line 6 has typos; the reading here):

    w′₀ ← w, μ₀ ← w
    for k = 0 … K−1, on the same batch X_B:
        dw′ ← −∇L(w′_k; X_B) + γ(w − w′_k)
        w′_{k+1} ← w′_k + η′·dw′ + √(2η′)·ε·N(0, I)
        μ ← (1 − α)·μ + α·w′_{k+1}
    w ← w − η·γ·(w − μ)

The printed line 6 writes the gradient at "w = w_k" and the pull as γ(w_k − w′_k). The
gradient must be taken at the chain's point w′_k: at a fixed w the K steps would not sample
anything, and Eq. (16)'s Gibbs measure p(w′) ∝ exp(−L(w′) − γ/2‖w′ − w‖²) whose mean the
chain estimates has the score −∇L(w′) − γ(w′ − w), the reading above. "w_k" is the outer
iterate w_t (there is no inner w_k), so the pull is towards the weights the chain started
from, as in `optim.py` (`dw.add_(-g, wc - w)`). Line 8's "μ_k ← (1 − α)μ_k + …" is the
running average μ_{k+1}, and line 11's outer step uses μ_K.

One outer update (`train_step`):

1. the loss of the loop's batch (x, y) at w is computed and returned (no backward);
2. K inner steps, each: d ← ∇L(w′; batch) + wd·w′ [+ momentum] − γ(w − w′) +
   (ε/√(0.5·η′))·N(0, I); w′ ← w′ − η′·d; μ ← β₁μ + (1 − β₁)w′  (α = 1 − β₁). The noise
   term is `optim.py`'s parametrisation: η′·ε/√(0.5η′) = √(2η′)·ε, the paper's;
3. w ← w, gradient ← γ·(w − μ) (`outer_gamma`; `optim.py`: w − μ), one step of the
   loop's optimizer, whose lr is η.

Defaults (paper's Tables 1–2 rows) and their sources:

* K = `L` = 5 Langevin steps, γ = `gamma0` = 1e-3: paper, A.1 ("with 5 langevin steps,
  and γ = 10−3"); batch 128, lr η 0.1, 50 epochs are the recipe's (suite.yaml train);
* `inner_batches: same`: Algorithm 3 (every inner step on X_Bj); also the authors' code,
  whose closure captures the loop's (x, y) (ESGD.ipynb cell 34);
* γ fixed, `gamma1` = 0 (no scoping): Algorithm 3 has one γ; in the authors' code
  `state['t']` is never incremented, so γ₀(1 + γ₁)^t stays γ₀ there too;
* `outer_gamma: true`, the outer gradient γ(w − μ): Algorithm 3 line 11;
* `inner_momentum` 0: Algorithm 3 line 7 is a plain Langevin step;
* η′ = `inner_lr` 0.1, α = 1 − `beta1` = 0.25, ε = `noise` 1e-4: paper silent; authors'
  code (`ESGD_optim.py`: langevin lr 0.1, beta1 0.75; eps 1e-4 in its defaults and in the
  notebook's `noise = 1e-4`);
* outer optimizer SGD with Nesterov momentum (`force_nesterov`, momentum from the recipe:
  0.9 in the suite): paper silent; authors' code (`momentum=0.9, nesterov=True`);
* inner weight decay = the loop optimizer's (`inner_weight_decay: null`): paper silent;
  `ESGD_optim.py` applies one `weight_decay` in both loops (the notebook's `l2 = 0`).

With these, the outer step is η·γ·(w − μ), about 1e-4·0.27·∇L per batch at η 0.1 (before
momentum), as printed; the authors' optimizer takes η·(w − μ), 1000× larger.

Presets:

* `mnist_l2`, `mnist_linf` (Tables 1–2): the defaults written out;
* `code`: the authors' optimizer at the paper's K and γ: same batch, inner Nesterov
  momentum 0.9 (`optim.py` shares the outer `momentum` with the inner loop), outer
  gradient w − μ. (The notebook itself ran it with L = 0, i.e. SGD-Nesterov.);
* `chaudhari`: Chaudhari et al.'s cifarconv: L = 20, **a fresh minibatch per inner step**
  (`train.py`'s closure draws the next batch; `ctx.next_batch()`), γ₀ 0.03 scoped
  γ₀(1 + 1e-3)^t with t the loop's global step (Lua code and paper; `optim.py` never
  advances t), inner Nesterov momentum 0.9, outer gradient w − μ; outer lr regimes of
  `train.lua` (Entropy-SGD starts at η = 1): cifarconv 1 (epochs 1–3), 0.2 (4–6), 0.04
  (7–12), 10 epochs; mnistconv 1 (1–2), 0.1 (3–7), 0.01 (8–15), 5 epochs;
* `chaudhari_mnist`: the same with mnistconv's γ₀ = 1e-4;
* `cifar_linf`: `chaudhari` (the ATENT paper trains no Entropy-SGD on CIFAR-10).

L = 0 is plain SGD-Nesterov on the batch cross-entropy. An epoch counts outer steps: each
costs one forward and K forward-backward passes (`chaudhari` on K further minibatches).

Differences from `optim.py`, deliberately:
* the outer step is the loop's `torch.optim.SGD`; `optim.py` initialises its outer
  momentum buffer to the first gradient and then adds the first update to it (buffer =
  m·g₀ + g₀ on the first step, torch: g₀), a start-up quirk not reproduced;
* with K > 0 the batch loss in step 1 is evaluated without a backward (the reference
  back-propagates and then discards that gradient): same parameters, less work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.defense import Defense
from bench.plugins.registry import register_defense

_PAPER = {"L": 5, "gamma0": 1e-3, "gamma1": 0.0, "inner_batches": "same",
          "inner_momentum": 0.0, "outer_gamma": True}
_CHAUDHARI = {"L": 20, "gamma0": 0.03, "gamma1": 1e-3, "inner_batches": "fresh",
              "inner_momentum": 0.9, "outer_gamma": False}


@register_defense("entropy_sgd")
class EntropySGD(Defense):
    """Entropy-SGD; defaults are the ATENT paper's (A.1, Algorithm 3)."""

    version = "2"   # 2: Algorithm 3 defaults (same batch, γ(w − μ)); 1: Chaudhari's

    @dataclass
    class Config:
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": dict(_PAPER),
            "mnist_linf": dict(_PAPER),
            "code": {**_PAPER, "inner_momentum": 0.9, "outer_gamma": False},
            "chaudhari": dict(_CHAUDHARI),
            "chaudhari_mnist": {**_CHAUDHARI, "gamma0": 1e-4},
            "cifar_linf": dict(_CHAUDHARI),
        }

        L: int = 5                               # K inner SGLD steps (0: SGD-Nesterov)
        inner_lr: float = 0.1                    # η′
        beta1: float = 0.75                      # μ ← β₁μ + (1−β₁)w′ (α = 1 − β₁)
        noise: float = 1e-4                      # SGLD noise ε (std per step ε·√(2η′))
        gamma0: float = 1e-3                     # γ (Chaudhari's scope γ₀)
        gamma1: float = 0.0                      # scoping: γ_t = γ₀(1+γ₁)^t (0: fixed γ)
        inner_batches: Literal["same", "fresh"] = "same"   # fresh: ctx.next_batch() per step
        inner_momentum: float = 0.0
        inner_nesterov: bool = True
        inner_dampening: float = 0.0
        inner_weight_decay: float | None = None  # None: each param group's weight decay
        outer_gamma: bool = True                 # outer gradient γ(w − μ); false: w − μ
        force_nesterov: bool = True              # make_optimizer: SGD with Nesterov

        def __post_init__(self):
            if self.L < 0:
                raise ValueError("L must be ≥ 0")
            if not 0.0 <= self.beta1 <= 1.0:
                raise ValueError("beta1 must be in [0, 1]")

    def loss(self, model, x, y, ctx):
        return F.cross_entropy(model(x).float(), y)

    def make_optimizer(self, params, train_cfg):
        if not self.config.force_nesterov:
            return None
        if getattr(train_cfg, "optimizer", "sgd") != "sgd":
            raise ValueError("entropy_sgd's outer step is SGD with Nesterov momentum: "
                             "set train.optimizer to sgd (or force_nesterov: false)")
        return torch.optim.SGD(params, lr=train_cfg.lr, momentum=train_cfg.momentum,
                               nesterov=True, weight_decay=train_cfg.weight_decay)

    def gamma(self, t: int) -> float:
        return self.config.gamma0 * (1.0 + self.config.gamma1) ** t

    def train_step(self, model, optimizer, x, y, ctx):
        cfg = self.config
        optimizer.zero_grad(set_to_none=True)
        if cfg.L == 0:
            loss = self.loss(model, x, y, ctx)
            loss.backward()
            optimizer.step()
            return loss.detach()

        with torch.no_grad():
            loss = self.loss(model, x, y, ctx)

        params, wds = [], []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    params.append(p)
                    wds.append(float(group.get("weight_decay", 0.0)) if cfg.inner_weight_decay is None
                               else cfg.inner_weight_decay)
        gamma = self.gamma(ctx.step)
        mom, damp = cfg.inner_momentum, cfg.inner_dampening
        noise_scale = cfg.noise / math.sqrt(0.5 * cfg.inner_lr)

        with torch.no_grad():
            w_c = [p.detach().clone() for p in params]
            mu = [p.detach().clone() for p in params]
            buf = [torch.zeros_like(p) for p in params]

        for _ in range(cfg.L):
            xb, yb = (x, y) if cfg.inner_batches == "same" else ctx.next_batch()[:2]
            inner = self.loss(model, xb, yb, ctx)
            grads = torch.autograd.grad(inner, params, allow_unused=True)
            with torch.no_grad():
                for p, g, wd, wc, m, b in zip(params, grads, wds, w_c, mu, buf):
                    d = torch.zeros_like(p) if g is None else g.detach().to(p.dtype).clone()
                    if wd > 0:
                        d.add_(p, alpha=wd)
                    if mom > 0:
                        b.mul_(mom).add_(d, alpha=1 - damp)
                        d = d.add(b, alpha=mom) if cfg.inner_nesterov else b.clone()
                    d.add_(wc - p, alpha=-gamma)
                    if cfg.noise > 0:
                        d.add_(torch.randn_like(p), alpha=noise_scale)
                    p.add_(d, alpha=-cfg.inner_lr)
                    m.mul_(cfg.beta1).add_(p, alpha=1 - cfg.beta1)

        scale = gamma if cfg.outer_gamma else 1.0
        with torch.no_grad():
            for p, wc, m in zip(params, w_c, mu):
                p.copy_(wc)
                p.grad = (wc - m).mul_(scale)
        optimizer.step()
        return loss.detach()
