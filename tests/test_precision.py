"""The precision and compilation policy on a CPU (bench.run.precision), in well under a minute.

* bf16 autocast runs on a CPU, computes in bf16 inside and hands fp32 logits out;
* CUDA-only parts fall back cleanly: no channels_last by default, no CUDA graphs, no
  batch padding on a CPU; the decisions a CUDA policy would take are checked as data;
* the compile path works on a CPU (one tiny model, one graph);
* eval-batch padding (used under CUDA graphs) leaves outputs and input gradients alone;
* attack and training inner loops make no host synchronisation (every Tensor→host
  conversion is patched to raise while they run);
* the fast path's PGD-20 (bf16) agrees with fp32 PGD-20 within sampling noise on a small
  adversarially trained model (tolerance in that test's docstring).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.pgd import PGD
from bench.data.read import load_split
from bench.plugins.model import build_model
from bench.plugins.perturb import frozen_parameters
from bench.run.precision import Policy, bucket_size
from bench.plugins.registry import DATASETS, DEFENSES

MNIST = DATASETS.get("mnist").info
CIFAR = DATASETS.get("cifar10").info


def _small_cnn() -> nn.Module:
    return build_model("small_cnn", {}, MNIST).eval()


# ------------------------------------------------------------------ autocast, fallbacks

def test_bf16_autocast_on_cpu_runs_in_bf16_and_returns_fp32_logits():
    model = _small_cnn()
    seen = []
    model.feature_extractor[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    pol = Policy("bf16", False, "cpu")
    net = pol.wrap(pol.prepare(model))
    x = torch.rand(4, *MNIST.shape, requires_grad=True)
    logits = net(x)
    assert seen == [torch.bfloat16]                 # the conv ran in bf16 …
    assert logits.dtype == torch.float32            # … and the logits come out fp32
    (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)), x)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    assert Policy("fp32", False, "cpu").wrap(model) is model  # the reference is the bare model


def test_cpu_policy_skips_cuda_only_parts_and_still_runs():
    model = build_model("resnet20", {}, CIFAR).eval()
    pol = Policy("bf16", True, "cpu", compile_mode="reduce-overhead")
    assert not pol.uses_channels_last
    assert pol.mode_for(model) == "default"          # CUDA graphs fall back to plain inductor
    assert not pol.uses_cuda_graphs(model) and not pol.buckets(model)
    assert Policy("bf16", True, "cpu", compile_mode="max-autotune").mode_for(model) == \
        "max-autotune-no-cudagraphs"
    prepared = Policy("bf16", False, "cpu").prepare(model)
    w = next(m.weight for m in prepared.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert w.is_contiguous() and not w.is_contiguous(memory_format=torch.channels_last)
    out = Policy("bf16", False, "cpu").wrap(prepared)(torch.rand(2, *CIFAR.shape))
    assert out.dtype == torch.float32 and out.shape == (2, 10)


def test_policy_decisions_for_cuda_are_per_model():
    """What a CUDA policy decides (no CUDA needed: these are decisions, not actions)."""
    small, big = _small_cnn(), build_model("wrn34_10", {}, CIFAR)
    fast = Policy("bf16", True, "cuda")
    assert fast.uses_channels_last
    assert fast.mode_for(small) == "reduce-overhead" and fast.uses_cuda_graphs(small) and fast.buckets(small)
    assert fast.mode_for(big) == "default" and not fast.uses_cuda_graphs(big) and not fast.buckets(big)
    assert Policy("fp32", True, "cuda", compile_mode="default").mode_for(small) == "default"
    assert not Policy("fp32", False, "cuda").uses_channels_last      # fp32 stays the reference
    assert Policy("fp32", False, "cuda").mode_for(small) is None
    assert fast.describe(small) == "bf16+channels_last+compile(reduce-overhead)+bucketed"
    with pytest.raises(ValueError):
        Policy("fp16")
    with pytest.raises(ValueError):
        Policy("bf16", True, "cpu", compile_mode="fastest")


# ------------------------------------------------------------------ padding, freezing

def test_bucket_sizes():
    sizes = {bucket_size(n) for n in range(1, 1025)}
    assert sizes == {8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024}
    for n in range(1, 1025):
        b = bucket_size(n)
        assert n <= b and (b <= 8 or b < 1.5 * n)   # at most a third of a batch is padding


def test_bucket_padding_keeps_outputs_and_input_gradients():
    model = build_model("resnet20", {}, CIFAR).eval()
    net = Policy("fp32", False, "cpu", bucket=True).wrap(model)
    shapes = []
    model.register_forward_pre_hook(lambda m, a: shapes.append(a[0].shape[0]))
    x = torch.rand(13, *CIFAR.shape)
    y = torch.randint(0, 10, (13,))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = net(xa), model(xb)
    assert shapes == [16, 13] and la.shape == lb.shape
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
    (ga,) = torch.autograd.grad(F.cross_entropy(la, y, reduction="sum"), xa)
    (gb,) = torch.autograd.grad(F.cross_entropy(lb, y, reduction="sum"), xb)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    net.train()
    shapes.clear()
    net(torch.rand(13, *CIFAR.shape))
    assert shapes == [13]                           # batch statistics: never padded in train mode


def test_frozen_parameters_restores_and_keeps_input_gradients():
    model = _small_cnn()
    model.classifier[0].weight.requires_grad_(False)   # already frozen: stays frozen
    with frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
        x = torch.rand(2, *MNIST.shape, requires_grad=True)
        (g,) = torch.autograd.grad(model(x).sum(), x)
        assert g.shape == x.shape
    assert not model.classifier[0].weight.requires_grad
    assert sum(not p.requires_grad for p in model.parameters()) == 1


# ------------------------------------------------------------------ compile on a CPU

def test_compile_path_works_on_cpu_for_small_cnn():
    """One tiny graph (SmallCNN, eval, input gradient, frozen weights) through inductor:
    its logits and input gradients match the eager bf16 path up to bf16 rounding."""
    model = _small_cnn()
    torch.nn.init.normal_(model.classifier[-1].weight, std=0.1)  # non-zero logits
    eager = Policy("bf16", False, "cpu").wrap(model)
    compiled = Policy("bf16", True, "cpu").wrap(model)
    x = torch.rand(8, *MNIST.shape)
    y = torch.randint(0, 10, (8,))

    def logits_and_grad(net):
        xr = x.clone().requires_grad_(True)
        logits = net(xr)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xr)
        return logits.detach(), g

    with frozen_parameters(model):
        le, ge = logits_and_grad(eager)
        lc, gc = logits_and_grad(compiled)
    assert lc.dtype == torch.float32
    scale = le.abs().max().item()
    assert (lc - le).abs().max().item() <= 0.05 * scale + 1e-3
    cos = F.cosine_similarity(gc.flatten(1), ge.flatten(1)).min().item()
    assert cos > 0.95, cos


# ------------------------------------------------------------------ no host syncs

_SYNCS = ("item", "tolist", "nonzero", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.fixture
def no_host_sync(monkeypatch):
    """Inside `with no_host_sync():` any Tensor → host conversion raises."""
    import contextlib

    def boom(name):
        def f(*a, **k):
            raise AssertionError(f"host synchronisation: Tensor.{name} called inside the loop")
        return f

    @contextlib.contextmanager
    def ctx():
        with monkeypatch.context() as m:
            for name in _SYNCS:
                m.setattr(torch.Tensor, name, boom(name))
            yield
    return ctx


@pytest.mark.parametrize("policy", [Policy("fp32", False, "cpu"), Policy("bf16", False, "cpu"),
                                    Policy("fp32", False, "cpu", bucket=True)],
                         ids=["fp32", "bf16", "fp32-bucketed"])
def test_pgd_perturb_makes_no_host_sync(policy, no_host_sync):
    model = _small_cnn()
    net = policy.wrap(policy.prepare(model))
    x, y = torch.rand(6, *MNIST.shape), torch.randint(0, 10, (6,))
    for cfg in (PGD.Config(steps=3), PGD.Config(steps=3, norm="l2", step_size=0.1),
                PGD.Config(steps=3, loss="cw")):
        with frozen_parameters(net), no_host_sync():
            x_adv = PGD(cfg).perturb(net, x, y, 0.3)
        assert x_adv.shape == x.shape
    with no_host_sync(), pytest.raises(AssertionError, match="host synchronisation"):
        bool(x.sum() > 0)                           # the patch is live


@pytest.mark.parametrize("name,config", [
    ("pgd_at", {"steps": 3}),
    ("trades", {"steps": 3}),
    ("atent", {"steps": 3}),
])
def test_training_inner_loops_make_no_host_sync(name, config, no_host_sync):
    """The inner maximisation and the batch objective of the ℓ∞ defenses, under the bf16
    policy, run without a host sync (the loop reads the loss once per epoch)."""
    from bench.plugins.config import build_config
    from bench.plugins.defense import StepContext
    cls = DEFENSES.get(name)
    defense = cls(build_config(cls.Config, config, name), num_classes=10, dataset_size=6)
    model = _small_cnn().train()
    pol = Policy("bf16", False, "cpu")
    net = pol.wrap(pol.prepare(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(6, *MNIST.shape), torch.randint(0, 10, (6,))
    ctx = StepContext(epoch=0, step=0, index=torch.arange(6), next_batch=lambda: (x, y, torch.arange(6)),
                      num_classes=10, dataset_size=6)
    with no_host_sync():
        loss = defense.train_step(net, opt, x, y, ctx)
    assert torch.isfinite(loss)


# ------------------------------------------------------------------ fast PGD ≈ fp32 PGD

def _mnist(split: str, n: int, data_root) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_split("mnist", split, data_root, offline=True)
    return torch.from_numpy(x[:n]).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(y[:n])


@pytest.fixture(scope="module")
def robust_mlp(data_root):
    """An MLP 784-256-10 PGD-trained (ℓ∞ ε 0.1, 5 steps of 0.03) on 3000 MNIST images."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = _mnist("train", 3000, data_root)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    attack = PGD(PGD.Config(steps=5, step_size=0.03))
    for _ in range(8):
        for idx in torch.randperm(len(y), generator=g).split(100):
            xb, yb = x[idx], y[idx]
            model.eval()
            with frozen_parameters(model):
                xa = attack.perturb(model, xb, yb, 0.1)
            model.train()
            loss = F.cross_entropy(model(xa), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_bf16_pgd_agrees_with_fp32_pgd_within_sampling_noise(robust_mlp, data_root):
    """PGD-20 (ℓ∞ ε 0.1, step 0.0125) on 1000 MNIST test images, under the fp32 policy
    and under the bf16 policy (attack *and* final decision in bf16, as the runner does),
    with the same random start per sample (same seed).

    Tolerance: the outcomes are paired, so the robust-accuracy difference is
    (k10 − k01)/n with k01 = #(robust in fp32 only), k10 = #(robust in bf16 only). If bf16
    neither weakens nor strengthens the attack, the discordant pairs split evenly:
    k01 − k10 has mean 0 and standard deviation √(k01 + k10) (McNemar). We require
    |k01 − k10| ≤ 3·√(k01 + k10), a 3-standard-error bound on the difference of the
    paired accuracies, which a correct fast path fails with probability ≈ 0.3 %; the
    seeds are fixed, so the test is deterministic. Clean accuracy is held to the same
    bound. The model must be neither hopeless nor unbreakable for this to mean anything.
    """
    x, y = _mnist("test", 1000, data_root)
    attack = PGD(PGD.Config(steps=20, step_size=0.0125))
    out = {}
    for name, pol in (("fp32", Policy("fp32", False, "cpu")), ("bf16", Policy("bf16", False, "cpu"))):
        net = pol.wrap(pol.prepare(robust_mlp))
        clean, robust = [], []
        with frozen_parameters(net):
            for b, (xb, yb) in enumerate(zip(x.split(250), y.split(250))):
                torch.manual_seed(1000 + b)
                robust.append(attack.run(net, xb, yb, 0.1))
                with torch.no_grad():
                    clean.append(net(xb).argmax(1) == yb)
        out[name] = torch.cat(clean), torch.cat(robust)
    for i, what in enumerate(("clean", "robust")):
        a, b = out["fp32"][i], out["bf16"][i]
        k01, k10 = int((a & ~b).sum()), int((b & ~a).sum())
        assert abs(k01 - k10) <= 3 * math.sqrt(k01 + k10), (what, k01, k10)
    acc_clean, acc_rob = out["fp32"][0].float().mean().item(), out["fp32"][1].float().mean().item()
    assert acc_clean > 0.85 and 0.2 < acc_rob < acc_clean, (acc_clean, acc_rob)
    # bf16 changes numerics, not the experiment: most samples agree outright
    assert (out["fp32"][1] == out["bf16"][1]).float().mean().item() > 0.9


def test_auto_eval_batch_size_by_device_and_model_size():
    from torch import nn

    from bench.run.precision import eval_batch_size
    small, large = nn.Linear(10, 10), nn.Linear(3000, 2000)   # 110 vs 6,002,000 parameters
    assert eval_batch_size(small, "cpu") == 256 and eval_batch_size(large, "cpu") == 256
    assert eval_batch_size(small, "cuda") == 1024 and eval_batch_size(large, "cuda:0") == 512
