"""The machinery behind typed recipes: documented fields, strict conversion, one error type.

A config section is a plain dataclass whose fields are declared with :func:`option`, which carries the
field's one-line doc and its allowed range next to its default::

    @dataclass
    class OptimConfig:
        lr: float = option(1e-5, "Peak learning rate.", gt=0)

:func:`build` turns a nested dict (from YAML plus overrides) into such a tree, checking every key and value.
Any problem raises :class:`ConfigError` with the source file, the dotted key path and, for unknown keys,
the closest valid key. This module imports nothing heavy: ``erniekit config show`` never loads Paddle.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from erniekit.errors import ErniekitError

# Where each key path came from: ("optim", "lr") -> "recipes/x.yaml" or "command line".
Sources = Mapping[tuple[str, ...], str]


class ConfigError(ErniekitError, ValueError):
    """A recipe problem: names where it came from, the key path and what is wrong, on one line."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source, self.key, self.problem = source, key, message
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


def option(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    variants: Mapping[str, type] | None = None,
) -> Any:
    """Declare a config field with its default, a one-line doc and optional bounds.

    ``variants`` makes a tagged section: the sub-dict's ``name`` key picks which dataclass it becomes
    (``method: {name: dpo, beta: 0.1}`` builds a ``DPOConfig``).
    """
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "variants": variants}
    if isinstance(default, (list, dict)) or is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_doc(f: Field) -> str:
    return f.metadata.get("doc", "")


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_type_name(item)}"
    if origin is dict:
        key, item = typing.get_args(tp)
        return f"mapping of {_type_name(key)} to {_type_name(item)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


@dataclass
class _Ctx:
    sources: Sources
    default_source: str

    def source(self, path: tuple[str, ...]) -> str:
        below = [s for p, s in self.sources.items() if p[: len(path)] == path]
        if below and path not in self.sources:
            return below[0]  # e.g. optim.lr built from an override of optim.lr.x
        for i in range(len(path), -1, -1):
            if path[:i] in self.sources:
                return self.sources[path[:i]]
        return self.default_source

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        return ConfigError(message, source=self.source(path), key=dotted(path))


def dotted(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _convert(tp: Any, value: Any, path: tuple[str, ...], ctx: _Ctx) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, ctx)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ctx.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        if value in allowed and type(value) is type(allowed[0]):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ctx.error(path, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}{hint}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if (
            isinstance(value, (str, int, float))
            and not isinstance(value, bool)
            and item_tp in (str, int, float)
        ):
            value = [value]  # a scalar where a list is expected: `targets: q_proj` means [q_proj]
        if not isinstance(value, list):
            raise ctx.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        return [_convert(item_tp, v, (*path, str(i)), ctx) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ctx.error(path, f"expected a {_type_name(tp)}, got {_describe(value)}")
        return {
            _convert(key_tp, k, (*path, str(k)), ctx): _convert(item_tp, v, (*path, str(k)), ctx)
            for k, v in value.items()
        }
    if is_dataclass(tp):
        return _build(tp, value, path, ctx)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(path, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ctx.error(path, f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` as a string; accept what is clearly a number
            try:
                return float(value)
            except ValueError:
                pass
        raise ctx.error(path, f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ctx.error(path, f"expected a string, got {_describe(value)}")
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp!r} at {dotted(path)}")


def _check_bounds(f: Field, value: Any, path: tuple[str, ...], ctx: _Ctx) -> None:
    meta = f.metadata
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ctx.error(path, f"must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for key, ok, word in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise ctx.error(path, f"must be {word} {bound}, got {v!r}")


def suggest_key(name: str, valid: list[str]) -> str | None:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def _build(cls: type, data: Any, path: tuple[str, ...], ctx: _Ctx) -> Any:
    if data is None:
        data = {}
    if isinstance(data, str) and "path" in {f.name for f in fields(cls)}:
        data = {"path": data}  # shorthand: a bare string where a section with `path` is expected
    if not isinstance(data, Mapping):
        raise ctx.error(path, f"expected a mapping of {cls.__name__} fields, got {_describe(data)}")
    hints = _type_hints(cls)
    by_name = {f.name: f for f in fields(cls) if f.init}
    for key in data:
        if key not in by_name:
            guess = suggest_key(str(key), list(by_name))
            hint = f"; did you mean '{dotted((*path, guess))}'?" if guess else _elsewhere_hint(str(key), path)
            raise ctx.error((*path, str(key)), f"unknown key{hint}")
    kwargs = {}
    for name, f in by_name.items():
        sub = (*path, name)
        if name not in data:
            continue
        value = data[name]
        variants = f.metadata.get("variants")
        if variants is not None:
            kwargs[name] = _build_variant(f, variants, value, sub, ctx)
            continue
        converted = _convert(hints[name], value, sub, ctx)
        _check_bounds(f, converted, sub, ctx)
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except ConfigError as e:  # raised by __post_init__ checks of the section itself
        raise ctx.error(path + ((e.key,) if e.key else ()), e.problem) from None


def _build_variant(f: Field, variants: Mapping[str, type], value: Any, path: tuple[str, ...], ctx: _Ctx):
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"expected a mapping with a 'name' key, got {_describe(value)}")
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    name = value.get("name", default.name)
    if name not in variants:
        close = difflib.get_close_matches(str(name), list(variants), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ctx.error(
            (*path, "name"), f"must be one of {', '.join(map(repr, variants))}, got {name!r}{hint}"
        )
    chosen = variants[name]
    mine = {f.name for f in fields(chosen)}
    for key in value:
        owners = [n for n, cls in variants.items() if n != name and key in {f.name for f in fields(cls)}]
        if key not in mine and owners:
            raise ctx.error(
                (*path, str(key)),
                f"not an option of {dotted((*path, 'name'))} {name!r} "
                f"(it belongs to {', '.join(map(repr, owners))})",
            )
    return _build(chosen, {**value, "name": name}, path, ctx)


# Filled by the schema module: every leaf key path of the full recipe, to suggest keys in other sections.
_ALL_PATHS: list[tuple[str, ...]] = []


def register_paths(root: type) -> None:
    _ALL_PATHS.clear()

    def walk(cls: type, prefix: tuple[str, ...]) -> None:
        hints = _type_hints(cls)
        for f in fields(cls):
            variants = f.metadata.get("variants")
            if variants:
                for v in variants.values():
                    walk(v, (*prefix, f.name))
            elif is_dataclass(hints[f.name]):
                walk(hints[f.name], (*prefix, f.name))
            else:
                _ALL_PATHS.append((*prefix, f.name))

    walk(root, ())


def _elsewhere_hint(key: str, path: tuple[str, ...]) -> str:
    matches = [p for p in _ALL_PATHS if p[-1] == key and p[:-1] != path and p != (*path, key)]
    if matches:
        return f"; did you mean '{dotted(matches[0])}'?"
    leaf = suggest_key(key, sorted({p[-1] for p in _ALL_PATHS}))
    if leaf:
        full = next(p for p in _ALL_PATHS if p[-1] == leaf)
        return f"; did you mean '{dotted(full)}'?"
    return ""


def build(
    cls: type, data: Mapping[str, Any], sources: Sources | None = None, default_source: str = ""
) -> Any:
    """Build and check a config tree of ``cls`` from ``data``; raise :class:`ConfigError` on any problem."""
    return _build(cls, data, (), _Ctx(sources or {}, default_source))


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config tree (what ``config.yaml`` holds)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj
