"""The layering rules, checked on the source: a forbidden import or an import cycle fails here.

The module import graph is computed with ``ast`` from every first-party module (stagegate, flows, gates and
the simulator),
counting imports inside functions too: a lazy import still couples two modules, and a cycle of lazy imports
is still a cycle (it only fails later, at run time). ``from package import name`` counts as an import of
``package.name`` when that is a module, else of ``package``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ("stagegate", "flows", "gates")  # never import the simulator, not even inside a function
SIMULATOR = "simulator"  # one adapter set behind the ports; it may import the core
PACKAGES = (*CORE, SIMULATOR)

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
    forbidden = (SIMULATOR, "stagegate.models", "stagegate.adapters", "flows")
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


# -- the simulator is behind the ports: the core, flows and gates never import it --------------------------

_DYNAMIC_IMPORTS = {"import_module", "__import__"}


def simulator_imports(modules: Iterable[str]) -> list[str]:
    """``file:line: imports NAME`` for every import of the simulator package in ``modules``: ``import``
    and ``from ... import`` anywhere in the module (at module level, in functions, under TYPE_CHECKING),
    and ``importlib.import_module`` / ``__import__`` of a literal name."""
    found = []
    for module in modules:
        path = MODULES[module]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # relative ones stay in the package
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in _DYNAMIC_IMPORTS and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            for name in names:
                if name == SIMULATOR or name.startswith(SIMULATOR + "."):
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(f"{where}:{node.lineno}: {module} imports {name}")
    return found


def test_the_core_flows_and_gates_never_import_the_simulator() -> None:
    modules = _under(*CORE)
    assert len(modules) > 50 and _under(SIMULATOR), "the scan must see the core and the simulator"
    found = simulator_imports(modules)
    assert not found, "the core reaches the simulator only through entry points:\n" + "\n".join(found)


def test_a_planted_simulator_import_is_caught_with_file_and_line(tmp_path: Path) -> None:
    planted = (
        "import numpy\n"
        "import simulator\n"
        "\n"
        "def f():\n"
        "    from simulator.world.twin import TwinWorld\n"
        "    import importlib\n"
        "    importlib.import_module('simulator.models.pyfunc')\n"
        "    from stagegate.logs import ServedBatch\n"
    )
    name = "flows._planted_for_test"
    path = tmp_path / "planted.py"
    path.write_text(planted, encoding="utf-8")
    MODULES[name] = path
    try:
        assert simulator_imports([name]) == [
            f"{path}:2: {name} imports simulator",
            f"{path}:5: {name} imports simulator.world.twin",
            f"{path}:7: {name} imports simulator.models.pyfunc",
        ]
    finally:
        del MODULES[name]


def test_the_simulator_is_found_by_the_graph() -> None:
    """The simulator is in the graph (so its own cycles are caught too) and it does import the core."""
    graph = import_graph()
    assert "stagegate.logs" in graph["simulator.world.live"]
    assert not any(d.startswith(SIMULATOR) for m in _under(*CORE) for d in graph[m])


_NO_SIMULATOR_IMPORTED = """
import sys
import stagegate.cli, flows.promote, stagegate.runtime, stagegate.evaluation, gates
import flows.stages.simulation, flows.stages.offline, stagegate.adapters.offline, stagegate.adapters.clock
loaded = sorted(m for m in sys.modules if m == "simulator" or m.startswith("simulator."))
print("simulator modules imported:", loaded)
sys.exit(1 if loaded else 0)
"""

_SIMULATOR_ABSENT = """
import sys
from importlib.abc import MetaPathFinder

class NoSimulator(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "simulator" or name.startswith("simulator."):
            raise ModuleNotFoundError(f"No module named {name!r} (the simulator is absent)", name=name)
        return None

sys.meta_path.insert(0, NoSimulator())
import stagegate.cli, flows.promote, stagegate.runtime, stagegate.evaluation, gates
from typer.testing import CliRunner

result = CliRunner().invoke(stagegate.cli.app, ["policy", "validate", "policies/default.yaml"])
if result.exit_code != 0:
    sys.exit(f"a core command failed without the simulator: {result.output}")
try:
    import simulator  # noqa: F401
except ModuleNotFoundError:
    print("core imported without the simulator")
else:
    sys.exit("the blocker did not block the simulator")
"""


@pytest.mark.parametrize("script", [_NO_SIMULATOR_IMPORTED, _SIMULATOR_ABSENT], ids=["installed", "absent"])
def test_the_core_imports_without_the_simulator(script: str) -> None:
    """In a fresh interpreter, the CLI, the promotion flow, the runtime, evaluation and the gates import
    without loading any simulator module, with the simulator installed; with it made unimportable, they
    still import and a core command (``policy validate``) runs."""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
