"""The loader's checking helper: knows the suite file, raises located `SuiteError`s, and
reads the common shapes (mappings, typed values, names, seeds, ε, plugin configs).

`bench.suite.load` and `bench.suite.tables` call it as `ctx`.
"""

from __future__ import annotations

import re
from typing import Any

from bench.errors import PluginError, SuiteError
from bench.plugins.config import ConfigError, build_config
from bench.plugins.registry import did_you_mean
from bench.plugins.eps import Eps, parse_eps
from bench.suite.yamlload import LineDict, LineList

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)
MAX_NAME = 100          # names become parts of cell ids, HTML ids and file names (255 bytes)
MAX_SEED = 2**63 - 1    # a signed 64-bit database column; numpy folds it to 32 bits itself


class Ctx:
    """Error helper: knows the file; `err(node, key, msg)` raises at the key's line."""

    def __init__(self, path: str):
        self.path = path

    def err(self, node: Any, key: Any, msg: str, keypath: str | None = None):
        line = None
        if isinstance(node, LineDict):
            line = node.line_of(key)
        elif isinstance(node, LineList) and isinstance(key, int):
            line = node.line_of(key)
        elif hasattr(node, "line"):
            line = node.line
        raise SuiteError(msg, file=self.path, line=line, key=keypath or (str(key) if key is not None else None))

    def mapping(self, node: Any, where: str, parent: Any = None, pkey: Any = None) -> LineDict:
        if node is None:
            d = LineDict()
            d.line, d.key_lines = getattr(parent, "line", 0), {}
            return d
        if not isinstance(node, dict):
            self.err(parent, pkey, f"must be a mapping, got {type(node).__name__}", where)
        return node

    def check_keys(self, node: LineDict, allowed: set[str], where: str):
        for k in node:
            if k not in allowed:
                self.err(node, k, f"unknown key{did_you_mean(str(k), sorted(allowed))}",
                         f"{where}.{k}" if where else str(k))

    def list_of_str(self, node: LineDict, key: str, where: str, default=None) -> list[str]:
        v = node.get(key, default)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.err(node, key, "must be a string or a list of strings", f"{where}.{key}")
        return list(v)

    def typed(self, node: LineDict, key: str, tp: type | tuple, where: str, default=None):
        v = node.get(key, default)
        if v is None:
            return default
        ok = isinstance(v, tp) and not (isinstance(v, bool) and bool not in (tp if isinstance(tp, tuple) else (tp,)))
        if not ok:
            names = " or ".join(t.__name__ for t in (tp if isinstance(tp, tuple) else (tp,)))
            self.err(node, key, f"must be {names}, got {v!r}", f"{where}.{key}")
        return v

    def name(self, node: Any, key: Any, name: Any, kind: str, where: str) -> str:
        """A name that becomes part of cell ids and file names: short, and only letters,
        digits, '_', '.', '-' (not first: '.', '-'), so a report never writes a file name
        that is too long, hidden, or a path."""
        if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
            text = str(name)
            short = text if len(text) <= 40 else f"{text[:40]}… ({len(text)} characters)"
            if isinstance(name, str) and name:
                where = where.replace(name, short)          # the key path names it once
            self.err(node, key, f"{kind} name {short!r} must be 1 to {MAX_NAME} letters, digits, "
                                f"'_', '.' or '-' (it becomes part of cell ids and file names)", where)
        return name

    def seed(self, node: LineDict, key: str, where: str, default: int | None) -> int | None:
        v = self.typed(node, key, int, where, default)
        if v is not None and not 0 <= v <= MAX_SEED:
            self.err(node, key, f"must be a seed in [0, 2**63 - 1], got {v}",
                     f"{where}.{key}" if where != key else key)
        return v

    def ref(self, node: Any, key: Any, name: Any, known, kind: str, where: str) -> str:
        """`name` must be one of `known` (models, attacks, …): else a located error with a suggestion."""
        if not isinstance(name, str) or name not in known:
            self.err(node, key, f"unknown {kind} {name!r}{did_you_mean(str(name), list(known))}", where)
        return name

    def eps(self, node: Any, key: Any, raw: Any, where: str) -> Eps:
        try:
            return parse_eps(raw)
        except ValueError as e:
            self.err(node, key, str(e), where)

    def config(self, cls: type, node: Any, parent: LineDict, key: str, where: str):
        try:
            return build_config(cls, node if node is not None else {}, "")
        except ConfigError as e:
            # point at the offending sub-key's line when we can
            sub = e.path.split(".")[0].split("[")[0] if e.path else None
            target, tkey = (node, sub) if isinstance(node, LineDict) and sub in node else (parent, key)
            self.err(target, tkey, e.message, f"{where}.{e.path}" if e.path else where)

    def plugin(self, registry, name: Any, node: LineDict, key: str, where: str):
        if not isinstance(name, str):
            self.err(node, key, f"must be a {registry.kind} name, got {name!r}", where)
        try:
            return registry.get(name)
        except PluginError as e:
            self.err(node, key, str(e), where)
