"""The module graph has no cycles: data flows one way (train -> export -> import -> passes
-> kernels -> back end -> run/profile), so a module never needs, even lazily, a module
that needs it.

Every `import` of an nrqc module counts, top-level or inside a function (a function-local
import that exists to dodge a cycle is still a cycle). `from pkg import name` counts as an
import of `pkg.name` when that is a module, else of `pkg` (a package's own `__init__`).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# package -> folder, as pyproject.toml's package-dir maps them
ROOTS = {"nrqc": REPO / "nrqc", "nrqc.passes": REPO / "passes", "nrqc.targets": REPO / "targets",
         "nrqc.models": REPO / "models"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                wanted = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            else:
                continue
            for w in wanted:
                target = owner(w) if w.startswith("nrqc") else None
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_scan_sees_local_imports_and_finds_a_planted_cycle():
    graph = import_graph()
    assert "nrqc.compiler" in graph and "nrqc.passes.binary_rewrite" in graph
    assert sum(len(v) for v in graph.values()) > 100  # top-level and function-local imports alike
    planted = {k: set(v) for k, v in graph.items()}
    planted["nrqc.targets.description"].add("nrqc.compiler")  # a lazy import the wrong way
    assert any("nrqc.compiler" in c and "nrqc.targets.description" in c for c in cycles(planted))


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (strongly connected modules):\n" + "\n".join(" <-> ".join(c) for c in found)
