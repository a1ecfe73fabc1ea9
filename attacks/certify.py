"""Randomized smoothing certification (Cohen, Rosenfeld & Kolter, ICML 2019).

Source: `locuslab/smoothing:code/core.py` (anchors §3(i)). The smoothed classifier
g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), noise added in pixel space (before any
normalisation layer inside the model, no clamping).
  CERTIFY: n0 noisy samples select ĉ_A (most frequent class); n fresh samples count
  n_A = #{f = ĉ_A}; p̲_A = one-sided (1 − α) Clopper–Pearson lower bound
  = Beta(α; n_A, n − n_A + 1) quantile; abstain if p̲_A < 0.5, else radius σ·Φ⁻¹(p̲_A).
  PREDICT: top-two counts n1, n2 of n samples; abstain if the two-sided binomial test
  of n1 out of n1 + n2 at p = ½ has p-value > α (`scipy.stats.binomtest`; SciPy ≥ 1.12
  no longer has `binom_test`).
Paper settings: n0 100, n 100 000, α 0.001, σ ∈ {0.12, 0.25, 0.5, 1.0}.

For the engine this is an ε sweep in which ε is the ℓ2 radius: each sample is
certified once (`minimization = True` tells the evaluation loop that one pass answers
every radius of the sweep; `run_sweep` is overridden, nothing is clipped), and the
outcome at radius r is "prediction correct and radius ≥ r" (abstentions count as
wrong; r = 0 means certified-correct). `self.details` holds, per sample, "radius" (0 for
an abstention) and "prediction" (−1 for an abstention). Noise comes from torch's global
generator on the input's device, which the evaluation loop seeds per (cell seed, batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from scipy.stats import beta, binomtest, norm as normal

from bench.plugins.attack import Attack
from bench.plugins.registry import register_attack

ABSTAIN = -1


def clopper_pearson_lower(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) lower confidence bound on a binomial proportion."""
    if n_a <= 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def radius_from_counts(n_a: int, n: int, alpha: float, sigma: float) -> float | None:
    """CERTIFY's radius from the estimation counts, or None (abstain) when p̲_A < ½."""
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    if p_lower < 0.5:
        return None
    return sigma * float(normal.ppf(p_lower))


@register_attack("certify")
class Certify(Attack):
    """Cohen et al. CERTIFY; defaults n0 100, n 100 000, α 0.001 (σ must match training)."""

    minimization = True        # one pass answers all radii of a sweep (see above)
    crafts_inputs = False      # it certifies: `run_sweep` is overridden, `perturb` unused
    bounded_by_clean = False   # the smoothed classifier may beat its base classifier's accuracy

    @dataclass
    class Config:
        sigma: float = 0.25             # noise level; must be the one the model was trained with
        n0: int = 100                   # selection samples
        n: int = 100_000                # estimation samples
        alpha: float = 0.001            # failure probability
        batch: int = 1000               # noisy copies per forward pass (Cohen's CLI default)
        norm: Literal["l2"] = "l2"      # the certificate is an ℓ2 radius

        def __post_init__(self):
            if self.sigma <= 0 or self.n0 < 1 or self.n < 1 or self.batch < 1:
                raise ValueError("sigma must be > 0 and n0, n, batch ≥ 1")
            if not 0 < self.alpha < 1:
                raise ValueError("alpha must be in (0, 1)")

    # ----------------------------------------------------------------- sampling
    def sample_counts(self, model, x: torch.Tensor, num: int, num_classes: int
                      ) -> torch.Tensor:
        """Class counts of f(x + δ) over `num` Gaussian draws (x: one C×H×W input)."""
        counts = torch.zeros(num_classes, dtype=torch.long, device=x.device)
        remaining = num
        with torch.no_grad():
            while remaining > 0:
                b = min(self.config.batch, remaining)
                batch = x.unsqueeze(0).expand(b, *x.shape)
                noise = torch.randn(batch.shape, device=x.device, dtype=x.dtype) * self.config.sigma
                pred = model(batch + noise).argmax(dim=1)
                counts += torch.bincount(pred, minlength=num_classes)
                remaining -= b
        return counts.cpu()

    def _num_classes(self, model, x: torch.Tensor) -> int:
        with torch.no_grad():
            return int(model(x[:1]).shape[1])

    # ----------------------------------------------------------------- CERTIFY / PREDICT
    def certify(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: (prediction, −1 for abstain; radius, 0 for abstain)."""
        c = self.config
        k = self._num_classes(model, x)
        preds = torch.full((x.shape[0],), ABSTAIN, dtype=torch.long)
        radii = torch.zeros(x.shape[0], dtype=torch.float64)
        for i in range(x.shape[0]):
            c_a = int(self.sample_counts(model, x[i], c.n0, k).argmax())
            n_a = int(self.sample_counts(model, x[i], c.n, k)[c_a])
            r = radius_from_counts(n_a, c.n, c.alpha, c.sigma)
            if r is not None:
                preds[i], radii[i] = c_a, r
        return preds.to(x.device), radii.to(x.device)

    def predict_smoothed(self, model, x: torch.Tensor, n: int | None = None,
                         alpha: float | None = None) -> torch.Tensor:
        """PREDICT: the smoothed prediction per sample, −1 where the binomial test abstains."""
        c = self.config
        n = c.n if n is None else n
        alpha = c.alpha if alpha is None else alpha
        k = self._num_classes(model, x)
        preds = torch.full((x.shape[0],), ABSTAIN, dtype=torch.long)
        was_training = model.training
        model.eval()
        try:
            for i in range(x.shape[0]):
                counts = self.sample_counts(model, x[i], n, k)
                top = counts.topk(min(2, k))
                n1 = int(top.values[0])
                n2 = int(top.values[1]) if k > 1 else 0
                if binomtest(n1, n1 + n2, 0.5).pvalue <= alpha:
                    preds[i] = int(top.indices[0])
        finally:
            model.train(was_training)
        return preds.to(x.device)

    # ----------------------------------------------------------------- engine API
    def run_sweep(self, model, x, y, eps_list: Sequence[float]) -> list[torch.Tensor]:
        """Certified-correct at each radius r of `eps_list` (certify once per sample)."""
        was_training = model.training
        model.eval()
        try:
            preds, radii = self.certify(model, x)
        finally:
            model.train(was_training)
        self.details = {"radius": radii, "prediction": preds}
        correct = preds == y
        return [correct & (radii >= float(r)) for r in eps_list]

    def perturb(self, model, x, y, eps):  # pragma: no cover - certify is not a perturbation
        raise NotImplementedError("certify overrides run_sweep; it produces no adversarial inputs")

