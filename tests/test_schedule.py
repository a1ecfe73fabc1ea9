"""The learning-rate schedule: what a milestone means (bench.suite.recipe.TrainConfig.milestones).

The references decay with `if epoch >= m` over 1-based epochs (TRADES' and ATENT's
`adjust_learning_rate`, MART's `train_wideresnet.py`): a milestone m is the first 1-based
epoch at the decayed rate.
"""

import pytest

from bench.suite.recipe import TrainConfig
from bench.run.train import lr_at


def lrs(cfg: TrainConfig) -> list[float]:
    """The rate of each epoch, 1-based: lrs(cfg)[e - 1] is epoch e's."""
    return [lr_at(cfg, e) for e in range(cfg.epochs)]


def test_trades_76_epochs_runs_two_epochs_at_the_decayed_rate():
    rates = lrs(TrainConfig(epochs=76, lr=0.1, milestones=[75]))
    assert rates[:74] == [0.1] * 74                       # epochs 1..74
    assert rates[74:] == pytest.approx([0.01, 0.01])      # epochs 75 and 76


def test_mart_reaches_its_third_stage_at_epoch_90():
    rates = lrs(TrainConfig(epochs=90, lr=0.1, milestones=[75, 90]))
    assert rates[73] == pytest.approx(0.1)                # epoch 74
    assert rates[74] == pytest.approx(0.01)               # epoch 75
    assert rates[88] == pytest.approx(0.01)               # epoch 89
    assert rates[89] == pytest.approx(0.001)              # epoch 90: reached


def test_a_milestone_at_epoch_1_decays_from_the_start():
    assert lrs(TrainConfig(epochs=2, lr=1.0, milestones=[1]))[0] == pytest.approx(0.1)


def test_the_loop_version_is_part_of_the_model_key():
    from bench.suite.recipe import TRAIN_LOOP_VERSION
    from bench.suite.load import load_suite
    text = """
version: 1
models:
  m: {dataset: mnist, arch: small_cnn, defense: sgd, train: {epochs: 1}}
attacks:
  clean: {plugin: clean}
matrix:
  - {name: t, models: [m], attacks: [clean]}
"""
    suite = load_suite("inline.yaml", text)
    assert suite.models["m"].resolved()["train_loop_version"] == TRAIN_LOOP_VERSION == 2
