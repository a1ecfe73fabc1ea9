"""Loading weights from outside the suite: released checkpoints and fine-tuning starts.

`load_external_checkpoint(model, path)` reads a file in place, only if it is a regular file
within the size cap (`bench.checkpoints.sources`: no device, FIFO or folder), checks the
bytes it read against the sha256 the caller verified (so the file cannot change between
the check and the load), and parses them with `torch.load(weights_only=True,
map_location="cpu")` (never unpickling arbitrary objects). It accepts the layouts the
released checkpoints of the paper's methods use:

* a raw state dict (TRADES, MART, ATENT: `torch.save(model.state_dict(), …)`), or one
  nested under `state_dict` (Cohen et al., Rice et al.), `model` (MMA), `model_state_dict`
  or `net`; in the zip format or the legacy one (PyTorch < 1.6, e.g. MMA's files);
* parameter names of another implementation of the same network, renamed by the model
  plugin's `adapt_state_dict` (`rename=`), e.g. MMA's advertorch WideResNet;
* DataParallel's `module.` in the keys (ATENT, Carmon et al.), dropped;
* a whole-model prefix that differs from the model's own, e.g. the `1.` of Cohen et al.'s
  `nn.Sequential(NormalizeLayer, net)` against a bare network, or a bare network's keys
  against a model built as `nn.Sequential(Normalize, net)`: re-rooted when that makes
  more keys match (a strict load still needs every key to match after it);
* no Normalize `mean`/`std` buffers (they are fixed by the model's config, not learned;
  Cohen's NormalizeLayer keeps its constants outside the state dict) and no BatchNorm
  `num_batches_tracked` (checkpoints older than PyTorch 0.4.1): the model keeps its own.

Anything else that does not match is a CheckpointError naming the missing and unexpected
keys and the shape mismatches (strict), or, with `strict=False`, is skipped with a warning
(the usual fine-tuning case of a new classifier head).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import Any, Callable, Mapping

import torch
from torch import nn

from bench.checkpoints.sources import cap_bytes, read_local
from bench.errors import CheckpointError, one_line
from bench.plugins.model import Normalize

NESTING_KEYS = ("state_dict", "model", "model_state_dict", "net")
MAX_LISTED = 10


def load_external_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                             strict: bool = True,
                             rename: Callable[[dict], dict] | None = None,
                             sha256: str | None = None, max_bytes: int | None = None) -> None:
    """Load the weights in `path` into `model` in place (see the module docstring).

    `rename` (the model plugin's `adapt_state_dict`) maps the file's parameter names to the
    model's before anything else, e.g. MMA's advertorch WideResNet names to TRADES'.
    `sha256`: what the bytes must hash to; `max_bytes`: the cap (default: the default cap)."""
    path = os.fspath(path)
    data = read_local(path, cap_bytes(None) if max_bytes is None else max_bytes)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {path} changed after its sha256 was verified; refused")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zips, foreign pickles, disallowed globals, …
        hint = ("; it holds more than tensors and plain data, so re-save only its state dict"
                if "Weights only load failed" in str(e) else "; the file may be truncated or corrupt")
        raise CheckpointError(f"{path} is not a loadable PyTorch checkpoint "
                              f"({one_line(e, limit=240)}){hint}") from None
    state = _find_state_dict(obj, path)
    if rename is not None:
        state = rename(state)
    state = _align(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"{path} does not match the model: "
                              + _describe(missing, unexpected, mismatched, state, own))
    if missing or unexpected or mismatched:
        warnings.warn(f"{path}: loaded the matching weights only; "
                      + _describe(missing, unexpected, mismatched, state, own), stacklevel=2)
        state = {k: v for k, v in state.items() if k in own and k not in mismatched}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:  # dtype or other surprises left to PyTorch
        raise CheckpointError(f"{path} could not be loaded into the model: {e}") from None


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _find_state_dict(obj: Any, path: str, depth: int = 0) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < 2:
        for key in NESTING_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _find_state_dict(obj[key], path, depth + 1)
    what = (f"a mapping with keys {', '.join(map(repr, list(obj)[:10]))}"
            if isinstance(obj, Mapping) else f"a {type(obj).__name__}")
    raise CheckpointError(f"{path} holds no state dict: it is {what}, not a mapping of names "
                          f"to tensors, nor one under {', '.join(map(repr, NESTING_KEYS))}")


def _fillable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Model entries a checkpoint may omit: Normalize constants and BN batch counters."""
    out = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, Normalize):
            out[prefix + "mean"], out[prefix + "std"] = module.mean, module.std
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_batches_tracked is not None:
            out[prefix + "num_batches_tracked"] = module.num_batches_tracked
    return out


def _common_prefix(keys) -> str:
    """The longest dotted module path that every key starts with ('' if none)."""
    parts = [k.split(".")[:-1] for k in keys]
    if not parts:
        return ""
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return "".join(c + "." for c in common)


def _align(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    if not any("module" in k.split(".") for k in own):
        state = {".".join(p for p in k.split(".") if p != "module"): v for k, v in state.items()}
    fill = _fillable(model)
    required = [k for k in own if k not in fill]
    have, want = _common_prefix(state), _common_prefix(required)
    if have != want:  # re-root only if more keys then match (all of them, for a strict load)
        moved = {want + k[len(have):]: v for k, v in state.items()}
        if len(set(moved) & set(own)) > len(set(state) & set(own)):
            state = moved
    for k, v in fill.items():
        state.setdefault(k, v)
    return state


def _describe(missing, unexpected, mismatched, state, own) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if mismatched:
        shown = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                 for k in mismatched[:MAX_LISTED]]
        more = f", … and {len(mismatched) - MAX_LISTED} more" if len(mismatched) > MAX_LISTED else ""
        parts.append(f"{len(mismatched)} shape mismatch(es): {', '.join(shown)}{more}")
    return "; ".join(parts)


def _listed(keys: list[str]) -> str:
    more = f", … and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more
