"""Where recipes come from: a built-in name, a module object, a file path or a dotted module path.

The driver knows a recipe only as a module that follows :mod:`pgkit.recipe`. This file turns what a
user names into that module (:func:`load_recipe`) and records where it came from
(:func:`recipe_source`, kept in ``config.json``), so that ``pgkit resume`` and ``pgkit eval`` find
the same module again (:func:`recipe_from_source`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from pgkit.recipe import ConfigError, check_recipe_module

__all__ = ["BUILTIN_PACKAGE", "available_recipes", "load_recipe", "recipe_name", "recipe_source", "recipe_from_source"]

BUILTIN_PACKAGE = "pgkit.recipes"


def available_recipes() -> list[str]:
    """The names of the built-in recipes (listed in ``pgkit.recipes.BUILTIN``)."""
    return sorted(importlib.import_module(BUILTIN_PACKAGE).BUILTIN)


def load_recipe(recipe: str | os.PathLike | types.ModuleType) -> types.ModuleType:
    """The recipe module that ``recipe`` names.

    Args:
      recipe: a module object that follows :mod:`pgkit.recipe`; a built-in name (``"ppo"``, see
        :func:`available_recipes`); a path to a ``.py`` file (``"./my_algo.py"``); or a dotted
        module path (``"mypkg.my_algo"``, imported as ``python -m`` would, the working
        directory first on the path).

    Raises:
      ConfigError: the name, file or module does not exist or does not follow the protocol.
    """
    if isinstance(recipe, types.ModuleType):
        return check_recipe_module(recipe)
    text = os.fspath(recipe)
    if text.endswith(".py") or os.sep in text or (os.altsep and os.altsep in text):
        return check_recipe_module(_load_file(Path(text)))
    if "." in text:
        return check_recipe_module(_load_dotted(text))
    if text not in available_recipes():
        raise ConfigError(
            f"unknown recipe {text!r}; available: {', '.join(available_recipes())} "
            "(or a recipe file ./NAME.py, or a dotted module path)"
        )
    return importlib.import_module(f"{BUILTIN_PACKAGE}.{text}")


def recipe_name(module: types.ModuleType) -> str:
    """A recipe's display name: its ``NAME``, else the last part of its module name or file stem."""
    name = getattr(module, "NAME", None)
    if isinstance(name, str) and name:
        return name
    if module.__name__ == "__main__" and getattr(module, "__file__", None):
        return Path(module.__file__).stem
    return module.__name__.rpartition(".")[2]


def recipe_source(module: types.ModuleType) -> dict:
    """Where ``module`` can be found again: ``{"builtin": name}``, ``{"module": dotted}`` or ``{"file": path}``.

    A module run as a script (``__main__``) or loaded from a file is recorded by its absolute path;
    a module importable by its name is recorded by that name.
    """
    name = module.__name__
    if name.startswith(BUILTIN_PACKAGE + ".") and name.count(".") == 2:
        return {"builtin": name.rpartition(".")[2]}
    file = getattr(module, "__file__", None)
    if name != "__main__" and not getattr(module, "_pgkit_loaded_from_file", False):
        try:
            if importlib.util.find_spec(name) is not None:
                return {"module": name}
        except (ImportError, ValueError):
            pass
    if file is None:
        raise ConfigError(f"recipe module {name!r} has neither an importable name nor a file: it cannot be recorded")
    return {"file": str(Path(file).resolve())}


def recipe_from_source(source: dict) -> types.ModuleType:
    """The module :func:`recipe_source` recorded; a ConfigError if it has moved or is gone."""
    if "builtin" in source:
        return load_recipe(source["builtin"])
    if "module" in source:
        return check_recipe_module(_load_dotted(source["module"]))
    if "file" in source:
        return check_recipe_module(_load_file(Path(source["file"])))
    raise ConfigError(f"config.json names no recipe source: {source!r}")


def _load_dotted(path: str) -> types.ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as python -m does: the working directory's packages
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name is None or not path.startswith(error.name):
            raise  # the recipe itself imports something missing: its own traceback
        raise ConfigError(f"recipe module {path!r} not found ({error.name!r} cannot be imported)") from None


def _load_file(path: Path) -> types.ModuleType:
    """Import a recipe file once per absolute path, under a name of its own (never ``recipes``)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"recipe file {str(path)!r} not found")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"pgkit_user_recipe_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module._pgkit_loaded_from_file = True
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
