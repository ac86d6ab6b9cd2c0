"""Typed recipes: YAML with ``base:`` includes and ``a.b=value`` overrides, checked into dataclasses."""

from erniekit.config.core import ConfigError, option, to_dict
from erniekit.config.load import load_recipe, recipes_dir, resolve_recipe_path
from erniekit.config.render import recipe_table, render_yaml
from erniekit.config.schema import Recipe

__all__ = [
    "ConfigError",
    "Recipe",
    "load_recipe",
    "option",
    "recipe_table",
    "recipes_dir",
    "render_yaml",
    "resolve_recipe_path",
    "to_dict",
]
