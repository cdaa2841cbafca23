"""The import graph: layers point one way, and no module imports itself back through others.

Layers, lowest first. A module may import its own layer and the ones below it, never above.
`KNOWN_UPWARD` lists the imports that still point up, each to be removed by the next restructuring
step (see docs/architecture.md); a new one fails this test, and so does a listed one that is gone,
so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent

LAYERS: list[tuple[str, ...]] = [
    # foundations: no knowledge of boxes or of the cluster
    ("appliance.__init__", "appliance.config", "appliance.role", "appliance.netaddr", "appliance.logs",
     "appliance.sdnotify", "appliance.store", "appliance.nodeodm", "appliance.simnode",
     "appliance.sample", "appliance.discovery.clock"),
    # machinery: the coordinator's parts, and finding and trusting boxes; neither knows the other
    ("appliance.cluster",),
    ("appliance.discovery",),
    # the HTTP surface that reads both, and the web UI
    ("appliance.keys", "appliance.admin_auth", "appliance.http_rules", "appliance.box_api", "appliance.openapi",
     "webui"),
    # wiring and commands
    ("appliance.agent", "appliance.demo", "appliance.firstboot", "appliance.admin_client", "appliance.doctor",
     "appliance.power", "appliance.cli_admin", "appliance.cli_key", "appliance.cli_submit"),
    ("appliance.cli", "appliance.__main__"),
]
SIDEWAYS_FORBIDDEN = {("appliance.discovery", "appliance.cluster"), ("appliance.cluster", "appliance.discovery")}

KNOWN_UPWARD = {
    # replication and hand-over live in discovery but work on the cluster's table: one package next
    ("appliance.discovery.handover", "appliance.cluster.coordinator"),
    ("appliance.discovery.replica", "appliance.cluster.coordinator"),
    ("appliance.discovery.replica", "appliance.cluster.tasks"),
    # the clock both use still lives in discovery
    ("appliance.cluster.registry", "appliance.discovery.clock"),
    ("appliance.cluster.replication", "appliance.discovery.clock"),
    ("appliance.cluster.tracker", "appliance.discovery.clock"),
    ("appliance.cluster.reconciler", "appliance.discovery.clock"),
    # typed app keys are declared in one module of the web layer, for objects of every layer; the lower
    # layers read them from there (each key belongs next to the type it holds)
    ("appliance.discovery.service", "appliance.keys"),
    ("appliance.discovery.agent_api", "appliance.keys"),
    ("appliance.discovery.relay", "appliance.keys"),
    ("appliance.discovery.agent_api", "appliance.http_rules"),
    ("appliance.discovery.password_sync", "appliance.keys"),
    ("appliance.discovery.password_sync", "appliance.admin_auth"),
    ("appliance.cluster.routes", "appliance.keys"),
    ("appliance.cluster.admin", "appliance.keys"),
}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__") if name != "appliance.__init__" else name


def _type_only(tree: ast.AST) -> set[int]:
    """The ids of import statements under `if TYPE_CHECKING:`."""
    return {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for stmt in block.body for n in ast.walk(stmt)}


def imports(runtime_only: bool = False) -> dict[str, set[str]]:
    """Each module of the program and the modules of the program it imports (type-only ones too,
    unless `runtime_only`)."""
    paths = [*ROOT.glob("appliance/**/*.py"), *ROOT.glob("webui/**/*.py")]
    names = {module_name(p) for p in paths} | {"appliance"}
    graph: dict[str, set[str]] = {}
    for path in paths:
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        skip = _type_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
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


def test_every_import_points_down_or_sideways():
    upward = set()
    for module, targets in imports().items():
        for target in targets:
            crosses = (package(module), package(target)) in SIDEWAYS_FORBIDDEN
            if layer_of(target) > layer_of(module) or crosses:
                upward.add((module, target))
    assert upward - KNOWN_UPWARD == set(), "new imports that point up a layer"
    assert KNOWN_UPWARD - upward == set(), "these are gone: take them off KNOWN_UPWARD"


def test_no_circles():
    """At run time. keys.py's type-only imports of every layer still close circles on paper; they are
    in KNOWN_UPWARD, and go when each key moves to the module that owns its type."""
    graph = imports(runtime_only=True)
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
