"""Recipe tests of the training defenses (CPU, tiny models; each fails if its recipe is wrong).

The contract every registered defense keeps (one finite step that moves the weights) is
tested in tests/test_plugin_contract.py."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins.config import ConfigError, build_config, config_dict
from bench.plugins.defense import StepContext
from bench.plugins.perturb import norms, within
from bench.plugins.registry import DEFENSES
from defenses.atent import atent_chain, ema_loss
from defenses.mart import boosted_ce, mart_objective, mart_weight
from defenses.mma import anpgd, bisection_search, soft_logit_margin
from defenses.trades import trades_adversarial, trades_kl

SHAPE = (1, 6, 6)
D = 36


def mlp(bn: bool = False) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(D, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Linear(16, 10)]
    return nn.Sequential(*layers)


class Data:
    """A tiny in-memory dataset with a `next_batch` that cycles deterministically."""

    def __init__(self, n: int = 64, batch: int = 8, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, *SHAPE, generator=g) * 0.6 + 0.2
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.batch, self.pos, self.calls = batch, 0, 0

    def next_batch(self):
        i = torch.arange(self.pos, self.pos + self.batch) % len(self.y)
        self.pos += self.batch
        self.calls += 1
        return self.x[i], self.y[i], i


def make_ctx(data: Data, index: torch.Tensor, step: int = 0) -> StepContext:
    return StepContext(epoch=0, step=step, index=index, next_batch=data.next_batch,
                       num_classes=10,
                       dataset_size=len(data.y))


class ModeRecorder(nn.Module):
    """Wraps a model and records `training` at every forward."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.modes = inner, []

    def forward(self, x):
        self.modes.append(self.training)
        return self.inner(x)


class ZeroGrad(nn.Module):
    """Logits independent of the input (∇ₓ = 0 exactly) but depending on parameters."""

    def __init__(self, n_in: int = D, n_out: int = 10):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.lin(torch.zeros_like(x.flatten(1))) + 0.0 * x.flatten(1).sum(1, keepdim=True)


# --------------------------------------------------------------------------- generic

def test_configs_parse_eps_literals():
    trades, mma = DEFENSES.get("trades"), DEFENSES.get("mma")
    d = trades(build_config(trades.Config, {"eps": "8/255", "norm": "l2"}))
    assert d.config.eps == pytest.approx(8 / 255) and d.step_size == pytest.approx(2 * 8 / 255 / 10)
    assert config_dict(d.config)["eps"] == "8/255"          # the literal, as the keys hash it
    assert trades(build_config(trades.Config, {})).step_size == 0.007
    assert mma(build_config(mma.Config, {"norm": "l2"})).mineps == 0.5
    assert build_config(DEFENSES.get("atent").Config, {"eps": 0.3}).eps == 0.3
    assert build_config(DEFENSES.get("trades_smooth").Config, {}).norm == "l2"
    with pytest.raises(ConfigError, match="eps: malformed epsilon '8/2x5'"):
        build_config(trades.Config, {"eps": "8/2x5"})


# --------------------------------------------------------------------------- TRADES

def test_trades_beta_zero_takes_the_plain_ce_step():
    data = Data()
    x, y, i = data.next_batch()
    torch.manual_seed(3)
    model_0 = mlp(bn=True).train()
    models = [copy.deepcopy(model_0) for _ in range(3)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) for m in models]
    cls = DEFENSES.get("trades")
    cls(cls.Config(beta=0.0)).train_step(models[0], opts[0], x, y, make_ctx(data, i))
    opts[1].zero_grad()
    F.cross_entropy(models[1](x), y).backward()
    opts[1].step()
    cls(cls.Config(beta=6.0)).train_step(models[2], opts[2], x, y, make_ctx(data, i))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(models[2].parameters(), models[1].parameters()))


def test_trades_kl_is_batchmean_of_hand_kl():
    nat = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 1.0, 0.5]], dtype=torch.float64)
    p = np.exp(nat.detach().numpy()); p /= p.sum(1, keepdims=True)
    q = np.exp(adv.numpy()); q /= q.sum(1, keepdims=True)
    expected = (p * (np.log(p) - np.log(q))).sum() / 2
    got = trades_kl(nat, adv)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)
    got.backward()  # the natural distribution is not detached
    assert nat.grad.abs().sum() > 0


