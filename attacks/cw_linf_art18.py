"""CW-ℓ∞ as ART ≤ 1.8 implemented it: the ε-bounded `CarliniLInfMethod` (a torch port).

The paper's CW-ℓ∞ column (Tables 2 and 3). The paper names only "Foolbox and ART";
Foolbox has no CW-ℓ∞. The authors' code calls ART's: GauriJagatap/StochAT
`additional_notebooks/test_attack-mnist.ipynb` (last changed 2021-02-11) runs
`CarliniLInfMethod(pytorch_clf, learning_rate=0.3, max_iter=40, eps=0.3,
batch_size=128, verbose=False)` on `SmallCNN_ESGD_ep20_lr0.01.pt` and prints clean
0.9924, robust 0.3465 — Table 2's Entropy-SGD row is 99.24 / 34.34. That call has an
`eps`: it is the CarliniLInfMethod of ART ≤ 1.8.1 (the same algorithm, up to formatting,
in every release from 1.3.0 to 1.8.1); ART 1.9.0 (Dec 2021) replaced it with an ℓ∞-minimising attack
of other parameters (`attacks/cw_linf_art.py`). ART 1.8.1 needs numpy < 1.24 (`np.int`)
and scikit-learn < 1.1, so it cannot be installed beside this project's numpy 2: this
file re-implements its algorithm in torch (written from reading ART 1.8.1's
art/attacks/evasion/carlini.py, art/utils.py; not copied), batched on the device.

The algorithm (untargeted), per image, independent of the batch: the box [lo, hi] =
[x − ε, x + ε] ∩ [0, 1] is mapped to the real line by w = arctanh((2(x − lo)/(hi − lo)
− 1)·0.999999); x′ = lo + (tanh w + 1)/2·(hi − lo). Starting at x, each of `max_iter`
steps takes the gradient g of z_y − z_j* (j* the runner-up class at the current point;
the hinge max(·+κ, 0) and κ enter only the loss, not g) through that map, and line-
searches w − lr·g on the hinge loss: it halves lr from its current value (at most
`max_halving` tries) while the loss does not drop, and if the first try already helped,
doubles it (at most `max_doubling` tries) while it keeps dropping; the best try is
taken, and lr carries over to the next step (halved after a doubling run). An image
stops once its loss is ≤ 0; where it never gets there, ART returns x. A fixed-ε attack:
one run per ε (the box depends on ε). Deterministic (no random numbers). Numerics follow
ART's: the tries in float64, the iterate in float32.

Why its values sit above PGD's (paper: SGD 32.37 vs PGD-20 0.97): in tanh space the
derivative of the map at a pixel at 0 or 1 — an end of its box — is ~1e-6, so in
practice only the grey pixels (the stroke's edges) move, and the greedy line search
stops for good where they cannot flip the class. On Table 2's SGD SmallCNN below (first
100 test images, authors' setting): successes after 1, 2, 4, 10, 40 steps: 13, 30, 47,
63, 63 of 100; in the successful points 84 % of the grey pixels and 0.03 % of the
pixels at 0 or 1 moved by more than 1e-3.

Defaults: learning_rate 0.3 and max_iter 40 are the authors' (the paper is silent; the
authors' code decides); confidence 0, max_halving 5, max_doubling 5 are ART's defaults,
which the authors kept; ε is the cell's. Preset `art_defaults`: ART's own 0.01 × 10.
Table 3 (CIFAR-10, ε 0.031) uses the same attack and budget as a judgement, not from a
source: §4.2 says CW-ℓ∞ "using FoolBox" (which has none) and no CIFAR call of the
authors' was found.

Measured on Table 2's SGD SmallCNN at the paper's settings (A.1: 50 epochs, batch 128,
lr 0.1, momentum 0.9; clean 98.80 % on the 10,000 test images), ε = 0.3, first 1,000 test
images (`bench run suite.yaml --filter 'mnist/mnist_smallcnn_sgd/cw_linf/*' --limit 1000`,
178 s on 2 CPU cores): robust 36.70 % (95 % Wilson [33.8, 39.7]); the paper prints 32.37,
and the authors' notebook printed 34.65 on its Entropy-SGD model where the paper prints
34.34. PGD-40 on the CW margin (κ 50) at the same ε gives 3.20 % and cross-entropy PGD-20
15.87 %: this attack is the weakest of the three, as the paper's values say. On 100
images the successes after 1, 2, 4, 10 and 40 steps were 13, 30, 47, 63 and 63: a larger
max_iter does not move the value; the success set is decided by which grey pixels can move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from bench.plugins.attack import Attack
from bench.plugins.registry import register_attack

SMOOTHER = 0.999999   # ART's `_tanh_smoother`: keeps arctanh finite at the box's ends


def _to_tanh(x, lo, hi):
    """ART `original_to_tanh`: the box [lo, hi] onto the real line, through arctanh."""
    return torch.atanh(((torch.minimum(torch.maximum(x, lo), hi) - lo) / (hi - lo) * 2 - 1)
                       * SMOOTHER)


def _from_tanh(w, lo, hi):
    """ART `tanh_to_original` (without dividing by the smoother, as ART)."""
    return (torch.tanh(w) + 1) / 2 * (hi - lo) + lo


def _view(v, like):
    return v.view(-1, *([1] * (like.dim() - 1)))


@register_attack("cw_linf_art18")
class CWLinfART18(Attack):
    """CW-ℓ∞ of ART ≤ 1.8 (ε-box in tanh space, line-searched gradient steps);
    defaults the ATENT authors' call: learning_rate 0.3, max_iter 40."""

    strength = 5   # weaker by design than PGD and DeepFool: saturated pixels cannot move

    @dataclass
    class Config:
        norm: Literal["linf"] = "linf"
        confidence: float = 0.0       # ART default (the authors keep it); κ of the hinge
        learning_rate: float = 0.3    # authors' notebook (ART default 0.01); first line-search step
        max_iter: int = 40            # authors' notebook (ART default 10); gradient steps
        max_halving: int = 5          # ART default (the authors keep it)
        max_doubling: int = 5         # ART default (the authors keep it)

        PRESETS: ClassVar[dict[str, dict]] = {
            "art_defaults": {"learning_rate": 0.01, "max_iter": 10},   # ART ≤ 1.8's own
        }

        def __post_init__(self):
            if self.learning_rate <= 0 or self.max_iter < 1:
                raise ValueError("learning_rate must be > 0 and max_iter ≥ 1")
            if self.max_halving < 1 or self.max_doubling < 1:
                raise ValueError("max_halving and max_doubling must be ≥ 1")
            if self.confidence < 0:
                raise ValueError("confidence must be ≥ 0")

    # ------------------------------------------------------------------ ART's pieces
    def _margin(self, model, x, y):
        """ART `_loss`: the logits and max(z_y − max_{j≠y} z_j + κ, 0)."""
        with torch.no_grad():
            z = model(x).float()
        other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
        return z, (z.gather(1, y[:, None])[:, 0] - other + self.config.confidence).clamp_min(0)

    def _descent(self, model, z, y, x_adv, w, lo, hi):
        """ART `_loss_gradient`, negated: −∇(z_y − z_j*) through the tanh map, j* the
        runner-up of the stored logits z. The hinge and κ do not enter the gradient."""
        runner_up = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).argmax(1)
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            zz = model(x_adv)
            diff = zz.gather(1, y[:, None]) - zz.gather(1, runner_up[:, None])
            (grad,) = torch.autograd.grad(diff.sum(), x_adv)
        return -grad * (hi - lo) * (1 - torch.tanh(w) ** 2) / (2 * SMOOTHER)

    # ------------------------------------------------------------------ the attack
    def perturb(self, model, x, y, eps):
        c = self.config
        n = x.shape[0]
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        w = _to_tanh(x, lo, hi)
        x_adv = x.clone()
        z, loss = self._margin(model, x_adv, y)
        success = loss <= 0
        lr = torch.full((n,), c.learning_rate, dtype=torch.float64, device=x.device)

        def trial(mask, step, g):
            """The margin at w + step·g for the samples in mask (written into loss); in
            float64 as ART's numpy (a float64 step times float32 arrays)."""
            w_try = w[mask].double() + _view(step[mask], g[mask]) * g[mask].double()
            x_try = _from_tanh(w_try, lo[mask].double(), hi[mask].double()).to(x.dtype)
            loss[mask] = self._margin(model, x_try, y[mask])[1]

        for _ in range(c.max_iter):
            active = ~success
            if not bool(active.any()):
                break
            g = torch.zeros_like(x)
            g[active] = self._descent(model, z[active], y[active], x_adv[active], w[active],
                                      lo[active], hi[active])
            # Line search, as ART: halve from lr while the margin does not drop, then
            # (if the first try already helped) double while it keeps dropping.
            prev_loss, best_loss = loss.clone(), loss.clone()
            best_lr = torch.zeros_like(lr)
            halving = torch.zeros(n, dtype=torch.long, device=x.device)
            for _ in range(c.max_halving):
                do = active & (loss >= prev_loss)
                if not bool(do.any()):
                    break
                trial(do, lr, g)
                better = loss < best_loss
                best_lr[better], best_loss[better] = lr[better], loss[better]
                lr[do] /= 2
                halving[do] += 1
            lr[active] *= 2
            for _ in range(c.max_doubling):
                do = active & (halving == 1) & (loss <= best_loss)
                if not bool(do.any()):
                    break
                lr[do] *= 2
                trial(do, lr, g)
                better = loss < best_loss
                best_lr[better], best_loss[better] = lr[better], loss[better]
            lr[halving == 1] /= 2
            upd = active & (best_lr > 0)
            if bool(upd.any()):
                w[upd] = (w[upd].double() + _view(best_lr[upd], w[upd]) * g[upd].double()
                          ).to(w.dtype)
                x_adv[upd] = _from_tanh(w[upd], lo[upd], hi[upd])
                z[upd], loss[upd] = self._margin(model, x_adv[upd], y[upd])
            success = loss <= 0
        return torch.where(_view(success, x), x_adv, x)
