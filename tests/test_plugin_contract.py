"""The plugin contract, for every registered plugin: a new plugin is tested by being registered.

* every model, defense, attack and executor is a `bench.plugins.base.Plugin` whose
  `Config` builds from nothing (its defaults), describes itself (`bench ls --plugins`)
  and serialises to plain JSON (what the keys hash);
* every defense: one training step of the generic loop (its optimizer or the recipe's)
  on a tiny model and batch gives a finite scalar loss, leaves the model in train mode and
  changes the weights;
* ε options (`EpsValue`, `EpsNumber`, `RelativeEps`) parse in config coercion and write
  what the keys have always hashed;
* every attack, by its declared traits and never by its name: `run_sweep` answers one bool
  per sample for each of two ε, robust only where clean-correct (`bounded_by_clean`),
  ε-independent where `uses_eps` is False; and, where it `crafts_inputs`, `perturb` keeps
  the shape and dtype, stays in [0, 1] and — unless a minimisation attack, whose ε = inf
  point the base class clips — in the ε-ball of its norm, without the base class's
  projection.

Tiny CPU inputs; `CHEAP` only shortens the budgets of the slowest defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from bench.plugins.attack import predict
from bench.plugins.base import Plugin
from bench.plugins.config import (ConfigError, EpsNumber, EpsValue, RelativeEps, build_config,
                                  config_dict, describe_config)
from bench.plugins.defense import StepContext
from bench.plugins.perturb import norms
from bench.plugins.registry import ATTACKS, DEFENSES, EXECUTORS, MODELS
from bench.run.train import make_optimizer
from bench.suite.recipe import TrainConfig

SHAPE = (1, 6, 6)
CLASSES = 10
EPS = {"linf": (0.05, 0.2), "l2": (0.3, 1.5)}
# Smaller budgets for defaults that take seconds even on a tiny model (the contract does
# not depend on the budget): CW-ℓ2's own `fast` preset, fewer smoothing samples, fewer
# ART iterations. A plugin not named here is tested with its defaults.
CHEAP = {"cw_l2": {"preset": "fast"}, "certify": {"n0": 16, "n": 200, "batch": 200},
         "cw_linf_art": {"max_iter": 3, "decrease_factor": 0.5}}

REGISTRIES = {"model": MODELS, "defense": DEFENSES, "attack": ATTACKS, "executor": EXECUTORS}


def registered(reg) -> list[str]:
    """Every registered name but the plugins the tests register themselves (tests/test_*.py
    registers deliberately broken ones)."""
    return [name for name, cls in reg.items()
            if not cls.__module__.rpartition(".")[2].startswith("test_")]


ALL = [(kind, name) for kind, reg in REGISTRIES.items() for name in registered(reg)]


def mlp(bn: bool = False) -> nn.Module:
    d = math.prod(SHAPE)
    layers = [nn.Flatten(), nn.Linear(d, 32)] + ([nn.BatchNorm1d(32)] if bn else [])
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(32, CLASSES))


def images(n: int, seed: int) -> torch.Tensor:
    """Images in [0, 1] with saturated pixels (0 and 1), where the box constraint bites."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g)
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    return x


# ------------------------------------------------------------------------------ every plugin

@pytest.mark.parametrize("kind,name", ALL)
def test_plugin_has_a_typed_config_with_defaults(kind, name):
    cls = REGISTRIES[kind].get(name)
    assert issubclass(cls, Plugin) and cls.registry_name == name
    assert isinstance(cls.version, str) and dataclasses.is_dataclass(cls.Config)
    cfg = build_config(cls.Config, {})
    json.dumps(config_dict(cfg), allow_nan=False)
    assert describe_config(cls.Config) or not dataclasses.fields(cls.Config)
    assert cls(cfg).config is cfg and cls().describe() == name


# ------------------------------------------------------------------------------ ε options

@dataclasses.dataclass
class EpsOptions:
    eps: EpsValue = EpsValue("8/255")
    step: EpsNumber | RelativeEps | None = 0.003
    floor: EpsValue | None = None


