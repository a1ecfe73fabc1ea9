"""The numerics and compilation policy, in one place.

`precision: fp32` is the reference. `bf16` runs forward passes under bf16 autocast
(perturbations, losses and optimizer state stay fp32; the wrapped module returns fp32
logits) and, on CUDA, uses channels_last. `compile: true` wraps the model with
torch.compile. CUDA-only parts (channels_last by default, CUDA graphs) fall back
cleanly on a CPU.

Per-device defaults (`compile_mode: auto`, suite key `compile_mode`):

* CUDA, small model (< `SMALL_MODEL_PARAMS` parameters: SmallCNN, LeNet, ResNet-20/110):
  "reduce-overhead", i.e. inductor kernels replayed as CUDA graphs (cudagraph trees).
  These models are launch-bound at the batch sizes of training and evaluation: the
  measured gain of a graph-captured PGD step was 3.4× the fp32 eager loop, while
  compile's default mode alone ran slower than eager.
* CUDA, large model (WRN-34-10, ResNet-18, …): "default" — compute-bound, so bf16 and
  fused kernels pay and graphs add little but memory.
* CPU: "default" (a CUDA-graph mode asked for on a CPU falls back to its no-graph twin).

Under CUDA graphs, eval-mode calls are padded to a few batch sizes (`bucket_size`:
powers of two and 1.5× powers of two): the base class attacks only still-robust
samples, so every evaluation batch has its own size, and each size would otherwise
record its own graph. Padding rows are zeros; eval-mode BatchNorm and dropout treat
samples independently, so the real rows' outputs and input gradients are unchanged.
Train-mode calls are never padded (batch statistics).

Weight gradients: eager autograd skips the weight gradients of `autograd.grad(loss,
x)`, but a compiled graph computes the gradient of every input that requires one, so a
compiled attack step on a model whose parameters require grad does ~1.5× the work
(forward + input + weight gradients instead of forward + input gradients). Evaluation
therefore runs under `frozen_parameters(net)`; defenses' inner maximisations may use
it too (it only toggles `requires_grad`, restored on exit).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from bench.suite.spec import COMPILE_MODES

PRECISIONS = ("fp32", "bf16")
_GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
SMALL_MODEL_PARAMS = 5_000_000   # below this, a CUDA model is launch-bound: use CUDA graphs
RECOMPILE_LIMIT = 32             # train/eval × grad/no-grad × frozen/not × static/dynamic


@dataclass(frozen=True)
class Policy:
    precision: str = "fp32"
    compile: bool = False
    device: str = "cpu"
    compile_mode: str = "auto"          # one of COMPILE_MODES
    channels_last: bool | None = None   # None: on for CUDA + bf16
    bucket: bool | None = None          # None: pad eval batches when CUDA graphs are used

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")

    # ------------------------------------------------------------------ decisions
    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def uses_channels_last(self) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return self.device_type == "cuda" and self.precision == "bf16"

    def mode_for(self, model: nn.Module | None = None) -> str | None:
        """The torch.compile mode this policy uses for `model` (None: not compiled)."""
        if not self.compile:
            return None
        mode = self.compile_mode
        if mode == "auto":
            small = model is not None and n_parameters(model) < SMALL_MODEL_PARAMS
            mode = "reduce-overhead" if self.device_type == "cuda" and small else "default"
        if self.device_type != "cuda":
            mode = _GRAPH_MODES.get(mode, mode)  # CUDA graphs need CUDA: the no-graph twin
        return mode

    def uses_cuda_graphs(self, model: nn.Module | None = None) -> bool:
        return self.device_type == "cuda" and self.mode_for(model) in _GRAPH_MODES

    def buckets(self, model: nn.Module | None = None) -> bool:
        return self.uses_cuda_graphs(model) if self.bucket is None else self.bucket

    def describe(self, model: nn.Module | None = None) -> str:
        """A short description for logs and provenance, e.g. `bf16+channels_last+compile(default)`."""
        parts = [self.precision]
        if self.uses_channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append(f"compile({self.mode_for(model) if model is not None else self.compile_mode})")
        if model is not None and self.buckets(model):
            parts.append("bucketed")
        return "+".join(parts)

    # ------------------------------------------------------------------ actions
    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device (and to channels_last where that is the policy)."""
        model = model.to(self.device)
        if self.uses_channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module attacks and training call: autocast, input layout, compilation and
        eval-batch padding applied. fp32 without compile returns `model` itself."""
        wrapped: nn.Module = model
        if self.precision != "fp32" or self.uses_channels_last:
            wrapped = _Autocast(model, self)
        mode = self.mode_for(model)
        if mode is not None:
            _raise_recompile_limit()
            wrapped = torch.compile(wrapped, mode=None if mode == "default" else mode)
        if self.buckets(model):
            wrapped = _BucketBatch(wrapped, model)
        if wrapped is not model:
            wrapped.train(model.training)
        return wrapped


class _Autocast(nn.Module):
    """Runs the inner model under the policy's autocast and returns fp32 logits."""

    def __init__(self, model: nn.Module, policy: Policy):
        super().__init__()
        self.model, self.policy = model, policy

    def forward(self, x):
        if self.policy.uses_channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.policy.autocast():
            return self.model(x).float()


