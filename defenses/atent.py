"""ATENT (Jagatap et al., "Adversarially robust learning via entropic regularization",
arXiv 2008.12338 / Frontiers in AI 2022): adversarial training on SGLD samples of the inputs.

Sources: the paper's Algorithm 1 (ℓ2-ATENT) and Algorithm 2 (ℓ∞-ATENT, projection by
Eq. 14); GauriJagatap/StochAT `adversarial/functional.py` (`entropySmoothing` /
`_langevin_samples`: one SGLD step per call), `adversarial/utils.py`
(`random_perturbation`, `project`), `notebooks/cifar10_exps_linf.py` (Table 3),
`notebooks/cifar_exps_l2.py` / `.ipynb` (Tables 4–5), `notebooks/mnist_exps_linf.ipynb`
(Table 2), `notebooks/mnist_exps_l2.ipynb` (Table 1; has unresolved merge markers).

One weight update (`loss`, one backward through all K graphs, one optimizer step):

* chain x_0 → x_1 → … → x_K on the inputs, K SGLD steps of the energy "loss − γ/2·‖x′ − x‖²":
  x_{k+1} = x_k + η′·D(∇ₓ CE(f(x_k), y)) + γ·(x − x_k) + ε_th·√(2η′)·N(0, I),
  D = per-sample ℓ2-normalised gradient (ℓ2) or its sign (ℓ∞); then clamp to [0, 1], or
  project onto the ε-ball and clamp where projection is due (below). The pull γ·(x − x_k)
  is written, as in `_langevin_samples`, without a factor η′; the noise term is the code's
  `ep·√(2·step)·N(0, 1)` (`noise` = ε_th, `step_size` = η′);
* exponential average of the losses of the iterates x_1 … x_K, starting from 0:
  loss ← (1 − α)·loss + α·CE(f(x_k), y), with **α = 0.9 the weight of the newest
  iterate** (the code's `alpha`; the anchors' "0.1·loss + 0.9·CE" is the same update).
  The weights α(1 − α)^(K−k) sum to 1 − (1 − α)^K, not 1, as in the code;
* the chain carries no gradient to the weights; the K training forwards (train mode)
  are kept for the single backward — K× the activation memory of PGD-AT.

Projection: ℓ∞ projects only the last iterate (Eq. 14) — `project_every_step: false`,
`project_last: true`; the MNIST ℓ∞ run projects every step (`project_every_step: true`);
the CIFAR ℓ2 run never projects (`project_last: false`). Intermediate iterates may leave
the ε-ball but are always clamped to [0, 1].

Where the paper and the authors' code differ — the paper is the default, the code an option:
* model mode while sampling: paper eval (`inner_mode: eval`); the code samples with the
  model in **train()** mode (BatchNorm batch statistics, running averages updated, dropout
  on) — `inner_mode: train`. (The code runs the training forward of each new iterate
  right after its SGLD step; here the whole chain runs first, then the K training
  forwards — the same values, only the BatchNorm running-average updates are reordered.)
* γ for ℓ∞: the paper's energy has the γ term for both norms (`gamma_linf: true`); the
  code ignores γ for ℓ∞ (`gamma_linf: false`);
* start x_0: the paper starts the chain at a random point near the data, at the scope of
  its Gibbs measure (within about 1/γ of the data). `init: gibbs` (default) is our
  reading of that: a draw from the measure's Gaussian factor as this chain parameterises
  it — the stationary law of the chain with the loss gradient switched off,
  x_{k+1} − x = (1 − γ)(x_k − x) + σ·ξ with σ = ε_th·√(2η′), i.e.
  x_0 = x + N(0, σ²/(γ(2 − γ))·I), clamped to [0, 1] (std ≈ ε_th·√(η′/γ): 1/√γ in the
  scale, η′ and ε_th fixing the temperature). The exact formula could not be checked
  against the paper text here (*unverified*); it needs the pull (γ > 0, and `gamma_linf`
  for ℓ∞), so configs without it choose another start: `init: uniform` is uniform in the
  ε-ball (`bench.perturb.random_init`, clamped); `init: code` is the code's start: ℓ∞ a
  random **corner** x + ε·sign(N(0, I)), ℓ2 N(0, I) projected onto the ε-ball (≈ the
  sphere of radius ε), neither clamped; `init: none` starts at x;
* the code's ℓ2 step divides by the gradient norm without a floor (NaN for a zero
  gradient) and stops the batch early when ‖∇‖ < 5e-4 ("vanishing gradients"); here the
  norm is floored at 1e-12 (a zero gradient gives a zero step) and nothing stops early;
* the code's `train_adversarial` also runs one unused clean forward per batch in train
  mode (BatchNorm statistics only); not reproduced.

Per-table settings (defaults of this Config = Table 3):
* Table 1, MNIST ℓ2: LeNet5Madry, ε 2, K 40, η′ = 2.5·ε/40 = 0.125, γ 0.05, noise 1e-2,
  projection every step (`project_every_step: true`): the side of the notebook's merge
  whose printed output is the result (the other side has noise 1e-3, no projection and
  no output); SGD lr 0.01 momentum 0.9 (no wd), batch 50 → clean 98.66 / ℓ2 PGD-40 79.3.
* Table 2, MNIST ℓ∞: SmallCNN, ε 0.3, **K = 80** (2 × 40), η′ 0.01, noise 1e-4, γ 0,
  `project_every_step: true`; with γ = 0 the paper's γ-prior is flat, so this row starts
  where the code does (`init: code`, a random corner of the ε-ball); SGD lr 0.01
  momentum 0.9 (the notebook's wd 1e-4 is not passed to the optimizer), batch 128
  → 99.45 / PGD-40 96.4.
* Table 3, CIFAR-10 ℓ∞: WRN-34-10, ε 0.031, K 10, η′ 0.007, noise 1e-3, last-step
  projection; SGD lr 0.1 momentum 0.9 wd 5e-4, batch 128, 76 epochs, lr ×0.1 at 75,
  seed 1 → 85.67 / PGD-20 57.28. γ: unused by the code for ℓ∞; the default 1e-3 is
  `entropySmoothing`'s default argument (the paper's ℓ∞ γ is *unverified*).
* Table 4 (and 5), CIFAR-10 ℓ2: ResNet-18, ε 0.435, K 10 (the `.py` export says 20),
  η′ = 0.5·ε/K = 0.02175, γ 0.05, noise 0.577 (per-step std 0.12), never projected
  (`project_last: false`); SGD lr 0.1 momentum 0.9 wd 1e-4, batch 256, lr ×0.1 at epoch
  50 → 72.1 / ℓ2 PGD-10 64.55.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.defense import Defense, crafting
from bench.eps import parse_eps
from bench.perturb import ascent_step, project, project_delta, random_init
from bench.registry import register_defense


def gibbs_prior_std(step: float, noise: float, gamma: float) -> float:
    """Per-coordinate std of the chain's stationary law without the loss gradient:
    Var = σ²/(1 − (1 − γ)²) = σ²/(γ(2 − γ)), σ = noise·√(2·step)."""
    if not 0.0 < gamma < 2.0:
        raise ValueError("init 'gibbs' (the γ-prior) needs 0 < gamma < 2")
    return noise * math.sqrt(2.0 * step) / math.sqrt(gamma * (2.0 - gamma))


def atent_init(x: torch.Tensor, eps: float, norm: str, init: str,
               prior_std: float | None = None) -> torch.Tensor:
    """The chain's start x_0 (see the module docstring for the four choices)."""
    if init == "gibbs":
        if prior_std is None:
            raise ValueError("init 'gibbs' needs the prior's std (gibbs_prior_std)")
        return (x + prior_std * torch.randn_like(x)).clamp(0.0, 1.0)
    if init == "uniform":
        return random_init(x, eps, norm)
    if init == "code":
        g = torch.randn_like(x)
        if norm == "linf":
            return x + eps * g.sign()
        return x + project_delta(g, eps, "l2")
    if init == "none":
        return x.clone()
    raise ValueError(f"unknown init {init!r}")


