"""Matrix expansion, include/exclude, tag and glob selection, cell keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.errors import SuiteError
from bench.run.plan import expand, group
from bench.suite.load import load_suite
from tests.test_spec import GOOD, write


def ids(cells):
    return [c.id for c in cells]


def test_cross_product_and_clean_once(tmp_path):
    cells = expand(load_suite(write(tmp_path, GOOD)))
    # clean ignores ε: one cell per model; pgd5: one per ε
    assert ids(cells) == [
        "tiny/m_sgd/clean", "tiny/m_sgd/pgd5/eps=0.1", "tiny/m_sgd/pgd5/eps=8/255",
        "tiny/m_at/clean", "tiny/m_at/pgd5/eps=0.1", "tiny/m_at/pgd5/eps=8/255",
    ]
    jobs = group(cells)
    assert [j.model.name for j in jobs] == ["m_sgd", "m_at"]
    assert all(len(j.cells) == 3 for j in jobs)


def test_exclude_and_include(tmp_path):
    old = "    eval: {n: 64}\n"
    assert old in GOOD
    text = GOOD.replace(old, old + "    exclude:\n      - {model: m_at, attack: pgd5}\n"
                        "      - {eps: 0.1}\n"
                        "    include:\n      - {model: m_at, attack: pgd5, eps: 0.5}\n")
    cells = expand(load_suite(write(tmp_path, text)))
    assert ids(cells) == ["tiny/m_sgd/clean", "tiny/m_sgd/pgd5/eps=8/255", "tiny/m_at/clean",
                          "tiny/m_at/pgd5/eps=0.5"]


def test_tags_and_filters(tmp_path):
    text = GOOD.replace("tables:", "  - name: other\n    tags: [t2]\n    models: [m_sgd]\n"
                                   "    attacks: [pgd5]\n    eps: [0.2]\ntables:", 1)
    suite = load_suite(write(tmp_path, text))
    assert ids(expand(suite, tags=["t2"])) == ["tiny/m_sgd/pgd5/eps=0.2"]
    assert len(expand(suite, tags=["t1"])) == 6
    assert len(expand(suite, tags=["t1", "t2"])) == 7
    assert ids(expand(suite, filters=["*/m_at/pgd5/*"])) == ["tiny/m_at/pgd5/eps=0.1",
                                                            "tiny/m_at/pgd5/eps=8/255"]
    with pytest.raises(SuiteError, match=r"unknown tag 't3' \(did you mean"):
        expand(suite, tags=["t3"])
    with pytest.raises(SuiteError, match="no cell matches"):
        expand(suite, filters=["nothing/*"])


def test_keys_stable_across_processes(tmp_path):
    p = write(tmp_path, GOOD)
    here = [c.key for c in expand(load_suite(p))]
    code = ("import sys; from bench.suite.load import load_suite; from bench.run.plan import expand;"
            f"print(' '.join(c.key for c in expand(load_suite({str(p)!r}))))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()
    assert here == there and len(set(here)) == len(here)


@pytest.mark.parametrize("old,new,changes_model", [
    ("step_size: 0.1}\nmodels", "step_size: 0.11}\nmodels", False),   # attack config
    ("lr: 0.05}", "lr: 0.06}", True),                                  # training recipe
    ("steps: 2}", "steps: 3}", True),                                  # defense config
    ("train_subset: 256", "train_subset: 257", True),                  # dataset
    ("seed: 0", "seed: 1", True),                                      # seed
    ("eval: {n: 64}", "eval: {n: 65}", False),                         # number of examples
    ("version: 1\n", "version: 1\nprecision: bf16\n", True),           # precision
    ("version: 1\n", "version: 1\ncompile: true\n", False),            # compilation
])
def test_any_config_change_changes_the_keys(tmp_path, old, new, changes_model):
    base = expand(load_suite(write(tmp_path, GOOD)))
    assert old in GOOD
    changed = expand(load_suite(write(tmp_path, GOOD.replace(old, new, 1))))
    assert [c.id for c in base] == [c.id for c in changed]
    differ = [a.key != b.key for a, b in zip(base, changed)]
    assert any(differ)
    if changes_model:
        assert base[-1].model.key != changed[-1].model.key
    else:
        assert [c.model.key for c in base] == [c.model.key for c in changed]


def test_limit_and_seed_override(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    base = expand(suite)
    lim = expand(suite, limit=10)
    assert all(c.eval.n == 10 for c in lim)
    assert all(a.key != b.key for a, b in zip(base, lim))
    assert all(a.model.key == b.model.key for a, b in zip(base, lim))
    seeded = expand(suite, seed=5)
    assert all(c.seed == 5 and c.model.seed == 5 for c in seeded)
    assert all(a.model.key != b.model.key for a, b in zip(base, seeded))


def test_conflicting_duplicate_cells_are_an_error(tmp_path):
    text = GOOD.replace("tables:", "  - name: again\n    models: [m_sgd]\n    attacks: [clean]\n"
                                   "    eval: {n: 32}\ntables:", 1)
    with pytest.raises(SuiteError, match="different settings"):
        expand(load_suite(write(tmp_path, text)))


def test_identical_duplicate_cells_merge(tmp_path):
    text = GOOD.replace("tables:", "  - name: again\n    tags: [t9]\n    models: [m_sgd]\n"
                                   "    attacks: [clean]\n    eval: {n: 64}\ntables:", 1)
    cells = expand(load_suite(write(tmp_path, text)))
    c = [c for c in cells if c.id == "tiny/m_sgd/clean"]
    assert len(c) == 1 and set(c[0].tags) == {"t1", "t9"}