def test_eps_options_parse_in_coercion_and_serialise_as_written():
    cfg = build_config(EpsOptions, {"eps": "8 / 255", "step": "2/255", "floor": 2})
    assert cfg.eps == 8 / 255 and cfg.step == 2 / 255 and cfg.floor == 2.0
    assert config_dict(cfg) == {"eps": "8 / 255", "step": 2 / 255, "floor": 2.0}
    rel = build_config(EpsOptions, {"eps": 0.031, "step": "ε/20"})
    assert rel.step.of(0.435) == pytest.approx(0.02175)
    assert json.dumps(config_dict(rel)) == '{"eps": 0.031, "step": "\\u03b5/20", "floor": null}'
    assert config_dict(build_config(EpsOptions, {})) == {"eps": "8/255", "step": 0.003, "floor": None}
    for e in (cfg.eps, copy.deepcopy(cfg).eps, pickle.loads(pickle.dumps(cfg.eps))):
        assert type(e) is EpsValue and e.literal == "8 / 255" and repr(e) == "'8 / 255'"
    assert pickle.loads(pickle.dumps(rel.step)).factor == 0.05
    for values, message in [({"eps": "8/2x5"}, "eps: malformed epsilon '8/2x5'"),
                            ({"eps": -0.1}, "eps: epsilon must be a finite number in \\[0, 1000\\]"),
                            ({"eps": True}, "eps: malformed epsilon True"),
                            ({"step": "ε/0"}, "step: must be .* relative step size"),
                            ({"floor": "x"}, "floor: must be a number ≥ 0 or 'a/b' | null")]:
        with pytest.raises(ConfigError, match=message):
            build_config(EpsOptions, values)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=12), st.floats(), st.integers(), st.none(), st.booleans()))
def test_eps_options_take_any_value_or_say_why_not(raw):
    for tp in (EpsValue, EpsNumber, RelativeEps):
        try:
            parsed = tp.from_config(raw)
        except ValueError as e:
            assert str(e)
            continue
        if isinstance(parsed, EpsValue):
            assert math.isfinite(parsed) and parsed >= 0
            literal = config_dict({"v": parsed})["v"]
            assert literal == (float(parsed) if tp is EpsNumber
                               else raw if isinstance(raw, str) else float(raw))
        else:
            assert math.isfinite(parsed.factor) and parsed.factor > 0 and parsed == raw


# ------------------------------------------------------------------------------ defenses

@pytest.mark.parametrize("name", registered(DEFENSES))
def test_defense_trains_one_step(name):
    torch.manual_seed(0)
    n, batch = 32, 8
    x_all, y_all = images(n, 1), torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(2))
    pos = iter(range(0, 10 ** 6, batch))

    def next_batch():
        start = next(pos)
        i = torch.arange(start, start + batch) % n
        return x_all[i], y_all[i], i

    cls = DEFENSES.get(name)
    defense = cls(build_config(cls.Config, {}), num_classes=CLASSES, dataset_size=n)
    model = mlp(bn=True).train()
    train_cfg = TrainConfig(lr=0.05, momentum=0.9)
    opt = defense.make_optimizer(model.parameters(), train_cfg) or make_optimizer(model.parameters(), train_cfg)
    x, y, i = next_batch()
    ctx = StepContext(epoch=0, step=0, index=i, next_batch=next_batch, num_classes=CLASSES,
                      dataset_size=n)
    before = [p.detach().clone() for p in model.parameters()]
    loss = defense.train_step(model, opt, x, y, ctx)
    assert loss.dim() == 0 and bool(torch.isfinite(loss)) and not loss.requires_grad
    assert model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------------------ attacks

@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return mlp().eval()


@pytest.mark.parametrize("name", registered(ATTACKS))
def test_attack_keeps_its_traits_norm_and_bounds(name, net):
    cls = ATTACKS.get(name)
    attack = cls(build_config(cls.Config, CHEAP.get(name, {})))
    crafted = []                      # what perturb returned, before the base class projects
    perturb = attack.perturb

    def recording(model, x, y, eps):
        x_adv = perturb(model, x, y, eps)
        crafted.append((x, eps, x_adv))
        return x_adv

    attack.perturb = recording
    torch.manual_seed(0)
    x = images(6, 3)
    y = predict(net, x)
    y[-1] = (y[-1] + 1) % CLASSES                     # one sample misclassified to begin with
    clean = predict(net, x) == y
    eps_pair = EPS[attack.norm]

    outs = attack.run_sweep(net, x, y, list(eps_pair))
    assert not net.training
    assert len(outs) == 2
    for out in outs:
        assert out.dtype == torch.bool and out.shape == y.shape
        if attack.bounded_by_clean:
            assert not bool((out & ~clean).any())
        if not attack.uses_eps:
            assert torch.equal(out, clean)

    if not (attack.crafts_inputs and attack.uses_eps):
        return
    assert crafted and {e for _, e, _ in crafted} == ({math.inf} if attack.minimization
                                                      else set(eps_pair))
    for xs, eps, x_adv in crafted:
        assert x_adv.shape == xs.shape and x_adv.dtype == xs.dtype
        assert float(x_adv.min()) >= -1e-6 and float(x_adv.max()) <= 1 + 1e-6
        if math.isfinite(eps):
            assert float(norms(x_adv - xs, attack.norm).max()) <= eps * (1 + 1e-5) + 1e-6
