#!/usr/bin/env python
"""How fast does bench evaluate and train, next to foolbox and the reference loops?

One process, one device, random data of the datasets' shapes (no data root needed):

* evaluation: PGD-20 ℓ∞ (ε 8/255, step 2/255, uniform random start; the same settings
  for every model, SmallCNN included) on a fixed batch, timed over the attack loop only
  (`perturb`, foolbox's `run`): foolbox's LinfPGD, a reference-style fp32 loop (as the
  TRADES/MART evaluation scripts: `loss.backward()`, sign step, clamp), and bench's PGD
  under the fp32 policy, the bf16 policy (eager; channels_last on CUDA) and the fast
  path (bf16 + channels_last + torch.compile in the policy's per-device mode);
* training: a fixed number of batches of TRADES and ATENT-ℓ∞ (the registered defenses,
  with their CIFAR-10 defaults: ε 0.031, step 0.007, K = 10) through bench's loop (data
  resident on the device as uint8, augmentation there, loss read once), in fp32 and on
  the fast path, against reference-style fp32 loops written below (as the TRADES and
  ATENT repositories write them: data augmented on the host and copied per batch).

It reports images/s, the ratio to foolbox (or to the reference loop), the fraction of
the device's bf16 matrix-multiply rate (measured here with a large bf16 matmul) that
the useful arithmetic represents — FLOPs of one PGD step (forward + gradient w.r.t. the
input) from torch.utils.flop_counter — and the warm-up time (compilation included).

    python benchmarks/bench_speed.py                       # CPU: small sizes, says so
    python benchmarks/bench_speed.py --device cuda --full  # the H100 sizes of issue 6
    python benchmarks/bench_speed.py --profile             # + where the time goes

Also runs under pytest-benchmark (tiny CPU sizes):
    pytest benchmarks/bench_speed.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from attacks.pgd import PGD  # noqa: E402
from bench.plugins.config import build_config  # noqa: E402
from bench.data.read import DeviceData, augment_batch  # noqa: E402
from bench.plugins.defense import StepContext  # noqa: E402
from bench.plugins.model import build_model  # noqa: E402
from bench.plugins.perturb import frozen_parameters  # noqa: E402
from bench.run.precision import Policy, device_name, resolve_device  # noqa: E402
from bench.plugins.registry import DATASETS, DEFENSES  # noqa: E402

EPS, STEP, STEPS = 8 / 255, 2 / 255, 20
DATASET_OF = {"small_cnn": "mnist", "resnet20": "cifar10", "wrn34_10": "cifar10"}
CIFAR_TRAIN_SIZE = 50_000

# sizes: batch per model for evaluation; training batch and number of timed batches
PROFILES = {
    "cpu-small": dict(eval_models=["small_cnn", "resnet20"], train_models=["small_cnn", "resnet20"],
                      eval_batch={"small_cnn": 64, "resnet20": 32, "wrn34_10": 4},
                      train_batch={"small_cnn": 32, "resnet20": 32, "wrn34_10": 4},
                      train_batches=2, reps=3),
    "cuda-quick": dict(eval_models=["small_cnn", "resnet20", "wrn34_10"],
                       train_models=["resnet20", "wrn34_10"],
                       eval_batch={"small_cnn": 1024, "resnet20": 1024, "wrn34_10": 128},
                       train_batch={"small_cnn": 128, "resnet20": 128, "wrn34_10": 64},
                       train_batches=5, reps=3),
    "full": dict(eval_models=["small_cnn", "resnet20", "wrn34_10"],
                 train_models=["resnet20", "wrn34_10"],
                 eval_batch={"small_cnn": 1024, "resnet20": 1024, "wrn34_10": 512},
                 train_batch={"small_cnn": 128, "resnet20": 128, "wrn34_10": 128},
                 train_batches=20, reps=5),
}

EVAL_VARIANTS = ("foolbox", "reference", "fp32", "bf16", "fast")
TRAIN_VARIANTS = ("reference", "fp32", "fast")
VARIANT_LABEL = {
    "foolbox": "foolbox LinfPGD (fp32)",
    "reference": "reference loop (fp32)",
    "fp32": "bench fp32",
    "bf16": "bench bf16",
    "fast": "bench fast",
}


# ============================================================================ utilities

def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def policy_for(variant: str, device: str, compile_mode: str = "auto") -> Policy:
    if variant in ("fp32", "reference", "foolbox"):
        return Policy("fp32", False, device)
    if variant == "bf16":
        return Policy("bf16", False, device)
    if variant == "fast":
        return Policy("bf16", True, device, compile_mode=compile_mode)
    raise ValueError(variant)


def matmul_rate(device: str, dtype=torch.bfloat16) -> float:
    """Measured dense matmul rate in FLOP/s (a big square matmul, repeated)."""
    n, iters = (8192, 50) if torch.device(device).type == "cuda" else (1024, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n ** 3 * iters / (time.perf_counter() - t)


class _Global:
    """A stand-in for FlopCounterMode's module tracker: everything counts as "Global".
    (The tracker's hooks refuse `autograd.grad` w.r.t. a leaf, which the defenses use.)"""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    fc.mod_tracker = _Global()
    return fc


def pgd_step_flops(model: nn.Module, shape: tuple, device: str) -> float:
    """FLOPs per image of one PGD step: forward + gradient w.r.t. the input (fp32 eager)."""
    from torch.utils.flop_counter import FlopCounterMode
    m = copy.deepcopy(model).to(device).eval()
    x0 = torch.rand(1, *shape, device=device, requires_grad=True)
    fc = FlopCounterMode(display=False)
    with fc, frozen_parameters(m):
        x = x0 * 1.0   # a non-leaf input: the counter's module hooks reject a leaf in autograd.grad
        loss = F.cross_entropy(m(x), torch.zeros(1, dtype=torch.long, device=device), reduction="sum")
        torch.autograd.grad(loss, x0)
    return float(fc.get_total_flops())


def train_step_flops(model: nn.Module, defense_name: str, shape: tuple, device: str) -> float | None:
    """FLOPs per image of one training step of the registered defense (fp32 eager)."""
    try:
        m = copy.deepcopy(model).to(device).train()
        defense = make_defense(defense_name)
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        x = torch.rand(2, *shape, device=device)
        y = torch.zeros(2, dtype=torch.long, device=device)
        fc = _flop_counter()
        with fc:
            defense.train_step(m, opt, x, y, step_context(x, y))
        return fc.get_total_flops() / 2
    except Exception as e:  # the counter relies on an internal; a failure only loses a column
        print(f"  (training FLOP count unavailable: {type(e).__name__}: {e})", file=sys.stderr)
        return None


def make_defense(name: str):
    cls = DEFENSES.get(name)
    return cls(build_config(cls.Config, {}, name), num_classes=10, dataset_size=CIFAR_TRAIN_SIZE)


def step_context(x, y) -> StepContext:
    idx = torch.arange(x.shape[0], device=x.device)
    return StepContext(epoch=0, step=0, index=idx, next_batch=lambda: (x, y, idx),
                       num_classes=10, dataset_size=CIFAR_TRAIN_SIZE)


def _error(e: BaseException) -> str:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
    msg = str(e).splitlines()[0][:120] if str(e) else ""
    return f"{type(e).__name__}: {msg}"


def measure(rows: list[Row], runners: dict, device: str, reps: int, warmups: dict) -> None:
    """Warm every variant up (compilation included), then time the variants interleaved,
    repetition by repetition, so that a busy neighbour on a shared machine slows all of
    them alike; keep the median."""
    live = {}
    for row in rows:
        fn = runners.get(row.variant)
        if fn is None:
            continue
        try:
            t0 = time.perf_counter()
            for _ in range(warmups.get(row.variant, 1)):
                fn()
            sync(device)
            row.warmup_s = time.perf_counter() - t0
            live[row.variant] = (row, fn)
        except Exception as e:  # one failing variant (OOM, a compile error) costs its row only
            row.error = _error(e)
    for _ in range(reps):
        for v, (row, fn) in list(live.items()):
            try:
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                row.times_s.append(time.perf_counter() - t)
            except Exception as e:
                row.error = _error(e)
                del live[v]


def finish(rows: list[Row], runners: dict, *, images: int, flops, rate: float, device: str,
           profile: bool, top: int, baseline: str, what: str, title: str) -> list[Row]:
    """Images/s, share of the bf16 rate, optional profile and the ratio to `baseline`
    for measured rows (the evaluation and the training benchmark alike)."""
    for row in rows:
        if row.error is None and row.times_s:
            row.images_per_s = images / statistics.median(row.times_s)
            row.peak_fraction = row.images_per_s * flops / rate if flops else None
            if profile:
                try:
                    table, row.profile = profile_once(runners[row.variant], device, top)
                    print(f"\n--- profile: {title} {VARIANT_LABEL[row.variant]} [{row.mode}]\n{table}")
                except Exception as e:
                    row.profile = [f"profile failed: {_error(e)}"]
        print(f"  {what} {VARIANT_LABEL[row.variant]:24s} " +
              (f"{row.images_per_s:10.1f} img/s (warm-up {row.warmup_s:.1f}s)" if row.images_per_s
               else f"FAILED {row.error}"), file=sys.stderr)
    runners.clear()
    ref = next((r.images_per_s for r in rows if r.variant == baseline and r.images_per_s), None)
    for r in rows:
        r.ratio = r.images_per_s / ref if ref and r.images_per_s else None
    return rows


def profile_once(fn: Callable[[], object], device: str, top: int) -> tuple[str, list[str]]:
    """One run under torch.profiler: the top functions/kernels and a few highlight lines."""
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.device(device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - t
    ev = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    try:
        table = ev.table(sort_by=key, row_limit=top, max_name_column_width=60)
    except (AttributeError, KeyError, ValueError):
        key = "self_cuda_time_total" if cuda else key
        table = ev.table(sort_by=key, row_limit=top, max_name_column_width=60)

    def self_time(e):
        return (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)) \
            if cuda else e.self_cpu_time_total

    rows = sorted(ev, key=self_time, reverse=True)
    total = sum(self_time(e) for e in ev) or 1.0
    hl = [f"{e.key[:50]} {100 * self_time(e) / total:.0f}%" for e in rows[:4] if self_time(e) > 0]
    lines = ["top: " + "; ".join(hl)]
    if cuda:
        try:
            from torch.autograd import DeviceType
            kernels = sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)
            busy = sum(self_time(e) for e in ev) / 1e6
            lines.append(f"{kernels} device kernels, device busy {100 * busy / wall:.0f}% of {wall:.3f}s wall")
        except Exception as e:  # profiler internals differ between versions: lose a line, not the run
            lines.append(f"(kernel summary unavailable: {type(e).__name__})")
    else:
        lines.append(f"{wall:.3f}s wall, {sum(e.count for e in ev)} op calls")
    return table, lines


