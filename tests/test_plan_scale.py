"""The planner scales (issue 16 §7): include checks are linear, each spec is resolved once
per plan, and the faster planning gives the same cells, ids, keys, tags and entries as the
straightforward one it replaced (kept here as the reference)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import SuiteError
from bench.run.plan import NO_EPS, Cell, cell_id, cell_keys, expand, group, model_keys
from bench.plugins.eps import Eps
from bench.suite.load import load_suite
from bench.suite.spec import AttackSpec, ModelSpec, stable_hash

HEAD = """\
version: 1
seed: 0
datasets:
  tiny: {plugin: mnist, train_subset: 256}
attacks:
  clean: {plugin: clean}
  pgd: {plugin: pgd, config: {norm: linf, steps: 2, step_size: 0.1}}
  pgd_b: {plugin: pgd, config: {norm: linf, steps: 3, step_size: 0.1}}
models:
  m0: {dataset: tiny, arch: small_cnn, defense: sgd, train: {epochs: 1, batch_size: 64, lr: 0.05}}
  m1: {base: m0, defense: pgd_at, defense_config: {eps: 0.3, step_size: 0.1, steps: 2}}
  m2: {base: m0, train: {lr: 0.01, init_from: "model:m0"}}
matrix:
"""


def reference_expand(suite) -> list[tuple[str, str, list[str], list[str]]]:
    """The expansion before issue 16 §7 (a search of the triples so far for each include,
    each key from `stable_hash(cell.resolved())`): (id, key, tags, entries) of each cell."""
    cells: dict[str, list] = {}
    for entry in suite.matrix:
        triples = []
        for m in entry.models:
            for a in entry.attacks:
                for e in entry.eps if suite.attacks[a].cls.uses_eps else [NO_EPS]:
                    if not any(x.matches(m, a, e) for x in entry.exclude):
                        triples.append((m, a, e))
        triples += [t for t in entry.include if t not in triples]
        for m, a, e in triples:
            model, attack = suite.models[m], suite.attacks[a]
            seed = entry.seed if entry.seed is not None else suite.seed
            e = e if attack.cls.uses_eps else NO_EPS
            cell = Cell(cell_id(model, attack, e), model, attack, e, entry.eval, seed, entry.smoke,
                        suite.precision, suite.compile)
            key = stable_hash(cell.resolved())
            old = cells.get(cell.id)
            if old is None:
                cells[cell.id] = [cell.id, key, list(entry.tags), [entry.name]]
            elif old[1] == key:
                old[2] += [t for t in entry.tags if t not in old[2]]
                old[3] += [x for x in [entry.name] if x not in old[3]]
            else:
                raise SuiteError("different settings")
    return [tuple(c) for c in cells.values()]


def planned(suite) -> list[tuple[str, str, list[str], list[str]]]:
    cells = expand(suite)
    assert cell_keys(cells) == [c.key for c in cells]
    return [(c.id, c.key, list(c.tags), list(c.entries)) for c in cells]


EPS = ["0.1", "0.2", "8/255", "0.3"]
match = st.fixed_dictionaries({}, optional={"model": st.sampled_from(["m0", "m1", "m2"]),
                                            "attack": st.sampled_from(["clean", "pgd", "pgd_b"]),
                                            "eps": st.sampled_from(EPS + ["0"])}).filter(bool)
include = st.fixed_dictionaries({"model": st.sampled_from(["m0", "m1", "m2"]),
                                 "attack": st.sampled_from(["clean", "pgd", "pgd_b"]),
                                 "eps": st.sampled_from(EPS + ["0.5", "0"])})   # "0": clean's NO_EPS
entry = st.fixed_dictionaries({
    "models": st.lists(st.sampled_from(["m0", "m1", "m2"]), min_size=1, max_size=3),
    "attacks": st.lists(st.sampled_from(["clean", "pgd", "pgd_b"]), min_size=1, max_size=3),
    "eps": st.lists(st.sampled_from(EPS), min_size=1, max_size=3),
    "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
    "n": st.sampled_from([16, 16, 16, 32]),            # mostly equal: duplicates merge
    "include": st.lists(include, max_size=4),
    "exclude": st.lists(match, max_size=3),
})


def yaml_of(entries: list[dict]) -> str:
    out = [HEAD]
    for i, e in enumerate(entries):
        out.append(f"  - name: e{i}\n    tags: [{', '.join(e['tags'])}]\n"
                   f"    models: [{', '.join(e['models'])}]\n    attacks: [{', '.join(e['attacks'])}]\n"
                   f"    eps: [{', '.join(repr(x) for x in e['eps'])}]\n    eval: {{n: {e['n']}}}\n")
        for key in ("include", "exclude"):
            if e[key]:
                out.append(f"    {key}:\n" + "".join(
                    "      - {" + ", ".join(f"{k}: {v!r}" for k, v in m.items()) + "}\n" for m in e[key]))
    return "".join(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(entry, min_size=1, max_size=3))
def test_expand_matches_the_reference_expansion(tmp_path, entries):
    """Same cells in the same order, same ids, keys, tags and entries (merged duplicates
    included: the tags lists an entry's cells share are never changed in place), or the
    same conflict, as the quadratic expansion it replaced."""
    p = tmp_path / "suite.yaml"
    p.write_text(yaml_of(entries))
    suite = load_suite(p)
    try:
        want = reference_expand(suite)
    except SuiteError:
        with pytest.raises(SuiteError, match="different settings"):
            expand(suite)
        return
    if not want:                                  # everything excluded
        with pytest.raises(SuiteError, match="no cell matches"):
            expand(suite)
        return
    assert planned(suite) == want


def many_includes(tmp_path, n: int) -> ModelSpec:
    """One model, one attack, n ε in the cross product and n includes: half of them cells
    of the cross product again (ε equal as values and literals), half new ε."""
    eps = [f"{(i + 1) / 10_000:g}" for i in range(n)]
    inc = [eps[i] if i % 2 == 0 else f"{1 + i / 10_000:g}" for i in range(n)]
    text = (HEAD + f"  - name: big\n    models: [m0]\n    attacks: [pgd]\n    eps: [{', '.join(eps)}]\n"
            "    eval: {n: 16}\n    include:\n"
            + "".join(f"      - {{model: m0, attack: pgd, eps: {e}}}\n" for e in inc))
    p = tmp_path / "big.yaml"
    p.write_text(text)
    return load_suite(p)


def test_include_checks_are_linear(tmp_path, monkeypatch):
    """Before: each include was searched for in the list of the entry's triples, one
    Eps comparison per triple of the same model and attack: n² (here 1.5·10⁶) for n = 1000."""
    n = 1000
    suite = many_includes(tmp_path, n)
    calls = {"eq": 0}
    eq = Eps.__eq__

    def counting_eq(self, other):
        calls["eq"] += 1
        return eq(self, other)
    monkeypatch.setattr(Eps, "__eq__", counting_eq)
    cells = expand(suite)
    monkeypatch.undo()
    assert len(cells) == n + n // 2                 # the repeated half merged away
    assert calls["eq"] <= 4 * n, f"{calls['eq']} ε comparisons for {n} includes"


def test_each_spec_is_resolved_once_per_plan(tmp_path, monkeypatch):
    """Before: every key of a cell resolved its model twice (config and model key) and its
    attack once, and grouping once more per cell; 3-5 resolutions of the model per cell as
    `ls` and `run` use them. Now once per spec (and once per model it starts from)."""
    text = HEAD + ("  - name: one\n    models: [m0, m1, m2]\n    attacks: [clean, pgd, pgd_b]\n"
                   "    eps: [0.1, 0.2, 0.3, 0.4, 0.5]\n    eval: {n: 16}\n"
                   "  - name: two\n    tags: [t]\n    models: [m1]\n    attacks: [pgd]\n"
                   "    eps: [0.1, 0.7]\n    eval: {n: 16}\n")
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    suite = load_suite(p)
    want = reference_expand(suite)
    counts: dict[str, int] = {}

    def counting(cls, name):
        orig = cls.resolved

        def resolved(self):
            counts[f"{name} {self.name}"] = counts.get(f"{name} {self.name}", 0) + 1
            return orig(self)
        monkeypatch.setattr(cls, "resolved", resolved)
    counting(ModelSpec, "model")
    counting(AttackSpec, "attack")
    cells = expand(suite)
    got = [(c.id, c.key, list(c.tags), list(c.entries)) for c in cells]   # what ls and run read
    jobs = group(cells)
    keys = model_keys(cells) + [j.key for j in jobs] + [c.model_key for c in cells]
    monkeypatch.undo()
    assert got == want and len(cells) == 3 * (1 + 2 * 5) + 1
    assert [j.key for j in jobs] == model_keys(cells) == [suite.models[m].key for m in ("m0", "m1", "m2")]
    assert set(keys) == {j.key for j in jobs}
    # m2 starts from m0: resolving m2 resolves m0 for its key once more
    assert counts == {"model m0": 2, "model m1": 1, "model m2": 1,
                      "attack clean": 1, "attack pgd": 1, "attack pgd_b": 1}, counts


@pytest.mark.parametrize("kw", [{}, {"seed": 3}, {"limit": 7}, {"tags": ["table2"]}])
def test_keys_of_the_repository_suite_are_those_of_the_resolved_configs(kw):
    """Every kind of model of suite.yaml (released checkpoints, early stopping, fine-tuning
    from another model): the key is sha256 of the resolved config, as it always was."""
    from tests.conftest import REPO
    cells = expand(load_suite(REPO / "suite.yaml"), **kw)
    want = [stable_hash(c.resolved()) for c in cells]
    assert [c.key for c in cells] == want == cell_keys(cells)
    assert [c.model_key for c in cells] == [c.model.key for c in cells]


def test_a_changed_cell_has_the_key_of_its_new_config(tmp_path):
    p = tmp_path / "suite.yaml"
    p.write_text(HEAD + "  - name: one\n    models: [m0]\n    attacks: [pgd]\n    eps: [0.1, 0.2]\n"
                 "    eval: {n: 16}\n")
    a, b = expand(load_suite(p))
    before = a.key
    a.eval = dataclasses.replace(a.eval, n=17)
    a.seed = 5
    assert a.key != before and a.key == stable_hash(a.resolved()) == cell_keys([a, b])[0]
    c = dataclasses.replace(b, eps=Eps(0.25, "0.25"))
    assert c.key == stable_hash(c.resolved()) != b.key
