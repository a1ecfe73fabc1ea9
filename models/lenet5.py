"""The two advertorch LeNet5 networks, named distinctly because they are different models.

* `lenet5`: `advertorch.test_utils.LeNet5` (the net of advertorch's shipped MNIST
  checkpoints): conv3×3 32 (pad 1) → pool → conv3×3 64 (pad 1) → pool → fc 200 → fc 10.
* `lenet5_madry`: `advertorch_examples.models.LeNet5Madry`, the Madry MNIST challenge
  CNN used by MMA and ATENT's MNIST-ℓ2 table: conv5×5 32 (pad 2) → pool → conv5×5 64
  (pad 2) → pool → fc 1024 → fc 10; `width` scales the channels
  (`get_lenet5madry_with_width`).
PyTorch's default initialisation in both, as in advertorch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.plugins.model import ModelPlugin
from bench.plugins.registry import register_model


class LeNet5Net(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, image_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2, 2)
        side = image_size // 4
        self.linear1 = nn.Linear(64 * side * side, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.relu1(self.conv1(x)))
        x = self.maxpool2(self.relu2(self.conv2(x)))
        return self.linear2(self.relu3(self.linear1(x.flatten(1))))


class LeNet5MadryNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, image_size=28, width=1):
        super().__init__()
        c1, c2, fc = 32 * width, 64 * width, 1024 * width
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2, 2)
        side = image_size // 4
        self.linear1 = nn.Linear(c2 * side * side, fc)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(fc, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.relu1(self.conv1(x)))
        x = self.maxpool2(self.relu2(self.conv2(x)))
        return self.linear2(self.relu3(self.linear1(x.flatten(1))))


@register_model("lenet5")
class LeNet5(ModelPlugin):
    """advertorch.test_utils.LeNet5 (advertorch's shipped MNIST checkpoints)."""

    def build(self, info):
        c, h, _ = info.shape
        return LeNet5Net(c, info.num_classes, h)


@register_model("lenet5_madry")
class LeNet5Madry(ModelPlugin):
    """advertorch_examples LeNet5Madry = MadryLab/mnist_challenge model.py (MMA, ATENT ℓ2)."""

    @dataclass
    class Config:
        width: int = 1  # channel multiplier (get_lenet5madry_with_width)

    def build(self, info):
        c, h, _ = info.shape
        return LeNet5MadryNet(c, info.num_classes, h, self.config.width)
