"""The common base of model, defense, attack and executor plugins.

A plugin is a class registered by name (`@register_attack("pgd")` sets `registry_name`)
with

* `Config`: a dataclass of its options whose defaults are the paper's values, filled
  strictly from suite.yaml by `bench.plugins.config.build_config` (ε-like options are
  typed `EpsValue`, which that parsing turns into floats that remember their literal);
* `version`: part of every cell and model key that uses the plugin; bump it when the same
  config starts to compute something different, so old results are not reused.

The kind-specific contracts (what `perturb`, `loss`, `build` or `launch` must do) are in
`attack.py`, `defense.py`, `model.py` and `executor.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from bench.plugins.config import build_config


@dataclasses.dataclass
class NoConfig:
    """This plugin takes no options."""


class Plugin:
    """A registered plugin with a typed config (see the module docstring)."""

    registry_name: ClassVar[str] = ""   # set by the registry's decorator
    Config: ClassVar[type] = NoConfig
    version: ClassVar[str] = "1"

    def __init__(self, config: Any = None):
        """`config`: an instance of `Config`, a mapping (built strictly, as from
        suite.yaml) or None for the defaults."""
        if config is None:
            config = self.Config()
        elif isinstance(config, Mapping):
            config = build_config(self.Config, config)
        self.config = config

    def describe(self) -> str:
        """The registered name, or the class name of an unregistered plugin."""
        return self.registry_name or type(self).__name__
