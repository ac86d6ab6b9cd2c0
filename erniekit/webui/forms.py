"""Recipes as forms: every field of the schema with its value, doc and allowed values, and the check that
turns the page's edits into the CLI's ``KEY=VALUE`` overrides and validates them with the CLI's loader,
so a refused value reads exactly as ``erniekit train`` would print it."""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from erniekit.config import ConfigError, load_recipe, recipes_dir
from erniekit.config.core import _type_hints, _type_name, field_doc, to_dict
from erniekit.config.render import recipe_header


def shipped_recipes() -> list[dict]:
    root = recipes_dir()
    out = []
    for path in sorted(root.rglob("*.yaml")):
        header = recipe_header(path)
        out.append(
            {"name": path.relative_to(root).with_suffix("").as_posix(), "about": header[0] if header else ""}
        )
    return out


def _kind(tp: Any, value: Any) -> tuple[str, list | None]:
    """How the page edits a field: bool, choice (with its values), int, float, text or yaml."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is Literal:
        return "choice", list(typing.get_args(tp))
    if tp is bool:
        return "bool", None
    if tp is int:
        return "int", None
    if tp is float:
        return "float", None
    if tp is str:
        return "text", None
    return "yaml", None


def _yaml(value: Any) -> str:
    """A list or mapping field as one line of flow YAML, which the CLI's override parser reads back."""
    text = yaml.safe_dump(
        to_dict(value), default_flow_style=True, width=10_000, allow_unicode=True, sort_keys=False
    )
    return text.strip().removesuffix("...").strip()


def form_fields(config: Any, prefix: str = "") -> list[dict]:
    """One entry per leaf field, in schema order: key (dotted), kind, value, doc, choices, optional."""
    out = []
    hints = _type_hints(type(config))
    for f in fields(config):
        key, value, tp = f"{prefix}{f.name}", getattr(config, f.name), hints[f.name]
        if is_dataclass(value):
            out.append({"key": key, "kind": "section", "doc": field_doc(f)})
            inner = form_fields(value, f"{key}.")
            variants = f.metadata.get("variants")  # a tagged section: its name picks the dataclass
            for sub in inner if variants else []:
                if sub["key"] == f"{key}.name":
                    sub.update(kind="choice", choices=list(variants))
            out += inner
            continue
        kind, choices = _kind(tp, value)
        choices = list(f.metadata.get("choices") or choices or []) or None
        if choices is not None and kind != "bool":
            kind = "choice"
        optional = type(None) in typing.get_args(tp)
        shown = _yaml(value) if kind == "yaml" else value
        out.append(
            {
                "key": key,
                "kind": kind,
                "value": shown,
                "doc": field_doc(f),
                "type": _type_name(tp),
                "choices": choices,
                "optional": optional,
            }
        )
    return out


def check(recipe: str, overrides: list[str]) -> dict:
    """The recipe with the page's overrides, as the CLI loads it: its form, or the CLI's error line (and
    the key it names, so the page can mark that field)."""
    try:
        built = load_recipe(recipe, overrides)
    except ConfigError as e:
        return {"ok": False, "error": f"error: {e}", "key": e.key}
    return {
        "ok": True,
        "fields": form_fields(built),
        "output_dir": built.train.output_dir,
        "world": built.parallel.world,
    }


def plan_text(recipe: str, overrides: list[str]) -> str:
    """``erniekit plan RECIPE OVERRIDES``, or its error line."""
    from erniekit.errors import ErniekitError
    from erniekit.parallel.estimate import recipe_plan

    try:
        return recipe_plan(load_recipe(recipe, overrides), recipe)
    except ErniekitError as e:
        return f"error: {e}"


def local_recipes(root: Path, depth: int = 4, limit: int = 200) -> list[str]:
    """Recipe files the user keeps under the start directory: YAML with a model, train or base section,
    outside hidden directories and runs (whose config.yaml is the resolved copy)."""
    found: list[str] = []

    def visit(d: Path, left: int) -> None:
        if (d / "metrics.jsonl").exists() or len(found) >= limit:
            return
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        for p in entries:
            if p.name.startswith(".") or p.name in SKIP:
                continue
            if p.is_dir() and left > 0:
                visit(p, left - 1)
            elif p.suffix in (".yaml", ".yml") and _looks_like_recipe(p):
                found.append(p.relative_to(root).as_posix())

    visit(root, depth)
    return found[:limit]


def _looks_like_recipe(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return False
    return any(line.startswith(("model:", "train:", "base:")) for line in head.splitlines())


SKIP = {"node_modules", "__pycache__", "site-packages"}
