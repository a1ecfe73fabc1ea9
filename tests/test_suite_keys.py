"""Every cell key and model key of suite.yaml, and the resolved form of every plugin
config (defaults, presets, ε spellings), stay what they were.

The snapshot tests/data/suite_keys.json was written by tests/data/make_suite_keys.py on
main at 8e83fd2, before the plugin contract moved ε parsing from the plugins'
`__post_init__` into config coercion. A key that moves orphans every stored result of its
cell; after an intended change (suite.yaml, a plugin version or default) rerun the script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_suite_keys import SNAPSHOT, current_keys  # noqa: E402


@pytest.fixture(scope="module")
def keys():
    return current_keys(), json.loads(SNAPSHOT.read_text(encoding="utf-8"))


@pytest.mark.parametrize("part", ["cells", "models", "plugin_configs"])
def test_keys_match_the_snapshot(keys, part):
    now, then = keys[0][part], keys[1][part]
    missing = sorted(set(then) - set(now))
    moved = sorted(k for k in set(then) & set(now) if now[k] != then[k])
    assert not missing, f"{len(missing)} {part} gone, e.g. {missing[:3]}"
    assert not moved, f"{len(moved)} {part} keys moved, e.g. {moved[:3]}"
    assert then    # the snapshot is not empty
