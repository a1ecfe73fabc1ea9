"""The architecture stays visible: the engine names no plugin, every plugin is documented,
every command explains itself."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from bench.cli.main import build_parser, main
from bench.plugins.config import build_config, presets_of
from bench.suite.load import load_suite
from bench.plugins.registry import ATTACKS, DEFENSES, EXECUTORS, MODELS
from tests.conftest import REPO


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                docstrings.add(doc)
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value not in docstrings}


def test_the_engine_refers_to_no_plugin_by_name():
    plugins = set(DEFENSES.names()) | set(ATTACKS.names()) | set(MODELS.names()) | set(EXECUTORS.names())
    # names that are also something else: an English word, the optimizer choice of the
    # training recipe, a library whose version provenance records
    plugins -= {"clean", "sgd", "timm"}
    offenders = {}
    for path in sorted((REPO / "bench").rglob("*.py")):
        if "datasets" in path.parts:
            continue
        hits = _string_constants(path) & plugins
        if hits:
            offenders[str(path.relative_to(REPO))] = sorted(hits)
    assert not offenders, f"engine code names plugins: {offenders}"


@pytest.mark.parametrize("registry", [DEFENSES, ATTACKS, MODELS], ids=lambda r: r.kind)
def test_every_plugin_is_documented_and_typed(registry):
    for name, cls in registry.items():
        assert (cls.__doc__ or "").strip(), f"{registry.kind} {name} has no docstring"
        module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()
        assert module_doc, f"{registry.kind} {name}: its file has no docstring naming the source"
        assert dataclasses.is_dataclass(cls.Config), f"{registry.kind} {name}: Config is not a dataclass"
        cls.Config()  # the paper's defaults construct
        for preset in presets_of(cls.Config):  # and so does every named set of values
            build_config(cls.Config, {"preset": preset}, f"{name}.{preset}")


def test_the_paper_rows_of_the_suite_use_their_defenses_presets():
    # Every paper row's defense config is one of its plugin's presets, so the values
    # live (documented) in the plugin and the suite cannot drift from them.
    suite = load_suite(REPO / "suite.yaml")
    rows = {r.model for t in suite.tables.values() for r in t.rows
            if r.model is not None and not r.beyond}
    for name in rows:
        m = suite.models[name]
        if m.defense == "external":   # a released checkpoint ("(published)" rows): nothing to train
            continue
        cls = DEFENSES.get(m.defense).Config
        if not presets_of(cls):
            continue
        built = [build_config(cls, {"preset": p}) for p in presets_of(cls)]
        assert m.defense_config in built, f"{name}: {m.defense} config is none of its presets"


def test_every_command_explains_itself(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = [["run"], ["validate"], ["ls"], ["report"], ["check"], ["data", "fetch"],
                ["data", "verify"], ["baseline", "save"], ["workers"]]
    assert {c[0] for c in commands} == set(sub.choices)
    for cmd in commands:
        with pytest.raises(SystemExit) as ei:
            main(cmd + ["--help"])
        assert ei.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: bench " + " ".join(cmd)) and len(out.splitlines()) > 5


def test_help_and_report_do_not_import_torch(tmp_path):
    """`bench --help` and `bench report` need no torch, whose import alone takes seconds:
    the modules they load (the CLI, the registry, provenance) import it only where it is used."""
    import os
    import subprocess
    import sys

    from bench.db.database import open_db
    open_db(tmp_path / "b.sqlite").dispose()
    code = ("import contextlib, io, sys\n"
            "from bench.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "assert main(['report', '--db', sys.argv[1], '--out', sys.argv[2]]) == 0\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.sqlite"), str(tmp_path / "site")],
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
