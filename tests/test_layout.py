"""The package's shape: no import cycle between gist-ray modules (imports inside functions included), no module
over 500 lines, and gist-ray's own modules imported at the top of files (the dependency graph stays visible)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gist_ray"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(node: ast.AST, current: str) -> set[str]:
    """The gist-ray modules an import statement loads (``from pkg import mod`` counts ``pkg.mod`` too)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        pkg = current.split(".") if MODULES[current].name == "__init__.py" else current.split(".")[:-1]
        base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
    subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    found = subs if len(subs) == len(node.names) else {base} | subs  # `from pkg import mod`: only pkg.mod
    return {m for m in found if m in MODULES and m != current}


def graph() -> dict[str, set[str]]:
    return {name: set().union(*(imported(n, name) for n in ast.walk(ast.parse(path.read_text()))))
            for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_gist_ray_modules():
    # a package's __init__ runs before any of its modules, so an import of pkg.mod is also an import of pkg
    edges = graph()
    for name, targets in edges.items():
        for t in list(targets):
            parent = t.rsplit(".", 1)[0]
            if parent in MODULES and parent != name and not name.startswith(parent + "."):
                targets.add(parent)
    assert cycles(edges) == []


def test_no_module_over_the_line_budget():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}



def test_gist_ray_modules_are_imported_at_the_top_of_files():
    inner = []
    for name, path in MODULES.items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += [f"{path.relative_to(PACKAGE.parent)}:{s.lineno}" for sub in fn.body for s in ast.walk(sub)
                          if imported(s, name)]
    assert inner == []