def test_trades_objective_and_inner_loop():
    data = Data()
    x, y, i = data.next_batch()
    model = ModeRecorder(mlp()).train()
    cls = DEFENSES.get("trades")
    for norm, eps in (("linf", 0.031), ("l2", 0.5)):
        d = cls(cls.Config(norm=norm, eps=eps, beta=6.0, steps=5))
        torch.manual_seed(7)
        model.modes.clear()
        loss = d.loss(model, x, y, make_ctx(data, i))
        assert model.training
        # 1 target forward + K inner forwards in eval mode, then x, x_adv, x in train mode
        assert model.modes == [False] * 6 + [True] * 3
        torch.manual_seed(7)
        x_adv = d.adversarial(model, x)
        assert bool(within(x_adv, x, eps, norm).all())
        with torch.no_grad():
            expected = F.cross_entropy(model(x), y) + 6.0 * trades_kl(model(x), model(x_adv))
            start = trades_kl(model(x), model((x + 0.001 * torch.randn_like(x)).clamp(0, 1)))
            assert trades_kl(model(x), model(x_adv)) > start  # the inner loop ascends the KL
        assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_trades_inner_start_and_l2_step_by_hand():
    data = Data()
    x, y, _ = data.next_batch()
    model = mlp().eval()
    torch.manual_seed(8)
    x0 = trades_adversarial(model, x, eps=0.5, step=0.1, steps=0, norm="linf")
    assert float((x0 - x).std()) == pytest.approx(0.001, rel=0.1)   # x + 0.001·N(0, I)
    x = x.clone()
    x[:, :, :2], x[:, :, -2:] = 0.0, 1.0   # saturated pixels: the box clamp matters
    eps = 0.1
    torch.manual_seed(9)
    got = trades_adversarial(model, x, eps=eps, step=2 * eps, steps=1, norm="l2")
    torch.manual_seed(9)
    delta = 0.001 * torch.randn_like(x)
    delta.requires_grad_(True)
    kl = F.kl_div(F.log_softmax(model(x + delta), 1), F.softmax(model(x), 1).detach(), reduction="sum")
    (g,) = torch.autograd.grad(kl, delta)
    g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    delta = ((x + delta.detach() + 2 * eps * g).clamp(0, 1) - x).flatten(1)
    delta = delta * (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1.0)
    assert torch.allclose(got, x + delta.view_as(x), atol=1e-6)


# --------------------------------------------------------------------------- MART

def test_mart_weight_and_boosted_ce_by_hand():
    g = torch.Generator().manual_seed(0)
    nat = torch.randn(5, 4, generator=g, dtype=torch.float64)
    adv = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    adv[1] = torch.tensor([0.0, 5.0, 1.0, -1.0], dtype=torch.float64)  # top class is y: y′ = 2nd
    p = np.exp(nat.numpy()); p /= p.sum(1, keepdims=True)
    q = np.exp(adv.numpy()); q /= q.sum(1, keepdims=True)
    idx = np.arange(5)
    w = 1.0000001 - p[idx, y.numpy()]
    assert np.allclose(mart_weight(nat, y).numpy(), w, rtol=0, atol=1e-12)
    masked = q.copy(); masked[idx, y.numpy()] = -1
    y_wrong = masked.argmax(1)
    assert y_wrong[1] == 2
    bce = (-np.log(q[idx, y.numpy()])).mean() + (-np.log(1.0001 - q[idx, y_wrong] + 1e-12)).mean()
    assert float(boosted_ce(adv, y)) == pytest.approx(bce, rel=1e-9)
    kl = (p * (np.log(p) - np.log(q + 1e-12))).sum(1)
    expected = bce + 6.0 * (kl * w).sum() / 5
    assert float(mart_objective(nat, adv, y, 6.0)) == pytest.approx(expected, rel=1e-9)


def test_mart_inner_loop_is_ce_pgd_in_eval_mode():
    data = Data()
    x, y, i = data.next_batch()
    model = ModeRecorder(mlp()).train()
    cls = DEFENSES.get("mart")
    d = cls(cls.Config(steps=4))
    torch.manual_seed(2)
    loss = d.loss(model, x, y, make_ctx(data, i))
    assert model.modes == [False] * 4 + [True] * 2 and model.training
    torch.manual_seed(2)
    x_adv = d.adversarial(model, x, y)
    assert bool(within(x_adv, x, 0.031, "linf").all())
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
        expected = mart_objective(model(x), model(x_adv), y, 6.0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


# --------------------------------------------------------------------------- ATENT

def atent(values: dict):
    cls = DEFENSES.get("atent")
    return cls(build_config(cls.Config, values, "atent"))


def linear(shape) -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 10))


