"""Helpers for the UI tests: a browser-like session with the form token, and boxes in chosen passel roles.

A box's role is set by a stand-in Passel (no mDNS, no election), so a follower whose coordinator is
gone, or a passel of fifty boxes, can be drawn on loopback in a unit test.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import requests
from aiohttp import web

from appliance.agent import create_app
from appliance.clock import boottime
from appliance.config import load_config
from appliance.discovery.election import COORDINATOR, FOLLOWER
from appliance.discovery.identity import IDENTITY_KEY
from appliance.discovery.membership import Membership, Peer
from appliance.discovery.passel import PASSEL_KEY
from appliance.discovery.state import RoleState
from appliance.relay import RELAY_SESSION_KEY
from tests.support import ServerThread

FOREVER = 10 ** 6  # seconds: a stand-in peer stays alive for the whole test


def free_port() -> int:
    """A port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peer(name: str, address: str, port: int, role: str = FOLLOWER) -> Peer:
    return Peer(id=hashlib.sha1(name.encode()).hexdigest()[:12], address=address, port=port, name=name, role=role,
                last_heard=boottime() + FOREVER)


class StandInPassel:
    """What the agent's code reads of a Passel, with the role and the peers fixed by the test."""

    def __init__(self, identity: Any, peers: list[Peer], coordinator: Peer | None, is_coordinator: bool) -> None:
        self.identity = identity
        self.priority = 0
        self.api_port = 0
        self.sleeping = False
        self.membership = Membership(identity.id)
        self.membership.peers.update({p.id: p for p in peers})
        self.leader = coordinator
        self.is_coordinator = is_coordinator
        leader_id = identity.id if is_coordinator else (coordinator.id if coordinator else None)
        self.state = RoleState(role=COORDINATOR if is_coordinator else FOLLOWER, term=3, coordinator_id=leader_id)
        self.trust = SimpleNamespace(fingerprint=lambda: "test")

    def coordinator(self) -> Peer | None:
        return self.leader

    async def wait_for_coordinator(self, timeout: float, not_id: str | None = None) -> bool:
        return self.is_coordinator or self.leader is not None


def start_box(state_dir: Path, nodes: list[str], peers: list[Peer], coordinator: Peer | None,
              is_coordinator: bool = False, **flags: Any) -> ServerThread:
    """A box that believes it is in a passel: a follower of `coordinator`, or the coordinator itself."""
    config = load_config(environ={}, flags={"host": "127.0.0.1", "port": 3000, "state_dir": str(state_dir),
                                            "discovery": False, "poll_seconds": 0.3, "task_poll_seconds": 0.2,
                                            "min_free_disk_mb": 0, "public_url": "http://127.0.0.1:3000",
                                            "node": nodes} | flags)

    def build() -> web.Application:
        app = create_app(config)

        async def join(app: web.Application) -> None:
            app[PASSEL_KEY] = StandInPassel(app[IDENTITY_KEY], peers, coordinator, is_coordinator)  # type: ignore[assignment]
            app[RELAY_SESSION_KEY] = aiohttp.ClientSession(auto_decompress=False)

        async def leave(app: web.Application) -> None:
            await app[RELAY_SESSION_KEY].close()

        app.on_startup.append(join)
        app.on_cleanup.append(leave)
        return app

    return ServerThread(build).start()


class Browser:
    """A requests session that, like a browser, keeps cookies and fills in the form token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", {"Accept": "text/html"})
        return self.session.get(self.url + path, timeout=10, **kwargs)

    @property
    def csrf(self) -> str:
        if "passel_csrf" not in self.session.cookies:
            self.get("/ui/admin")
        return self.session.cookies["passel_csrf"]

    def post(self, path: str, data: dict[str, Any] | None = None, token: bool = True) -> requests.Response:
        form = dict(data or {})
        if token:
            form["csrf"] = self.csrf
        return self.session.post(self.url + path, data=form, timeout=15, allow_redirects=False)
