"""Plugin registries: datasets, models, defenses, attacks and executors, registered by decorator.

A plugin registers under the name suite.yaml uses::

    @register_attack("pgd")
    class PGD(Attack): ...

The engine looks plugins up by the names it reads from suite.yaml and never imports a
plugin module by name itself: `load_plugins()` imports the plugin packages
(`datasets` live in `bench.data.datasets`; `models`, `defenses`, `attacks`, `executors` are
top-level packages) and any third-party module advertised under the `bench.plugins` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from bench.errors import PluginError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return " (known: " + ", ".join(sorted(choices)[:20]) + ")" if choices else ""


class Registry(Generic[T]):
    """A name → plugin mapping with helpful lookup errors and the defining file:line."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

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

    def get(self, name: str) -> T:
        load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise PluginError(f"unknown {self.kind} {name!r}"
                              f"{did_you_mean(name, list(self._items))}") from None

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        load_plugins()
        return iter(sorted(self._items.items()))

    def origin(self, name: str) -> str:
        obj = self.get(name)
        try:
            file = inspect.getsourcefile(obj)  # type: ignore[arg-type]
            line = inspect.getsourcelines(obj)[1]  # type: ignore[arg-type]
            return f"{file}:{line}"
        except (TypeError, OSError):
            return "?"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model")
DEFENSES: Registry = Registry("defense")
ATTACKS: Registry = Registry("attack")
EXECUTORS: Registry = Registry("executor")

register_dataset = DATASETS.register
register_model = MODELS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_executor = EXECUTORS.register

PLUGIN_PACKAGES = ("bench.data.datasets", "models", "defenses", "attacks", "executors")
ENTRY_POINT_GROUP = "bench.plugins"
_loaded = False


def load_plugins() -> None:
    """Import every module of the plugin packages once, so their decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in PLUGIN_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not info.name.startswith("_"):
                _import_plugin(f"{pkg_name}.{info.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from e


def _import_plugin(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken plugin is named, not buried in a traceback
        global _loaded
        _loaded = False
        raise PluginError(f"plugin module {module} failed to import: {type(e).__name__}: {e}") from e
