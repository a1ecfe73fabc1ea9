"""Every defense trains SmallCNN on a few hundred MNIST images through the real loop,
without NaN, and (for the adversarial ones) ends more robust than plain training under
the same PGD.

Budget: 768 training images, 4 epochs, 5-step inner loops. ℓ∞: training at ε = 0.1 (at
MNIST's ε = 0.3 a few hundred images are not enough for any defense to learn), PGD-10 at
ε = 0.15, where plain training has lost more than half its accuracy (measured: 0.42–0.44
robust vs 0.85 clean) and the defenses keep 8 to 18 points more. ℓ2 (the Table 1 and 4
variants): training at ε = 1.5, ℓ2 PGD-10 at Table 1's ε = 2, where plain training keeps
0.26 and the defenses 0.38–0.48 (measured); MART there with β = 1, as at its β = 6 the
KL term holds clean accuracy near 0.5 for the first 4 epochs (0.68 after 8, measured).
Entropy-SGD and Gaussian-noise training are not adversarial defenses: the test asks them
only to train (no NaN, clean accuracy well above chance); their robustness is not a
claim of theirs.
"""

from __future__ import annotations

import textwrap

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.db import database as db
from bench.db.schema import ModelRecord, ResultRecord
from bench.run.plan import expand
from bench.run.runner import Runner
from bench.suite.load import load_suite

# ≈ 3.5 minutes (16 models trained for 4 epochs): the README's test command leaves it out,
# `.ci/run` runs it as `pytest -m slow`; tests/test_plugin_contract.py still trains one step
# of every registered defense in the default run.
pytestmark = pytest.mark.slow

# model name → (defense, defense_config)
ADVERSARIAL = {
    "pgd_at": ("pgd_at", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5}"),
    "trades": ("trades", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5, beta: 6.0}"),
    "mart": ("mart", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5, beta: 6.0}"),
    "mma": ("mma", "{norm: linf, d_max: 0.15, mineps: 0.02, nb_iter: 5, search_steps: 5}"),
    # the authors' chain (every step projected, no γ pull, the notebook's start)
    "atent": ("atent", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5, project: every, gamma: 0.0, init: code}"),
    # the paper's chain (Algorithm 2: the start N(0, I) projected into the ball, the last
    # iterate clipped, Eq. 14), with a larger noise for a 5-step chain
    "atent_paper": ("atent", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5, gamma: 0.05, noise: 0.05}"),
    "trades_smooth": ("trades_smooth", "{norm: linf, eps: 0.1, step_size: 0.025, steps: 5, beta: 6.0, sigma: 0.05}"),
}
ADVERSARIAL_L2 = {   # Table 1's presets at a training ε of 1.5 with 5 steps
    "pgd_at_l2": ("pgd_at", "{preset: mnist_l2, eps: 1.5, step_size: 0.375, steps: 5}"),
    "trades_l2": ("trades", "{preset: mnist_l2, eps: 1.5, steps: 5}"),
    "mart_l2": ("mart", "{preset: mnist_l2, eps: 1.5, step_size: 0.375, steps: 5, beta: 1.0}"),
    "mma_l2": ("mma", "{preset: mnist_l2, d_max: 2.0, mineps: 0.1, nb_iter: 5, search_steps: 5}"),
    # the authors' ℓ2 chain (code_table1): the paper's preset mnist_l2 starts from N(0, I)
    # projected into the 1/γ = 20 ball, and at this scale (5 steps, 768 images, 4 epochs)
    # it does not train (measured: clean 0.14); tests/test_defenses.py checks its chain
    "atent_l2": ("atent", "{preset: code_table1, eps: 1.5, step_size: 0.375, steps: 5}"),
}
TRAINING_ONLY = {
    # The paper's Algorithm 3 steps η·γ·(w − μ): at γ = 1e-3 the outer lr is 50 so that
    # ηγ = 0.05, the SGD row's lr (at lr 0.05 it would not move in 4 epochs), with the
    # paper's K = 5 Langevin steps (measured at this scale: clean 0.91; with K = 2, 0.40).
    # The authors' optimizer (preset `code`) steps η·(w − μ) at the SGD row's lr.
    "entropy_sgd": ("entropy_sgd", "{L: 5}", "{lr: 50.0}"),
    "entropy_sgd_code": ("entropy_sgd", "{preset: code, L: 2}"),
    "gaussian": ("gaussian", "{sigma: 0.3}"),
}
ALL = {**ADVERSARIAL, **ADVERSARIAL_L2, **TRAINING_ONLY}


def suite_text() -> str:
    models = ["  m_sgd:\n    dataset: tiny\n    arch: small_cnn\n    defense: sgd\n"
              "    train: {epochs: 4, batch_size: 32, lr: 0.05, momentum: 0.9}\n"]
    for name, (defense, cfg, *train) in ALL.items():
        models.append(f"  m_{name}:\n    base: m_sgd\n    defense: {defense}\n    defense_config: {cfg}\n"
                      + (f"    train: {train[0]}\n" if train else ""))
    linf = ", ".join(["m_sgd"] + [f"m_{n}" for n in {**ADVERSARIAL, **TRAINING_ONLY}])
    l2 = ", ".join(["m_sgd"] + [f"m_{n}" for n in ADVERSARIAL_L2])
    return textwrap.dedent("""\
        version: 1
        seed: 0
        datasets:
          tiny: {plugin: mnist, train_subset: 768}
        attacks:
          clean: {plugin: clean}
          pgd10: {plugin: pgd, config: {norm: linf, steps: 10, step_size: 0.025}}
          pgd10_l2: {plugin: pgd, config: {norm: l2, steps: 10, step_size: 0.375}}
        models:
        """) + "".join(models) + textwrap.dedent(f"""\
        matrix:
          - name: main
            models: [{linf}]
            attacks: [clean, pgd10]
            eps: [0.15]
            eval: {{n: 256, batch_size: 256}}
          - name: l2
            models: [{l2}]
            attacks: [clean, pgd10_l2]
            eps: [2]
            eval: {{n: 256, batch_size: 256}}
        """)


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("defenses")
    p = tmp / "suite.yaml"
    p.write_text(suite_text())
    suite = load_suite(p)
    engine = db.open_db(tmp / "r.sqlite")
    summary = Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp / "res",
                     progress=False, out=lambda s: None).run(expand(suite))
    with Session(engine) as s:
        rows = {(r.model_name, r.attack): r for r in s.scalars(select(ResultRecord))}
        curves = {m.name: m.curves for m in s.scalars(select(ModelRecord))}
    return summary, rows, curves


@pytest.mark.parametrize("defense", sorted(ALL))
def test_defense_trains_without_nan(results, defense):
    summary, rows, curves = results
    r = rows[(f"m_{defense}", "clean")]
    assert r.status == "done", r.error
    assert all(l == l and abs(l) < 1e6 for l in curves[f"m_{defense}"]["loss"])
    assert r.robust_acc > 0.5, f"{defense}: clean accuracy {r.robust_acc:.2f}"


@pytest.mark.parametrize("defense", sorted({**ADVERSARIAL, **ADVERSARIAL_L2}))
def test_adversarial_defense_beats_plain_training(results, defense):
    _, rows, _ = results
    attack = "pgd10_l2" if defense in ADVERSARIAL_L2 else "pgd10"
    plain = rows[("m_sgd", attack)].robust_acc
    robust = rows[(f"m_{defense}", attack)].robust_acc
    # 256 examples: a 5-point margin is more than 2 standard errors of either estimate
    assert robust > plain + 0.05, f"{defense}: PGD-10 {robust:.3f} vs plain {plain:.3f}"
