"""CW-ℓ∞ through ART (attacks/cw_linf_art.py) on a tiny MNIST model trained here.

The model: an MLP 784-128-10 trained for 10 epochs (Adam) on the first 2000 MNIST
training images, evaluated on the first 40 test images (ART's CW-ℓ∞ runs one image at a
time, so a short list keeps the test in seconds). Everything is deterministic: ART's
CarliniLInfMethod draws no random numbers, and the margin PGD runs without random start.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins.config import build_config
from bench.data.read import load_split
from bench.errors import BenchError, SuiteError
from bench.plugins.perturb import norms
from bench.suite.load import load_suite

from attacks.cw_linf import CWLinf
from attacks.cw_linf_art import CWLinfART
from attacks.cw_linf_art18 import CWLinfART18

try:
    import art  # noqa: F401
    HAVE_ART = True
except ImportError:   # the `art` extra is optional (it is in `dev`)
    HAVE_ART = False
needs_art = pytest.mark.skipif(not HAVE_ART, reason="needs adversarial-robustness-toolbox")

N = 40


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def setup(data_root: Path):
    xtr, ytr = load_split("mnist", "train", data_root)
    xte, yte = load_split("mnist", "test", data_root)
    x, y = _to_tensor(xtr[:2000]), torch.from_numpy(ytr[:2000])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        perm = torch.randperm(2000, generator=g)
        for i in range(0, 2000, 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), _to_tensor(xte[:N]), torch.from_numpy(yte[:N])


def _margin_pgd():
    """attacks/cw_linf.py as Table 2's margin-PGD column: 20 steps of 0.01, κ 50; no
    random start, so both sides of each comparison are deterministic."""
    return CWLinf(CWLinf.Config(steps=20, step_size=0.01, random_start=False))


def _count_calls(attack) -> list[int]:
    calls, inner = [0], attack.perturb

    def counting(*a, **k):
        calls[0] += 1
        return inner(*a, **k)

    attack.perturb = counting
    return calls


# ------------------------------------------------------------------ ART 1.20.1 engine

@needs_art
def test_art_cw_linf_at_least_margin_pgd(setup):
    """The paper's CW-ℓ∞ column sits above its PGD column; ART's CarliniLInfMethod at its
    defaults (10 images: it attacks one image at a time) is a minimisation attack run
    once per ε sweep, monotone in ε, and no stronger than margin PGD at any ε."""
    model, x, y = setup
    x, y = x[:10], y[:10]
    art = CWLinfART()
    calls = _count_calls(art)
    eps_list = [0.1, 0.3]
    ours = art.run_sweep(model, x, y, eps_list)
    assert calls[0] == 1
    assert int(ours[0].sum()) >= int(ours[1].sum())
    for eps, robust in zip(eps_list, ours):
        pgd = _margin_pgd().run(model, x, y, eps)
        print(f"\neps {eps}: ART CW-linf {int(robust.sum())}/10, margin PGD {int(pgd.sum())}/10")
        assert int(robust.sum()) >= int(pgd.sum())


@needs_art
def test_art_cw_linf_returns_misclassified_points_in_the_box(setup):
    """A setting strong enough to succeed (Adam α 0.1, 50 steps, one c, τ × 0.5): what
    ART returns is x where it found nothing and a misclassified point in [0, 1]
    elsewhere, so the wiring (labels, logits, clip values) is ART's contract; the
    base class then clips it to ε."""
    model, x, y = setup
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok][:6], y[ok][:6]
    cfg = build_config(CWLinfART.Config, {"learning_rate": 0.1, "max_iter": 50,
                                          "initial_const": 10.0, "decrease_factor": 0.5})
    x_adv = CWLinfART(cfg).perturb(model, x, y, float("inf"))
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert bool(changed.any())
    assert torch.equal(changed, fooled)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    robust = CWLinfART(cfg).run_sweep(model, x, y, [0.05, 1.0])
    assert int(robust[1].sum()) == int((~changed).sum())
    assert int(robust[0].sum()) >= int(robust[1].sum())


# ------------------------------------------------------------------ ART ≤ 1.8 port

@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_art18_cw_linf_at_least_margin_pgd(setup, eps):
    """The recipe: CW-ℓ∞ at the authors' setting (ART ≤ 1.8, α 0.3, 40 steps) gives
    robust accuracy ≥ margin PGD's on the same images, and still bites at ε = 0.1."""
    model, x, y = setup
    cw = CWLinfART18()
    assert (cw.config.learning_rate, cw.config.max_iter) == (0.3, 40)   # the authors' call
    robust = cw.run(model, x, y, eps)
    pgd = _margin_pgd().run(model, x, y, eps)
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    print(f"\neps {eps}: ART<=1.8 CW-linf {int(robust.sum())}/{N}, margin PGD "
          f"{int(pgd.sum())}/{N}, clean {clean}/{N}")
    assert int(robust.sum()) >= int(pgd.sum())
    if eps == 0.1:
        assert int(robust.sum()) < clean


def test_art18_stays_in_its_box_and_returns_x_where_it_fails(setup):
    """ART optimises in tanh space over the box [x − ε, x + ε] ∩ [0, 1], so its raw
    output (before the base class projects) is inside the ε-ball; it returns x exactly
    where it found nothing and a misclassified point elsewhere; it draws no random
    numbers, so two runs agree; a fixed-ε attack, it runs once per ε of a sweep."""
    model, x, y = setup
    eps = 0.1
    cw = CWLinfART18()
    x_adv = cw.perturb(model, x, y, eps)
    assert float(norms(x_adv - x, "linf").max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert bool(changed.any()) and bool(fooled[changed].all())
    assert torch.equal(cw.perturb(model, x, y, eps), x_adv)
    calls = _count_calls(cw)
    cw.run_sweep(model, x, y, [0.05, 0.1])
    assert calls[0] == 2


# ------------------------------------------------------------------ errors

SUITE = textwrap.dedent("""\
    version: 1
    attacks:
      cw: {plugin: PLUGIN, config: CONFIG}
    models:
      m: {dataset: mnist, arch: small_cnn, defense: sgd}
    matrix:
      - {name: t, models: [m], attacks: [cw], eps: [0.3]}
    """)


@pytest.mark.parametrize("plugin, config, needle", [
    ("cw_linf_art", "{norm: l2}", "norm"),
    ("cw_linf_art", "{const_factor: 1.0}", "const_factor must be > 1"),
    ("cw_linf_art", "{initial_const: 30.0}", "below largest_const"),
    ("cw_linf_art18", "{norm: l2}", "norm"),
    ("cw_linf_art18", "{max_halving: 0}", "max_halving"),
])
def test_bad_config_is_one_located_sentence(tmp_path, plugin, config, needle):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("PLUGIN", plugin).replace("CONFIG", config))
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    msg = str(ei.value)
    assert "suite.yaml:3" in msg and needle in msg and "\n" not in msg.strip()


def test_missing_art_is_one_sentence(monkeypatch, setup):
    model, x, y = setup
    for name in ("art", "art.attacks.evasion", "art.estimators.classification"):
        monkeypatch.setitem(sys.modules, name, None)     # import → ImportError
    with pytest.raises(BenchError, match=r"needs `adversarial-robustness-toolbox` "
                                         r"\(pip install 'bench\[art\]'\)$"):
        CWLinfART().perturb(model, x[:2], y[:2], 0.3)