def batch(shape, n: int = 8, lo: float = 0.35, hi: float = 0.65):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, *shape, generator=g) * (hi - lo) + lo
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_atent_noise_has_the_stated_scale(norm):
    x = torch.full((64, 1, 16, 16), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    step, noise = 0.02, 0.25  # std = 0.25·√0.04 = 0.05
    it = atent_chain(ZeroGrad(256), x, y, norm=norm, step=step, steps=2, noise=noise,
                     radius=10.0, gamma=0.0, project="none", init="none")
    for a, b in zip(it[:-1], it[1:]):
        std = float((b - a).std())
        assert std == pytest.approx(noise * math.sqrt(2 * step), rel=0.03)
        assert abs(float((b - a).mean())) < 2e-3


def test_atent_defaults_are_the_table3_preset_and_sample_in_train_mode():
    cls = DEFENSES.get("atent")
    assert config_dict(cls.Config()) == config_dict(build_config(cls.Config, {"preset": "cifar_linf"}))
    assert cls.Config().inner_mode == "train"


def test_atent_table2_clips_only_the_last_step_at_inv_gamma():
    """Table 2 (Algorithm 2, Eq. 14): γ = 3.33, the clip at r = 1/γ on the K-th step only.
    A linear model's sign gradient keeps pushing every coordinate outward, so the unclipped
    iterates leave the r-ball from the first step on; the last is back on its surface."""
    shape = (1, 28, 28)
    x, y = batch(shape)
    d = atent({"preset": "mnist_linf"})
    r = 1 / 3.33
    assert d.config.resolved_radius() == pytest.approx(r) and d.config.steps == 40
    it = d.sample(linear(shape), x, y)
    dist = [norms(z - x, "linf") for z in it]
    assert float(dist[0].max()) <= r + 1e-6                             # start inside the ball
    assert all(bool((dd > r + 0.005).all()) for dd in dist[1:-1])      # unclipped in between
    assert bool(within(it[-1], x, r, "linf").all())                     # clipped at the end …
    assert float(dist[-1].max()) == pytest.approx(r, rel=1e-5)          # … at 1/γ, not at 0.3


def test_atent_table3_clips_the_last_iterate_at_eps():
    """Table 3: the printed γ = 1/0.0031 would clip at 0.0031; the preset clips at ε = 0.031
    (radius: eps), and starts at that radius too."""
    shape = (3, 32, 32)
    x, y = batch(shape, n=4)
    d = atent({"preset": "cifar_linf"})
    assert d.config.gamma == pytest.approx(1 / 0.0031)
    it = d.sample(linear(shape), x, y)
    dist = [float(norms(z - x, "linf").max()) for z in it]
    assert dist[0] == pytest.approx(0.031, rel=1e-5)                    # start radius ε
    assert all(dd > 0.031 + 0.005 for dd in dist[1:-1])
    assert bool(within(it[-1], x, 0.031, "linf").all())
    assert dist[-1] == pytest.approx(0.031, rel=1e-5)


@pytest.mark.parametrize("preset,weight", [("mnist_l2", 0.25 * 0.05), ("code_table1", 0.05)])
def test_atent_l2_pull_paper_inside_the_step_code_outside(preset, weight):
    """Algorithm 1: x′₁ = x′₀ + η′·(∇ + γ(x − x′₀)); the code: x′₀ + η′·∇̂ + γ(x − x′₀).
    With ∇ₓ = 0 and no noise one step is the pull alone: η′γ = 0.0125 vs γ = 0.05."""
    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    torch.manual_seed(0)
    x0, x1 = atent({"preset": preset, "noise": 0.0, "steps": 1}).sample(ZeroGrad(784), x, y)
    assert float((x0 - x).abs().max()) > 0.1
    assert torch.allclose(x1, x0 + weight * (x - x0), atol=1e-6)


def test_atent_paper_start_lies_within_the_inv_gamma_ball():
    """`init: paper`: N(0, I) projected onto the ball of radius 1/γ in the chain's norm —
    ℓ2 on the sphere (‖N‖ ≈ 28 > r), ℓ∞ clipped to ±r with the small draws inside (unlike
    the code's corner); then clamped to [0, 1] (here x = 0.5 keeps the clamp idle)."""
    x = torch.full((16, 1, 28, 28), 0.5)
    y = torch.zeros(16, dtype=torch.long)
    torch.manual_seed(1)
    x0 = atent({"preset": "mnist_l2", "gamma": 2.5, "steps": 1}).sample(ZeroGrad(784), x, y)[0]
    assert torch.allclose(norms(x0 - x, "l2"), torch.full((16,), 0.4), rtol=1e-5)
    x0 = atent({"preset": "mnist_linf", "steps": 1}).sample(ZeroGrad(784), x, y)[0]
    delta = (x0 - x).abs()
    r = 1 / 3.33
    assert float(delta.max()) == pytest.approx(r, rel=1e-5)
    at_r = float((delta > r - 1e-6).float().mean())
    assert at_r == pytest.approx(2 * (1 - 0.6179), abs=0.01)    # P(|N(0, 1)| > 0.3003)
    x0 = atent({"preset": "mnist_l2", "steps": 1}).sample(ZeroGrad(784), torch.zeros_like(x), y)[0]
    assert float(x0.min()) == 0.0 and float(x0.max()) <= 1.0           # clamped to the box


def test_atent_inv_gamma_needs_gamma():
    cls = DEFENSES.get("atent")
    for preset in ("mnist_linf", "mnist_l2"):
        with pytest.raises(ConfigError, match="gamma > 0"):
            build_config(cls.Config, {"preset": preset, "gamma": 0})
    assert build_config(cls.Config, {"preset": "cifar_linf", "gamma": 0}).resolved_radius() == 0.031
    assert build_config(cls.Config, {"preset": "mnist_l2", "gamma": 0, "init": "none"}).project == "none"


@pytest.mark.parametrize("mode,changes", [(None, True), ("eval", False)])
def test_atent_samples_in_train_mode_by_default(mode, changes):
    """The code samples in train(): BatchNorm's running statistics move during the chain."""
    data = Data()
    x, y, _ = data.next_batch()
    model = mlp(bn=True).train()
    before = model[2].running_mean.clone()
    d = atent({"steps": 2} if mode is None else {"steps": 2, "inner_mode": mode})
    d.sample(model, x, y)
    assert (not torch.equal(before, model[2].running_mean)) == changes
    assert model.training


def _authors_chain(model, x, y, *, norm, eps, step, steps, ep, gamma, every):
    """GauriJagatap/StochAT `_langevin_samples` iterated as the notebooks do: the corner
    (ℓ∞) or projected Gaussian (ℓ2) start of `random_perturbation`, then per step the
    sign / normalised gradient, + γ(x − x′) for ℓ2, + ep·√(2·step)·N, then `project` and
    clamp (every step, or at the last) or only clamp."""
    g = torch.randn_like(x)
    if norm == "linf":
        x_adv = x + eps * g.sign()
    else:
        n = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        x_adv = x + torch.where(n > eps, g * eps / n, g)
    out = [x_adv]
    for k in range(steps):
        xk = x_adv.clone().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(xk), y), xk)[0]
        if norm == "linf":
            x_adv = x_adv + step * grad.sign() + ep * math.sqrt(2 * step) * torch.randn_like(x)
        else:
            x_adv = x_adv + step * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            x_adv = x_adv + gamma * (x - xk.detach()) + ep * math.sqrt(2 * step) * torch.randn_like(x)
        if every or (every is None and k == steps - 1):
            if norm == "linf":
                x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
            else:
                n = (x_adv - x).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x_adv = x + torch.where(n > eps, (x_adv - x) * eps / n, x_adv - x)
        x_adv = x_adv.clamp(0, 1).detach()
        out.append(x_adv)
    return out


