"""The tree is the architecture: lower layers never import higher ones, peers never import
each other, and no module imports itself round a cycle. Lazy imports inside functions count.

    core  <-  policies, costmodel, workloads  <-  engines  <-  backends  <-  studies, testing  <-  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "batchlab"
RANK = {"core": 0, "policies": 1, "costmodel": 1, "workloads": 1, "engines": 2, "backends": 3,
        "studies": 4, "testing": 4, "cli": 5}
FACADE = "batchlab"   # batchlab/__init__.py re-exports the public API from every layer


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> nx.DiGraph:
    """Module -> modules of batchlab it imports (at the top or inside a function)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from pkg import mod` imports the module pkg.mod when there is one
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_is_in_a_layer():
    unplaced = [m for m in import_graph() if m != FACADE and layer(m) not in RANK]
    assert not unplaced, f"modules outside the layers {sorted(RANK)}: {unplaced}"


def test_no_upward_or_sideways_imports():
    bad = []
    for src, dst in import_graph().edges:
        if src == FACADE or dst == FACADE and src.endswith(("cli.parser", "sweep")):
            continue   # the facade itself; __version__ comes from it
        a, b = layer(src), layer(dst)
        if dst == FACADE or (a != b and RANK[b] >= RANK[a]):
            bad.append(f"{src} -> {dst}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_core_imports_nothing_else_of_batchlab():
    graph = import_graph()
    outside = [f"{m} -> {t}" for m in graph if layer(m) == "core" for t in graph[m]
               if layer(t) != "core"]
    assert not outside, outside


def test_no_import_cycles():
    graph = import_graph()
    graph.remove_node(FACADE)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checks above can fail: a core module importing an engine is found."""
    fake = tmp_path / "batchlab"
    (fake / "core").mkdir(parents=True)
    (fake / "engines").mkdir()
    for pkg in (fake, fake / "core", fake / "engines"):
        (pkg / "__init__.py").write_text("")
    (fake / "core" / "a.py").write_text("def f():\n    from ..engines import b\n")
    (fake / "engines" / "b.py").write_text("from ..core import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    graph = import_graph()
    assert ("batchlab.core.a", "batchlab.engines.b") in graph.edges
    assert list(nx.simple_cycles(graph.subgraph(["batchlab.core.a", "batchlab.engines.b"])))
