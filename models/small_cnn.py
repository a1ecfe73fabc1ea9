"""SmallCNN: the MNIST network of TRADES.

Source: yaodongyu/TRADES `models/small_cnn.py` (the same file is ATENT's
`architectures/small_cnn.py`). conv3×3 32, 32, pool, 64, 64, pool (no padding) →
fc 200 → dropout 0.5 → fc 200 → fc 10. Kaiming-normal convs with zero bias; the last
layer's weight and bias start at zero. Inputs in [0, 1], no normalisation.

TRADES names its layers (`nn.Sequential(OrderedDict(...))`: `feature_extractor.conv1…conv4`,
`classifier.fc1…fc3`); this module keeps positional names (`feature_extractor.0`, …), the
names of every checkpoint this bench has trained. `adapt_state_dict` maps TRADES' names to
them, so the released `model_mnist_smallcnn.pt` (and ATENT's) loads as published.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from bench.plugins.model import ModelPlugin
from bench.plugins.registry import register_model


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


# TRADES' layer names → positions in this module's nn.Sequential (models/small_cnn.py there)
TRADES_NAMES = {"feature_extractor": {"conv1": 0, "conv2": 2, "conv3": 5, "conv4": 7},
                "classifier": {"fc1": 0, "fc2": 3, "fc3": 5}}


def trades_to_positional_keys(state: dict) -> dict:
    """`feature_extractor.conv3.weight` → `feature_extractor.5.weight`, etc. (any prefix kept)."""
    out = {}
    for k, v in state.items():
        m = re.match(r"^(.*?)(feature_extractor|classifier)\.([a-z]+\d)\.(weight|bias)$", k)
        if m and m.group(3) in TRADES_NAMES[m.group(2)]:
            k = f"{m.group(1)}{m.group(2)}.{TRADES_NAMES[m.group(2)][m.group(3)]}.{m.group(4)}"
        out[k] = v
    return out


@register_model("small_cnn")
class SmallCNN(ModelPlugin):
    """TRADES' SmallCNN (yaodongyu/TRADES models/small_cnn.py)."""

    @dataclass
    class Config:
        drop: float = 0.5  # dropout before the second fc layer, as in TRADES

    def build(self, info):
        c, h, _ = info.shape
        return SmallCNNNet(c, info.num_classes, self.config.drop, h)

    def adapt_state_dict(self, state):
        return trades_to_positional_keys(state)
