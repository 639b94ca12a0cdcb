"""One-way layers: the imports of src/eventlm, read with ``ast`` (imports inside functions count too),
form no circle, and no module uses another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package)."""
    out = {}
    for path in (SRC / "eventlm").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imports(modules) -> dict[str, dict[str, list[str]]]:
    """module -> {imported eventlm module: [names imported from it]} (a module import lists no name)."""
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, is_package) in modules.items():
        edges: dict[str, list[str]] = {}
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                pairs = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                pairs = [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in modules else (base, a.name)
                         for a in node.names]
            else:
                continue
            for target, name in pairs:
                if target.startswith("eventlm"):
                    found = resolve(target)
                    if found and found != module:
                        edges.setdefault(found, []).extend([name] if name else [])
        graph[module] = edges
    return graph


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": []}, "b": {}}) == []


def test_src_eventlm_imports_form_no_circle():
    graph = _imports(_modules())
    assert len(graph) > 50 and graph["eventlm.apply"]  # the walk saw the package and its imports
    assert _cycles(graph) == []


def test_layers_point_one_way():
    """The model directory sits above the scorers (it opens them; they are handed it), the readers
    below the one module that dispatches .root files, metrics below analysis and plotting."""
    graph = _imports(_modules())
    for low, high in [("eventlm.score", "eventlm.modeldir"), ("eventlm.classifier", "eventlm.modeldir"),
                      ("eventlm.io.root", "eventlm.io.nanoaod"), ("eventlm.io.root", "eventlm.io.physlite"),
                      ("eventlm.io.nanoaod", "eventlm.io.rootfile"), ("eventlm.metrics", "eventlm.analysis"),
                      ("eventlm.model", "eventlm.batching"), ("eventlm.rows", "eventlm.modeldir")]:
        assert not any(dep == high or dep.startswith(high + ".") for dep in graph[low]), (low, high)


def test_no_private_name_is_imported_from_another_module():
    graph = _imports(_modules())
    private = {(m, dep, n) for m, edges in graph.items() for dep, names in edges.items() for n in names
               if n.startswith("_") and n != "__version__"}
    assert private == set()
