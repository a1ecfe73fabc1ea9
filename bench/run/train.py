"""The generic training loop: epochs, optimizer and schedule, validation and early
stopping, resumable per-epoch state, progress. It knows no defense by name: each batch
goes to `defense.train_step`.

Nothing in the inner loop synchronises with the host: batch losses are summed on the
device and read once per epoch, where a non-finite loss fails the model.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from bench.checkpoints.cache import verify_sha256
from bench.data.read import DeviceData, carve_validation
from bench.plugins.defense import Defense, StepContext
from bench.errors import BenchError
from bench.data.fetch import load_or_fetch
from bench.run.precision import Policy
from bench.run.resume import ResumeFile
from bench.suite.recipe import TrainConfig
from bench.plugins.registry import DATASETS, DEFENSES
from bench.suite.spec import ModelSpec


class TrainingError(BenchError):
    """Training could not produce a usable model (non-finite loss, bad recipe)."""


@dataclass
class TrainResult:
    model: nn.Module
    curves: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    best_epoch: int | None = None
    resumed_from: int | None = None


def seed_everything(seed: int) -> torch.Generator:
    import random
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def load_train_data(spec: ModelSpec, data_root: Path, device: str, *, offline: bool = False
                    ) -> tuple[DeviceData, DeviceData | None]:
    x, y = load_or_fetch(spec.dataset.plugin, "train", data_root, offline=offline)
    if spec.dataset.train_subset:
        x, y = x[:spec.dataset.train_subset], y[:spec.dataset.train_subset]
    tr_idx, val_idx = carve_validation(len(y), spec.train.val_size)
    train = DeviceData(x[tr_idx], y[tr_idx], device, index=np.arange(len(tr_idx)))
    val = DeviceData(x[val_idx], y[val_idx], device) if len(val_idx) else None
    return train, val


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, epoch: int, frac: float = 0.0) -> float:
    """Learning rate at (0-based epoch + frac): optional linear warm-up, then multistep
    decay; milestones are 1-based epochs (`bench.suite.recipe.TrainConfig.milestones`)."""
    if cfg.warmup_epochs and epoch + frac < cfg.warmup_epochs:
        return cfg.lr * (epoch + frac) / cfg.warmup_epochs
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch + 1 >= m)


def accuracy(model: nn.Module, data: DeviceData, batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    with torch.no_grad():
        for x, y, _ in data.batches(batch_size):
            correct += (model(x).argmax(1) == y).sum()
    model.train(was)
    return correct.item() / max(1, len(data))


def train_model(spec: ModelSpec, *, data_root: Path, policy: Policy,
                resume: ResumeFile | None = None, progress: bool = True, offline: bool = False,
                robust_eval: Callable[[nn.Module, DeviceData], float] | None = None,
                init_path: Path | None = None, init_sha256: str | None = None,
                log: Callable[[str], None] = lambda s: None) -> TrainResult:
    """Train `spec` with its defense and recipe; resume from `resume` if it holds the state
    bench saved (and recorded) for an interrupted run of the same model key. `init_path`
    starts from a checkpoint; with `init_sha256` (a model bench trained), only if it matches."""
    cfg = spec.train
    gen = seed_everything(spec.seed)
    info = DATASETS.get(spec.dataset.plugin).info
    train, val = load_train_data(spec, data_root, policy.device, offline=offline)
    model = policy.prepare(spec.build())
    init = init_path or (Path(cfg.init_from).expanduser() if cfg.init_from else None)
    if init is not None:
        from bench.checkpoints.foreign import load_external_checkpoint
        if init_sha256 is not None:     # a model bench trained: only the bytes it recorded
            verify_sha256(init, init_sha256, what="starting checkpoint")
        load_external_checkpoint(model, init, rename=spec.plugin().adapt_state_dict)
    defense: Defense = DEFENSES.get(spec.defense)(copy.deepcopy(spec.defense_config),
                                                  num_classes=info.num_classes,
                                                  dataset_size=len(train))
    net = policy.wrap(model)
    optimizer = defense.make_optimizer(model.parameters(), cfg) or make_optimizer(model.parameters(), cfg)
    augment = info.augment if cfg.augment is None else cfg.augment

    curves: dict[str, list] = {"epoch": [], "loss": [], "lr": [], "seconds": []}
    start_epoch, best, best_epoch, best_state, step = 0, -math.inf, None, None, 0
    resumed_from = None
    state = resume.load(policy.device, log) if resume is not None else None
    if state is not None:     # verified: the bytes bench wrote for this model key
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            defense.load_state_dict(state.get("defense", {}))
            curves, start_epoch, step = state["curves"], state["epoch"] + 1, state["step"]
            best, best_epoch, best_state = state["best"], state["best_epoch"], state["best_state"]
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            resumed_from = start_epoch
            log(f"resuming {spec.name} at epoch {start_epoch + 1}/{cfg.epochs}")
        except Exception as e:  # an unusable resume state only costs the progress it held
            log(f"ignoring unusable resume state {resume.path.name}: {type(e).__name__}")

    # Entropy-SGD-style defenses draw extra minibatches: a second, endless shuffled stream.
    extra = _endless(train, cfg.batch_size, augment, info.crop_padding, gen)
    t0 = time.perf_counter()
    es = cfg.early_stopping
    for epoch in range(start_epoch, cfg.epochs):
        te = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=policy.device)
        n_batches = n_examples = 0
        batches = train.batches(cfg.batch_size, shuffle=True, augment=augment,
                                padding=info.crop_padding, generator=gen, drop_last=cfg.drop_last)
        total = (len(train) // cfg.batch_size) if cfg.drop_last else math.ceil(len(train) / cfg.batch_size)
        bar = _bar(batches, total, f"train {spec.name} {epoch + 1}/{cfg.epochs}", progress)
        for i, (x, y, idx) in enumerate(bar):
            lr = lr_at(cfg, epoch, i / max(1, total))
            for g in optimizer.param_groups:
                g["lr"] = lr
            ctx = StepContext(epoch=epoch, step=step, index=idx, next_batch=lambda: next(extra),
                              num_classes=info.num_classes,
                              dataset_size=len(train))
            loss_sum += defense.train_step(net, optimizer, x, y, ctx).float()
            n_batches += 1
            n_examples += x.shape[0]
            step += 1
        mean_loss = (loss_sum / max(1, n_batches)).item()
        if not math.isfinite(mean_loss):
            raise TrainingError(f"{spec.name}: non-finite training loss ({mean_loss}) in epoch {epoch + 1}; "
                                f"lower the learning rate or check the defense's settings")
        curves["epoch"].append(epoch + 1)
        curves["loss"].append(mean_loss)
        curves["lr"].append(lr_at(cfg, epoch))
        if val is not None:
            curves.setdefault("val_clean_acc", []).append(accuracy(net, val))
            if es is not None and robust_eval is not None and (epoch + 1) % es.every == 0:
                val_set = val.head(es.n)
                r = robust_eval(net, val_set)
                curves.setdefault("val_robust_acc", []).append(r)
                curves.setdefault("val_robust_acc_epoch", []).append(epoch + 1)
                if r > best:
                    best, best_epoch = r, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        epoch_seconds = time.perf_counter() - te
        curves["seconds"].append(epoch_seconds)
        if resume is not None:
            resume.save({"key": spec.key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "defense": defense.state_dict(), "curves": curves, "epoch": epoch, "step": step,
                         "best": best, "best_epoch": best_epoch, "best_state": best_state,
                         "generator": gen.get_state(), "torch_rng": torch.get_rng_state()})
        # one self-contained line per epoch: a piped log (no progress bar) is never silent
        log(f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: loss {mean_loss:.4f}"
            + (f", val clean {curves['val_clean_acc'][-1]:.3f}" if val is not None else "")
            + (f", val robust {curves['val_robust_acc'][-1]:.3f}" if curves.get("val_robust_acc") and
               len(curves["val_robust_acc"]) and es else "")
            + f", {epoch_seconds:.1f}s, {n_examples / max(epoch_seconds, 1e-9):,.0f} examples/s")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, curves, time.perf_counter() - t0, best_epoch, resumed_from)


def _endless(data: DeviceData, batch_size: int, augment: bool, padding: int, gen: torch.Generator):
    while True:
        for x, y, idx in data.batches(batch_size, shuffle=True, augment=augment,
                                      padding=padding, generator=gen):
            yield x, y, idx


def _bar(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
