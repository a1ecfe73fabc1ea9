"""ATENT (Jagatap et al., "Adversarially robust learning via entropic regularization",
arXiv 2008.12338 / Frontiers in AI 2022): adversarial training on SGLD samples of the inputs.

Sources, in the order they decide (issue 10's policy): the paper (`atent-paper.txt`:
Algorithm 1 = ℓ2-ATENT, Algorithm 2 = ℓ∞-ATENT, Eq. 8–9 and 12–14, §4.1, §4.2, A.1–A.3);
where it is silent or schematic, the authors' code, GauriJagatap/StochAT:
`adversarial/functional.py` (`_langevin_samples`: one SGLD step per call),
`adversarial/utils.py` (`random_perturbation`, `project`), `notebooks/mnist_exps_l2.ipynb`
(Table 1), `notebooks/mnist_exps_linf.ipynb` (Table 2), `notebooks/cifar10_exps_linf.py`
(Table 3), `notebooks/cifar_exps_l2.ipynb` (Tables 4–5). Where they differ the paper is the
default and the code a `code_tableN` preset.

One weight update (`loss`, one backward through the K training forwards, one optimizer step):

* start x′₀ (`init`, below), then K steps (Algorithms 1–2, lines 6–8):
    ℓ2 (Algorithm 1):  x′ₖ₊₁ = x′ₖ + η′·(D(g) + γ·(x − x′ₖ)) + √(2η′)·ε·N(0, I)
    ℓ∞ (Algorithm 2):  x′ₖ₊₁ = x′ₖ + η′·D(g) + √(2η′)·ε·N(0, I)      (no γ pull)
  with g = ∇ₓ CE(f(x′ₖ), y), η′ = `step_size`, ε = `noise`, γ = `gamma`;
* D(g), the gradient inside the chain: the paper writes the raw batch-mean gradient
  (schematic); the code steps along the per-sample ℓ2-normalised gradient (ℓ2) or its
  sign (ℓ∞) — *paper schematic; code* (`bench.plugins.perturb.ascent_step`);
* the pull (ℓ2 only): the paper's γ(x − x′) is inside η′·dx′ (`pull: paper`); the code adds
  γ·(x − x′) without η′ (`pull: code`, `_langevin_samples`). Algorithm 2 and the code have
  no pull for ℓ∞, so for ℓ∞ γ only sets the radius 1/γ;
* projection (`project`): Algorithm 2 / Eq. 14 clip at the K-th step only (`last`),
  P_γ = element-wise clip at 1/γ. Eq. 14 writes it on the increment; as paper-tables.md
  reads it (and the code does it), it projects the last iterate onto the ℓ∞ ball of
  radius r around x (Table 2: γ = 3.33, r = 1/γ = 0.3 = ε). Algorithm 1 projects nowhere
  (`none`); the code's MNIST runs project every step (`every`). Every iterate is clamped to
  the image box [0, 1] (paper silent; code: `.clamp(*clamp)` after every step);
* radius r (`radius`): `inv_gamma` = 1/γ, the paper's P_γ; `eps` = the ε-ball, the code's
  `project(x, x_adv, norm, eps)`. Table 3 (§4.2) prints γ = 1/0.0031, whose 1/γ = 0.0031
  is ε/10 and cannot have trained a model robust at 0.031; its preset reads the printed γ
  as 1/ε (the relation Table 2 states) and uses `radius: eps` with ε = 0.031, as the code;
* exponential average of the losses of x′₁ … x′_K from μ = 0, μ ← (1 − α)·μ + α·CE(f(x′ₖ), y)
  (Algorithms 1–2 lines 9–10, α = 0.9 §4.1/A.2), then w ← w − η∇w μ. The weights
  α(1 − α)^(K−k) sum to 1 − (1 − α)^K, as in the code;
* the chain carries no gradient to the weights; the K training forwards are kept for the
  single backward — K× the activation memory of PGD-AT.

Start x′₀ = x + δ (`init`). The paper (end of §3): "we initialize the Langevin update step
with a random normal perturbation δ of benign samples, which is constructed to lie inside
within approximately 1/γ radius of the natural samples". `init: paper` reads it as
δ = N(0, I) projected onto the ball of radius r in the chain's norm, then x + δ clamped to
[0, 1]: ℓ2 radial projection — ‖N(0, I)‖ ≈ √d (28 for MNIST, 55 for CIFAR) exceeds every r
used here, so δ lies on the sphere of radius r; ℓ∞ element-wise clip to ±r (for r = 0.3
76 % of the coordinates sit at ±r, the rest inside). This is the code's own construction
(`random_perturbation`) at the paper's radius, plus the clamp. With `radius: inv_gamma`,
r = 1/γ is also the ℓ2 chain's own scale: a unit ascent step η′ is cancelled by the pull
η′γ‖x′ − x‖ exactly at ‖x′ − x‖ = 1/γ. Table 3's start follows its clip radius (ε, as its
γ is read as 1/ε). `init: code` is the code's start at r: ℓ∞ a random corner
x + r·sign(N(0, I)), ℓ2 N(0, I) projected onto the r-ball, neither clamped.
`init: none` starts at x (not sourced; an option for tests). With `radius: inv_gamma`, a γ
of 0 has no radius, so `init: paper` or a projection with γ = 0 is a config error.

Mode while sampling (`inner_mode`): the paper is silent; the code samples with the model in
train() mode (BatchNorm batch statistics and running averages updated, dropout on) — the
default. The code runs the training forward of each iterate right after its SGLD step;
here the whole chain runs first, then the K training forwards: the same values, only the
order of the BatchNorm running-average updates differs.

Not reproduced from the code: its ℓ2 step divides by the gradient norm without a floor and
stops the batch early when ‖∇‖ < 5e-4 (here the norm is floored at 1e-12 and nothing stops);
its `train_adversarial` runs one unused clean forward per batch in train mode.

Per-table presets (the paper's values; `code_tableN` = the authors' notebook):
* `mnist_l2` — Table 1, §4.1: K 40, η′ 0.25, ε 0.001, γ 0.05, α 0.9, Algorithm 1 (paper
  pull, no projection), start at r = 1/γ = 20. `eps: 2` is the table's attack radius;
  Algorithm 1 projects nowhere, so the chain does not use it.
  `code_table1` (mnist_exps_l2.ipynb @c760c96, the version with the printed 98.66 / 79.3:
  cell 10 l.20-22, cell 19 l.7-31): ε_attack 2, K 40, η′ 2.5·2/40 = 0.125, γ 0.05 code
  pull, noise 1e-2, projection onto the 2-ball every step, code start.
* `mnist_linf` — Table 2, §4.1: K 40, η′ 0.01, ε 0.001, γ 3.33, last-step clip at
  1/γ = 0.3003, start at r = 1/γ. `code_table2` (mnist_exps_linf.ipynb @61df587 cells 10,
  20, 23, the notebook's text): K 2 × 40 = 80, η′ 0.01, noise 1e-4, γ 0, projection onto
  the 0.3-ball every step, corner start. That text did not write the checkpoint it
  evaluates (its loop, cell 23 l.8 `range(41, epochs+1)` with epochs 30, runs no epoch).
  `code_table2_run`: the run logged @6b022de cell 37, whose epoch 23 (natural 99.45) is
  the kept `BEST_model-nn-epoch23-robacc96.pt` (evaluated @61df587 cell 22: 99.45): K
  2 × 20 = 40 (cell 16 l.5, cell 37 l.16), η′ 0.02 (cell 16 l.6), noise 1e-4 and γ 0
  (cell 33 l.12, l.35), projection onto the 0.3-ball at the last step only (cell 33
  l.20-33), corner start (`random_perturbation` @6b022de adversarial/utils.py l.59-61).
  The run predates the commit's own functional.py, whose `_langevin_samples` returns a
  tuple the cell does not unpack (l.199); the version before, @e38d6d8, returns the
  iterate and clamps an unprojected one to [0, 1] (l.290-298), as the chain here does.
* `cifar_linf` — Tables 3 and 6, §4.2: K 10, η′ 0.007, ε 0.001, γ = 1/0.0031 (unused:
  `radius: eps`, see above), last-step clip at ε = 0.031, start at r = 0.031; the Config's
  own defaults. `code_table3` (cifar10_exps_linf.py): the same numbers, corner start.
* `cifar_l2_eps1` — Table 4 first block, A.2 (ε2 = 1): K 10, η′ = 2·ε2/K = 0.2, ε 0.001,
  γ 0.05 (the table's "Training parameter"), Algorithm 1; `cifar_l2_eps1_a2`: A.2's text
  says γ = 0.08 for the same row.
* `cifar_l2` — Table 4 second block (ε2 = 0.435) and Table 5, A.2 "Experiments on randomized
  smoothing": γ 0.05, η′ 0.02, K 10, ε = 0.6 so that √(2η′)·ε = 0.12, Algorithm 1.
  `code_table4` (cifar_exps_l2.ipynb cell 20): ε 0.435, K 10, η′ 0.5·0.435/10 = 0.02175,
  γ 0.05 code pull, noise 0.577 (per-step std 0.12), never projected, code start at 0.435.
All presets sample in train mode. The training recipe of each row (η, batch, epochs,
schedule, early stopping) is the suite's `train:` block, not this plugin's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.config import EpsValue
from bench.plugins.defense import Defense, crafting
from bench.plugins.perturb import ascent_step, project as project_ball, project_delta
from bench.plugins.registry import register_defense

INV_GAMMA_NEEDS_GAMMA = ("radius: inv_gamma (the paper's 1/γ) is infinite for gamma = 0, and "
                         "init: paper or a projection needs it: set gamma > 0 or radius: eps")


def chain_radius(radius: str, gamma: float, eps: float) -> float:
    """The radius r of the start and of the projection: 1/γ (`inv_gamma`) or ε (`eps`)."""
    if radius == "eps":
        return eps
    if radius == "inv_gamma":
        return 1.0 / gamma if gamma > 0 else math.inf
    raise ValueError(f"unknown radius {radius!r}")


def atent_init(x: torch.Tensor, r: float, norm: str, init: str) -> torch.Tensor:
    """The chain's start x′₀ (module docstring): `paper`, `code` or `none`."""
    if init == "none":
        return x.clone()
    if not math.isfinite(r):
        raise ValueError(INV_GAMMA_NEEDS_GAMMA)
    g = torch.randn_like(x)
    if init == "paper":
        return (x + project_delta(g, r, norm)).clamp(0.0, 1.0)
    if init == "code":
        if norm == "linf":
            return x + r * g.sign()
        return x + project_delta(g, r, "l2")
    raise ValueError(f"unknown init {init!r}")


