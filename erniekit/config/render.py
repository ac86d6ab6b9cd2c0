"""Human-facing views of recipes: resolved YAML with each field's doc, and the shipped-recipe catalogue."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from erniekit.config.core import field_doc


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render_yaml(config: Any, comments: bool = True) -> str:
    """YAML of a config tree; with ``comments``, each field's one-line doc follows it as ``# ...``."""
    lines: list[str] = []
    _emit(config, 0, lines, comments)
    return "\n".join(lines) + "\n"


def _emit(obj: Any, indent: int, lines: list[str], comments: bool, first_prefix: str | None = None) -> None:
    pad = " " * indent
    for i, f in enumerate(fields(obj)):
        value = getattr(obj, f.name)
        lead = first_prefix if (first_prefix is not None and i == 0) else pad
        note = f"  # {field_doc(f)}" if comments and field_doc(f) else ""
        if is_dataclass(value):
            lines.append(f"{lead}{f.name}:{note}")
            _emit(value, indent + 2, lines, comments)
        elif isinstance(value, list) and value and is_dataclass(value[0]):
            lines.append(f"{lead}{f.name}:{note}")
            for item in value:
                _emit(item, indent + 4, lines, comments, first_prefix=" " * (indent + 2) + "- ")
        else:
            lines.append(f"{lead}{f.name}: {_scalar(value)}{note}")
        if indent == 0 and is_dataclass(value):
            lines.append("")
    while lines and lines[-1] == "":
        lines.pop()


def recipe_header(path: Path) -> list[str]:
    """The leading ``#`` comment block of a recipe file, without the ``#`` markers."""
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return header


def recipe_table(recipes_dir: Path) -> str:
    """A Markdown table of the shipped recipes: name, method, model and the header's first line."""
    from erniekit.config.load import load_raw

    rows = []
    for path in sorted(recipes_dir.rglob("*.yaml")):
        data, _ = load_raw(path)
        model = data.get("model", {}) or {}
        method = (data.get("method", {}) or {}).get("name", "sft")
        header = recipe_header(path)
        rows.append(
            (
                str(path.relative_to(recipes_dir).with_suffix("")),
                method,
                model.get("flavor") or Path(model.get("path") or "?").name,
                header[0] if header else "",
            )
        )
    table = ["| recipe | method | model | description |", "|---|---|---|---|"]
    table += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(table)


def preset_table(configs_dir: Path) -> str:
    """A Markdown table of the shipped presets a recipe includes with ``base:``: name, sections, header."""
    from erniekit.config.load import load_raw

    table = ["| preset (base: NAME) | sets | description |", "|---|---|---|"]
    for path in sorted(configs_dir.rglob("*.yaml")):
        data, _ = load_raw(path)
        header = recipe_header(path)
        name = f"configs/{path.relative_to(configs_dir).with_suffix('').as_posix()}"
        table.append(f"| {name} | {', '.join(data)} | {header[0] if header else ''} |")
    return "\n".join(table)
