"""CIFAR ResNets of depth 6n + 2 (He et al. 2016, §4.2): ResNet-20, ResNet-110, …

Source of the layout and parameter names: locuslab/smoothing `code/archs/cifar_resnet.py`
(Cohen et al.; "from bearpaw/pytorch-classification models/cifar/resnet.py"), copied by
ATENT as `architectures/cifar_resnet.py`:

* conv3×3 16 (no bias) → BN → ReLU; three groups `layer1..3` of n post-activation
  BasicBlocks (conv3×3-BN-ReLU-conv3×3-BN, add, ReLU) at 16/32/64 channels, stride 1/2/2;
  average pooling; `fc` 64 → classes with bias;
* shortcut "B" (the default, as in those repos): where stride ≠ 1 or width changes,
  `downsample` = 1×1 conv (stride, no bias) + BN;
* shortcut "A" (He et al.'s own CIFAR nets): subsample by the stride and pad the new
  channels with zeros, half before and half after the old ones (the layout of the common
  akamaster/pytorch_resnet_cifar10 re-implementation; the paper does not say where the
  zero channels go). No parameters: ResNet-20 has 269,722 with "A", 272,474 with "B";
* init: conv weights N(0, √(2 / (k·k·out_channels))), BN weight 1 bias 0, fc default.

Pooling is global (bearpaw's `AvgPool2d(8)` on the 8×8 map of a 32×32 input is the same;
ATENT uses AdaptiveAvgPool) and the stem takes the dataset's channel count, so 28×28
MNIST runs too.

Normalisation (`normalize`, default true): Cohen et al. build
`nn.Sequential(NormalizeLayer, resnet)` (`code/architectures.py`) with CIFAR-10 mean
(0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010) (`code/datasets.py`); the
ResNet-110/20 of the paper come from their randomized-smoothing recipe, whose Gaussian
noise is added to [0, 1] pixels *before* that layer. So the default is Cohen's layer and
constants (`norm_stats: cohen`) on CIFAR-10; any other dataset uses its own DatasetInfo
mean/std (as does `norm_stats: dataset`, which on CIFAR-10 means std ≈ 0.247, 0.243, 0.262).
With normalisation the model is `nn.Sequential(Normalize, net)`, so the network's keys
carry Cohen's `1.` prefix; without, the bare network (bearpaw / ATENT keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import nn

from bench.plugins.model import ModelPlugin, Normalize, init_conv_bn_
from bench.plugins.registry import register_model

COHEN_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)   # locuslab/smoothing code/datasets.py
COHEN_CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class ZeroPadShortcut(nn.Module):
    """Option A: x[:, :, ::s, ::s] with zero channels padded on both sides."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.before = (out_planes - in_planes) // 2
        self.after = out_planes - in_planes - self.before

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """bearpaw/Cohen BasicBlock: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = (nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                             nn.BatchNorm2d(planes))
                               if shortcut == "B" else ZeroPadShortcut(in_planes, planes, stride))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, shortcut: str = "B",
                 in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, …), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        widths, planes = (16, 32, 64), 16
        for i, (w, s) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = [BasicBlock(planes if j == 0 else w, w, s if j == 0 else 1, shortcut)
                      for j in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            planes = w
        self.fc = nn.Linear(64, num_classes)
        init_conv_bn_(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@dataclass
class ResNetOptions:
    shortcut: Literal["A", "B"] = "B"               # B: 1×1 conv + BN projection (Cohen, ATENT)
    normalize: bool = True                          # a normalisation layer first (Cohen et al.)
    norm_stats: Literal["cohen", "dataset"] = "cohen"  # Cohen's CIFAR-10 constants, or DatasetInfo's


def build_resnet(depth: int, opts: ResNetOptions, info) -> nn.Module:
    net = CifarResNet(depth, info.num_classes, opts.shortcut, in_channels=info.shape[0])
    if not opts.normalize:
        return net
    if opts.norm_stats == "cohen" and info.name == "cifar10":
        mean, std = COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD
    else:
        mean, std = info.mean, info.std
    return nn.Sequential(Normalize(mean, std), net)


@register_model("cifar_resnet")
class CifarResNetPlugin(ModelPlugin):
    """CIFAR ResNet-(6n+2) (locuslab/smoothing code/archs/cifar_resnet.py)."""

    @dataclass
    class Config(ResNetOptions):
        depth: int = 20

        def __post_init__(self):
            if self.depth < 8 or (self.depth - 2) % 6:
                raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, …), got {self.depth}")

    def build(self, info):
        return build_resnet(self.config.depth, self.config, info)


@register_model("resnet20")
class ResNet20(ModelPlugin):
    """ResNet-20 (n = 3), Cohen et al.'s `cifar_resnet20`."""

    Config = ResNetOptions

    def build(self, info):
        return build_resnet(20, self.config, info)


@register_model("resnet110")
class ResNet110(ModelPlugin):
    """ResNet-110 (n = 18), Cohen et al.'s `cifar_resnet110` (randomized smoothing, CIFAR-10)."""

    Config = ResNetOptions

    def build(self, info):
        return build_resnet(110, self.config, info)
