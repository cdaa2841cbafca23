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


@dataclass
class Target:
    """Something that must answer exactly like a NodeODM: a simnode, or Passel in front of one."""

    kind: str
    server: ServerThread
    node: ServerThread
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(params=["simnode", "passel"])
def target_factory(request: pytest.FixtureRequest, simnode_factory, passel_factory) -> Callable[..., Target]:
    """Build the implementation under test; `node_settings` go to the (backing) simnode."""

    def build(token: str = "", **node_settings: Any) -> Target:
        if request.param == "simnode":
            node = simnode_factory(token=token or None, **node_settings)
            return Target("simnode", node, node, token)
        node = simnode_factory(token="node-secret", **node_settings)
        server = passel_factory([f"{node.url}?token=node-secret"], token=token)
        return Target("passel", server, node, token)

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
    import os

    from tests.netns import netns_available
    reason = netns_available()
    if reason is None:
        return
    if os.environ.get("PASSEL_REQUIRE_NETNS") == "1":
        pytest.fail(f"multi-host tests are required here but cannot run: {reason}")
    pytest.skip(reason)
