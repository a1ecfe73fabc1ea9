"""The numerics and compilation policy, in one place.

`precision: fp32` is the reference. `bf16` runs forward passes under bf16 autocast
(perturbations, losses and optimizer state stay fp32) and, on CUDA, uses channels_last.
`compile: true` wraps the model with torch.compile. CUDA-only parts fall back cleanly
on a CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Policy:
    precision: str = "fp32"
    compile: bool = False
    device: str = "cpu"

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.device_type == "cuda" and self.precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module attacks and training call: autocast and compilation applied."""
        wrapped: nn.Module = _Autocast(model, self) if self.precision != "fp32" else model
        if self.compile:
            wrapped = torch.compile(wrapped)
        return wrapped


class _Autocast(nn.Module):
    """Runs the inner model under the policy's autocast and returns fp32 logits."""

    def __init__(self, model: nn.Module, policy: Policy):
        super().__init__()
        self.model, self.policy = model, policy

    def forward(self, x):
        with self.policy.autocast():
            return self.model(x).float()


def resolve_device(flag: str | None) -> str:
    if flag and flag != "auto":
        if flag.startswith("cuda") and not torch.cuda.is_available():
            from bench.errors import BenchError
            raise BenchError(f"--device {flag} asked for CUDA, but no CUDA device is available")
        return flag
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
