"""The import graph: layers point one way, and no module imports itself back through others.

Layers, lowest first (docs/architecture.md draws them). A module may import its own layer and the
ones below it, never above; the cluster and discovery, side by side, never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent

LAYERS: list[tuple[str, ...]] = [
    # foundations: no knowledge of boxes or of the cluster
    ("appliance.__init__", "appliance.background", "appliance.config", "appliance.role", "appliance.clock", "appliance.netaddr", "appliance.logs",
     "appliance.sdnotify", "appliance.store", "appliance.nodeodm", "appliance.simnode", "appliance.simnode.split_merge",
     "appliance.sample", "appliance.admin_password", "appliance.products"),
    # machinery: the coordinator's parts, and finding and trusting boxes; neither knows the other
    ("appliance.cluster", "appliance.cluster.job_parts", "appliance.cluster.task_merge"),
    ("appliance.discovery",),
    # keeping every box's copy of the table and the password, which needs both
    ("appliance.replication",),
    # the HTTP surface that reads them all, and the web UI
    ("appliance.admin_auth", "appliance.http_rules", "appliance.relay", "appliance.box_api", "appliance.agent_api",
     "appliance.passel_admin", "appliance.openapi", "webui"),
    # wiring and commands
    ("appliance.agent", "appliance.passel_service", "appliance.demo", "appliance.firstboot", "appliance.admin_client",
     "appliance.doctor", "appliance.power", "appliance.cli_admin", "appliance.cli_key", "appliance.cli_submit",
     "appliance.cli_run", "appliance.cli_nodes", "appliance.cli_tasks", "appliance.cli_status", "appliance.cli_options",
     "appliance.cli_pyodm", "appliance.cli_download"),
    ("appliance.cli", "appliance.__main__"),
]
SIDEWAYS_FORBIDDEN = {("appliance.discovery", "appliance.cluster"), ("appliance.cluster", "appliance.discovery")}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__") if name != "appliance.__init__" else name


def imports() -> dict[str, set[str]]:
    """Each module of the program and the modules of the program it imports, type-only ones too."""
    paths = [*ROOT.glob("appliance/**/*.py"), *ROOT.glob("webui/**/*.py")]
    names = {module_name(p) for p in paths} | {"appliance"}
    graph: dict[str, set[str]] = {}
    for path in paths:
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:  # a submodule, else the module itself
                candidates = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                              for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in names}
        me = module_name(path)
        graph[me] = found - {me, "appliance"}
    return graph


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_graph_is_read():
    """The checks below are only as good as the graph: it must see plain, dotted and type-only imports."""
    graph = imports()
    assert "appliance.cluster.coordinator" in graph["appliance.agent"]
    assert "appliance.replication.feed" in graph["appliance.agent_api"]
    assert "appliance.discovery.passel" in graph["appliance.replication.handover"]
    assert layer_of("appliance.discovery.passel") < layer_of("appliance.replication.feed") < layer_of("webui.routes")


def test_every_import_points_down_or_sideways():
    upward = set()
    for module, targets in imports().items():
        for target in targets:
            crosses = (package(module), package(target)) in SIDEWAYS_FORBIDDEN
            if layer_of(target) > layer_of(module) or crosses:
                upward.add((module, target))
    assert upward == set(), "imports that point up a layer, or across between the cluster and discovery"


def test_no_circles():
    """Type-only imports count too: a circle on paper is still a circle for the reader."""
    graph = imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                circles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not circles, circles
