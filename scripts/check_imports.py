"""Check the package's import structure: no import cycle, no unexplained function-level package import.

Run: ``python scripts/check_imports.py`` (exit status 1 and a list of findings when something is wrong).

* A cycle: modules that import each other at module level (``if TYPE_CHECKING:`` blocks excluded).
  Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``; those edges count, except packages the
  importing module itself sits in (they are already being imported when it runs).
* A function-level import of a ``musicpeft`` module must say why, in a comment on the import's first line
  or on the line just above it (for example ``# lazy: gradio takes 3 s to import``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "musicpeft"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _resolve(node: ast.ImportFrom | ast.Import, name: str, is_package: bool) -> list[str]:
    """Absolute module names an import statement in module ``name`` may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def _inside(node: ast.AST, parents: dict[ast.AST, ast.AST], kinds: tuple[type, ...]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, kinds):
            return True
    return False


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def scan() -> tuple[dict[str, set[str]], list[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    unexplained: list[str] = []
    for name, path in known.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [t for t in _resolve(node, name, is_package) if t in known]
            if not targets:
                continue
            if _inside(node, parents, (ast.FunctionDef, ast.AsyncFunctionDef)):
                line, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                if "#" not in line and not above.strip().startswith("#"):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
                continue
            if _type_checking_only(node, parents):
                continue
            own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_package)}
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dependency = ".".join(parts[:i])
                    if dependency in known and dependency not in own_packages and dependency != name:
                        graph[name].add(dependency)
    return graph, unexplained


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph, unexplained = scan()
    found = cycles(graph)
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    for line in unexplained:
        print("function-level import without a reason: " + line)
    print(f"{len(graph)} modules, {len(found)} import cycles, {len(unexplained)} unexplained function-level imports")
    return 1 if found or unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
