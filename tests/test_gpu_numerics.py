"""On a GPU: the fast path (bf16 + channels_last + torch.compile, CUDA graphs for small
models) does not weaken attacks, and the attack loop makes no host synchronisation.

Two models are adversarially trained here, in fp32 eager (the reference), from the
data root (`BENCH_DATA_ROOT`, else ../shared/data beside the checkout):

* SmallCNN on MNIST: PGD-AT ℓ∞, 10 steps of 2.5ε/10, ε ramped 0.1 → 0.2 → 0.3 → 0.3,
  Adam 1e-3, batch 128, 4 epochs (about a minute on an H100);
* ResNet-20 on CIFAR-10: PGD-AT ℓ∞ ε 8/255, 5 steps of 2/255, SGD 0.1 (momentum 0.9,
  wd 5e-4, ×0.1 for the last epoch), batch 128, crop + flip, 8 epochs (a few minutes).

Each is then attacked on its whole test split (10,000 images) with PGD-20 (MNIST ε 0.3,
step 2.5ε/20; CIFAR ε 8/255, step 2/255), once under the fp32 policy and once under
the fast policy, batch by batch with the same seeds (same random starts), through
`Attack.run` exactly as the evaluation loop calls it (frozen weights, restarts and
decisions by the base class, the decision made by the policy's own model).

    BENCH_DATA_ROOT=/path/to/data python -m pytest -m gpu tests/test_gpu_numerics.py -v
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attacks.pgd import PGD
from bench.plugins.config import build_config
from bench.data.read import DeviceData, load_split
from bench.plugins.defense import StepContext
from bench.plugins.model import build_model
from bench.plugins.perturb import frozen_parameters
from bench.run.precision import Policy
from bench.plugins.registry import DATASETS, DEFENSES

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


def _pgd_at(arch: str, dataset: str, data_root, *, eps: list[float], steps: int, step: list[float],
            lr: list[float], optimizer: str, batch: int = 128) -> torch.nn.Module:
    """PGD-AT in fp32 eager, one entry of eps/step/lr per epoch."""
    info = DATASETS.get(dataset).info
    x, y = load_split(dataset, "train", data_root, offline=True)
    train = DeviceData(x, y, DEVICE)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(arch, {}, info).to(DEVICE)
    opt = (torch.optim.Adam(model.parameters(), lr=lr[0]) if optimizer == "adam" else
           torch.optim.SGD(model.parameters(), lr=lr[0], momentum=0.9, weight_decay=5e-4))
    cls = DEFENSES.get("pgd_at")
    for epoch in range(len(eps)):
        defense = cls(build_config(cls.Config, {"eps": eps[epoch], "step_size": step[epoch],
                                                "steps": steps}, "pgd_at"))
        for g in opt.param_groups:
            g["lr"] = lr[epoch]
        model.train()
        for xb, yb, idx in train.batches(batch, shuffle=True, augment=info.augment,
                                         padding=info.crop_padding, generator=gen, drop_last=True):
            ctx = StepContext(epoch=epoch, step=0, index=idx, next_batch=lambda: (xb, yb, idx),
                              num_classes=info.num_classes,
                              dataset_size=len(train))
            defense.train_step(model, opt, xb, yb, ctx)
    return model.eval()


@pytest.fixture(scope="module")
def mnist_small_cnn(data_root):
    return _pgd_at("small_cnn", "mnist", data_root, eps=[0.1, 0.2, 0.3, 0.3], steps=10,
                   step=[0.025, 0.05, 0.075, 0.075], lr=[1e-3] * 4, optimizer="adam")


@pytest.fixture(scope="module")
def cifar_resnet20(cifar10_root):
    return _pgd_at("resnet20", "cifar10", cifar10_root, eps=[8 / 255] * 8, steps=5, step=[2 / 255] * 8,
                   lr=[0.1] * 7 + [0.01], optimizer="sgd")


def _outcomes(model, policy: Policy, dataset: str, data_root, eps: float, step: float | None,
              batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean correct, robust) per test sample under PGD-20, as bench.run.evaluate runs it."""
    x, y = load_split(dataset, "test", data_root, offline=True)
    test = DeviceData(x, y, DEVICE)
    net = policy.wrap(policy.prepare(copy.deepcopy(model)).eval())
    attack = PGD(PGD.Config(steps=20, step_size=step))
    clean, robust = [], []
    with frozen_parameters(net):
        for b, (xb, yb, _) in enumerate(test.batches(batch)):
            torch.manual_seed(12345 + b)
            robust.append(attack.run(net, xb, yb, eps))
            with torch.no_grad():
                clean.append(net(xb).argmax(1) == yb)
    return torch.cat(clean).cpu(), torch.cat(robust).cpu()


def _mcnemar(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, float]:
    k01, k10 = int((a & ~b).sum()), int((b & ~a).sum())
    return k01, k10, 3 * math.sqrt(k01 + k10)


FAST = {"auto": Policy("bf16", True, DEVICE),                          # small models: CUDA graphs
        "default": Policy("bf16", True, DEVICE, compile_mode="default")}  # the large-model path


