"""AutoAttack, the standard version (Croce & Hein, ICML 2020), through `pyautoattack`.

Source: PyPI `pyautoattack` 0.2.0, the authors' packaging of `fra31/auto-attack`
(anchors §3 "AutoAttack standard version"): `AutoAttack(model, *, attacks=None,
device, eps, norm, seed, version)` and `run_standard_evaluation(x, y, /, *,
batch_size, state_path=None) -> (x_adv, y_adv)`. `standard` = the cascade APGD-CE →
APGD-T (9 targets) → FAB-T (9 targets) → Square (5000 queries), 100 iterations each,
on still-robust points; `rand` = APGD-CE + APGD-DLR with EoT over 20 draws (for
randomised defenses). Always the library's own attacks and budgets — never a
reduced-iteration imitation under this name (cf. torchattacks' 10-step "AutoAttack").

The seed is explicit (the library's default `None` is `time.time()` per attack).
AutoAttack reseeds torch's global generator; we fork the RNG state around the call so
the caller's random stream is untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from bench.plugins.attack import Attack
from bench.errors import BenchError
from bench.plugins.registry import register_attack

_NORMS = {"linf": "Linf", "l2": "L2"}


def _autoattack_class():
    try:
        from pyautoattack import AutoAttack
    except ImportError:  # pragma: no cover - depends on the environment
        raise BenchError("the autoattack attack needs the `pyautoattack` package "
                         "(pip install pyautoattack)") from None
    return AutoAttack


@register_attack("autoattack")
class AutoAttackStandard(Attack):
    """Standard AutoAttack (pyautoattack); seed 0, Linf, version standard."""

    strength = 100   # the reference: strongest declared attack (see Attack.strength)
    loss = "mixed"   # APGD-CE, then margin losses (APGD-T's DLR, FAB-T) and Square (both versions)

    @dataclass
    class Config:
        norm: Literal["linf", "l2"] = "linf"
        version: Literal["standard", "rand"] = "standard"
        seed: int = 0
        batch_size: int = 500            # the library's batch (its default 250)
        verbose: bool = False            # pass the library's per-attack log lines through

        def __post_init__(self):
            if self.batch_size < 1:
                raise ValueError("batch_size must be ≥ 1")

    def perturb(self, model, x, y, eps):
        AutoAttack = _autoattack_class()
        c = self.config
        logger = logging.getLogger("auto-attack")
        level = logger.level
        if not c.verbose:
            logger.setLevel(logging.WARNING)   # keep its check warnings, drop progress lines
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                adversary = AutoAttack(model, device=x.device, eps=float(eps), norm=_NORMS[c.norm],
                                       seed=c.seed, version=c.version)
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=c.batch_size)
        finally:
            logger.setLevel(level)
        return x_adv.detach()
