"""The package's structure, read from its source: modules meet through public names, and imports run one way."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "rlae_sc"


def module_name(path: Path) -> str:
    """``rlae_sc/federated/site.py`` -> ``rlae_sc.federated.site``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imported(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module an ``import from`` in ``module`` reads (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[ast.AST, str, str | None]]:
    """Every import in ``module``'s source, at any depth: ``(node, module imported, name taken from it)``, the
    name ``None`` for a plain ``import``; a name that is itself a submodule counts as that module."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(node, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = imported(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((node, sub, None) if sub in MODULES else (node, base, alias.name))
    return out


def test_no_module_reads_another_modules_private_names():
    """``from rlae_sc.x import _name`` and ``x._name`` on an rlae_sc module ``x`` are refused: what two modules
    share is public."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        bound = {}  # a local name -> the rlae_sc module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "rlae_sc":
                        bound[alias.asname or "rlae_sc"] = alias.name if alias.asname else "rlae_sc"
            elif isinstance(node, ast.ImportFrom) and imported(module, node).split(".")[0] == "rlae_sc":
                base = imported(module, node)
                for alias in node.names:
                    if f"{base}.{alias.name}" in MODULES:
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif private(alias.name) and base != module:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {base} import {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and bound.get(base.id, module) != module:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private names read across modules:\n" + "\n".join(found)


def unit(module: str) -> str:
    """The part of the package a module belongs to: a top-level module, or a subpackage (``rlae_sc.lae``)."""
    return ".".join(module.split(".")[:2])


def test_imports_between_the_packages_parts_run_one_way():
    """The parts of the package (its top-level modules and its subpackages, each taken whole) import one
    another without a cycle, counting imports inside functions too: there is an order in which every import
    points to an earlier part, so each part can be read knowing only those below it."""
    edges: dict[str, set[str]] = {unit(module): set() for module in MODULES}
    for module in MODULES:
        for _, target, _ in imports(module):
            if target in MODULES and unit(target) != unit(module):
                edges[unit(module)].add(unit(target))
    order, state = [], {}  # depth-first: 1 while on the path, 2 when placed

    def place(part: str, path: list[str]) -> None:
        if state.get(part) == 2:
            return
        assert state.get(part) != 1, "imports run in a cycle: " + " -> ".join([*path[path.index(part) :], part])
        state[part] = 1
        for below in sorted(edges[part]):
            place(below, [*path, part])
        state[part] = 2
        order.append(part)

    for part in sorted(edges):
        place(part, [])
    assert len(order) == len(edges)


@cache
def defined(module: str) -> frozenset[str]:
    """The names ``module`` defines at its top level (functions, classes, assigned names, also under a top-level
    ``if`` or ``try``), not those it imports."""
    names, nodes = set(), list(ast.parse(MODULES[module].read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            nodes += [*node.body, *node.orelse, *getattr(node, "finalbody", []), *getattr(node, "handlers", [])]
        elif isinstance(node, ast.ExceptHandler):
            nodes += node.body
    return frozenset(names)


def test_names_are_imported_from_the_module_that_defines_them():
    """One way to reach each name: a module imports it from where it is defined, not through another module
    that imports it too (a package's ``__init__``, which presents the package, excepted)."""
    found = []
    for module, path in MODULES.items():
        for node, target, name in imports(module):
            if name is None or target not in MODULES or MODULES[target].name == "__init__.py":
                continue
            if name not in defined(target):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {target} import {name}")
    assert not found, "names imported through a module that does not define them:\n" + "\n".join(found)
