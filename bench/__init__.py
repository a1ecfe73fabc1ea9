"""bench: a declarative benchmark suite and result registry for adversarial robustness.

The engine (this package) knows no training method or attack by name: defenses,
attacks, models and datasets are plugins found through the registries in
`bench.plugins.registry`. See README.md for the commands and ../DESIGN notes for the flow.
"""

__version__ = "0.1.0"
