"""The house layout, checked on the source: no recipe imports another; no private name crosses a file.

A private module (``pgkit/_checks.py``, as equinox's ``_linear.py``) may be imported: the names
inside it are public to the package; a name with a leading underscore is used only in its file.
"""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the project's own files: not what lives in hidden folders (bench/.venvs holds the peers' installs)
SOURCES = sorted(
    p for d in ("pgkit", "recipes", "bench", "tests", "examples") for p in (ROOT / d).rglob("*.py")
    if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
)
ESTIMATOR_MODULES = (
    "returns", "estimators", "baselines", "importance", "divergences", "natural",
    "objectives", "actions", "critics", "targets", "cem", "traces",
)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_our_module(dotted: str, directory: Path) -> bool:
    top = dotted.partition(".")[0]
    if top == "pgkit":
        try:
            return importlib.util.find_spec(dotted) is not None
        except (ImportError, ValueError):
            return False
    return (directory / f"{top}.py").exists() and "." not in dotted  # a sibling file (tests/reference.py)


def crossings(path: Path) -> list[str]:
    """``file:line name`` for every private name this file takes from another of the project's files."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = {}  # local name -> dotted module path, for the project's own modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_our_module(alias.name, path.parent):
                    modules[alias.asname or alias.name.partition(".")[0]] = alias.asname and alias.name or alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                private_module = _is_our_module(f"{node.module}.{alias.name}", path.parent)  # pgkit._checks
                if _private(alias.name) and not private_module and _is_our_module(node.module, path.parent):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
                elif _is_our_module(f"{node.module}.{alias.name}", path.parent):
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            parts, value = [], node.value
            while isinstance(value, ast.Attribute):
                parts.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules:
                dotted = ".".join([modules[value.id], *parts])
                if _is_our_module(dotted, path.parent):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {dotted}.{node.attr}")
    return found


def test_no_private_name_is_used_outside_its_file():
    found = [line for path in SOURCES for line in crossings(path)]
    assert not found, "private names used from another file:\n" + "\n".join(found)


def test_the_checker_sees_a_private_name_taken_from_another_file(tmp_path):
    probe = ROOT / "tests" / "_layout_probe.py"
    probe.write_text("from pgkit import nn\nfrom pgkit.experiment.driver import _label\nimport reference as ref\n"
                     "x = nn._private_thing\ny = ref._helper\nz = nn.MLP\n")
    try:
        assert [line.split(" ")[1] for line in crossings(probe)] == [
            "pgkit.experiment.driver._label", "pgkit.nn._private_thing", "reference._helper"
        ]
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.py")), ids=lambda p: p.name)
def test_no_recipe_imports_another_recipe(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            assert not (name == "recipes" or name.startswith(("recipes.", "pgkit.recipes"))), (
                f"{path.name}:{node.lineno} imports {name}: what recipes share belongs in pgkit/"
            )


@pytest.mark.parametrize("name", ESTIMATOR_MODULES)
def test_estimator_modules_import_only_jax_chex_distrax_and_pgkit_estimators(name):
    tree = ast.parse((ROOT / "pgkit" / f"{name}.py").read_text())
    allowed = {"jax", "chex", "distrax", "jaxtyping", "typing", "collections", "functools", "math", "operator",
               "dataclasses", "__future__", "numbers", "itertools"}
    own = {f"pgkit.{m}" for m in ESTIMATOR_MODULES} | {"pgkit._checks"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module] if node.module != "pgkit" else [f"pgkit.{a.name}" for a in node.names]
        else:
            continue
        for module in modules:
            assert module.partition(".")[0] in allowed or module in own, f"pgkit/{name}.py:{node.lineno} imports {module}"
