"""Property-based fuzzing of the suite parser (issue 16 §4): any document a user can hand
`bench` — random YAML text, or random values under the schema's real keys — ends in a
`Suite` whose cells all have keys, or in one `BenchError`; never another exception, never a
hang. ε literals likewise end in a finite, bounded `Eps` or a ValueError."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.plugins.registry import ATTACKS, DEFENSES
from bench.run.plan import expand
from bench.plugins.eps import MAX_EPS, MAX_LITERAL, parse_eps
from bench.suite.load import load_suite
from bench.suite.recipe import TrainConfig
from tests.test_suite_hostile import deadline

SETTINGS = settings(max_examples=100, deadline=10_000, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

def mostly(good, bad, odds: int = 4):
    """`good` in `odds` draws of `odds + 1`, else `bad`: documents must get past their first
    key to exercise the rest of the loader."""
    return st.sampled_from([good] * odds + [bad]).flatmap(lambda s: s)


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


MODELS, ATTACKS_ = ["m", "m2"], ["clean", "pgd5", "a"]
NAMES = MODELS + ATTACKS_ + ["mnist", "t", "main", "x" * 120, "../up", ""]
SMALL = st.one_of(st.integers(-3, 300), st.floats(-1, 1000))
EDGES = st.sampled_from([2**63, -2**63 - 1, 10**30, math.nan, math.inf, -math.inf, 1e300])
NUMBERS = mostly(SMALL, EDGES, odds=15)
EPS_TEXT = st.one_of(
    st.from_regex(r"\A ?[0-9]{0,6}(\.[0-9]{0,4})?([eE][-+]?[0-9]{1,12})?( ?/ ?[0-9]{0,6}([eE][-+]?[0-9]{1,12})?)?\Z"),
    st.sampled_from(["8/255", "0.031", "1e400", "1e999999999/3", "0/0", "1/0", ".", "nan", "inf"]))
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)   # printable
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.sampled_from(NAMES), EPS_TEXT,
                    st.sampled_from(["model:m", "model:m2", "linf", "l2", "auto", "test"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(NAMES), TEXT), inner, max_size=4)), max_leaves=12)
# keys that are not text, text with control characters: refused by the YAML layer
NOISE = st.one_of(st.text(max_size=6), st.integers(), st.none(), st.floats())
NOISY = st.recursive(st.one_of(SCALARS, NOISE), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(NOISE, TEXT), inner, max_size=3)),
    max_leaves=8)


def _mapping_of(fields: dict):
    """A mapping of some of `fields` (name → strategy of plausible values), each value
    sometimes anything at all, and sometimes a key that is not a field."""
    keys = st.sampled_from(sorted(fields))
    pairs = st.lists(st.tuples(keys, st.nothing()) if not fields else
                     keys.flatmap(lambda k: st.tuples(st.just(k), mostly(fields[k], VALUES))),
                     max_size=4)
    extra = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=1)
    return st.tuples(pairs, mostly(st.just({}), extra)).map(lambda t: {**dict(t[0]), **t[1]})


def _names(names: list[str]):
    return mostly(st.one_of(st.sampled_from(names), st.lists(st.sampled_from(names), min_size=1,
                                                             max_size=3)), st.sampled_from(NAMES))


def _config_values(cls) -> dict:
    """Plausible values per field of a typed config: small numbers, short texts, lists."""
    return {f: st.one_of(SMALL, st.booleans(), st.sampled_from(["linf", "l2", "box", "zero"]),
                         st.lists(st.integers(1, 20), max_size=3)) for f in _fields(cls)}


TRAIN = {**_config_values(TrainConfig), "optimizer": st.sampled_from(["sgd", "adam"]),
         "epochs": st.integers(0, 3), "batch_size": st.integers(1, 64), "init_from": st.sampled_from(
             ["model:m", "model:m2", "model:zz"])}
EVAL = {"split": st.sampled_from(["test", "train"]), "n": st.integers(-1, 64),
        "batch_size": st.one_of(st.integers(0, 64), st.just("auto"))}
ATTACK = st.fixed_dictionaries(
    {"plugin": mostly(st.sampled_from(["clean", "pgd"]), st.sampled_from(NAMES))},
    optional={"config": _mapping_of(_config_values(ATTACKS.get("pgd").Config)),
              "label": mostly(TEXT, SCALARS), "base": st.sampled_from(ATTACKS_)})
MODEL = st.fixed_dictionaries(
    {"dataset": mostly(st.just("mnist"), st.sampled_from(NAMES)),
     "arch": mostly(st.just("small_cnn"), st.sampled_from(NAMES)),
     "defense": mostly(st.sampled_from(["sgd", "pgd_at"]), st.sampled_from(["external"] + NAMES))},
    optional={"defense_config": _mapping_of(_config_values(DEFENSES.get("pgd_at").Config)),
              "train": _mapping_of(TRAIN), "seed": mostly(st.integers(0, 9), SCALARS),
              "label": mostly(TEXT, SCALARS), "base": st.sampled_from(MODELS),
              "checkpoint": st.one_of(VALUES, st.fixed_dictionaries({"url": TEXT}))})
MATCH = _mapping_of({"model": st.sampled_from(MODELS), "attack": st.sampled_from(ATTACKS_),
                     "eps": EPS_TEXT})
ENTRY = st.fixed_dictionaries(
    {"models": _names(MODELS), "attacks": _names(ATTACKS_)},
    optional={"name": mostly(st.sampled_from(["main", "e2"]), SCALARS),
              "eps": st.one_of(EPS_TEXT, NUMBERS, st.lists(st.one_of(EPS_TEXT, NUMBERS), max_size=3)),
              "eval": _mapping_of(EVAL), "seed": mostly(st.integers(0, 9), SCALARS),
              "smoke": mostly(st.booleans(), SCALARS), "tags": _names(["t1", "t2"]),
              "include": mostly(st.lists(MATCH, max_size=2), VALUES),
              "exclude": mostly(st.lists(MATCH, max_size=2), VALUES)})
COLUMN = st.fixed_dictionaries({"attack": mostly(st.sampled_from(ATTACKS_), st.sampled_from(NAMES))},
                               optional={"eps": EPS_TEXT, "label": mostly(TEXT, SCALARS),
                                         "beyond": st.booleans()})
ROW = st.one_of(st.sampled_from(MODELS), _mapping_of(
    {"model": st.sampled_from(MODELS), "reference": st.sampled_from(NAMES), "label": TEXT,
     "beyond": st.booleans(), "info": VALUES, "block": TEXT}))
TABLE = st.fixed_dictionaries(
    {"rows": mostly(st.lists(ROW, min_size=1, max_size=3), VALUES),
     "columns": st.lists(COLUMN, min_size=1, max_size=3)},
    optional={"tolerance": mostly(SMALL, SCALARS), "reported": VALUES, "reported_by": VALUES,
              "source": TEXT, "orientation": st.sampled_from(["rows", "transposed", "attack_by_eps", "x"]),
              "info": VALUES, "order": SMALL, "title": TEXT})
DOCUMENT = st.fixed_dictionaries(
    {"version": mostly(st.just(1), SCALARS, odds=15),
     "attacks": st.dictionaries(st.sampled_from(ATTACKS_), ATTACK, min_size=1, max_size=3),
     "models": st.dictionaries(st.sampled_from(MODELS), MODEL, min_size=1, max_size=2),
     "matrix": st.lists(ENTRY, min_size=1, max_size=2)},
    optional={"seed": mostly(st.integers(0, 9), SCALARS), "precision": mostly(st.just("fp32"), SCALARS),
              "compile": mostly(st.booleans(), SCALARS), "name": mostly(TEXT, SCALARS),
              "defaults": _mapping_of({"train": _mapping_of(TRAIN), "eval": _mapping_of(EVAL)}),
              "datasets": st.dictionaries(st.sampled_from(NAMES), _mapping_of(
                  {"plugin": st.just("mnist"), "train_subset": SMALL}), max_size=2),
              "tables": st.dictionaries(st.sampled_from(["t", "t2"] + NAMES), TABLE, max_size=2),
              "executors": VALUES, "description": mostly(VALUES, NOISY)})

# YAML text with the characters that carry its structure: anchors, aliases, merges, tags
YAML_TEXT = st.lists(st.sampled_from(list("[]{}:,-&*!|>'\"#?<~.=%\\ \n\t\x1baemx019") +
                                     ["<<: *a", "&a ", "*a", "!!set ", "!!binary ", "1e400", "models:",
                                      "attacks:", "  ", "\n- ", ".nan", "9" * 30]),
                     max_size=40).map("".join)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load_and_key(path) -> None:
    """load_suite + expand + every cell key (what `ls` and `run` compute): a Suite or a
    BenchError, nothing else."""
    try:
        suite = load_suite(path)
        for cell in expand(suite):
            assert len(cell.key) == 64
    except BenchError:
        pass


@SETTINGS
@given(doc=DOCUMENT)
def test_any_schema_shaped_document_is_a_suite_or_one_error(folder, doc):
    path = folder / "doc.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with deadline(60):
        _load_and_key(path)


@SETTINGS
@given(head=st.sampled_from(["", "version: 1\n", "version: 1\nmodels:\n  m: "]), body=YAML_TEXT)
def test_any_yaml_text_is_a_suite_or_one_error(folder, head, body):
    path = folder / "text.yaml"
    path.write_text(head + body, encoding="utf-8")
    with deadline(60):
        _load_and_key(path)


@SETTINGS
@given(raw=st.one_of(EPS_TEXT, NUMBERS, st.text(max_size=80), VALUES))
def test_an_eps_is_finite_and_bounded_or_a_value_error(raw):
    with deadline(60):
        try:
            eps = parse_eps(raw)
        except ValueError:
            return
    assert math.isfinite(eps.value) and 0 <= eps.value <= MAX_EPS
    assert len(eps.literal) <= MAX_LITERAL or not isinstance(raw, str)
