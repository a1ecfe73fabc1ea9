"""The attack base class and PGD: inside the ε-ball and [0, 1], and effective."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins import attack as attack_mod
from bench.plugins.attack import Attack, AttackError
from bench.data.read import load_split
from bench.plugins.perturb import norms
from bench.plugins.registry import ATTACKS


@pytest.fixture(scope="module")
def trained(data_root):
    """A small MLP trained for a few seconds on 3,000 MNIST images (~90 % test accuracy)."""
    torch.manual_seed(0)
    x, y = load_split("mnist", "train", data_root, offline=True)
    x = torch.from_numpy(x[:3000]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(y[:3000])
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(5):
        for i in range(0, 3000, 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    xt, yt = load_split("mnist", "test", data_root, offline=True)
    xt = torch.from_numpy(xt[:300]).permute(0, 3, 1, 2).float() / 255
    return model.eval(), xt, torch.from_numpy(yt[:300])


def pgd(**kw):
    cls = ATTACKS.get("pgd")
    return cls(cls.Config(**kw))


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.02), ("l2", 1.5, 0.3)])
def test_pgd_stays_in_the_ball_and_the_box_and_lowers_accuracy(trained, norm, eps, step):
    model, x, y = trained
    a = pgd(norm=norm, steps=10, step_size=step)
    x_adv = a.perturb(model, x, y, eps)
    assert (norms(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = (model(x).argmax(1) == y).float().mean().item()
    robust = a.run(model, x, y, eps).float().mean().item()
    assert clean > 0.8 and robust < clean - 0.3


def test_box_start_is_the_trades_whitebox_start_and_the_first_step_projects(trained):
    model, x, y = trained
    a = pgd(norm="l2", steps=0, start="box")
    torch.manual_seed(0)
    delta = a.start_point(x, 2.0) - x
    assert float(delta.abs().max()) <= 2.0 and float(delta.abs().max()) > 1.9   # U(−ε, ε) per pixel
    assert float(delta.std()) == pytest.approx(2.0 / 3 ** 0.5, rel=0.02)       # unclamped
    assert bool((norms(delta, "l2") > 20).all())                              # far outside the ℓ2 ball
    x_adv = pgd(norm="l2", steps=1, step_size=0.1, start="box").perturb(model, x, y, 2.0)
    assert (norms(x_adv - x, "l2") <= 2.0 * (1 + 1e-5)).all() and x_adv.min() >= 0
    robust_box = pgd(norm="l2", steps=10, step_size=0.3, start="box").run(model, x, y, 1.5)
    assert robust_box.float().mean() < (model(x).argmax(1) == y).float().mean() - 0.3


def test_restarts_keep_the_worst_case(trained):
    model, x, y = trained
    torch.manual_seed(1)
    one = pgd(steps=3, step_size=0.02, restarts=1).run(model, x, y, 0.06)
    torch.manual_seed(1)
    five = pgd(steps=3, step_size=0.02, restarts=5).run(model, x, y, 0.06)
    # the first restart draws the same start as the single run, so five restarts can only add breaks
    assert not (five & ~one).any() and five.sum() < one.sum()


def test_restarts_run_only_on_still_robust_samples(trained, monkeypatch):
    model, x, y = trained
    seen = []
    a = pgd(steps=2, step_size=0.05, restarts=3)
    orig = a.perturb
    monkeypatch.setattr(a, "perturb", lambda m, xs, ys, e: (seen.append(len(xs)), orig(m, xs, ys, e))[1])
    a.run(model, x, y, 0.1)
    clean_ok = int((model(x).argmax(1) == y).sum())
    assert seen[0] == clean_ok and seen == sorted(seen, reverse=True) and seen[-1] < seen[0]


def test_success_is_decided_by_querying_the_model(trained):
    """A plugin cannot claim success: the base class asks the model."""
    model, x, y = trained

    class Liar(Attack):
        def perturb(self, model, x, y, eps):
            return x  # "attacks" nothing

    out = Liar().run(model, x, y, 0.3)
    assert torch.equal(out, model(x).argmax(1) == y)


def test_model_is_put_in_eval_mode_and_restored(trained):
    model, x, y = trained
    modes = []

    class Spy(Attack):
        def perturb(self, m, xs, ys, eps):
            modes.append(m.training)
            return xs

    model.train()
    Spy().run(model, x[:8], y[:8], 0.1)
    assert modes == [False] and model.training
    model.eval()


def test_norm_violation_is_an_error(trained, monkeypatch):
    model, x, y = trained

    class Outside(Attack):
        def perturb(self, m, xs, ys, eps):
            return xs + 0.5

    monkeypatch.setattr(attack_mod, "project", lambda xa, xx, e, n: xa)  # a broken projection
    with pytest.raises(AttackError, match="outside the linf ball"):
        Outside().run(model, x[:8], y[:8], 0.1)


def test_cw_loss_option_is_at_least_as_strong_as_nothing(trained):
    model, x, y = trained
    r = pgd(steps=10, step_size=0.02, loss="cw", kappa=0.0).run(model, x, y, 0.1)
    assert r.float().mean() < (model(x).argmax(1) == y).float().mean() - 0.3


def test_a_relative_step_size_follows_the_cells_eps():
    """"ε/20" is the ATENT authors' ℓ2 step (0.02175 at ε = 0.435); absolute literals stay."""
    from attacks.pgd import PGD
    from bench.plugins.config import ConfigError, build_config
    rel = PGD(build_config(PGD.Config, {"norm": "l2", "steps": 10, "step_size": "ε/20"}))
    assert rel.step_for(0.435) == pytest.approx(0.02175)
    assert rel.step_for(1.0) == pytest.approx(0.05)
    assert PGD(build_config(PGD.Config, {"step_size": "eps*0.25"})).step_for(2.0) == pytest.approx(0.5)
    assert PGD(build_config(PGD.Config, {"step_size": "2/255"})).step_for(1.0) == pytest.approx(2 / 255)
    with pytest.raises(ConfigError, match="relative step size"):
        build_config(PGD.Config, {"step_size": "ε/zero"})