# ============================================================================ reference loops

def reference_pgd(model, x, y, eps=EPS, step=STEP, steps=STEPS):
    """PGD as the TRADES/MART evaluation scripts write it: a uniform start, then per step
    a full `loss.backward()` (weight gradients included), a sign step, a clamp to the ball
    and to [0, 1]."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).requires_grad_(True)
    for _ in range(steps):
        loss = nn.CrossEntropyLoss()(model(x_adv), y)
        loss.backward()
        x_adv = x_adv.detach() + step * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0).requires_grad_(True)
    return x_adv.detach()


def reference_trades_step(model, optimizer, x, y, eps=0.031, step=0.007, steps=10, beta=6.0):
    """One TRADES update as `trades_loss` writes it: the inner KL ascent in eval mode
    (the clean output recomputed every step), then CE + β·KL in train mode."""
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    model.train()
    x_adv = x_adv.clamp(0.0, 1.0).detach()
    optimizer.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)) / x.shape[0]
    loss = loss_natural + beta * loss_robust
    loss.backward()
    optimizer.step()
    return loss


def reference_atent_step(model, optimizer, x, y, eps=0.031, step=0.007, steps=10, noise=1e-3,
                         alpha=0.9):
    """One ATENT-ℓ∞ update as the authors' loop runs it: in train mode, K Langevin steps
    from a random corner of the ball, each iterate's training loss folded into an
    exponential average kept for one backward; the last iterate projected."""
    model.train()
    optimizer.zero_grad()
    x_k = x + eps * torch.randn_like(x).sign()
    total = 0.0
    for k in range(steps):
        x_k = x_k.detach().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(x_k), y), x_k)[0]
        x_k = x_k.detach() + step * grad.sign() + noise * math.sqrt(2 * step) * torch.randn_like(x)
        if k == steps - 1:
            x_k = torch.min(torch.max(x_k, x - eps), x + eps)
        x_k = x_k.clamp(0.0, 1.0)
        total = (1 - alpha) * total + alpha * F.cross_entropy(model(x_k), y)
    total.backward()
    optimizer.step()
    return total


REFERENCE_STEP = {"trades": reference_trades_step, "atent": reference_atent_step}


# ============================================================================ benchmarks

@dataclass
class Row:
    kind: str                 # "eval" or "train"
    model: str
    variant: str
    batch: int
    defense: str = ""
    images_per_s: float | None = None
    warmup_s: float | None = None
    times_s: list = field(default_factory=list)
    mode: str = ""
    flops_per_image: float | None = None   # per PGD attack (all steps) or per training image
    error: str | None = None
    ratio: float | None = None
    peak_fraction: float | None = None
    profile: list = field(default_factory=list)


def eval_runner(variant: str, base: nn.Module, x, y, device: str, compile_mode: str):
    """A zero-argument callable running one attack of `variant` on (x, y), and its policy."""
    if variant == "foolbox":
        import foolbox as fb
        model = copy.deepcopy(base).to(device).eval()
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
        attack = fb.attacks.LinfPGD(abs_stepsize=STEP, steps=STEPS, random_start=True)
        return (lambda: attack.run(fmodel, x, y, epsilon=EPS)), "fp32 (foolbox)"
    if variant == "reference":
        model = copy.deepcopy(base).to(device).eval()

        def run():
            model.zero_grad(set_to_none=True)
            return reference_pgd(model, x, y)
        return run, "fp32 eager"
    pol = policy_for(variant, device, compile_mode)
    model = pol.prepare(copy.deepcopy(base)).eval()
    net = pol.wrap(model)
    attack = PGD(PGD.Config(steps=STEPS, step_size=STEP))

    def run():
        with frozen_parameters(net):   # as bench.run.evaluate runs attacks
            return attack.perturb(net, x, y, EPS)
    return run, pol.describe(model)


def bench_eval(arch: str, variants, batch: int, device: str, reps: int, rate: float,
               compile_mode: str, profile: bool, top: int) -> list[Row]:
    info = DATASETS.get(DATASET_OF[arch]).info
    base = build_model(arch, {}, info).eval()
    flops = pgd_step_flops(base, info.shape, device) * STEPS
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, *info.shape, generator=g).to(device)
    y = torch.randint(0, info.num_classes, (batch,), generator=g).to(device)
    rows, runners = [], {}
    for v in variants:
        row = Row("eval", arch, v, batch, flops_per_image=flops)
        rows.append(row)
        try:
            runners[v], row.mode = eval_runner(v, base, x, y, device, compile_mode)
        except Exception as e:
            row.error = _error(e)
    cuda = torch.device(device).type == "cuda"
    measure(rows, runners, device, reps, {"fast": 2 if cuda else 1})
    return finish(rows, runners, images=batch, flops=flops, rate=rate, device=device,
                  profile=profile, top=top, baseline="foolbox",
                  what=f"eval {arch:10s}", title=f"PGD-20 {arch} batch {batch}")


def train_runner(variant: str, defense_name: str, base: nn.Module, data_u8: torch.Tensor,
                 labels: torch.Tensor, batch: int, n_batches: int, device: str, compile_mode: str):
    """A callable that trains `n_batches` batches, and its policy description."""
    g = torch.Generator().manual_seed(0)
    if variant == "reference":
        model = copy.deepcopy(base).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        step = REFERENCE_STEP[defense_name]
        x_host, y_host = data_u8.cpu(), labels.cpu()

        def run():
            order = torch.randperm(len(y_host), generator=g)
            loss = None
            for i in range(n_batches):
                idx = order[i * batch:(i + 1) * batch]
                xb = augment_batch(x_host[idx], 4, g).float().div_(255).to(device)   # host-side data
                yb = y_host[idx].to(device)
                loss = step(model, opt, xb, yb)
            return float(loss.detach())
        return run, "fp32 eager, host data"
    pol = policy_for(variant, device, compile_mode)
    model = pol.prepare(copy.deepcopy(base)).train()
    net = pol.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    defense = make_defense(defense_name)
    data = DeviceData.__new__(DeviceData)
    data.x, data.y, data.device = data_u8, labels, torch.device(device)
    data.index = torch.arange(len(labels), device=device)

    def run():
        loss_sum = torch.zeros((), device=device)
        batches = data.batches(batch, shuffle=True, augment=True, padding=4, generator=g, drop_last=True)
        for _, (xb, yb, idx) in zip(range(n_batches), batches):
            ctx = StepContext(epoch=0, step=0, index=idx, next_batch=lambda: (xb, yb, idx),
                              num_classes=10,
                              dataset_size=CIFAR_TRAIN_SIZE)
            loss_sum += defense.train_step(net, opt, xb, yb, ctx).float()
        return loss_sum.item()   # read once, as bench.run.train does per epoch
    return run, pol.describe(model)


def bench_train(arch: str, defense_name: str, variants, batch: int, n_batches: int, device: str,
                reps: int, rate: float, compile_mode: str, profile: bool, top: int) -> list[Row]:
    info = DATASETS.get(DATASET_OF[arch]).info
    base = build_model(arch, {}, info).train()
    flops = train_step_flops(base, defense_name, info.shape, device)
    g = torch.Generator().manual_seed(1)
    n = batch * n_batches
    data_u8 = torch.randint(0, 256, (n, *info.shape), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, info.num_classes, (n,), generator=g).to(device)
    rows, runners = [], {}
    for v in variants:
        row = Row("train", arch, v, batch, defense=defense_name, flops_per_image=flops)
        rows.append(row)
        try:
            runners[v], row.mode = train_runner(v, defense_name, base, data_u8, labels, batch,
                                                n_batches, device, compile_mode)
        except Exception as e:
            row.error = _error(e)
    measure(rows, runners, device, reps, {})
    return finish(rows, runners, images=n, flops=flops, rate=rate, device=device,
                  profile=profile, top=top, baseline="reference",
                  what=f"train {defense_name:6s} {arch:10s}",
                  title=f"{defense_name} {arch} batch {batch} × {n_batches}")


# ============================================================================ report

def _fmt(v, spec, missing="–"):
    return missing if v is None else format(v, spec)


def render(rows: list[Row], header: list[str]) -> str:
    out = header[:]
    ev = [r for r in rows if r.kind == "eval"]
    if ev:
        out += ["", f"PGD-{STEPS} ℓ∞ (ε 8/255, step 2/255, random start), attack loop only, images/s",
                "", "| model | batch | variant | policy | images/s | × foolbox | % bf16 peak | warm-up s |",
                "|---|---:|---|---|---:|---:|---:|---:|"]
        for r in ev:
            out.append(f"| {r.model} | {r.batch} | {VARIANT_LABEL[r.variant]} | {r.mode} | "
                       + (f"{r.images_per_s:,.1f} | {_fmt(r.ratio, '.2f', '–') + ('×' if r.ratio else '')} | "
                          f"{_fmt(r.peak_fraction and 100 * r.peak_fraction, '.1f')} | {r.warmup_s:.1f} |"
                          if r.images_per_s else f"failed: {r.error} | | | |"))
        gf = {r.model: r.flops_per_image / STEPS / 1e9 for r in ev if r.flops_per_image}
        out += ["", "FLOPs of one PGD step per image (forward + input gradient): "
                + ", ".join(f"{m} {v:.3g} GFLOP" for m, v in gf.items())]
    tr = [r for r in rows if r.kind == "train"]
    if tr:
        out += ["", "Adversarial training (registered defenses, CIFAR-10 defaults: ε 0.031, step 0.007, "
                "K = 10; SGD), images/s", "",
                "| model | defense | batch | variant | policy | images/s | × reference | "
                "50k-image epoch s | % bf16 peak | warm-up s |",
                "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
        for r in tr:
            out.append(f"| {r.model} | {r.defense} | {r.batch} | {VARIANT_LABEL[r.variant]} | {r.mode} | "
                       + (f"{r.images_per_s:,.1f} | {_fmt(r.ratio, '.2f', '–') + ('×' if r.ratio else '')} | "
                          f"{CIFAR_TRAIN_SIZE / r.images_per_s:,.0f} | "
                          f"{_fmt(r.peak_fraction and 100 * r.peak_fraction, '.1f')} | {r.warmup_s:.1f} |"
                          if r.images_per_s else f"failed: {r.error} | | | | |"))
    prof = [r for r in rows if r.profile]
    if prof:
        out += ["", "Profile highlights (self time; one run per variant):", ""]
        for r in prof:
            what = f"PGD-20 {r.model}" if r.kind == "eval" else f"{r.defense} {r.model}"
            out.append(f"- {what}, {VARIANT_LABEL[r.variant]}: " + " | ".join(r.profile))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ap.add_argument("--full", action="store_true", help="the H100 sizes of issue 6 (WRN-34-10 batch 512, …)")
    ap.add_argument("--models", help="comma-separated: small_cnn,resnet20,wrn34_10 (evaluation)")
    ap.add_argument("--train-models", help="comma-separated architectures for the training benchmark")
    ap.add_argument("--variants", help=f"evaluation variants ({','.join(EVAL_VARIANTS)})")
    ap.add_argument("--train-variants", help=f"training variants ({','.join(TRAIN_VARIANTS)})")
    ap.add_argument("--defenses", default="trades,atent")
    ap.add_argument("--batch", type=int, help="evaluation batch for every model (default: per profile)")
    ap.add_argument("--train-batch", type=int)
    ap.add_argument("--train-batches", type=int, help="timed training batches per repetition")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--compile-mode", default="auto", help="the fast path's compile mode (bench.run.precision)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--profile", action="store_true", help="torch.profiler: top kernels/functions per variant")
    ap.add_argument("--profile-rows", type=int, default=12)
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = torch.device(device).type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    prof_name = "full" if args.full else ("cuda-quick" if cuda else "cpu-small")
    P = PROFILES[prof_name]
    split = lambda s, d: [t.strip() for t in s.split(",") if t.strip()] if s else list(d)  # noqa: E731
    eval_models = split(args.models, P["eval_models"])
    train_models = split(args.train_models, P["train_models"])
    variants = split(args.variants, EVAL_VARIANTS)
    train_variants = split(args.train_variants, TRAIN_VARIANTS)
    defenses = split(args.defenses, ())
    reps = args.reps or P["reps"]
    n_batches = args.train_batches or P["train_batches"]

    rate = matmul_rate(device)
    rate32 = matmul_rate(device, torch.float32)
    header = [
        f"bench speed benchmark — {device_name(device)}",
        f"torch {torch.__version__}, python {platform.python_version()}, profile `{prof_name}`, "
        f"{reps} timed repetitions (median)",
        f"measured matmul rate: bf16 {rate / 1e12:.3g} TFLOP/s, fp32 {rate32 / 1e12:.3g} TFLOP/s; "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
        f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
        f"cudnn.benchmark={torch.backends.cudnn.benchmark}",
        "random data of the datasets' shapes (SmallCNN: 1×28×28; ResNet-20, WRN-34-10: 3×32×32)",
    ]
    if not cuda:
        header.insert(1, "NOTE: CPU run at SMALL sizes (tiny batches, few training batches, SmallCNN and "
                         "ResNet-20 only). These figures do not measure GPU speed; "
                         "`--device cuda --full` runs the H100 sizes.")
    elif not args.full:
        header.insert(1, "NOTE: quick CUDA sizes; `--full` runs the sizes of issue 6.")
    print("\n".join(header), file=sys.stderr)

    rows: list[Row] = []
    if not args.no_eval:
        for arch in eval_models:
            batch = args.batch or P["eval_batch"][arch]
            rows += bench_eval(arch, variants, batch, device, reps, rate, args.compile_mode,
                               args.profile, args.profile_rows)
    if not args.no_train:
        for arch in train_models:
            batch = args.train_batch or P["train_batch"][arch]
            for d in defenses:
                rows += bench_train(arch, d, train_variants, batch, n_batches, device, reps, rate,
                                    args.compile_mode, args.profile, args.profile_rows)
    text = render(rows, header)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0 if all(r.error is None for r in rows) else 1


# ============================================================================ pytest-benchmark

try:
    import pytest
except ImportError:  # a plain script run needs no pytest
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("variant", EVAL_VARIANTS[:4])
    def test_pgd20_small_cnn_cpu(benchmark, variant):
        """PGD-20 on SmallCNN, batch 16, CPU (pytest-benchmark; compile is left out)."""
        info = DATASETS.get("mnist").info
        base = build_model("small_cnn", {}, info).eval()
        x, y = torch.rand(16, *info.shape), torch.randint(0, 10, (16,))
        fn, _ = eval_runner(variant, base, x, y, "cpu", "auto")
        fn()
        benchmark(fn)

    @pytest.mark.parametrize("variant", ("reference", "fp32"))
    @pytest.mark.parametrize("defense", ("trades", "atent"))
    def test_train_small_cnn_cpu(benchmark, variant, defense):
        """One training batch of 16 on SmallCNN, CPU (pytest-benchmark)."""
        info = DATASETS.get("mnist").info
        base = build_model("small_cnn", {}, info).train()
        data = torch.randint(0, 256, (16, *info.shape), dtype=torch.uint8)
        fn, _ = train_runner(variant, defense, base, data, torch.randint(0, 10, (16,)), 16, 1, "cpu", "auto")
        fn()
        benchmark(fn)


if __name__ == "__main__":
    sys.exit(main())
