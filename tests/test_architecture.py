"""The import graph: floors only point down, and no module reaches itself through its imports.

Floors, bottom up: errors, model (the math), weights (getting and reading checkpoints), runtime (running a model),
scale and cli (commands; one module per command, never importing each other). desktop_app sits beside the commands.
Function-local imports count: a circle through a lazy import is still a design circle, only deferred.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vlm_core", "desktop_app")

# floor -> what it must never import (prefixes of module names)
FORBIDDEN = {
    "vlm_core.errors": ("vlm_core.model", "vlm_core.weights", "vlm_core.runtime", "vlm_core.cli", "vlm_core.scale"),
    "vlm_core.model": ("vlm_core.weights", "vlm_core.runtime", "vlm_core.cli", "vlm_core.scale"),
    "vlm_core.weights": ("vlm_core.runtime", "vlm_core.cli", "vlm_core.scale"),
    "vlm_core.runtime": ("vlm_core.serve", "vlm_core.cli", "vlm_core.scale"),
    "vlm_core.serve": ("vlm_core.cli", "vlm_core.scale"),
    "vlm_core": ("desktop_app",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_floors_only_point_down():
    wrong = []
    for name, imports in _graph().items():
        for floor, forbidden in FORBIDDEN.items():
            if name == floor or name.startswith(floor + "."):
                wrong += [f"{name} -> {m}" for m in imports if m.startswith(forbidden)]
    assert wrong == []


def test_commands_never_import_each_other():
    graph = _graph()
    commands = {m for m in graph if m.startswith("vlm_core.cli.") and m != "vlm_core.cli.common"}
    wrong = [f"{name} -> {m}" for name in commands for m in graph[name] if m in commands or m == "vlm_core.cli"]
    assert wrong == []
