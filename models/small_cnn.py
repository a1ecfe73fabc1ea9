"""SmallCNN: the MNIST network of TRADES.

Source: yaodongyu/TRADES `models/small_cnn.py` (the same file is ATENT's
`architectures/small_cnn.py`). conv3×3 32, 32, pool, 64, 64, pool (no padding) →
fc 200 → dropout 0.5 → fc 200 → fc 10. Kaiming-normal convs with zero bias; the last
layer's weight and bias start at zero. Inputs in [0, 1], no normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.modeling import ModelPlugin
from bench.registry import register_model


class SmallCNNNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, drop: float = 0.5,
                 image_size: int = 28):
        super().__init__()
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Linear(64 * side * side, 200), nn.ReLU(),
            nn.Dropout(drop),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.classifier[-1].weight)
        nn.init.zeros_(self.classifier[-1].bias)

    def forward(self, x):
        return self.classifier(self.feature_extractor(x).flatten(1))


@register_model("small_cnn")
class SmallCNN(ModelPlugin):
    """TRADES' SmallCNN (yaodongyu/TRADES models/small_cnn.py)."""

    @dataclass
    class Config:
        drop: float = 0.5  # dropout before the second fc layer, as in TRADES

    def build(self, info):
        c, h, _ = info.shape
        return SmallCNNNet(c, info.num_classes, self.config.drop, h)