GIBBS_NEEDS_PULL = ("init 'gibbs' (the default) draws the start from the γ-prior of the "
                    "paper's measure and needs the pull: gamma > 0, and gamma_linf: true "
                    "for ℓ∞; without it choose init: uniform, code or none")


def pull_active(norm: str, gamma: float, gamma_linf: bool) -> bool:
    """Does the chain pull towards the clean point (γ > 0, and `gamma_linf` for ℓ∞)?"""
    return gamma != 0 and (norm == "l2" or gamma_linf)


def atent_chain(model, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                step: float, steps: int, noise: float, gamma: float,
                gamma_linf: bool = True, project_every_step: bool = False,
                project_last: bool = True, init: str = "gibbs") -> list[torch.Tensor]:
    """Run the SGLD chain in whatever mode `model` is in. Returns the iterates
    [x_0, x_1, …, x_K], detached (x_0 is the start; the loss uses x_1 … x_K)."""
    x = x.detach()
    use_gamma = pull_active(norm, gamma, gamma_linf)
    if init == "gibbs" and not use_gamma:
        raise ValueError(GIBBS_NEEDS_PULL)
    prior_std = gibbs_prior_std(step, noise, gamma) if init == "gibbs" else None
    x_k = atent_init(x, eps, norm, init, prior_std).detach()
    iterates = [x_k]
    noise_std = noise * math.sqrt(2.0 * step)
    for k in range(steps):
        x_g = x_k.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_g).float(), y)
        (grad,) = torch.autograd.grad(loss, x_g)
        nxt = ascent_step(x_k, grad, step, norm)
        if use_gamma:
            nxt = nxt + gamma * (x - x_k)
        if noise_std > 0:
            nxt = nxt + noise_std * torch.randn_like(x_k)
        if project_every_step or (project_last and k == steps - 1):
            nxt = project(nxt, x, eps, norm)
        else:
            nxt = nxt.clamp(0.0, 1.0)
        x_k = nxt.detach()
        iterates.append(x_k)
    return iterates


