"""Packaging: `pip install .` must give a working `helpers`, so every package it imports is declared."""
from __future__ import annotations

import ast
import sys
from importlib import metadata

import tomllib

from helpers import config

PYPROJECT = tomllib.loads((config.ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements) -> set[str]:
    """Distribution names of requirement strings (``"pillow>=10.4,<13"`` -> ``pillow``), normalised."""
    import re

    return {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements}


def _imports() -> tuple[set[str], set[str]]:
    """Third-party top-level modules the helpers import: at module level, and anywhere (inside functions too)."""
    top, anywhere = set(), set()
    for path in (config.ROOT / "helpers").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = {node.module.split(".")[0]}
            else:
                continue
            found -= set(sys.stdlib_module_names) | {"helpers", "__future__"}
            anywhere |= found
            if node in tree.body:
                top |= found
    return top, anywhere


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    """module -> the installed distributions that provide it (``PIL`` -> ``pillow``)."""
    provided = metadata.packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in provided.get(m, [])} for m in modules}


def test_every_package_the_helpers_import_is_a_declared_dependency():
    runtime = _names(PYPROJECT["dependencies"])
    notebooks = _names(PYPROJECT["optional-dependencies"]["notebooks"])
    top, anywhere = _imports()
    assert {"keras", "numpy", "pandas", "PIL", "sklearn"} <= top  # the parse found the real imports
    for module, dists in _distributions(top).items():  # imported by `import helpers.x`: a runtime dependency
        assert dists & runtime, f"helpers import {module} at module level, but pyproject declares none of {dists}"
    for module, dists in _distributions(anywhere - top).items():  # inside functions: runtime or notebooks
        installed_with = {d for dist in runtime | notebooks for d in _requires(dist)} | runtime | notebooks
        assert dists & installed_with, f"helpers import {module}, which no declared dependency brings ({dists})"


def _requires(dist: str) -> set[str]:
    """The distributions ``dist`` itself depends on (one level), as installed here."""
    try:
        return _names(r for r in (metadata.requires(dist) or []) if "extra ==" not in r)
    except metadata.PackageNotFoundError:
        return set()


def test_requirements_install_the_project_with_its_extras_and_the_lock_pins_what_it_declares():
    assert "-e .[notebooks,test]" in (config.ROOT / "requirements.txt").read_text().splitlines()
    lock = (config.ROOT / "requirements.lock").read_text().splitlines()
    pinned = _names(line for line in lock if "==" in line)
    declared = _names(PYPROJECT["dependencies"]) | {
        name for extra in PYPROJECT["optional-dependencies"].values() for name in _names(extra)}
    assert declared <= pinned, f"declared but not pinned in requirements.lock: {declared - pinned}"


def _helpers_imports() -> dict[str, set[str]]:
    """Which helpers modules each helpers module imports, at module level or inside a function."""
    names = {path.stem for path in (config.ROOT / "helpers").glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((config.ROOT / "helpers" / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        graph[name] = found & names
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``graph`` (a list of modules, first repeated last), or None."""
    done: set[str] = set()

    def visit(name, path):
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for dependency in sorted(graph[name]):
            circle = visit(dependency, path + [name])
            if circle:
                return circle
        done.add(name)
        return None

    return next((c for c in (visit(name, []) for name in sorted(graph)) if c), None)


def test_the_helpers_import_no_circle():
    graph = _helpers_imports()
    assert {"training", "timing", "runs"} <= set(graph)
    assert _circle(graph) is None, f"import circle: {' -> '.join(_circle(graph))}"
    assert _circle({**graph, "training": graph["training"] | {"timing"}}) is not None  # the check can fail


def test_no_module_uses_another_modules_private_names():
    """``module._name`` of a helpers module, outside that module: a private name used as if it were public."""
    modules = set(_helpers_imports())
    offenders = []
    for path in [*(config.ROOT / "helpers").glob("*.py"), *(config.ROOT / "tests").glob("*.py"),
                 *(config.ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules and node.value.id != path.stem):
                offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offenders, offenders