@pytest.mark.parametrize("preset,expect", [
    ("code_table1", dict(norm="l2", eps=2.0, step=0.125, steps=40, ep=1e-2, gamma=0.05, every=True)),
    ("code_table2", dict(norm="linf", eps=0.3, step=0.01, steps=80, ep=1e-4, gamma=0.0, every=True)),
    ("code_table2_run", dict(norm="linf", eps=0.3, step=0.02, steps=40, ep=1e-4, gamma=0.0, every=None)),
    ("code_table3", dict(norm="linf", eps=0.031, step=0.007, steps=10, ep=1e-3, gamma=0.0, every=None)),
    ("code_table4", dict(norm="l2", eps=0.435, step=0.02175, steps=10, ep=0.577, gamma=0.05, every=False)),
])
def test_atent_code_presets_are_the_authors_chain(preset, expect):
    """Each code preset holds its notebook's numbers (module docstring) and runs the
    authors' chain: the same iterates as a transcription of `_langevin_samples`, from the
    same seed, in the same (train) mode."""
    shape = (1, 28, 28) if "table1" in preset or "table2" in preset else (3, 32, 32)
    x, y = batch(shape, n=4)
    model = linear(shape)
    d = atent({"preset": preset})
    assert d.config.inner_mode == "train"
    torch.manual_seed(3)
    ours = d.sample(model, x, y)
    torch.manual_seed(3)
    ref = _authors_chain(model, x, y, **expect)
    assert len(ours) == len(ref) == expect["steps"] + 1
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_atent_loss_is_the_exponential_average_over_iterates():
    data = Data()
    x, y, i = data.next_batch()
    model = ModeRecorder(mlp()).train()
    cls = DEFENSES.get("atent")
    d = cls(cls.Config(steps=3, alpha=0.9))
    torch.manual_seed(5)
    loss = d.loss(model, x, y, make_ctx(data, i))
    assert model.modes == [True] * 6 and model.training          # the code: train while sampling
    torch.manual_seed(5)
    it = d.sample(model, x, y)
    with torch.no_grad():
        ce = [float(F.cross_entropy(model(z), y)) for z in it[1:]]
    expected = 0.9 * ce[2] + 0.9 * 0.1 * ce[1] + 0.9 * 0.01 * ce[0]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(ema_loss([torch.tensor(1.0)] * 2, 0.9)) == pytest.approx(0.99)
    model.modes.clear()
    cls(cls.Config(steps=2, inner_mode="eval")).loss(model, x, y, make_ctx(data, i))
    assert model.modes == [False] * 2 + [True] * 2


