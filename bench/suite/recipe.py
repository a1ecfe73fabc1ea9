"""The typed recipes the engine owns: training (`TrainConfig`) and evaluation (`EvalConfig`).

Defaults follow TRADES' CIFAR-10 recipe (SGD lr 0.1, momentum 0.9, batch 128); each
suite.yaml model states the recipe of its paper row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from bench.plugins.eps import parse_eps

# Part of every model key: what the loop's settings mean. 2: a milestone is a 1-based epoch
# (`epoch >= m` over epochs 1..N, as TRADES', MART's and ATENT's `adjust_learning_rate`);
# 1 read it 0-based, one epoch late.
TRAIN_LOOP_VERSION = 2

MAX_EPOCHS = 10_000      # a bound, not a recipe: the longest schedules in the literature are ~10³
MAX_GRID = 1_000         # early_stopping.grid: the validation attack runs once per grid point


@dataclass
class EarlyStopping:
    """Keep the checkpoint with the best robust accuracy on the validation split
    (Rice et al., "Overfitting in adversarially robust deep learning").

    The score is the robust accuracy at `eps`; with a list of ε, the mean of the robust
    accuracies over the list; with `grid: N`, the mean over the N midpoints
    eps·(k − ½)/N, k = 1 … N. Per example that mean is the fraction of the grid at which
    the attack fails, min(r, eps)/eps within 1/(2N) for an example it breaks from radius r
    on: the mean distance to the boundary capped at eps, divided by eps — MMA's checkpoint
    criterion (`val_avgeps`) with its validation adversary (`attacks/anpgd.py`). Ties keep
    the earlier epoch.
    """

    attack: str                  # an attack of suite.yaml, evaluated on the validation split
    eps: float | str | list[float | str]   # its ε, or a list of ε (the mean is the score)
    every: int = 1               # evaluate every this many epochs
    n: int | None = None         # validation examples used (None: the whole split)
    grid: int = 0                # N > 0: the N midpoints of (0, eps] (eps one value)

    def __post_init__(self):
        if self.every < 1:
            raise ValueError("early_stopping.every must be ≥ 1")
        if not 0 <= self.grid <= MAX_GRID:
            raise ValueError(f"early_stopping.grid must be in [0, {MAX_GRID}]")
        if self.n is not None and self.n < 1:
            raise ValueError("early_stopping.n must be ≥ 1 (or null: the whole split)")
        if isinstance(self.eps, list):
            if not self.eps:
                raise ValueError("early_stopping.eps: an empty list")
            if self.grid:
                raise ValueError("early_stopping.grid needs one eps (the top of the grid), not a list")

    def eps_values(self) -> list[float]:
        """The ε at which the validation attack runs; the score is the mean over them."""
        if self.grid:
            top = parse_eps(self.eps).value
            return [top * (k - 0.5) / self.grid for k in range(1, self.grid + 1)]
        raw = self.eps if isinstance(self.eps, list) else [self.eps]
        return [parse_eps(e).value for e in raw]


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    # A milestone m multiplies the lr by gamma from 1-based epoch m on: the references'
    # `if epoch >= 75: lr = 0.1 * lr` over epochs 1..76 gives two epochs at 0.01 (75, 76).
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0                                # linear warm-up (0: none)
    augment: bool | None = None      # None: the dataset's default (crop + flip for CIFAR)
    val_size: int = 0                # held out of train, deterministically (for early stopping)
    early_stopping: EarlyStopping | None = None
    init_from: str | None = None     # fine-tune from a checkpoint path, or "model:NAME" (a suite model)
    drop_last: bool = False
    max_nonfinite: int = 0           # tolerated non-finite batch losses before the model fails

    def __post_init__(self):
        # the loader's numbers are finite and fit in 64 bits (bench.plugins.config.coerce);
        # these are the ranges in which the training loop means something
        if self.epochs < 0 or self.batch_size < 1 or self.lr < 0:
            raise ValueError("epochs must be ≥ 0, batch_size ≥ 1 and lr ≥ 0")
        if not all(math.isfinite(x) for x in (self.lr, self.momentum, self.weight_decay, self.gamma)):
            raise ValueError("lr, momentum, weight_decay and gamma must be finite numbers")
        if self.epochs > MAX_EPOCHS or self.warmup_epochs > MAX_EPOCHS:
            raise ValueError(f"epochs and warmup_epochs must be at most {MAX_EPOCHS}")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")
        if self.weight_decay < 0 or self.gamma <= 0:
            raise ValueError("weight_decay must be ≥ 0 and gamma > 0")
        if any(m < 1 for m in self.milestones):
            raise ValueError("milestones are 1-based epochs: each must be ≥ 1")
        if self.warmup_epochs < 0 or self.val_size < 0 or self.max_nonfinite < 0:
            raise ValueError("warmup_epochs, val_size and max_nonfinite must be ≥ 0")
        if self.early_stopping is not None and self.val_size <= 0:
            raise ValueError("early_stopping needs a validation split: set val_size > 0")


@dataclass
class EvalConfig:
    split: Literal["test", "train"] = "test"
    n: int | None = None             # the first n examples in dataset order (None: all)
    batch_size: int | Literal["auto"] = 256   # auto: what fills the device (bench.run.precision)

    def __post_init__(self):
        if self.n is not None and self.n < 1:
            raise ValueError("n must be ≥ 1")
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ValueError("batch_size must be ≥ 1 or auto")
