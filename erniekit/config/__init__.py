"""Typed recipes: YAML with ``base:`` includes and ``a.b=value`` overrides, checked into dataclasses."""

from erniekit.config.core import ConfigError, option, to_dict
from erniekit.config.load import RECIPES_DIR, load_recipe, resolve_recipe_path
from erniekit.config.render import recipe_table, render_yaml
from erniekit.config.schema import Recipe

__all__ = [
    "RECIPES_DIR",
    "ConfigError",
    "Recipe",
    "load_recipe",
    "option",
    "recipe_table",
    "render_yaml",
    "resolve_recipe_path",
    "to_dict",
]
