"""Plain training: cross-entropy on clean inputs (the "SGD" rows of the paper's tables).

The optimizer, schedule and augmentation are the training recipe's (suite.yaml `train:`),
owned by the generic loop; this defense only supplies the natural loss.
"""

from __future__ import annotations

import torch.nn.functional as F

from bench.plugins.defense import Defense
from bench.plugins.registry import register_defense


@register_defense("sgd")
class SGD(Defense):
    """Natural training with cross-entropy (mean over the batch)."""

    def loss(self, model, x, y, ctx):
        return F.cross_entropy(model(x), y)
