"""Typed plugin configs: a dataclass per plugin, filled strictly from suite.yaml.

Every plugin declares `Config`, a dataclass whose defaults are the paper's values.
`build_config` turns a mapping into that dataclass, refusing unknown keys (with a
"did you mean") and values of the wrong type, so a typo in suite.yaml never silently
falls back to a default.

A Config may also carry `PRESETS: ClassVar[dict[str, dict]]`, named sets of values (a
paper's settings per table). `{preset: NAME, key: value}` starts from that set and lets
the explicit keys override it; only the resolved values are kept, so a preset and the
same values written out give the same config (and the same cell keys).

ε-like options (radii, step sizes, pixel units) are typed `EpsValue` (kept as written:
0.031 and "8/255" are different keys), `EpsNumber` (kept as its number) or `RelativeEps`
("ε/20", a step relative to the cell's ε). Coercion parses them, so a plugin reads a
float; `config_dict` writes what the key has always hashed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from typing import Any, Literal, Mapping, Union

from bench.plugins.registry import did_you_mean
from bench.plugins.eps import parse_eps


class ConfigError(ValueError):
    """A bad config value; `path` is the dotted key inside the config mapping."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


# ----------------------------------------------------------------------------- ε options

def _finite_eps(raw: Any) -> float:
    """`parse_eps`'s value, also refusing what overflows a float ("1e400", 10**400)."""
    try:
        value = parse_eps(raw).value                  # ValueError says why not
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"epsilon must be a finite number ≥ 0, got {raw!r}")
    return value


class EpsValue(float):
    """An ε-like option written 0.3, 2 or "8/255": the float, remembering its `literal`.

    `literal` (a number, or the string verbatim) is what `config_dict` writes and keys
    hash, so TRADES' "0.031" and 8/255 stay different cells (bench.plugins.eps). Parsed by
    `build_config`; in Python pass a float or `EpsValue("8/255")`."""

    __slots__ = ("literal",)
    type_name = "a number ≥ 0 or 'a/b'"
    literal: float | str

    def __new__(cls, raw: Any):
        if isinstance(raw, EpsValue):
            raw = raw.literal
        self = super().__new__(cls, _finite_eps(raw))
        self.literal = cls._literal(raw, float(self))
        return self

    @staticmethod
    def _literal(raw: Any, value: float) -> float | str:
        return float(raw) if isinstance(raw, (int, float)) else raw

    @classmethod
    def from_config(cls, raw: Any) -> "EpsValue":
        return raw if isinstance(raw, cls) else cls(raw)

    def __repr__(self) -> str:
        return repr(self.literal)

    def __str__(self) -> str:
        return str(self.literal)

    def __reduce__(self):
        return type(self), (self.literal,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class EpsNumber(EpsValue):
    """An ε-like option whose literal is its number: "2/255" is written (and keyed) as
    0.00784…, as the PGD and CW-ℓ∞ step sizes always were."""

    __slots__ = ()

    @staticmethod
    def _literal(raw: Any, value: float) -> float | str:
        return value


class RelativeEps(str):
    """A step relative to the cell's ε, kept as written: "ε/20" (ε·0.05), "eps*0.25", "ε"."""

    type_name = "a relative step size (ε/k or ε*k)"
    factor: float

    def __new__(cls, raw: Any):
        if not isinstance(raw, str):
            raise ValueError(f"malformed relative step size {raw!r}: expected ε/k or ε*k")
        t = raw.replace(" ", "")
        rest = t[1:] if t.startswith("ε") else t[3:] if t.startswith("eps") else None
        k = 0.0
        if rest and rest[0] in "/*":
            try:
                k = _finite_eps(rest[1:])
            except ValueError:
                pass
        if rest != "" and not k > 0:
            raise ValueError(f"malformed relative step size {raw!r}: expected ε/k or ε*k, "
                             f"e.g. ε/20")
        self = super().__new__(cls, raw)
        self.factor = 1.0 if rest == "" else 1.0 / k if rest[0] == "/" else k
        return self

    @classmethod
    def from_config(cls, raw: Any) -> "RelativeEps":
        return raw if isinstance(raw, cls) else cls(raw)

    def of(self, eps: float) -> float:
        """The step at the cell's ε."""
        return self.factor * eps

    def __reduce__(self):
        return type(self), (str(self),)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if hasattr(tp, "type_name"):
        return tp.type_name
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(path, f"must be one of {_type_name(tp)}, got {value!r}"
                          + (did_you_mean(str(value), [str(a) for a in typing.get_args(tp)])
                             if isinstance(value, str) else ""))
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return coerce(arg, value, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(path, f"must be {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(path, f"must be null, got {value!r}")
    if isinstance(tp, type) and hasattr(tp, "from_config"):   # ε options (above)
        try:
            return tp.from_config(value)
        except ValueError as e:
            raise ConfigError(path, str(e)) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -2**63 <= value < 2**63:          # what a database column holds
                raise ConfigError(path, f"must be an integer that fits in 64 bits, got {value}")
            return value
        raise ConfigError(path, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not -sys.float_info.max <= value <= sys.float_info.max:   # not NaN, ±inf
                raise ConfigError(path, f"must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(path, f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"must be a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(path, f"must have {len(args)} items, got {len(value)}")
            return tuple(coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {k: coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build_config(tp, value, path)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(path, f"must be {_type_name(tp)}, got {value!r}")


PRESET_KEY = "preset"


def presets_of(cls: type) -> dict[str, dict]:
    return dict(getattr(cls, "PRESETS", None) or {})


def apply_preset(cls: type, values: dict, path: str = "") -> dict:
    """`values` with its `preset:` expanded (explicit keys win); unchanged without one."""
    presets = presets_of(cls)
    if PRESET_KEY not in values or not presets:
        return values
    sub = f"{path}.{PRESET_KEY}" if path else PRESET_KEY
    name = values[PRESET_KEY]
    if not isinstance(name, str) or name not in presets:
        raise ConfigError(sub, f"unknown preset {name!r}; known: {', '.join(presets)}"
                          + (did_you_mean(name, list(presets)) if isinstance(name, str) else ""))
    rest = {k: v for k, v in values.items() if k != PRESET_KEY}
    return {**presets[name], **rest}


def build_config(cls: type, values: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build dataclass `cls` from `values`, strictly (unknown keys and bad types are errors)."""
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(path, f"must be a mapping, got {values!r}")
    values = apply_preset(cls, dict(values or {}), path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(sub, f"unknown key{did_you_mean(str(key), list(fields))}")
        kwargs[key] = coerce(hints[key], value, sub)
    for name, f in fields.items():
        if (name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):  # type: ignore[misc]
            raise ConfigError(f"{path}.{name}" if path else name, "is required")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ checks
        raise ConfigError(path, str(e)) from None


def config_dict(cfg: Any) -> dict:
    """A dataclass config as plain JSON-able data (the resolved config that keys hash)."""
    return _plain(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg) else _plain(cfg)


def _plain(v: Any) -> Any:
    if isinstance(v, EpsValue):
        return v.literal
    if isinstance(v, RelativeEps):
        return str.__str__(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def describe_config(cls: type) -> list[tuple[str, str, Any]]:
    """(name, type, default) for each field: what `bench ls --plugins` shows."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
            else "<required>")
        out.append((f.name, _type_name(hints[f.name]), default))
    return out
