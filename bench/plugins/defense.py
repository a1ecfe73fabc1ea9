"""The defense base class: what a training method supplies to the generic loop.

The loop (`bench.run.train`) owns epochs, learning-rate schedules, early stopping on a
validation robust accuracy, checkpoints, precision and logging. A defense supplies

* `loss(model, x, y, ctx)`: the batch objective, its inner maximisation included. The
  model is in train mode on entry; a defense whose reference crafts adversarial inputs
  in eval mode (TRADES, MART) switches itself and switches back;
* optionally `train_step(...)`, for methods that own the update (Entropy-SGD's inner
  SGLD loop over fresh minibatches), and `make_optimizer(...)`;
* optionally per-sample state (MMA's per-example ε) through `state_dict`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from bench.plugins.base import Plugin
from bench.plugins.perturb import frozen_parameters


@contextlib.contextmanager
def crafting(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """The model as an inner maximisation needs it: in `mode` ("train" or "eval", as the
    defense's reference does it) with its weights frozen — the inner loop takes input
    gradients only, and compiled graphs then skip the weight gradients. Both are
    restored on exit."""
    was_training = model.training
    model.train(mode == "train")
    try:
        with frozen_parameters(model):
            yield model
    finally:
        model.train(was_training)


@dataclasses.dataclass
class StepContext:
    """What the loop tells a defense about the current step."""

    epoch: int                     # 0-based epoch
    step: int                      # global optimizer step, 0-based
    index: torch.Tensor            # dataset indices of the batch (per-sample state)
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # fresh (x, y, index)
    num_classes: int
    dataset_size: int


class Defense(Plugin):
    """Base class of defense plugins. Subclasses set `Config` (a dataclass) and `loss`.

    The precision policy is not the defense's business: the loop hands it a model that
    already runs its forward passes under the policy (`bench.run.precision`)."""

    def __init__(self, config=None, *, num_classes: int = 10, dataset_size: int = 0):
        super().__init__(config)
        self.num_classes = num_classes
        self.dataset_size = dataset_size

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def make_optimizer(self, params: Iterable[nn.Parameter], train_cfg) -> torch.optim.Optimizer | None:
        """Return an optimizer to override the loop's, or None to use the recipe's."""
        return None

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """One update; returns the detached batch loss (no host sync)."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, x, y, ctx)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
