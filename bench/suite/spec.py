"""The declarative side of a suite: the dataclasses `bench.suite.load` fills from suite.yaml
(datasets, models, attacks, matrix entries, the suite) and `stable_hash`, the sha256 of a
resolved config that every model and cell key is.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from bench.plugins.config import config_dict
from bench.checkpoints.download import RemoteCheckpoint
from bench.plugins.eps import Eps
from bench.suite.recipe import TRAIN_LOOP_VERSION, EvalConfig, TrainConfig
from bench.plugins.registry import ATTACKS, DATASETS, DEFENSES
from bench.suite.tables import Column, TableSpec  # noqa: F401  (Column: re-exported)

EXTERNAL_DEFENSE = "external"   # the defense of a model that only evaluates a released checkpoint


# torch.compile's modes a suite may name (`compile_mode:`; bench.run.precision applies them)
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")

@dataclass
class DatasetSpec:
    name: str
    plugin: str
    train_subset: int | None = None

    def resolved(self) -> dict:
        return {"plugin": self.plugin, "train_subset": self.train_subset}


@dataclass
class ModelSpec:
    name: str
    dataset: DatasetSpec
    arch: str
    arch_config: Any
    defense: str
    defense_config: Any
    train: TrainConfig
    seed: int
    label: str
    checkpoint: str | RemoteCheckpoint | None   # local path, or URL (+ sha256) to download
    precision: str
    early_stopping_attack: "AttackSpec | None" = None
    init_model: "ModelSpec | None" = None     # train.init_from: "model:NAME"

    def resolved(self) -> dict:
        """Everything that determines the trained weights (what the model key hashes)."""
        from bench.plugins.model import split_arch
        from bench.plugins.registry import MODELS
        arch_cls = MODELS.get(split_arch(self.arch)[0])
        train = config_dict(self.train)
        if self.early_stopping_attack is not None:
            train["early_stopping"]["attack"] = self.early_stopping_attack.resolved()
        if self.init_model is not None:
            train["init_from"] = {"model_key": self.init_model.key}
        return {
            "dataset": self.dataset.resolved(),
            "arch": self.arch, "arch_version": getattr(arch_cls, "version", "1"),
            "arch_config": config_dict(self.arch_config),
            "defense": self.defense,
            "defense_version": ("1" if self.defense == EXTERNAL_DEFENSE
                                else getattr(DEFENSES.get(self.defense), "version", "1")),
            "defense_config": config_dict(self.defense_config),
            "train": train, "train_loop_version": TRAIN_LOOP_VERSION,
            "seed": self.seed, "precision": self.precision,
            "checkpoint": (self.checkpoint.resolved() if isinstance(self.checkpoint, RemoteCheckpoint)
                           else self.checkpoint),
        }

    @property
    def key(self) -> str:
        return stable_hash(self.resolved())

    def build(self):
        """The untrained network of this model (on the CPU)."""
        from bench.plugins.model import build_model
        return build_model(self.arch, config_dict(self.arch_config),
                           DATASETS.get(self.dataset.plugin).info)

    def plugin(self):
        """The model plugin instance (its `adapt_state_dict` renames released checkpoints)."""
        from bench.plugins.model import split_arch
        from bench.plugins.registry import MODELS
        return MODELS.get(split_arch(self.arch)[0])(self.arch_config)


@dataclass
class AttackSpec:
    name: str
    plugin: str
    config: Any
    label: str

    @property
    def cls(self):
        return ATTACKS.get(self.plugin)

    @property
    def norm(self) -> str:
        return getattr(self.config, "norm", "none" if not self.cls.uses_eps else "linf")

    def resolved(self) -> dict:
        return {"plugin": self.plugin, "version": getattr(self.cls, "version", "1"),
                "config": config_dict(self.config)}

    def build(self):
        return self.cls(copy.deepcopy(self.config))


@dataclass
class Match:
    model: str | None = None
    attack: str | None = None
    eps: Eps | None = None

    def matches(self, model: str, attack: str, eps: Eps) -> bool:
        return ((self.model is None or self.model == model)
                and (self.attack is None or self.attack == attack)
                and (self.eps is None or self.eps.value == eps.value))


@dataclass
class MatrixEntry:
    name: str
    tags: list[str]
    models: list[str]
    attacks: list[str]
    eps: list[Eps]
    eval: EvalConfig
    smoke: bool
    seed: int | None
    include: list[tuple[str, str, Eps]]
    exclude: list[Match]


@dataclass
class Suite:
    path: str
    name: str
    seed: int
    precision: str
    compile: bool
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelSpec]
    attacks: dict[str, AttackSpec]
    matrix: list[MatrixEntry]
    tables: dict[str, TableSpec]
    sha256: str = ""
    tags: set[str] = field(default_factory=set)
    compile_mode: str = "auto"   # torch.compile mode when compile is true (bench.run.precision)
    executors: dict[str, dict] = field(default_factory=dict)   # options per executor name


def stable_hash(obj: Any) -> str:
    import json
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()