# --------------------------------------------------------------------------- PGD-AT

def dropout_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))


@pytest.mark.parametrize("preset", ["mnist_linf", "mnist_l2"])
def test_pgd_at_mnist_presets_craft_without_dropout(preset):
    """Madry's MNIST net has no dropout: from a fixed start the MNIST presets' adversarial
    example is a deterministic function of (model, x, y) even when the model has dropout."""
    data = Data()
    x, y, _ = data.next_batch()
    torch.manual_seed(0)
    model = ModeRecorder(dropout_mlp()).train()
    cls = DEFENSES.get("pgd_at")
    over = {"preset": preset, "steps": 5, "random_start": False}
    d = cls(build_config(cls.Config, over))
    assert d.config.inner_mode == "eval"
    a, b = d.adversarial(model, x, y), d.adversarial(model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert model.training and not any(model.modes)
    # the same crafting in train mode draws dropout masks: the examples differ
    d_train = cls(build_config(cls.Config, {**over, "inner_mode": "train"}))
    assert not torch.equal(d_train.adversarial(model, x, y), d_train.adversarial(model, x, y))


# --------------------------------------------------------------------------- Entropy-SGD

def test_entropy_sgd_with_L0_is_sgd_nesterov_exactly():
    data = Data()
    torch.manual_seed(4)
    model_a = mlp(bn=True).train()
    model_b = copy.deepcopy(model_a)
    cls = DEFENSES.get("entropy_sgd")
    d = cls(cls.Config(L=0))
    from bench.suite.recipe import TrainConfig
    opt_a = d.make_optimizer(model_a.parameters(), TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4))
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for step in range(3):
        x, y, i = data.next_batch()
        la = d.train_step(model_a, opt_a, x, y, make_ctx(data, i, step))
        opt_b.zero_grad()
        lb = F.cross_entropy(model_b(x), y)
        lb.backward()
        opt_b.step()
        assert torch.equal(la, lb.detach())
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
    assert data.calls == 3  # L = 0 draws no extra minibatch


