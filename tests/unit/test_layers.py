"""The dependency arrows point one way: no import cycle between files, and no module imports a
higher layer (journal <- scheduler <- actors.sdk <- actors.steps <- engine <- host <- cluster <-
client <- the ``actors`` facade). Imports at the top and inside functions count for both;
imports under ``if TYPE_CHECKING:`` count for the layers (a type is a dependency too) but not for
cycles (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "journal", "scheduler")
# lowest first: a module may import its own layer and the ones before it
LAYERS = (
    "journal",
    "scheduler",
    "actors.sdk",
    "actors.steps",
    "actors.engine",
    "actors.host",
    "actors.cluster",
    "actors.client",
    "actors",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _typing_only(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(ast.walk(child))
    return out


def _imports(path: Path, modules: dict[str, Path], typing: bool) -> set[str]:
    """The project modules ``path`` imports (a ``from package import name`` of a submodule
    counts as that submodule); with ``typing``, also those only imported for type checking."""
    out = set()
    tree = ast.parse(path.read_text())
    skip = set() if typing else _typing_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in modules
            ] or [node.module]
        out.update(n for n in names if n in modules)
    return out


def _layer(module: str) -> int:
    for rank, name in enumerate(LAYERS[:-1]):
        if module == name or module.startswith(name + "."):
            return rank
    return len(LAYERS) - 1  # the facade, ``actors/__init__.py``


def _graph(typing: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules, typing) - {m} for m, p in modules.items()}


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{m} ({LAYERS[_layer(m)]}) imports {d} ({LAYERS[_layer(d)]})"
        for m, deps in _graph().items()
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_files() -> None:
    graph = _graph(typing=False)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    modules = {"journal.a": tmp_path, "journal.b": tmp_path, "journal.c": tmp_path}
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport journal.a\n"
        "if TYPE_CHECKING:\n    from journal import b\n"
        "def f():\n    from journal.c import x\n"
    )
    assert _imports(source, modules, typing=True) == {"journal.a", "journal.b", "journal.c"}
    assert _imports(source, modules, typing=False) == {"journal.a", "journal.c"}
