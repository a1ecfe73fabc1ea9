"""The model plugin contract.

A model plugin is a class registered by name with a typed `Config` and a
`build(info) -> nn.Module`. Models take inputs in [0, 1]; any normalisation is a layer
inside the model (`Normalize`), so ε is always in pixel units.

An architecture name of the form `family:variant` (for example `timm:resnet18`) selects
the plugin `family` and sets its config field `variant`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from bench.plugins.base import Plugin
from bench.plugins.config import build_config
from bench.plugins.registry import MODELS

if TYPE_CHECKING:     # types only: the contract sits below the run and the data
    from bench.data.read import DatasetInfo


class ModelPlugin(Plugin):
    """Base class of model plugins: `build` the network for a dataset."""

    def build(self, info: DatasetInfo) -> nn.Module:
        raise NotImplementedError

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A released checkpoint's state dict renamed to this plugin's parameter names (called
        by `bench.checkpoints.foreign` before loading; the default keeps it as it is)."""
        return state


class Normalize(nn.Module):
    """(x − mean) / std per channel, as the first layer of a model."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def init_conv_bn_(model: nn.Module) -> None:
    """The initialisation of the TRADES WideResNet and the bearpaw/Cohen CIFAR ResNets:
    convolutions N(0, √(2 / (k·k·out_channels))), BatchNorm weight 1 and bias 0."""
    import math
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def split_arch(arch: str) -> tuple[str, str | None]:
    name, _, variant = arch.partition(":")
    return name, (variant or None)


def model_config(arch: str, values: Mapping[str, Any] | None, path: str = "config"):
    """The plugin class and its typed config for an architecture name."""
    name, variant = split_arch(arch)
    cls = MODELS.get(name)
    values = dict(values or {})
    if variant is not None:
        if "variant" not in {f.name for f in dataclasses.fields(cls.Config)}:
            from bench.errors import PluginError
            raise PluginError(f"model {name!r} takes no variant (got {arch!r})")
        values["variant"] = variant
    return cls, build_config(cls.Config, values, path)


def build_model(arch: str, values: Mapping[str, Any] | None, info: DatasetInfo) -> nn.Module:
    cls, cfg = model_config(arch, values)
    return cls(cfg).build(info)