class InputLog(nn.Module):
    """A linear model that records every input batch it is called on."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, 10)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.lin(x.flatten(1))


def _no_fresh_batch():
    raise AssertionError("the inner loop drew a fresh minibatch")


def test_entropy_sgd_paper_inner_steps_see_only_the_loop_batch():
    data = Data()
    cls = DEFENSES.get("entropy_sgd")
    cfg = build_config(cls.Config, {})
    assert (cfg.L, cfg.gamma0, cfg.inner_batches) == (5, 1e-3, "same")   # paper, A.1 / Algorithm 3
    assert build_config(cls.Config, {"preset": "mnist_linf"}) == cfg
    model = InputLog()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, i = data.next_batch()
    ctx = make_ctx(data, i)
    ctx.next_batch = _no_fresh_batch
    cls(cfg).train_step(model, opt, x, y, ctx)
    assert len(model.seen) == 1 + 5                  # the batch loss, then K = 5 inner steps
    assert all(torch.equal(s, x) for s in model.seen)


def test_entropy_sgd_chaudhari_preset_draws_a_fresh_batch_per_inner_step():
    data = Data()
    cls = DEFENSES.get("entropy_sgd")
    model = InputLog()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, i = data.next_batch()
    data.calls = 0
    cls(build_config(cls.Config, {"preset": "chaudhari", "L": 3})).train_step(
        model, opt, x, y, make_ctx(data, i))
    assert data.calls == 3
    assert torch.equal(model.seen[0], x)
    assert not any(torch.equal(s, x) for s in model.seen[1:])


def test_entropy_sgd_paper_outer_step_by_hand():
    """Algorithm 3 with ε = 0, written out: K Langevin steps on the batch from w′ = μ = w,
    then w ← w − η·γ·(w − μ) with plain SGD (no momentum)."""
    data = Data()
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 10))
    ref = copy.deepcopy(model)
    eta, eta_in, alpha, gamma, K = 0.5, 0.1, 0.25, 0.2, 3
    cls = DEFENSES.get("entropy_sgd")
    d = cls(build_config(cls.Config, {"L": K, "noise": 0.0, "gamma0": gamma}))
    assert d.config.inner_lr == eta_in and d.config.beta1 == 1 - alpha
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    x, y, i = data.next_batch()
    ctx = make_ctx(data, i)
    ctx.next_batch = _no_fresh_batch
    d.train_step(model, opt, x, y, ctx)

    w = {n: p.detach().clone() for n, p in ref.named_parameters()}
    wp = {n: t.clone() for n, t in w.items()}
    mu = {n: t.clone() for n, t in w.items()}
    for _ in range(K):
        wg = {n: t.clone().requires_grad_(True) for n, t in wp.items()}
        loss = F.cross_entropy(torch.func.functional_call(ref, wg, (x,)), y)
        grads = dict(zip(wg, torch.autograd.grad(loss, list(wg.values()))))
        for n in w:
            dwp = -grads[n] + gamma * (w[n] - wp[n])
            wp[n] = wp[n] + eta_in * dwp
            mu[n] = (1 - alpha) * mu[n] + alpha * wp[n]
    for (n, got) in model.named_parameters():
        expected = w[n] - eta * gamma * (w[n] - mu[n])
        assert torch.allclose(got, expected, rtol=0, atol=1e-7), n
    moved = max(float((p.detach() - w[n]).abs().max()) for n, p in model.named_parameters())
    assert moved > 1e-4


def test_entropy_sgd_chaudhari_inner_loop_by_hand():
    data = Data()
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 10))
    ref = copy.deepcopy(model)
    lr, mom, wd, eta, beta1, g0, g1, step = 0.05, 0.9, 1e-3, 0.1, 0.75, 0.5, 0.1, 3
    cls = DEFENSES.get("entropy_sgd")
    d = cls(build_config(cls.Config, {"preset": "chaudhari", "L": 2, "inner_lr": eta, "beta1": beta1,
                                      "noise": 0.0, "gamma0": g0, "gamma1": g1}))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, nesterov=True, weight_decay=wd)
    x, y, i = data.next_batch()
    batches = [data.next_batch(), data.next_batch()]
    data.pos, data.calls = 8, 0
    d.train_step(model, opt, x, y, make_ctx(data, i, step))
    assert data.calls == 2

    gamma = g0 * (1 + g1) ** step
    wc = {n: p.detach().clone() for n, p in ref.named_parameters()}
    w = {n: t.clone() for n, t in wc.items()}
    mu = {n: t.clone() for n, t in wc.items()}
    buf = {n: torch.zeros_like(t) for n, t in wc.items()}
    for xb, yb, _ in batches:
        wg = {n: t.clone().requires_grad_(True) for n, t in w.items()}
        loss = F.cross_entropy(torch.func.functional_call(ref, wg, (xb,)), yb)
        grads = dict(zip(wg, torch.autograd.grad(loss, list(wg.values()))))
        for n in w:
            dw = grads[n] + wd * w[n]
            buf[n] = mom * buf[n] + dw
            dw = dw + mom * buf[n] - gamma * (wc[n] - w[n])
            w[n] = w[n] - eta * dw
            mu[n] = beta1 * mu[n] + (1 - beta1) * w[n]
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=mom, nesterov=True, weight_decay=wd)
    for n, p in ref.named_parameters():
        p.grad = wc[n] - mu[n]
    ref_opt.step()
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), n
    assert not torch.allclose(ref[1].weight, wc["1.weight"])


def test_entropy_sgd_noise_scale():
    data = Data()
    model = ZeroGrad(D, 2000)  # 72k weights whose loss gradient is exactly 0
    cls = DEFENSES.get("entropy_sgd")
    eta, noise, beta1 = 0.1, 1e-2, 0.75
    d = cls(cls.Config(L=1, inner_lr=eta, noise=noise, beta1=beta1, gamma0=0.0, outer_gamma=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y, i = data.next_batch()
    d.train_step(model, opt, x, y, make_ctx(data, i))
    # the weight's loss gradient is exactly 0 (input zeroed): grad = (1−β₁)(w_c − w₁) = (1−β₁)·noise·√(2η′)·N
    g = model.lin.weight.grad / (1 - beta1)
    assert float(g.std()) == pytest.approx(noise * math.sqrt(2 * eta), rel=0.03)


# --------------------------------------------------------------------------- MMA

def linear2(w: torch.Tensor, b: float) -> nn.Module:
    """Two-class linear model with z₁ − z₀ = w·x + b."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 2))
    with torch.no_grad():
        m[1].weight.zero_()
        m[1].bias.zero_()
        m[1].weight[1] = w
        m[1].bias[1] = b
    return m.eval()


