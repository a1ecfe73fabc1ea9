"""Clean accuracy: no perturbation. The base class queries the model on x itself."""

from __future__ import annotations

from bench.plugins.attack import Attack
from bench.plugins.registry import register_attack


@register_attack("clean")
class Clean(Attack):
    """Natural (clean) accuracy on the first n test examples; ε is ignored."""

    uses_eps = False

    def perturb(self, model, x, y, eps):
        return x
