"""The TRADES WideResNet (WRN-d-k), with the parameter names of its released checkpoints.

Source: yaodongyu/TRADES `models/wideresnet.py` (itself from xternalz/WideResNet-pytorch);
MART's `YisenWang/MART` and ATENT's WRN are the same file. Details kept from it:

* widths [16, 16k, 32k, 64k]; (depth − 4) / 6 pre-activation BasicBlocks per group,
  stride 1, 2, 2; a block is BN-ReLU-conv3×3, BN-ReLU-(dropout)-conv3×3; when in ≠ out the
  shortcut is a 1×1 conv (no bias) applied to the *activated* input, else the identity
  of the raw input;
* conv3×3 stem (no BN), final BN-ReLU, average pooling, fc with bias;
* init: conv weights N(0, √(2 / (k·k·out_channels))), BN weight 1 bias 0, fc bias 0
  (fc weight keeps PyTorch's default);
* the unused `sub_block1` group (same shape as `block1`, never called in forward): its
  weights are in the released TRADES / MART / Carmon et al. checkpoints, so it must exist
  for them to load strictly (RobustBench's `WideResNet(sub_block1=True)` does the same).
  `sub_block1: false` drops it (MMA's WRN and fresh training need not carry 2.1M dead
  parameters; they get no gradient and weight decay only shrinks them).

Two deliberate differences, neither changing a state dict: the stem takes the dataset's
channel count (TRADES hard-codes 3) and pooling is global (TRADES' `avg_pool2d(out, 8)` is
the same thing on 32×32 inputs, and MMA's advertorch copy uses a global mean), so the
network also runs on 28×28 MNIST.

`wrn28_4` is MMA's CIFAR-10 network: BorealisAI/mma_training `train.py` builds
`advertorch_examples.models.get_cifar10_wrn28_widen_factor(4)` =
`nn.Sequential(PerImageStandardize(), WideResNet(28, 10, 4))`, hence
`input_standardization: true` and no `sub_block1` by default there. advertorch names its
groups `convgroupN` and the shortcut `conv_shortcut`; `mma_to_trades_keys` renames an MMA
state dict to these names, and the plugins apply it to every released checkpoint they load
(`adapt_state_dict`), so MMA's `trained_models/*/model_best.pt` load as published.

Preprocessing (Normalize or per-image standardisation), when on, is module `0` of an
`nn.Sequential` and the network module `1`, as Cohen et al. and MMA wrap theirs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from bench.plugins.model import ModelPlugin, Normalize, init_conv_bn_
from bench.plugins.registry import register_model


class BasicBlock(nn.Module):
    """Pre-activation block; attribute names as in TRADES (`convShortcut` included)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (None if self.equal_in_out else
                             nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False))

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    """A group of `n` blocks; the first changes width and stride (TRADES' NetworkBlock)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                       stride if i == 0 else 1, drop_rate) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 34, num_classes: int = 10, widen_factor: int = 10,
                 drop_rate: float = 0.0, sub_block1: bool = True, in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 34, …), "
                             f"got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be ≥ 1, got {widen_factor}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        if sub_block1:  # unused in forward; present so released checkpoints load strictly
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.n_channels = ch[3]
        init_conv_bn_(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PerImageStandardize(nn.Module):
    """advertorch.utils.PerImageStandardize (TF's per_image_standardization, in batch):
    (x − mean) / max(std, 1/√(C·H·W)) per image, std with Bessel's correction as
    advertorch's `torch.std` computes it."""

    def forward(self, x):
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1).view(-1, 1, 1, 1)
        return (x - mean) / std.clamp_min(1.0 / math.sqrt(flat.shape[1]))


def mma_to_trades_keys(state_dict: dict) -> dict:
    """Rename an MMA (advertorch) WRN state dict to these names: `convgroupN` → `blockN`,
    `conv_shortcut` → `convShortcut` (the `1.` of its nn.Sequential is kept)."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"(^|\.)convgroup(\d)\.", r"\1block\2.", k)
        out[k.replace(".conv_shortcut.", ".convShortcut.")] = v
    return out


@dataclass
class WRNOptions:
    drop_rate: float = 0.0               # dropout between the two convs of a block (TRADES: 0)
    sub_block1: bool = True              # build TRADES' unused group (strict checkpoint loading)
    normalize: bool = False              # dataset mean/std layer first (TRADES: none)
    input_standardization: bool = False  # MMA's per-image standardisation first

    def __post_init__(self):
        if self.normalize and self.input_standardization:
            raise ValueError("normalize and input_standardization are exclusive; choose one")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")


def build_wrn(depth: int, widen_factor: int, opts: WRNOptions, info) -> nn.Module:
    net = WideResNet(depth, info.num_classes, widen_factor, opts.drop_rate, opts.sub_block1,
                     in_channels=info.shape[0])
    if opts.normalize:
        return nn.Sequential(Normalize(info.mean, info.std), net)
    if opts.input_standardization:
        return nn.Sequential(PerImageStandardize(), net)
    return net


class _WRNPlugin(ModelPlugin):
    def adapt_state_dict(self, state):
        """MMA's released WRNs (advertorch names) load as they are: `mma_to_trades_keys`
        (a no-op on TRADES / MART / Rice names, which never contain these words)."""
        return mma_to_trades_keys(state)


@register_model("wrn")
class WRN(_WRNPlugin):
    """TRADES' WideResNet-depth-widen_factor (yaodongyu/TRADES models/wideresnet.py)."""

    @dataclass
    class Config(WRNOptions):
        depth: int = 34
        widen_factor: int = 10

        def __post_init__(self):
            super().__post_init__()
            if self.depth < 10 or (self.depth - 4) % 6:
                raise ValueError(f"depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 34, …), "
                                 f"got {self.depth}")
            if self.widen_factor < 1:
                raise ValueError(f"widen_factor must be ≥ 1, got {self.widen_factor}")

    def build(self, info):
        return build_wrn(self.config.depth, self.config.widen_factor, self.config, info)


@register_model("wrn34_10")
class WRN34_10(_WRNPlugin):
    """WRN-34-10 of TRADES, MART and ATENT (with `sub_block1`, no normalisation)."""

    Config = WRNOptions

    def build(self, info):
        return build_wrn(34, 10, self.config, info)


@register_model("wrn28_4")
class WRN28_4(_WRNPlugin):
    """MMA's WRN-28-4 (BorealisAI/mma_training train.py get_model), per-image standardised."""

    @dataclass
    class Config(WRNOptions):
        sub_block1: bool = False
        input_standardization: bool = True

    def build(self, info):
        return build_wrn(28, 4, self.config, info)
