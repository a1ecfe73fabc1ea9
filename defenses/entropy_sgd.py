"""Entropy-SGD (Chaudhari et al., ICLR 2017): SGD on the local entropy, estimated by SGLD.

Sources: ucla-vision/entropy-sgd `python/optim.py` (`EntropySGD.step`), `python/train.py`,
`train.lua` (learning-rate regimes); GauriJagatap/StochAT `adversarial/ESGD_optim.py`
is a verbatim copy of `optim.py`.

One outer update (`train_step`), as `EntropySGD.step`:

1. the loss of the loop's batch (x, y) is computed (the reference's first `closure()`);
   with L = 0 its gradient is the update direction, with L > 0 it is only reported;
2. w_c ← w, μ ← w, inner momentum buffer ← 0; γ = γ₀·(1 + γ₁)^t ("scoping");
3. L inner SGLD steps, **each on a fresh minibatch** (`ctx.next_batch()`):
   d ← ∇f(w) + wd·w; buf ← m·buf + (1 − damp)·d; d ← d + m·buf (Nesterov);
   d ← d − γ·(w_c − w) + (noise/√(0.5·η′))·N(0, I); w ← w − η′·d;
   μ ← β₁·μ + (1 − β₁)·w;
4. w ← w_c; gradient ← w_c − μ; one step of the loop's optimizer (SGD, Nesterov momentum,
   weight decay, lr η from the loop's schedule).

The parameter noise per inner step is therefore noise·√(2η′)·N(0, I). L = 0 is plain
SGD-Nesterov on the batch cross-entropy. `make_optimizer` builds SGD with Nesterov from
the recipe's lr / momentum / weight decay (`force_nesterov: false` keeps the loop's).

Defaults: L = 20 (paper), η′ = 0.1, β₁ = 0.75, noise 1e-4, γ₁ = 1e-3, inner momentum 0.9
(Nesterov, damp 0), γ₀ = 0.03 (CIFAR; MNIST 1e-4). The inner weight decay is the loop
optimizer's (`inner_weight_decay: null`), as the reference shares one value. Outer lr
regimes of `train.lua` (Entropy-SGD starts at η = 1): mnistconv 1 (epochs 1–2), 0.1
(3–7), 0.01 (8–15), 5 epochs; cifarconv 1 (1–3), 0.2 (4–6), 0.04 (7–12), 10 epochs.
An epoch counts outer steps, so it costs (L + 1)× the gradient evaluations of SGD.

Differences from the Python reference, deliberately:
* t (scoping) is the loop's global step `ctx.step`; `optim.py` never increments its
  `state['t']`, so there γ stays γ₀ (the Lua code and the paper scope it);
* the outer step is the loop's `torch.optim.SGD`; `optim.py` initialises its outer
  momentum buffer to the first gradient and then adds the first update to it (buffer =
  m·g₀ + g₀ on the first step, torch: g₀), a start-up quirk not reproduced;
* with L > 0 the batch loss in step 1 is evaluated without a backward (the reference
  back-propagates and then discards that gradient): same parameters, less work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.defense import Defense
from bench.registry import register_defense


@register_defense("entropy_sgd")
class EntropySGD(Defense):
    """Entropy-SGD; defaults are the paper's CIFAR settings (L = 20, γ₀ = 0.03)."""

    @dataclass
    class Config:
        # Chaudhari et al.'s scope γ₀: mnistconv 1e-4, cifarconv 0.03; L = 20.
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"L": 20, "gamma0": 1e-4},
            "mnist_linf": {"L": 20, "gamma0": 1e-4},
            "cifar_linf": {"L": 20, "gamma0": 0.03},
        }

        L: int = 20                              # inner SGLD steps (0: SGD-Nesterov)
        inner_lr: float = 0.1                    # η′
        beta1: float = 0.75                      # μ ← β₁μ + (1−β₁)w
        noise: float = 1e-4                      # SGLD noise ε (std per step ε·√(2η′))
        gamma0: float = 0.03                     # scope γ₀ (MNIST: 1e-4)
        gamma1: float = 1e-3                     # scoping: γ_t = γ₀(1+γ₁)^t
        inner_momentum: float = 0.9
        inner_nesterov: bool = True
        inner_dampening: float = 0.0
        inner_weight_decay: float | None = None  # None: each param group's weight decay
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
            with ctx.autocast():
                loss = self.loss(model, x, y, ctx)
            loss.backward()
            optimizer.step()
            return loss.detach()

        with torch.no_grad(), ctx.autocast():
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
            xb, yb, _ = ctx.next_batch()
            with ctx.autocast():
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

        with torch.no_grad():
            for p, wc, m in zip(params, w_c, mu):
                p.copy_(wc)
                p.grad = wc - m
        optimizer.step()
        return loss.detach()
