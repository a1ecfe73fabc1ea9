"""Property-based fuzzing of the baseline loader and `check --baseline` (issue 16 §4):
whatever a baseline file holds (a saved baseline with values replaced, keys dropped or
added anywhere, any JSON document, any bytes), `check` ends in exit 0 or 1 with a
verdict, or exit 2 with one sentence; never a traceback or a hang. A document the
loader accepts also turns into records and renders in the report's tables."""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench.errors import BenchError
from bench.leaderboard.baseline import load_baseline
from test_baseline_schema import saved  # noqa: F401  (the shared fixture: a saved baseline)
from tests.cli_runner import run_cli
from test_report import make_db

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tables_engine(tmp_path_factory):
    """A database with paper tables, for the report."""
    d = tmp_path_factory.mktemp("tables")
    engine = make_db(d)
    yield engine
    engine.dispose()


scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.just(-10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode())
           | st.sampled_from(["bench-baseline", "2026-01-01T00:00:00Z", "fp32", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def paths(doc, prefix=()):
    """Every path into the document (keys and list indices)."""
    out = [prefix]
    items = (doc.items() if isinstance(doc, dict)
             else enumerate(doc) if isinstance(doc, list) else [])
    for k, v in items:
        out += paths(v, prefix + (k,))
    return out


def mutate(doc, path, op, value, key):
    """Replace the value at `path`, delete it, or add `key` beside it."""
    if not path:
        return value if op == "replace" else doc
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(last, value)
    return doc


@st.composite
def mutated(draw, base):
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        choices = paths(doc)
        path = draw(st.sampled_from(choices))
        doc = mutate(doc, path, draw(st.sampled_from(["replace", "delete", "insert"])),
                     draw(values), draw(st.text(max_size=8)))
        if not isinstance(doc, (dict, list)):
            break
    return doc


def documents(base):
    header = st.fixed_dictionaries({"format": st.just("bench-baseline"),
                                    "version": st.just(1) | values, "cells": values})
    as_text = lambda d: json.dumps(d, allow_nan=True).encode()    # noqa: E731
    return st.one_of(mutated(base).map(as_text), mutated(base).map(as_text),
                     mutated(base).map(as_text), header.map(as_text), values.map(as_text),
                     st.binary(max_size=64))


def assert_one_verdict_or_one_sentence(rc, out, err):
    assert "Traceback" not in out + err
    if rc in (0, 1):
        assert ("OK: " in out or "FAIL: " in out), out
    else:
        assert rc == 2, (rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and (lines[0].startswith("error: ")
                                    or lines[0].startswith("nothing compared: ")), err


def test_any_baseline_document_ends_in_a_verdict_or_one_sentence(saved, tables_engine):
    d, base = saved
    from bench.leaderboard.baseline import baseline_records
    from bench.leaderboard.store import load_store
    from bench.leaderboard.tables import build_table
    engine = tables_engine
    seen = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(data=documents(base))
    def run(data):
        path = d / "fuzzed.json"
        path.write_bytes(data)
        try:
            doc = load_baseline(path)
        except BenchError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
        else:
            seen["accepted"] += 1
            baseline_records(doc)
            store = load_store(engine, [doc])
            for t in store.tables:
                build_table(store, t)
        rc, out, err = run_cli(["check", "--baseline", str(path), "--db", str(d / "base.sqlite")])
        assert_one_verdict_or_one_sentence(rc, out, err)

    run()
    assert seen["accepted"] and seen["refused"]      # the fuzz reached both outcomes


def test_documents_the_loader_accepts_render_as_a_site(saved, tables_engine, tmp_path):
    """Small edits of optional fields that keep the document valid: the site renders."""
    d, base = saved
    from bench.leaderboard.site import render_site
    engine = tables_engine

    @settings(FUZZ, max_examples=25)
    @given(doc=mutated(base))
    def run(doc):
        path = d / "render.json"
        path.write_text(json.dumps(doc, allow_nan=True))
        try:
            doc = load_baseline(path)
        except BenchError:
            return
        render_site(engine, tmp_path / "site", [doc])

    run()
