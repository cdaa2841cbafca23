"""Shared fixtures: real simulated nodes and real coordinators on loopback, at ephemeral ports."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.agent import create_app
from appliance.config import load_config
from appliance.simnode import SimnodeSettings, create_simnode_app
from appliance.simnode.app import ENGINE
from tests.realnode import REQUIRED, RealNode, unavailable_reason
from tests.support import ServerThread

FAST = 0.02  # seconds per image: quick enough for tests, slow enough to see RUNNING


@pytest.fixture
def simnode_factory() -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def start(**settings: Any) -> ServerThread:
        settings.setdefault("seconds_per_image", FAST)
        server = ServerThread(lambda: create_simnode_app(SimnodeSettings(**settings))).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def passel_factory(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def start(nodes: list[str], **flags: Any) -> ServerThread:
        flags = {"host": "127.0.0.1", "port": 3000, "state_dir": str(tmp_path / f"passel{len(servers)}"),
                 "discovery": False, "poll_seconds": 0.3, "task_poll_seconds": 0.2, "min_free_disk_mb": 0,
                 "public_url": "http://127.0.0.1:3000"} | flags | {"node": nodes}
        config = load_config(environ={}, flags=flags)
        server = ServerThread(lambda: create_app(config)).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


def require_realnode() -> None:
    """Skip where a real NodeODM cannot run, except under `.ci/run`, where that is a failure."""
    reason = unavailable_reason()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"tests against real NodeODM are required here but it cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def realnode_factory(tmp_path: Path) -> Iterator[Callable[..., RealNode]]:
    """Start real NodeODM nodes (test mode) on ephemeral loopback ports; flags are NodeODM's own."""
    require_realnode()
    nodes: list[RealNode] = []

    def start(*flags: str) -> RealNode:
        node = RealNode(tmp_path / f"nodeodm{len(nodes)}", *flags)
        nodes.append(node)
        return node.start()

    yield start
    for node in reversed(nodes):
        node.stop(graceful=False)


@dataclass
class Target:
    """Something that must answer exactly like a NodeODM: a node (simulated or real), or Passel in front of one."""

    kind: str
    server: ServerThread | RealNode
    node: ServerThread | RealNode
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def real(self) -> bool:
        return isinstance(self.node, RealNode)

    def stored(self, uuid: str) -> dict[str, Any]:
        """What the node itself holds for a task, in the terms of NodeODM's own `tasks.json`."""
        if isinstance(self.node, RealNode):
            return self.node.stored_tasks()[uuid]
        task = self.node.app[ENGINE].tasks[uuid]  # type: ignore[union-attr]
        return {"name": task.name, "options": task.options, "outputs": task.outputs, "webhook": task.webhook,
                "skipPostProcessing": task.skip_post_processing, "dateCreated": task.date_created}


@pytest.fixture(params=["simnode", "nodeodm", "passel+simnode", "passel+nodeodm"])
def target_factory(request: pytest.FixtureRequest, simnode_factory, passel_factory,
                   tmp_path: Path) -> Callable[..., Target]:
    """Build the implementation under test: a node, or Passel in front of one (with its own node token).

    `task_seconds` makes each task take about that long on either kind of node, so that tests can
    see it RUNNING; the simulated node takes it per image, for 10 images.
    """
    kind = request.param
    if kind.endswith("nodeodm"):
        require_realnode()
    real: list[RealNode] = []
    request.addfinalizer(lambda: [node.stop(graceful=False) for node in real])

    def node_for(token: str | None, task_seconds: float) -> ServerThread | RealNode:
        if kind.endswith("simnode"):
            return simnode_factory(token=token, **({"seconds_per_image": task_seconds / 10} if task_seconds else {}))
        flags = ["--token", token] if token else []
        node = RealNode(tmp_path / f"nodeodm{len(real)}", *flags, "--test_seconds", str(round(task_seconds)))
        real.append(node)
        return node.start()

    def build(token: str = "", task_seconds: float = 0) -> Target:
        if not kind.startswith("passel"):
            node = node_for(token or None, task_seconds)
            return Target(kind, node, node, token)
        node = node_for("node-secret", task_seconds)
        server = passel_factory([f"{node.url}?token=node-secret"], token=token)
        return Target(kind, server, node, token)

    return build


@pytest.fixture
def target(target_factory) -> Target:
    return target_factory()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every server a test starts must be stopped by it (python-zeroconf's verify_threads_ended)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.name.startswith("test-server")]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def netns_required() -> None:
    """Skip multi-host tests where namespaces cannot be made, except in CI, where that is a failure."""
    require_netns()


def require_netns() -> None:
    """What `netns_required` does, for a fixture of a wider scope."""
    import os

    from tests.netns import netns_available
    reason = netns_available()
    if reason is None:
        return
    if os.environ.get("PASSEL_REQUIRE_NETNS") == "1":
        pytest.fail(f"multi-host tests are required here but cannot run: {reason}")
    pytest.skip(reason)