def bucket_size(n: int, minimum: int = 8) -> int:
    """The padded batch size: the smallest of {2^k, 3·2^(k−1)} ≥ n (at least `minimum`);
    padding wastes at most a third of a batch and a batch of 1..1024 takes one of ~16 sizes."""
    if n <= minimum:
        return minimum
    p = 1 << (n - 1).bit_length()
    three_quarters = 3 * p // 4
    return three_quarters if n <= three_quarters else p


class _BucketBatch(nn.Module):
    """Pads eval-mode batches to `bucket_size` rows with zeros and drops them again."""

    def __init__(self, inner: nn.Module, model: nn.Module):
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "_model", model)  # the bare model, not a second submodule

    def forward(self, x):
        n = x.shape[0]
        b = bucket_size(n)
        if self._model.training or b == n:  # the model's own mode decides (batch statistics)
            return self.inner(x)
        pad = x.new_zeros((b - n, *x.shape[1:]))
        return self.inner(torch.cat([x, pad]))[:n]


def eval_batch_size(model: nn.Module, device: str) -> int:
    """The evaluation batch for `eval.batch_size: auto`: one that fills the device.

    Measured on an H100 (issue 6): 512 keeps WRN-34-10 compute-bound; small,
    launch-bound models (SmallCNN, ResNet-20) want ≥ 1024. A CPU gains nothing past 256.
    """
    if torch.device(device).type != "cuda":
        return 256
    return 1024 if n_parameters(model) < SMALL_MODEL_PARAMS else 512


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dcfg
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name) and getattr(dcfg, name) < RECOMPILE_LIMIT:
            setattr(dcfg, name, RECOMPILE_LIMIT)


def resolve_device(flag: str | None) -> str:
    """The device a run uses: `flag` checked (one sentence if it cannot be used), or auto."""
    from bench.errors import BenchError
    if flag and flag != "auto":
        try:
            dev = torch.device(flag)
        except (RuntimeError, ValueError):
            raise BenchError(f"--device {flag!r} is not a device: use cpu, cuda, cuda:N or "
                             f"auto") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BenchError(f"--device {flag} asked for CUDA, but no CUDA device is available")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise BenchError(f"--device {flag}: there are only {torch.cuda.device_count()} "
                                 f"CUDA device(s) (cuda:0 … cuda:{torch.cuda.device_count() - 1})")
        elif dev.type == "mps":
            if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
                raise BenchError(f"--device {flag} asked for MPS, but it is not available")
        elif dev.type != "cpu":
            raise BenchError(f"--device {flag}: bench runs on cpu, cuda or mps, not {dev.type}")
        return flag
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