def test_soft_logit_margin_by_hand():
    z = torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    expected = [np.log(np.exp(1.0) + np.exp(0.5)) - 2.0, np.log(np.exp(-1.0) + 1.0) - 3.0]
    assert np.allclose(soft_logit_margin(z, y).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_mma_bisection_finds_the_linear_margin(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g)
    x = torch.rand(6, *SHAPE, generator=g) * 0.4 + 0.3
    s = x.flatten(1) @ w
    b = float(-s.median()) + 0.05
    y = ((s + b) > 0).long()
    margin = (s + b).abs()
    dual = w.norm(p=2) if norm == "l2" else w.abs().sum()
    d_true = margin / dual
    model = linear2(w, b)
    sign = torch.where(y == 1, -1.0, 1.0).view(-1, 1)     # move towards the other class
    direction = (w / w.norm()) if norm == "l2" else w.sign()
    unit = (sign * direction).view(-1, *SHAPE)
    maxeps = torch.full((6,), float(d_true.max()) * 1.5)
    for start in (0.5, 1.3):  # below and above the boundary
        cur = d_true * start
        with torch.no_grad():
            m0 = soft_logit_margin(model(x + cur.view(-1, 1, 1, 1) * unit), y)
        found = bisection_search(model, x, y, unit, cur, m0, maxeps, steps=10)
        assert torch.all((found - d_true).abs() <= maxeps / 2 ** 10 + 1e-6)
    # the full AN-PGD finds the same direction (no random start: exact)
    prev = d_true * 0.5
    x_b, eps = anpgd(model, x, y, prev, norm=norm, nb_iter=10, maxeps=float(maxeps[0]),
                     rand_init=False)
    assert torch.all((eps - d_true).abs() <= maxeps / 2 ** 10 + 1e-5)
    assert torch.allclose(norms(x_b - x, norm), eps, atol=1e-5)


def test_mma_state_hinge_and_clean_coefficient():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(D, generator=g)
    data = Data(n=16, batch=8)
    s = data.x.flatten(1) @ w
    b = float(-s.median()) + 0.01
    data.y = ((s + b) > 0).long()
    assert float(((s + b).abs() / w.norm()).min()) > 1.1e-3
    model = linear2(w * 50, b * 50).train()   # every example correct, far from the boundary
    cls = DEFENSES.get("mma")
    d = cls(cls.Config(d_max=1e-3, mineps=1e-4, clean_loss_coeff=1 / 3), dataset_size=16)
    x, y, i = data.next_batch()
    loss = d.loss(model, x, y, make_ctx(data, i))
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    # all boundary distances exceed d_max: only the clean term (weight 1/3) remains
    assert float(loss.detach()) == pytest.approx(float(clean) / 3, rel=1e-6)
    eps = d.state_dict()["eps"]
    assert eps.shape == (16,)
    assert torch.all(eps[i] > 1e-3) and torch.all(eps[i] <= 1.05e-3) and torch.all(eps[8:] == 0)
    # a misclassified example is stored as 0 and restarts at mineps
    y_bad = y.clone()
    y_bad[0] = 1 - y_bad[0]
    d.loss(model, x, y_bad, make_ctx(data, i))
    assert float(d.state_dict()["eps"][i[0]]) == 0.0
    assert float(d.get_eps(i[:1], "cpu")) == pytest.approx(1e-4)
    d2 = cls(d.config, dataset_size=16)
    d2.load_state_dict(d.state_dict())
    assert torch.equal(d2.state_dict()["eps"], d.state_dict()["eps"])


def test_mma_trains_boundary_points_within_d_max():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(D, generator=g)
    data = Data(n=8, batch=8)
    s = data.x.flatten(1) @ w
    b = float(-s.median()) + 0.05
    data.y = ((s + b) > 0).long()
    assert float(((s + b).abs() / w.norm()).max()) < 0.5
    model = linear2(w, b).train()
    cls = DEFENSES.get("mma")
    d = cls(cls.Config(norm="l2", d_max=0.5, mineps=0.01, clean_loss_coeff=1 / 3, rand_init=False),
            dataset_size=8)
    x, y, i = data.next_batch()
    loss = d.loss(model, x, y, make_ctx(data, i))
    eps = d.state_dict()["eps"]
    with torch.no_grad():
        correct = soft_logit_margin(model(x), y) < 0
        d_true = (s + b).abs() / w.norm()
    assert bool(correct.all())
    assert torch.all((eps - d_true).abs() < 0.525 / 2 ** 10 + 1e-5)
    # on the boundary the two logits tie: CE = log 2 for every example (all are within d_max);
    # objective = (1 − 1/3)·MMA loss + 1/3·clean CE
    with torch.no_grad():
        clean = float(F.cross_entropy(model(x), y))
    assert float(loss.detach()) == pytest.approx(2 / 3 * math.log(2) + clean / 3, abs=0.01)


# --------------------------------------------------------------------------- Gaussian

class InputRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16 * 16, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach())
        return self.lin(x.flatten(1))


def test_gaussian_noise_scale_and_no_clamp():
    x = torch.full((32, 1, 16, 16), 0.02)
    y = torch.zeros(32, dtype=torch.long)
    model = InputRecorder()
    cls = DEFENSES.get("gaussian")
    cls(cls.Config(sigma=0.25)).loss(model, x, y, None)
    delta = model.seen[0] - x
    assert float(delta.std()) == pytest.approx(0.25, rel=0.03)
    assert float(model.seen[0].min()) < 0  # noise added on [0, 1] pixels, not clamped


def test_trades_smooth_attacks_around_the_noisy_input():
    x = torch.full((4, 1, 16, 16), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    model = InputRecorder()
    cls = DEFENSES.get("trades_smooth")
    d = cls(cls.Config(steps=2))
    d.loss(model, x, y, None)
    # model sees: target f(x̃), K inner forwards, then x̃, x̃_adv, x̃ (train mode)
    x_noisy = model.seen[0]
    assert float((x_noisy - x).std()) == pytest.approx(0.12, rel=0.1)
    assert torch.equal(model.seen[3], x_noisy) and torch.equal(model.seen[5], x_noisy)
    assert float(norms(model.seen[4] - x_noisy, "l2").max()) <= 0.435 + 1e-5
