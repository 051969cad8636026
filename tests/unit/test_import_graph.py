"""The house has layers: every module imports, no import cycle among gpulab's modules, and no
import of our own modules inside a function (the usual way to hide a cycle). Read from the
source (module-level imports), then each module imported for real."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub_plugins", "services")
# modules whose import has a side effect or needs a running environment (``__main__`` modules,
# which run their service, are not imported either)
NOT_IMPORTED = {"hub_plugins.store.migrations.env"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "versions" not in p.parts}


def _resolve(node: ast.ImportFrom, name: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path) -> tuple[set[str], list[str]]:
    """(our modules imported at module level, our modules imported inside functions)."""
    tree = ast.parse(path.read_text())
    ours = set(modules())
    top, nested = set(), []

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        mod = _resolve(node, name, path.name == "__init__.py")
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in ours else mod for a in node.names]

    def ours_of(target: str) -> str | None:
        while target and target not in ours:
            target = target.rpartition(".")[0]
        return target or None

    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top |= {m for t in targets(node) if (m := ours_of(t))}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    nested += [m for t in targets(node) if (m := ours_of(t))]
    return top, nested


def graph() -> dict[str, set[str]]:
    g = {}
    for name, path in modules().items():
        top, _ = imports(name, path)
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        g[name] = (top | {p for p in parents if p in modules()}) - {name}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    # a package importing its own submodules (its __init__ re-exporting them) is not a cycle
    g = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph().items()}
    assert cycles(g) == []


def test_no_function_level_imports_of_our_modules():
    hidden = {name: nested for name, path in modules().items() if (nested := imports(name, path)[1])}
    assert hidden == {}


@pytest.mark.parametrize("name", sorted(m for m in set(modules()) - NOT_IMPORTED if not m.endswith(".__main__")))
def test_every_module_imports(name):
    importlib.import_module(name)
