"""CW-ℓ∞ through ART's `CarliniLInfMethod` (adversarial-robustness-toolbox 1.20.1).

What ART ≥ 1.9 does (art/attacks/evasion/carlini.py, read at 1.20.1; rewritten in ART
1.9.0, Dec 2021 — before that the class was an ε-bounded attack, `attacks/cw_linf_art18.py`):
it takes no ε and *minimises* ‖δ‖∞, one image at a time. For τ = 1, then τ ←
decrease_factor · min(τ, ‖δ_best‖∞) after each success (until τ ≤ 1/256 or no new
success), and for c = initial_const, ·const_factor, … while c < largest_const, it runs
`max_iter` Adam steps (α = learning_rate) from the clean image in tanh space of the
[0, 1] box (clip_values) on c·max(z_y − max_{j≠y} z_j + κ, 0) + Σ max(|δ_i| − τ, 0),
stopping a run early once that loss is < 0.001, and keeps the misclassified iterate of
smallest ‖δ‖∞; where it finds none it returns the clean image. So this plugin is a
*minimisation* attack (`minimization = True`): one run per ε sweep, the base class
clips the minimal perturbation to each ε and re-queries the model.

Two properties of ART's code that decide what its settings do:
* c does not enter the gradient (`_loss_gradient` is ∇ of the margin and of the τ term,
  unscaled), only the early stop; every (τ, c) run starts afresh from the clean image.
  With κ = 0 the runs are the same Adam trajectory cut at different points, so
  initial_const, largest_const and const_factor change the cost, not the result.
  Checked: on 20 images of a 2-epoch SGD SmallCNN at α 0.1 × 10 steps, the default
  ladder (21 values of c) and the single c = 10 gave the same ‖δ‖∞ for all 20 images,
  in 814 s and 53 s. κ only moves the early stop (the success test is argmax).
* Adam moves a tanh-space coordinate by about α per step, and a pixel at 0 or 1 sits at
  |w| ≈ 7.25 (arctanh of ±0.999999): at the defaults (α 0.01 × 10 steps) no pixel moves
  by more than ≈ 0.05, so ART's defaults find almost nothing on MNIST.

Defaults are ART 1.20.1's, the setting "as a new user would" run it; verbose is False
(ART: True, a progress bar; no effect on results); `targeted` is always False;
batch_size only batches ART's predict calls (one image at a time here). It draws no
random numbers (torch's RNG is untouched). The classifier is ART's PyTorchClassifier
on the model as given (logits, eval mode, no preprocessing, clip_values (0, 1)), on the
device of the inputs.

Not the paper's column. The paper prints CW-ℓ∞ 32.37 for Table 2's SGD SmallCNN at
ε = 0.3; this class at ART 1.20.1's defaults, on a 5-epoch SGD SmallCNN (clean 99.4 %),
succeeded on 0.6 % of 500 test images (robust 98.8 %), and no setting of its parameters
can match an ε-bounded attack with one run per ε: it minimises ‖δ‖∞ from the clean image
and its step (α per step in tanh space) cannot move saturated pixels. The search ended
elsewhere: the authors' notebook (`additional_notebooks/test_attack-mnist.ipynb`) calls
`CarliniLInfMethod(..., learning_rate=0.3, max_iter=40, eps=0.3)`, the ε-bounded class of
ART ≤ 1.8, which `attacks/cw_linf_art18.py` re-implements; that is the suite's "ℓ∞ CW"
column (measured there: 36.70 % on the first 1,000 test images of the A.1 SGD SmallCNN,
paper 32.37). This plugin stays for ART ≥ 1.9 users, beyond the paper's tables.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from bench.plugins.attack import Attack
from bench.errors import BenchError
from bench.plugins.registry import register_attack


def _art():
    """ART's attack and estimator classes, or one sentence saying how to install them."""
    try:
        from art.attacks.evasion import CarliniLInfMethod
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise BenchError("the cw_linf_art attack needs `adversarial-robustness-toolbox` "
                         "(pip install 'bench[art]')") from None
    return CarliniLInfMethod, PyTorchClassifier


@register_attack("cw_linf_art")
class CWLinfART(Attack):
    """CW-ℓ∞ (ART 1.20.1 CarliniLInfMethod), a minimisation attack; ART's defaults."""

    minimization = True
    strength = 5    # weaker by design than PGD and DeepFool: saturated pixels barely move

    @dataclass
    class Config:
        norm: Literal["linf"] = "linf"
        confidence: float = 0.0        # ART default; κ of the hinge (enters the stop test only)
        learning_rate: float = 0.01    # ART default; Adam's α in tanh space
        max_iter: int = 10             # ART default; Adam steps per (τ, c) run
        decrease_factor: float = 0.9   # ART default; τ ← factor · min(τ, ‖δ‖∞) after a success
        initial_const: float = 1e-5    # ART default; first c of each τ
        largest_const: float = 20.0    # ART default; c doubles while c < largest_const
        const_factor: float = 2.0      # ART default
        batch_size: int = 1            # ART default; only the batch of its predict calls
        verbose: bool = False          # ART: True (a progress bar); no effect on results

        PRESETS: ClassVar[dict[str, dict]] = {}

        def __post_init__(self):
            # Beyond ART's own checks: values with which its loops never end (c never
            # grows: initial_const ≤ 0, const_factor ≤ 1) or never start.
            if self.learning_rate <= 0 or self.max_iter < 1:
                raise ValueError("learning_rate must be > 0 and max_iter ≥ 1")
            if not 0 < self.decrease_factor < 1:
                raise ValueError("decrease_factor must lie strictly between 0 and 1")
            if not 0 < self.initial_const < self.largest_const:
                raise ValueError("initial_const must be > 0 and below largest_const")
            if self.const_factor <= 1:
                raise ValueError("const_factor must be > 1")
            if self.confidence < 0 or self.batch_size < 1:
                raise ValueError("confidence must be ≥ 0 and batch_size ≥ 1")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                eps: float) -> torch.Tensor:
        CarliniLInfMethod, PyTorchClassifier = _art()
        c = self.config
        on_gpu = x.device.type == "cuda"
        # ART puts the classifier on torch.cuda.current_device(): make that x's device.
        with torch.cuda.device(x.device) if on_gpu else contextlib.nullcontext():
            classifier = PyTorchClassifier(
                model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                nb_classes=_num_classes(model, x), clip_values=(0.0, 1.0),
                preprocessing=None, device_type="gpu" if on_gpu else "cpu")
            attack = CarliniLInfMethod(
                classifier, confidence=c.confidence, targeted=False,
                learning_rate=c.learning_rate, max_iter=c.max_iter,
                decrease_factor=c.decrease_factor, initial_const=c.initial_const,
                largest_const=c.largest_const, const_factor=c.const_factor,
                batch_size=c.batch_size, verbose=c.verbose)
            x_adv = attack.generate(x.detach().cpu().numpy(), y.detach().cpu().numpy())
        return torch.from_numpy(x_adv).to(device=x.device, dtype=x.dtype)


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])