def atent_chain(model, x: torch.Tensor, y: torch.Tensor, *, norm: str, step: float,
                steps: int, noise: float, radius: float, gamma: float = 0.0,
                pull: str = "paper", project: str = "last",
                init: str = "paper") -> list[torch.Tensor]:
    """Run the SGLD chain in whatever mode `model` is in. Returns the iterates
    [x′₀, x′₁, …, x′_K], detached (x′₀ is the start; the loss uses x′₁ … x′_K).

    `radius` is r, already resolved (`chain_radius`); `gamma` is the ℓ2 pull (ignored for
    ℓ∞); `pull` "paper" multiplies it by η′, "code" does not; `project` is "last",
    "every" or "none"."""
    if project not in ("last", "every", "none") or pull not in ("paper", "code"):
        raise ValueError(f"unknown project {project!r} or pull {pull!r}")
    if project != "none" and not math.isfinite(radius):
        raise ValueError(INV_GAMMA_NEEDS_GAMMA)
    x = x.detach()
    x_k = atent_init(x, radius, norm, init).detach()
    iterates = [x_k]
    pull_weight = (step * gamma if pull == "paper" else gamma) if norm == "l2" else 0.0
    noise_std = noise * math.sqrt(2.0 * step)
    for k in range(steps):
        x_g = x_k.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_g).float(), y)
        (grad,) = torch.autograd.grad(loss, x_g)
        nxt = ascent_step(x_k, grad, step, norm)          # x′ₖ + η′·D(g)
        if pull_weight:
            nxt = nxt + pull_weight * (x - x_k)
        if noise_std > 0:
            nxt = nxt + noise_std * torch.randn_like(x_k)
        if project == "every" or (project == "last" and k == steps - 1):
            nxt = project_ball(nxt, x, radius, norm)
        else:
            nxt = nxt.clamp(0.0, 1.0)
        x_k = nxt.detach()
        iterates.append(x_k)
    return iterates


