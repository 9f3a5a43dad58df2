"""Code health: the .slz reader stands alone, no module imports another in a circle, and no function is
longer than a screen (60 lines)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "slimzip"


def test_the_container_reader_loads_neither_torch_pruning_nor_training():
    code = ("import sys, slimzip.container; heavy = [m for m in ('torch_pruning', 'slimzip.trainer', "
            "'slimzip.structured', 'torch') if m in sys.modules]; print(heavy); assert not heavy")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def _module_graph() -> dict[str, set[str]]:
    """Module-level imports between slimzip's modules, those under TYPE_CHECKING included (a cycle in the
    types is one in the design); imports inside functions are deferred and left out."""
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def targets(cur: str, node: ast.ImportFrom) -> set[str]:
        package = cur if mods[cur].name == "__init__.py" else cur.rsplit(".", 1)[0]
        base = package
        for _ in range(max(node.level - 1, 0)):
            base = base.rsplit(".", 1)[0]
        target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
        found = {target} if target in mods else set()
        return found | {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods}

    graph = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.ImportFrom):
                    deps |= targets(name, node)
        graph[name] = {d for d in deps if d != name and not d.startswith(name + ".")}
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    assert len(graph) > 20
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
