"""Plugin registries: datasets, models, defenses, attacks and executors, registered by decorator.

A plugin registers under the name suite.yaml uses::

    @register_attack("pgd")
    class PGD(Attack): ...

The engine looks plugins up by the names it reads from suite.yaml and never imports a
plugin module by name itself: a registry imports the module of its package that registers
a name when the name is first looked up, and the whole package (`load_plugins()`: all of
them) to list its names or to report an unknown one (`datasets` live in
`bench.data.datasets`; `models`, `defenses`, `attacks`, `executors` are top-level packages,
imported only from beside bench itself), with any third-party module advertised under the
`bench.plugins` entry-point group.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Generic, Iterator, TypeVar

from bench.errors import PluginError, one_line, printable

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return " (known: " + ", ".join(sorted(choices)[:20]) + ")" if choices else ""


class Registry(Generic[T]):
    """A name → plugin mapping with helpful lookup errors.

    A lookup imports only what it needs: the name itself if it is registered already, else
    the module of `package` whose source registers it (`_index`), else the whole package
    and the entry points (listing, and an unknown name, need them all).
    """

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._complete = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj and _qualname(old) != _qualname(obj):
                raise PluginError(f"{self.kind} {name!r} is registered twice: "
                                  f"{_qualname(old)} and {_qualname(obj)}")
            self._items[name] = obj
            try:
                setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj
        return deco

    def _find(self, name: str) -> bool:
        if name not in self._items and not self._complete:
            module = _index(self.package).get(name)
            if module is not None:
                _import_plugin(module)
        if name not in self._items:
            self.load_all()
        return name in self._items

    def load_all(self) -> None:
        """Import every module of this registry's package, and the entry points, once."""
        if self._complete:
            return
        pkg = _own_package(self.package)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not info.name.startswith("_"):
                _import_plugin(f"{self.package}.{info.name}")
        _load_entry_points()
        self._complete = True

    def get(self, name: str) -> T:
        if not self._find(name):
            raise PluginError(f"unknown {self.kind} {name!r}"
                              f"{did_you_mean(name, list(self._items))}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return self._find(name)

    def names(self) -> list[str]:
        self.load_all()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self.load_all()
        return iter(sorted(self._items.items()))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


DATASETS: Registry = Registry("dataset", "bench.data.datasets")
MODELS: Registry = Registry("model", "models")
DEFENSES: Registry = Registry("defense", "defenses")
ATTACKS: Registry = Registry("attack", "attacks")
EXECUTORS: Registry = Registry("executor", "executors")
REGISTRIES = (DATASETS, MODELS, DEFENSES, ATTACKS, EXECUTORS)

register_dataset = DATASETS.register
register_model = MODELS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_executor = EXECUTORS.register

PLUGIN_PACKAGES = tuple(r.package for r in REGISTRIES)
ENTRY_POINT_GROUP = "bench.plugins"
_entry_points_loaded = False
_REGISTERS = re.compile(r"""register_\w+\(\s*["']([^"'\\]+)["']\s*\)""")


def load_plugins() -> None:
    """Import every module of the plugin packages once, so their decorators run."""
    for registry in REGISTRIES:
        registry.load_all()


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                              f"{one_line(e)}") from e
    _entry_points_loaded = True


def _import_plugin(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken plugin is named, not buried in a traceback
        raise PluginError(f"plugin module {module} failed to import: {one_line(e)}") from e


@functools.cache
def _index(package: str) -> dict[str, str]:
    """Registered name → module, read from the source of `package`'s modules without
    importing them (`@register_x("name")`); a name it misses is found by importing all."""
    out: dict[str, str] = {}
    for folder in getattr(_own_package(package), "__path__", []):
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for name in _REGISTERS.findall(text):
                out.setdefault(name, f"{package}.{path.stem}")
    return out


def _own_package(package: str) -> ModuleType:
    """Import the plugin package `package`, but only bench's own copy of it.

    `models`, `attacks`, `defenses` and `executors` are top-level names, so a package of
    the same name earlier on sys.path (a `models/` folder in the current directory, common
    in ML projects) would be imported in their place and its code run: refused, before
    anything of it is imported, in one sentence that names it.
    """
    if package.startswith("bench."):
        return importlib.import_module(package)
    import bench
    expected = (Path(bench.__file__).resolve().parents[1] / package).resolve()   # beside bench
    module = sys.modules.get(package)
    if module is not None:
        places = list(getattr(module, "__path__", None) or [getattr(module, "__file__", "?")])
    else:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise PluginError(f"bench's plugin package {package!r} is not installed beside bench "
                              f"({expected} is missing); reinstall bench")
        places = list(spec.submodule_search_locations or [spec.origin or "?"])
    found = [Path(p).resolve() for p in places]
    if found != [expected]:
        raise PluginError(f"{printable(', '.join(map(str, found)))} shadows bench's plugin "
                          f"package {package!r} ({expected}) and is not imported; run bench from "
                          f"another folder, or rename that package")
    return importlib.import_module(package)
