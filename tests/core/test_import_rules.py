"""The layering rules, checked on the source: a forbidden import or an import cycle fails here.

The module import graph is computed with ``ast`` from every first-party module (stagegate, flows, gates),
counting imports inside functions too: a lazy import still couples two modules, and a cycle of lazy imports
is still a cycle (it only fails later, at run time). ``from package import name`` counts as an import of
``package.name`` when that is a module, else of ``package``.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stagegate", "flows", "gates")

# Known cycles that a change under way removes; each entry must name it. Remove an entry once it is gone.
# Empty: every first-party cycle is gone, and a new one fails the test below.
ALLOWED_CYCLES: list[frozenset[str]] = []


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _first_party(name: str) -> str | None:
    """The first-party module an import of ``name`` loads (its longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str) -> set[str]:
    """Every module name ``module`` imports (first-party or not), anywhere in its source."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                names.add(full if full in MODULES else target)
    return names


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        deps = {_first_party(name) for name in imported_names(module)}
        graph[module] = {d for d in deps if d is not None and d != module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative; components of more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def a_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One concrete cycle inside ``component`` (for the failure message): a -> b -> ... -> a."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    return sorted(component)


def _violations(modules: Iterable[str], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module in modules:
        for name in sorted(imported_names(module)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{module} imports {name}")
    return bad


def _under(*prefixes: str) -> list[str]:
    return [m for m in MODULES if any(m == p or m.startswith(p + ".") for p in prefixes)]


# -- the graph machinery is itself checked, on a graph with known cycles ----------------------------------


def test_cycle_finder_on_a_known_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"g"} - {"g"}}
    components = strongly_connected(graph)
    assert sorted(sorted(c) for c in components) == [["a", "b", "c"], ["e", "f"]]
    assert a_cycle(graph, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]


def test_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    # flows.approval imports flows.monitor_control inside a function only
    assert "flows.monitor_control" in graph["flows.approval"]
    assert "stagegate.ports" in graph["stagegate.traffic.base"]
    assert len(MODULES) > 50


# -- the rules -------------------------------------------------------------------------------------------


def test_no_import_cycles_among_first_party_modules() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    for allowed in ALLOWED_CYCLES:
        if allowed not in components:
            warnings.warn(
                f"ALLOWED_CYCLES lists {sorted(allowed)}, which is no longer a cycle: remove it", stacklevel=1
            )
    cycles = [c for c in components if c not in ALLOWED_CYCLES]
    report = [" -> ".join(a_cycle(graph, c)) + f"   (component: {sorted(c)})" for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_gates_are_pure() -> None:
    """gates/ reads only the core contracts (evidence in, verdict out): no flows, no Prefect, no MLflow,
    no I/O libraries, nothing else of the core."""
    forbidden = ("flows", "prefect", "mlflow", "great_expectations", "sqlalchemy", "boto3", "requests")
    assert not _violations(_under("gates"), forbidden)
    allowed_core = {"stagegate.evidence", "stagegate.verdict"}
    core = [
        f"{m} imports {n}"
        for m in _under("gates")
        for n in sorted(imported_names(m))
        if (n == "stagegate" or n.startswith("stagegate.")) and n not in allowed_core
    ]
    assert not core, core


@pytest.mark.parametrize("layer", ["stagegate.ports", "stagegate.connections"])
def test_ports_and_connections_know_no_adapter(layer: str) -> None:
    """The ports and the connections loader import nothing from the simulator, the models, the flows or
    the adapters: adapters depend on ports, and are found through entry points, never imported."""
    forbidden = ("simulator.world", "stagegate.models", "stagegate.adapters", "simulator.oracle", "flows")
    modules = _under(layer)
    assert modules, f"no module {layer}"
    assert not _violations(modules, forbidden)


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The rule checker fails on a planted violation (it is not a check that cannot fail)."""
    planted = "import numpy\n\ndef f():\n    from simulator.world import LiveWorld\n    import prefect\n"
    name = "stagegate._planted_for_test"
    path = tmp_path / "planted.py"
    path.write_text(planted, encoding="utf-8")
    MODULES[name] = path
    try:
        assert _violations([name], ("simulator.world", "prefect")) == [
            f"{name} imports prefect",
            f"{name} imports simulator.world",
        ]
    finally:
        del MODULES[name]