def ema_loss(losses: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """loss ← (1 − α)·loss + α·ℓ_k over the iterates, from loss = 0."""
    total = losses[0].new_zeros(())
    for l_k in losses:
        total = (1 - alpha) * total + alpha * l_k
    return total


@register_defense("atent")
class ATENT(Defense):
    """ATENT; defaults are the Table 3 (CIFAR-10 ℓ∞, WRN-34-10) settings."""

    @dataclass
    class Config:
        # Per-table settings (module docstring): Table 1 mnist_l2, Table 2 mnist_linf,
        # Tables 3 and 6 cifar_linf, Tables 4 and 5 cifar_l2.
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "eps": 2, "step_size": 0.125, "steps": 40,
                         "gamma": 0.05, "noise": 1e-2, "project_every_step": True},
            "mnist_linf": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 80,
                           "noise": 1e-4, "gamma": 0.0, "project_every_step": True,
                           "init": "code"},
            "cifar_linf": {"norm": "linf", "eps": 0.031, "step_size": 0.007, "steps": 10,
                           "noise": 1e-3},
            "cifar_l2": {"norm": "l2", "eps": 0.435, "step_size": 0.02175, "steps": 10,
                         "gamma": 0.05, "noise": 0.577, "project_last": False},
        }

        norm: Literal["linf", "l2"] = "linf"
        eps: float | str = "0.031"
        step_size: float | str = "0.007"     # η′ (SGLD step on the inputs)
        steps: int = 10                      # K (MNIST ℓ∞: 80)
        noise: float = 1e-3                  # thermal noise ε_th: per-step std ε_th·√(2η′)
        gamma: float = 1e-3                  # pull γ·(x − x_k) towards the clean point
        gamma_linf: bool = True              # paper: γ for ℓ∞ too; code: ignored (false)
        alpha: float = 0.9                   # weight of the newest iterate's loss
        project_every_step: bool = False     # MNIST ℓ∞: true
        project_last: bool = True            # Eq. 14; CIFAR ℓ2: false (never projected)
        init: Literal["gibbs", "uniform", "code", "none"] = "gibbs"   # code: "code"
        inner_mode: Literal["eval", "train"] = "eval"   # code: train

        def __post_init__(self):
            self.eps_value = parse_eps(self.eps).value
            self.step_value = parse_eps(self.step_size).value
            if self.steps < 1:
                raise ValueError("steps must be ≥ 1")
            if not 0.0 < self.alpha <= 1.0:
                raise ValueError("alpha must be in (0, 1]")
            if self.noise < 0 or self.gamma < 0:
                raise ValueError("noise and gamma must be ≥ 0")
            if self.init == "gibbs":
                if not pull_active(self.norm, self.gamma, self.gamma_linf):
                    raise ValueError(GIBBS_NEEDS_PULL)
                gibbs_prior_std(self.step_value, self.noise, self.gamma)   # 0 < γ < 2

    def sample(self, model, x, y) -> list[torch.Tensor]:
        cfg = self.config
        with crafting(model, cfg.inner_mode):
            return atent_chain(model, x, y, norm=cfg.norm, eps=cfg.eps_value,
                               step=cfg.step_value, steps=cfg.steps, noise=cfg.noise,
                               gamma=cfg.gamma, gamma_linf=cfg.gamma_linf,
                               project_every_step=cfg.project_every_step,
                               project_last=cfg.project_last, init=cfg.init)

    def loss(self, model, x, y, ctx):
        iterates = self.sample(model, x, y)
        losses = [F.cross_entropy(model(x_k).float(), y) for x_k in iterates[1:]]
        return ema_loss(losses, self.config.alpha)
