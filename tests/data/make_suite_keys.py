"""Write tests/data/suite_keys.json: every cell key and model key of suite.yaml, and the
hash of every plugin config's resolved form (defaults, each preset, a few ε spellings).

tests/test_suite_keys.py compares the current code against this snapshot, so a change to
config parsing or serialisation that would move a key fails there. Regenerate only after
an intended change of suite.yaml or of a plugin's config (and say so in the commit):

    PYTHONPATH=$PWD python tests/data/make_suite_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("suite_keys.json")

# ε-like values spelled every way a suite may write them: (registry, plugin, values).
EPS_SPELLINGS = [
    ("attack", "pgd", {"step_size": "2/255"}),
    ("attack", "pgd", {"step_size": "ε/20"}),
    ("attack", "pgd", {"step_size": "eps*0.1"}),
    ("attack", "pgd", {"step_size": 1}),
    ("attack", "pgd", {"step_size": None}),
    ("attack", "cw_linf", {"step_size": "1/255"}),
    ("attack", "cw_linf", {"step_size": 0.01}),
    ("attack", "anpgd", {"pgd_eps": "8/255", "step_size": "2/255", "d_max": "32/255"}),
    ("attack", "anpgd", {"pgd_eps": 2, "step_size": 0.25, "d_max": 4}),
    ("defense", "trades", {"eps": "8 / 255", "step_size": "2/255"}),
    ("defense", "trades", {"eps": 2, "step_size": 0.01}),
    ("defense", "trades", {"eps": "0.031"}),
    ("defense", "mart", {"eps": "8/255", "step_size": "2/255"}),
    ("defense", "pgd_at", {"eps": 0.3, "step_size": "1/100"}),
    ("defense", "mma", {"d_max": 0.45, "mineps": "1/255"}),
    ("defense", "atent", {"eps": 0.3, "step_size": 0.01, "gamma": 3}),
    ("defense", "atent", {"gamma": "1/0.0031", "eps": "8/255"}),
    ("defense", "trades_smooth", {"eps": "0.5"}),
]


def plugin_config_keys() -> dict[str, str]:
    from bench.plugins.config import build_config, config_dict, presets_of
    from bench.plugins.registry import ATTACKS, DEFENSES, MODELS
    from bench.suite.spec import stable_hash
    registries = {"attack": ATTACKS, "defense": DEFENSES, "model": MODELS}
    out = {}
    for kind, reg in registries.items():
        for name, cls in reg.items():
            out[f"{kind}/{name}/defaults"] = stable_hash(config_dict(build_config(cls.Config, {})))
            for preset in presets_of(cls.Config):
                cfg = build_config(cls.Config, {"preset": preset})
                out[f"{kind}/{name}/preset={preset}"] = stable_hash(config_dict(cfg))
    for kind, name, values in EPS_SPELLINGS:
        cfg = build_config(registries[kind].get(name).Config, values)
        label = json.dumps(values, sort_keys=True, ensure_ascii=False)
        out[f"{kind}/{name}/{label}"] = stable_hash(config_dict(cfg))
    return out


def current_keys() -> dict:
    from bench.run.plan import expand
    from bench.suite.load import load_suite
    suite = load_suite(ROOT / "suite.yaml")
    return {
        "cells": {c.id: c.key for c in expand(suite)},
        "models": {name: m.key for name, m in suite.models.items()},
        "plugin_configs": plugin_config_keys(),
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.atomic import atomic_write_text
    atomic_write_text(SNAPSHOT, json.dumps(current_keys(), indent=1, sort_keys=True,
                                           ensure_ascii=False) + "\n")
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__":
    main()