def ema_loss(losses: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """μ ← (1 − α)·μ + α·ℓ_k over the iterates, from μ = 0."""
    total = losses[0].new_zeros(())
    for l_k in losses:
        total = (1 - alpha) * total + alpha * l_k
    return total


# The authors' code, shared by the four code presets.
_CODE = {"pull": "code", "init": "code", "radius": "eps", "inner_mode": "train"}


@register_defense("atent")
class ATENT(Defense):
    """ATENT; the defaults are Table 3's (`cifar_linf`): see the module docstring."""

    # 2: the paper's defaults (issue 10): train-mode sampling, the paper's start and ℓ2
    # pull, radius 1/γ, no ℓ∞ pull; `project`/`radius`/`pull` replace the old booleans.
    version = "2"

    @dataclass
    class Config:
        # Paper rows (module docstring): Table 1 mnist_l2, Table 2 mnist_linf, Tables 3
        # and 6 cifar_linf, Table 4 first block cifar_l2_eps1 (A.2's γ: cifar_l2_eps1_a2),
        # Table 4 second block and Table 5 cifar_l2; the authors' code: code_table1..4.
        PRESETS: ClassVar[dict[str, dict]] = {
            "mnist_l2": {"norm": "l2", "eps": 2, "step_size": 0.25, "steps": 40,
                         "noise": 1e-3, "gamma": 0.05, "radius": "inv_gamma",
                         "pull": "paper", "project": "none", "init": "paper"},
            "mnist_linf": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40,
                           "noise": 1e-3, "gamma": 3.33, "radius": "inv_gamma",
                           "project": "last", "init": "paper"},
            "cifar_linf": {"norm": "linf", "eps": "0.031", "step_size": "0.007",
                           "steps": 10, "noise": 1e-3, "gamma": "1/0.0031",
                           "radius": "eps", "project": "last", "init": "paper"},
            "cifar_l2_eps1": {"norm": "l2", "eps": 1, "step_size": 0.2, "steps": 10,
                              "noise": 1e-3, "gamma": 0.05, "radius": "inv_gamma",
                              "pull": "paper", "project": "none", "init": "paper"},
            "cifar_l2_eps1_a2": {"norm": "l2", "eps": 1, "step_size": 0.2, "steps": 10,
                                 "noise": 1e-3, "gamma": 0.08, "radius": "inv_gamma",
                                 "pull": "paper", "project": "none", "init": "paper"},
            "cifar_l2": {"norm": "l2", "eps": 0.435, "step_size": 0.02, "steps": 10,
                         "noise": 0.6, "gamma": 0.05, "radius": "inv_gamma",
                         "pull": "paper", "project": "none", "init": "paper"},
            "code_table1": {"norm": "l2", "eps": 2, "step_size": 0.125, "steps": 40,
                            "noise": 1e-2, "gamma": 0.05, "project": "every", **_CODE},
            "code_table2": {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 80,
                            "noise": 1e-4, "gamma": 0.0, "project": "every", **_CODE},
            # the logged run that wrote the authors' Table 2 checkpoint (docstring)
            "code_table2_run": {"norm": "linf", "eps": 0.3, "step_size": 0.02, "steps": 40,
                                "noise": 1e-4, "gamma": 0.0, "project": "last", **_CODE},
            "code_table3": {"norm": "linf", "eps": "0.031", "step_size": "0.007",
                            "steps": 10, "noise": 1e-3, "gamma": 0.0, "project": "last",
                            **_CODE},
            "code_table4": {"norm": "l2", "eps": 0.435, "step_size": 0.02175, "steps": 10,
                            "noise": 0.577, "gamma": 0.05, "project": "none", **_CODE},
        }

        norm: Literal["linf", "l2"] = "linf"        # paper §4.2 (Table 3: ℓ∞-ATENT)
        eps: EpsValue = EpsValue("0.031")           # paper §4 "Attacks" / §4.2: ε∞ 0.031; r with radius: eps
        step_size: EpsValue = EpsValue("0.007")     # η′, paper §4.2
        steps: int = 10                             # K, paper §4.2
        noise: float = 1e-3                         # ε of √(2η′)·ε·N(0, I), paper §4.2
        gamma: EpsValue = EpsValue("1/0.0031")      # γ, paper §4.2 (ℓ∞: sets r only with radius: inv_gamma)
        radius: Literal["inv_gamma", "eps"] = "eps"  # Table 3: γ read as 1/ε (paper-tables.md); code: ε-ball
        pull: Literal["paper", "code"] = "paper"    # ℓ2: paper Algorithm 1 (inside η′); code: without η′
        project: Literal["last", "every", "none"] = "last"   # paper Algorithm 2 / Eq. 14
        init: Literal["paper", "code", "none"] = "paper"     # paper end of §3, as read above
        alpha: float = 0.9                          # paper §4.1, A.2 (Algorithms 1–2 line 10)
        inner_mode: Literal["train", "eval"] = "train"   # paper silent; code: model.train()

        def __post_init__(self):
            if self.steps < 1:
                raise ValueError("steps must be ≥ 1")
            if not 0.0 < self.alpha <= 1.0:
                raise ValueError("alpha must be in (0, 1]")
            if self.noise < 0:
                raise ValueError("noise must be ≥ 0")
            needs_radius = self.init != "none" or self.project != "none"
            if needs_radius and not math.isfinite(self.resolved_radius()):
                raise ValueError(INV_GAMMA_NEEDS_GAMMA)

        def resolved_radius(self) -> float:
            """r: 1/γ or ε, as `radius` says."""
            return chain_radius(self.radius, self.gamma, self.eps)

    def sample(self, model, x, y) -> list[torch.Tensor]:
        cfg = self.config
        with crafting(model, cfg.inner_mode):
            return atent_chain(model, x, y, norm=cfg.norm, step=cfg.step_size,
                               steps=cfg.steps, noise=cfg.noise, radius=cfg.resolved_radius(),
                               gamma=cfg.gamma, pull=cfg.pull, project=cfg.project,
                               init=cfg.init)

    def loss(self, model, x, y, ctx):
        iterates = self.sample(model, x, y)
        losses = [F.cross_entropy(model(x_k).float(), y) for x_k in iterates[1:]]
        return ema_loss(losses, self.config.alpha)
