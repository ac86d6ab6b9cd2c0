"""Recipe files -> a checked :class:`Recipe`: ``base:`` includes, ``a.b=value`` overrides, provenance.

Every key remembers the file (or the command line) it came from, so an error can name it::

    recipes/ernie4_5/debug_sft.yaml: optim.lrr: unknown key; did you mean 'optim.lr'?

A recipe on the command line is a path (relative to the working directory) or the name of a shipped
recipe (``ernie4_5/debug_sft``); a ``base:`` entry is a path relative to the recipe that names it, a
shipped recipe's name, or a shipped preset (``configs/layouts/8gpu_tp4_ep4_pp2``: model, hardware,
parallel-layout, data and optimiser settings that several recipes share). So a user's recipe can
extend a shipped one from any directory, and a shipped recipe copied out (``erniekit recipes --copy``)
still finds its bases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from erniekit.config.core import ConfigError, build, dotted
from erniekit.config.schema import Recipe
from erniekit.errors import ErniekitError
from erniekit.resources import shipped_dir

CLI_SOURCE = "command line"


def recipes_dir() -> Path:
    """The shipped recipes (inside the installed package, or a checkout's top-level ``recipes/``)."""
    return shipped_dir("recipes")


def find_recipe(name: str | Path, relative_to: Path | None = None) -> Path | None:
    """``name`` as a path (relative to ``relative_to``, default the working directory), else shipped:
    ``configs/KIND/NAME`` is a shipped preset, any other name a shipped recipe."""
    given = (relative_to or Path()) / name
    if given.is_file():
        return given
    kind, _, rest = Path(name).as_posix().partition("/")
    shipped = shipped_dir("configs") / rest if kind == "configs" and rest else recipes_dir() / name
    return next((p for p in (shipped, shipped.with_name(f"{shipped.name}.yaml")) if p.is_file()), None)


def resolve_recipe_path(name: str | Path) -> Path:
    """A recipe given as a path, or as the name of a shipped recipe (``ernie4_5/debug_sft``)."""
    found = find_recipe(name)
    if found is None:
        raise ConfigError(
            "recipe file not found (looked for it as given and among the shipped recipes; "
            "`erniekit recipes` lists them)",
            source=str(name),
        )
    return found


def _display(path: Path) -> str:
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        pass
    for kind, label in (("recipes", "{} (shipped recipe)"), ("configs", "configs/{} (shipped preset)")):
        try:
            return label.format(path.relative_to(shipped_dir(kind).resolve()))
        except (ValueError, ErniekitError):
            pass
    return str(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", source=_display(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{_display(path)}:{mark.line + 1}" if mark else _display(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML: {problem}", source=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a recipe must be a mapping of sections, got {type(data).__name__}", source=_display(path)
        )
    return data


def _merge(
    base: dict, over: Mapping, sources: dict, over_sources: Mapping, prefix: tuple[str, ...] = ()
) -> dict:
    """Deep-merge ``over`` into ``base`` (mappings merge, anything else replaces), carrying provenance."""
    out = dict(base)
    for key, value in over.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, sources, over_sources, path)
        else:
            out[key] = value
            _replace_sources(sources, over_sources, path)
    return out


def _replace_sources(sources: dict, new: Mapping, path: tuple[str, ...]) -> None:
    for p in [p for p in sources if p[: len(path)] == path]:
        del sources[p]
    sources.update({p: s for p, s in new.items() if p[: len(path)] == path})


def _record(value: Any, path: tuple[str, ...], sources: dict, source: str) -> dict:
    sources[path] = source
    if isinstance(value, Mapping):
        for k, v in value.items():
            _record(v, (*path, str(k)), sources, source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(v, (*path, str(i)), sources, source)
    return sources


def load_raw(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict]:
    """Read a recipe and its ``base:`` chain into one dict, plus the file each key came from."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(_display(p) for p in (*_stack, path))
        raise ConfigError(f"circular base: include ({chain})", source=_display(path), key="base")
    data = _read_yaml(path)
    bases = data.pop("base", None)
    if isinstance(bases, str):
        bases = [bases]
    if bases is not None and not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError("expected a file name or a list of file names", source=_display(path), key="base")
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for base in bases or []:
        base_path = find_recipe(base, path.parent)
        if base_path is None:
            raise ConfigError(
                f"included file not found: {base} (looked beside this recipe and among the shipped ones)",
                source=_display(path),
                key="base",
            )
        base_data, base_sources = load_raw(base_path, (*_stack, path))
        merged = _merge(merged, base_data, sources, base_sources)
    own_sources = {p: s for p, s in _record(data, (), {}, _display(path)).items() if p}
    merged = _merge(merged, data, sources, own_sources)
    return merged, sources


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``optim.lr=3e-4`` -> (("optim", "lr"), "3e-4"); values are YAML (lists, bools, null, numbers)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"expected KEY=VALUE with a dotted key such as optim.lr=3e-4, got {text!r}", source=CLI_SOURCE
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return tuple(key.split(".")), value


def apply_overrides(data: dict, overrides: Iterable[str], sources: dict) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        data = _set_path(data, path, value, sources)
    return data


def _set_path(data: Any, path: tuple[str, ...], value: Any, sources: dict, done: tuple[str, ...] = ()) -> Any:
    head, rest = path[0], path[1:]
    here = (*done, head)
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(
                f"no item {head} in this list of {len(data)}", source=CLI_SOURCE, key=dotted(here)
            )
        out_list = list(data)
        if rest:
            out_list[int(head)] = _set_path(data[int(head)], rest, value, sources, here)
        else:
            out_list[int(head)] = value
            _replace_sources(sources, _record(value, here, {}, CLI_SOURCE), here)
        return out_list
    if data is None:
        data = {}
    if isinstance(data, str):
        data = {"path": data}  # the `- file.jsonl` shorthand of a section with a path (see core._build)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"cannot set a sub-key of a {type(data).__name__} value", source=CLI_SOURCE, key=dotted(done)
        )
    out = dict(data)
    if rest:
        out[head] = _set_path(out.get(head), rest, value, sources, here)
    else:
        out[head] = value
        _replace_sources(sources, _record(value, here, {}, CLI_SOURCE), here)
    return out


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load, merge, override, build and validate a recipe. Raises ConfigError on any problem."""
    recipe_path = resolve_recipe_path(path)
    data, sources = load_raw(recipe_path)
    data = apply_overrides(data, overrides, sources)
    recipe = build(Recipe, data, sources, default_source=_display(recipe_path))
    try:
        recipe.validate()
    except ConfigError as e:
        key_path = tuple((e.key or "").split("."))
        source = next(
            (sources[key_path[:i]] for i in range(len(key_path), 0, -1) if key_path[:i] in sources),
            _display(recipe_path),
        )
        raise ConfigError(e.problem, source=source, key=e.key) from None
    return recipe
