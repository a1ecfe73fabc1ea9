"""Any timm model as a bench architecture: `arch: timm:<name>` (e.g. `timm:resnet18`).

Builds `timm.create_model(name, pretrained=False, num_classes=info.num_classes,
in_chans=C, **kwargs)`; weights are never downloaded (`pretrained` is refused in kwargs;
start from weights with `bench.checkpoints.foreign.load_external_checkpoint`). A pretrained tag
(`resnet18.a1_in1k`) is accepted and only picks timm's config for that tag.

Input size: timm models are sized for ImageNet. Models whose constructor takes `img_size`
(ViT, DeiT, Swin, …) get the dataset's H×W (so position embeddings fit 32×32 or 28×28);
others get nothing and keep their ImageNet stem, which for most CNNs (ResNet,
EfficientNet, ConvNeXt, …) downsamples 32×32 to a 1×1 final map: the forward works and
returns (N, num_classes), but accuracy will be far below a CIFAR-specific network (use
`kwargs`, e.g. `patch_size: 4` for a ViT, to adapt one). A model that cannot run at
the dataset's size fails at build time with a PluginError (a one-image forward is tried).
With batch size 1 in train mode, BatchNorm over a 1×1 map fails, as in timm itself.

`normalize` (default true, as timm models are trained on standardised inputs) puts
Normalize(DatasetInfo mean, std) first: the model is `nn.Sequential(Normalize, net)`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.errors import PluginError
from bench.plugins.model import ModelPlugin, Normalize
from bench.plugins.registry import register_model

_RESERVED = ("pretrained", "num_classes", "in_chans")


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return " (timm.list_models() lists the known names)"


@register_model("timm")
class TimmModel(ModelPlugin):
    """A timm architecture, randomly initialised, sized for the dataset."""

    @dataclass
    class Config:
        variant: str = ""                    # the timm model name; set by `arch: timm:<name>`
        normalize: bool = True               # dataset mean/std layer first
        kwargs: dict[str, Any] = field(default_factory=dict)  # more timm.create_model arguments

        def __post_init__(self):
            bad = [k for k in _RESERVED if k in self.kwargs]
            if bad:
                raise ValueError(f"kwargs may not set {', '.join(bad)}: the dataset sets "
                                 f"num_classes and in_chans, and weights are never downloaded")

    def build(self, info):
        import timm  # imported here: loading every plugin should not pay for timm

        name = self.config.variant
        if not name:
            raise PluginError("model 'timm' needs a timm model name, e.g. `arch: timm:resnet18`")
        base = name.split(".", 1)[0]
        if not timm.is_model(base):
            raise PluginError(f"unknown timm model {name!r}{_suggest(base, timm.list_models())}")
        c, h, w = info.shape
        kw = dict(self.config.kwargs, pretrained=False, num_classes=info.num_classes, in_chans=c)
        try:
            try:
                model = timm.create_model(name, **{"img_size": h if h == w else (h, w), **kw})
            except TypeError as e:  # a constructor without img_size (most CNNs)
                if "img_size" not in str(e) or "img_size" in self.config.kwargs:
                    raise
                model = timm.create_model(name, **kw)
        except Exception as e:
            raise PluginError(f"timm could not build {name!r} for {c}×{h}×{w} {info.name} "
                              f"inputs ({type(e).__name__}: {e})") from None
        _check_forward(model, name, info)
        if self.config.normalize:
            return nn.Sequential(Normalize(info.mean, info.std), model)
        return model


def _check_forward(model: nn.Module, name: str, info) -> None:
    """One image through the model in eval mode: fail now, clearly, if the size does not fit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *info.shape))
    except Exception as e:
        raise PluginError(f"timm model {name!r} does not run on {'×'.join(map(str, info.shape))} "
                          f"{info.name} inputs ({type(e).__name__}: {e})") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, info.num_classes):
        raise PluginError(f"timm model {name!r} returns shape {tuple(out.shape)} for one image, "
                          f"not (1, {info.num_classes})")