@pytest.mark.parametrize("which,mode", [("small_cnn", "auto"), ("resnet20", "auto"), ("resnet20", "default")])
def test_fast_path_pgd20_agrees_with_fp32_within_sampling_noise(which, mode, request, data_root):
    """Robust accuracy under the fast path's PGD-20 equals fp32 PGD-20's within sampling noise.

    Tolerance: the two runs attack the same 10,000 images from the same random starts,
    so the outcomes are paired and the difference of robust accuracies is (k10 − k01)/n,
    k01 = #(robust under fp32 only), k10 = #(robust under the fast path only). If the
    fast path neither weakens nor strengthens the attack, a discordant sample is as
    likely to fall either way: k01 − k10 has mean 0 and standard deviation √(k01 + k10)
    (McNemar's test). We require |k01 − k10| ≤ 3·√(k01 + k10), i.e. the accuracies differ
    by at most 3 standard errors of their paired difference, which a correct fast path
    fails with probability ≈ 0.3 %. (An unpaired bound, 2–3 SE of two independent
    proportions, ≈ 1.3–2 points at n = 10,000 and 50 %, would be far looser.) Clean
    accuracy is held to the same bound. A weakened attack shows up as k10 ≫ k01.
    The model must be non-trivially robust for the comparison to mean anything.
    """
    model = request.getfixturevalue("mnist_small_cnn" if which == "small_cnn" else "cifar_resnet20")
    if which != "small_cnn":
        data_root = request.getfixturevalue("cifar10_root")
    dataset, eps, step = ("mnist", 0.3, None) if which == "small_cnn" else ("cifar10", 8 / 255, 2 / 255)
    ref = _outcomes(model, Policy("fp32", False, DEVICE), dataset, data_root, eps, step)
    fast = _outcomes(model, FAST[mode], dataset, data_root, eps, step)
    acc = {k: (c.float().mean().item(), r.float().mean().item()) for k, (c, r) in
           {"fp32": ref, "fast": fast}.items()}
    print(f"{which} [{FAST[mode].describe(model)}]: clean/robust fp32 {acc['fp32']}, fast {acc['fast']}")
    clean_fp32, rob_fp32 = acc["fp32"]
    assert clean_fp32 > 0.4 and 0.05 < rob_fp32 < clean_fp32, f"the trained model is unusable: {acc}"
    for i, what in enumerate(("clean", "robust")):
        k01, k10, bound = _mcnemar(ref[i], fast[i])
        assert abs(k01 - k10) <= bound, (f"{what} accuracy: fp32-only {k01}, fast-only {k10} "
                                         f"(|diff| > 3·√(k01 + k10) = {bound:.1f}); {acc}")


@pytest.mark.parametrize("policy", [Policy("fp32", False, DEVICE), Policy("bf16", False, DEVICE),
                                    FAST["auto"], FAST["default"]],
                         ids=["fp32", "bf16", "fast-auto", "fast-default"])
def test_pgd_loop_makes_no_host_sync_on_cuda(policy):
    """After a warm-up (compilation, CUDA-graph recording), a PGD-20 `perturb` on CUDA runs
    under torch.cuda.set_sync_debug_mode("error"): any synchronising call raises."""
    info = DATASETS.get("cifar10").info
    torch.manual_seed(0)
    model = build_model("resnet20", {}, info)
    net = policy.wrap(policy.prepare(model).eval())
    x = torch.rand(200, *info.shape, device=DEVICE)   # 200: a padded bucket under CUDA graphs
    y = torch.randint(0, 10, (200,), device=DEVICE)
    attack = PGD(PGD.Config(steps=20, step_size=2 / 255))
    with frozen_parameters(net):
        for _ in range(2):
            attack.perturb(net, x, y, 8 / 255)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            x_adv = attack.perturb(net, x, y, 8 / 255)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert (x_adv - x).abs().max().item() <= 8 / 255 + 1e-6


def test_fast_path_on_cuda_uses_channels_last_bf16_and_cuda_graphs():
    """bf16 policy on CUDA: channels_last weights, fp32 logits; for a small model the
    compiled graphs run as CUDA graphs (inductor counts a skip, with its reason in the
    log, when it cannot)."""
    from torch._dynamo.utils import counters
    info = DATASETS.get("cifar10").info
    model = build_model("resnet20", {}, info)
    pol = FAST["auto"]
    prepared = pol.prepare(model).eval()
    conv = next(m for m in prepared.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert pol.uses_cuda_graphs(prepared)
    net = pol.wrap(prepared)
    skips = counters["inductor"]["cudagraph_skips"]
    x = torch.rand(100, *info.shape, device=DEVICE)
    y = torch.randint(0, 10, (100,), device=DEVICE)
    with frozen_parameters(net):
        for _ in range(3):
            out = PGD(PGD.Config(steps=3, step_size=2 / 255)).perturb(net, x, y, 8 / 255)
            with torch.no_grad():
                logits = net(out)
    assert logits.dtype == torch.float32 and logits.shape == (100, 10)
    assert counters["inductor"]["cudagraph_skips"] == skips, "inductor skipped CUDA graphs (see the log)"
