"""The nodes this coordinator may use, and their health, polled every few seconds.

ClusterODM polls once a minute and calls a node offline after two; a field passel cannot wait that
long to notice a closed lid, so the default here is a poll every 3 s and offline after 2 misses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from appliance.clock import boottime
from appliance.cluster.link import Link, after_probe, after_transfer
from appliance.cluster.scheduler import NodeView
from appliance.cluster.speed import (
    Estimate,
    Hardware,
    Sample,
    blend,
    calibrations,
    dump_samples,
    estimates,
    parse_samples,
    speed_key,
)
from appliance.nodeodm.client import (
    NodeClient,
    NodeError,
    NodeUnreachable,
    split_node_url,
)
from appliance.nodeodm.options import OptionSpec
from appliance.nodeodm.sentences import host_port, node_problem
from appliance.role import Role
from appliance.store.database import Store
from appliance.store.models import Node

log = logging.getLogger("passel.nodes")
MISSES_BEFORE_OFFLINE = 2


class NodeNotFound(KeyError):
    """No node has that id or URL."""


@dataclass
class NodeState:
    """A node row plus what this process learned from polling it."""

    row: Node
    client: NodeClient
    online: bool = False
    misses: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    last_error: str = ""
    last_answer: float = field(default_factory=boottime)  # boottime of the last answered poll
    calibration: float = 1.0  # the fleet's learned/prior ratio for its engine, kept by the registry

    @property
    def name(self) -> str:
        """How logs and events name the node: its label (the demo's "workstation", a technician's
        `#name`) with its address, or the address alone."""
        return f"{self.row.label} ({self.row.url})" if self.row.label else self.row.url

    @property
    def upstream(self) -> bool:
        return self.row.upstream

    @property
    def link(self) -> Link:
        return Link.from_json(self.row.link)

    def silent_for(self) -> float:
        """Seconds since the node last answered, while it is not answering (0 when it answers)."""
        return boottime() - self.last_answer if self.misses else 0.0

    @property
    def id(self) -> int:
        return self.row.id

    def hardware(self) -> Hardware:
        """The node as the speed model sees it; a figure from before speeds were kept per kind counts
        as one whole run."""
        info = self.info or self.row.last_info
        engine = str(info.get("engine") or "odm")
        samples = parse_samples(self.row.speeds)
        if not samples and self.row.ms_per_image:
            samples = {speed_key(engine, "full"): Sample(self.row.ms_per_image, 1)}
        return Hardware(samples, engine, int(info.get("cpuCores") or 1),
                        int(info.get("totalMemory") or 0) // (1024 * 1024))

    def speeds(self) -> dict[str, Estimate]:
        return estimates(self.hardware(), self.calibration)

    def public(self, active_tasks: int) -> dict[str, Any]:
        """What the admin API shows: never the token. `ms_per_image` is for a whole ODM run; `speeds`
        has each task kind and where its figure comes from (learned, other kinds, prior)."""
        info = self.info or self.row.last_info
        speeds = self.speeds()
        return {
            "id": self.id, "url": self.row.url, "label": self.row.label or self.row.url,
            "source": self.row.source, "locked": self.row.locked, "online": self.online,
            "upstream": self.row.upstream, "link": self.link_state() if self.row.upstream else None,
            "has_token": bool(self.row.token), "last_seen": self.row.last_seen,
            "last_error": self.last_error, "active_tasks": active_tasks,
            "slots": int(info.get("maxParallelTasks") or 1), "queue": int(info.get("taskQueueCount") or 0),
            "max_images": info.get("maxImages"), "engine": info.get("engine", ""),
            "version": info.get("version", ""), "cores": info.get("cpuCores"),
            "total_memory": info.get("totalMemory"), "available_memory": info.get("availableMemory"),
            "ms_per_image": round(speeds["full"].ms_per_image, 1), "box_agent": self.row.agent_url or None,
            "speeds": {kind: {"ms_per_image": round(e.ms_per_image, 1), "source": e.source, "samples": e.samples}
                       for kind, e in speeds.items()},
        }

    def link_state(self) -> str:
        """An upstream's link as the pages say it: up (with what was measured) or down."""
        if not self.online:
            return "down: not answering"  # the reason is the uplink's, and says nothing a responder can act on
        return "up: " + self.link.summary()


def _on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class NodeRegistry:
    """Keeps the node list in SQLite and its health in memory."""

    def __init__(self, store: Store, session: aiohttp.ClientSession, poll_seconds: float, role: Role) -> None:
        self.store = store
        self.session = session
        self.poll_seconds = poll_seconds
        self.nodes: dict[int, NodeState] = {}
        self.on_change: list[Callable[[], None]] = []
        self.role = role  # only the coordinator polls
        self._adding = asyncio.Lock()  # two adds of one URL at once (mDNS and a hand) would insert it twice

    async def load(self) -> None:
        for row in await self.store.load(Node):
            self.nodes[row.id] = self._state(row)
        self._recalibrate()

    def _state(self, row: Node) -> NodeState:
        return NodeState(row=row, client=NodeClient(self.session, row.url, row.token or None))

    def get(self, node_id: int | None) -> NodeState | None:
        return self.nodes.get(node_id) if node_id is not None else None

    def find(self, ref: str) -> NodeState:
        """A node by id or URL, as the CLI and admin API name them."""
        for state in self.nodes.values():
            if ref == str(state.id) or ref.rstrip("/") == state.row.url:
                return state
        raise NodeNotFound(ref)

    def find_url(self, url: str) -> NodeState | None:
        base = url.split("?")[0].rstrip("/")
        return next((s for s in self.nodes.values() if s.row.url == base), None)

    async def add(self, url: str, source: str = "manual", label: str = "", upstream: bool = False) -> NodeState:
        """Add a node, or return it unchanged when its URL is already known (an upstream one stays
        upstream: mDNS or a hand-over naming it again does not make it local)."""
        async with self._adding:
            return await self._add(url, source, label, upstream)

    async def _add(self, url: str, source: str, label: str, upstream: bool) -> NodeState:
        base, token = split_node_url(url)
        for state in self.nodes.values():
            if state.row.url == base:
                if (token and token != state.row.token) or (upstream and not state.row.upstream):
                    state.row.token = token or state.row.token
                    state.row.upstream = state.row.upstream or upstream
                    state.client = NodeClient(self.session, base, state.row.token or None)
                    await self.store.save(state.row)
                    self._changed()
                return state
        row = await self.store.add_node(Node(url=base, token=token or "", source=source, label=label,
                                             upstream=upstream))
        state = self._state(row)
        self.nodes[row.id] = state
        kind = "Upstream node" if upstream else "Node"
        await self.store.record("node-added", f"{kind} {state.name} added ({source})", node_id=row.id)
        if self.role.coordinating:
            await self.poll_one(state)
        return state

    async def remove(self, ref: str) -> NodeState:
        state = self.find(ref)
        del self.nodes[state.id]
        await self.store.delete(Node, state.id)
        await self.store.record("node-removed", f"Node {state.name} removed", node_id=state.id)
        self._changed()
        return state

    async def set_locked(self, ref: str, locked: bool) -> NodeState:
        state = self.find(ref)
        state.row.locked = locked
        await self.store.save(state.row)
        verb = "locked: it gets no new tasks" if locked else "unlocked: it takes new tasks again"
        await self.store.record("node-locked" if locked else "node-unlocked", f"Node {state.name} {verb}", node_id=state.id)
        self._changed()
        return state

    async def learn_speed(self, node_id: int, ms_per_image: float, kind: str = "full") -> None:
        """Blend a finished task's speed into the node's estimate for its engine and the task's kind."""
        state = self.nodes.get(node_id)
        if state is None or ms_per_image <= 0:
            return
        hardware = state.hardware()
        key = speed_key(hardware.engine, kind)
        state.row.speeds = dump_samples({**hardware.samples, key: blend(hardware.samples.get(key), ms_per_image)})
        self._recalibrate()
        await self.store.save(state.row)

    async def learn_link(self, node_id: int, sent: bool, size: int, seconds: float) -> None:
        """Fold a whole transfer to or from an upstream node into its measured link."""
        state = self.nodes.get(node_id)
        if state is None or not state.row.upstream:
            return
        link = after_transfer(state.link, sent, size, seconds)
        if link != state.link:
            state.row.link = link.to_json()
            await self.store.save(state.row)
            log.info("Upstream %s: link now %s", state.name, link.summary())

    def _recalibrate(self) -> None:
        states = list(self.nodes.values())
        factors = calibrations(s.hardware() for s in states)
        for state in states:
            state.calibration = factors.get(state.hardware().engine, 1.0)

    def _changed(self) -> None:
        self._recalibrate()
        for callback in self.on_change:
            callback()

    def start_watching(self) -> None:
        """This box begins coordinating: a node's silence counts from now. As a follower it polled no
        node, so an old last answer says nothing, and must not make its tasks lost at once."""
        now = boottime()
        for state in self.nodes.values():
            state.last_answer, state.misses = now, 0

    async def poll_one(self, state: NodeState, timeout: aiohttp.ClientTimeout | None = None) -> None:
        """Ask one node for /info (and /options on the way back online)."""
        was_online = state.online
        asked = boottime()
        try:
            info = await state.client.info(timeout)
            if state.row.upstream:  # the light probe: a small request, so its time is the round trip
                state.row.link = after_probe(state.link, boottime() - asked).to_json()
            if not was_online or not state.row.last_options:
                state.row.last_options = await state.client.options()
        except (NodeUnreachable, NodeError) as exc:
            state.misses += 1
            state.last_error = node_problem(exc, state.row.label or host_port(state.row.url))
            if state.misses >= MISSES_BEFORE_OFFLINE:
                await self._offline(state)
            return
        state.info, state.misses, state.last_error, state.last_answer = info, 0, "", boottime()
        state.row.last_info = info
        state.row.last_seen = time.time()
        state.online = True
        await self.store.save(state.row)
        if not was_online:
            await self.store.record("node-online", f"{'Upstream node' if state.row.upstream else 'Node'} {state.name} "
                                    "is online "
                                    f"({info.get('maxParallelTasks')} slots, {info.get('cpuCores')} cores)", node_id=state.id)
        self._changed()

    async def went_down(self, state: NodeState, problem: str) -> None:
        """A send found nothing listening at the node: offline now, not after the next polls, which
        wait for the slowest node (a dead node was tried again at once, and every try was counted
        against the task: nemesis seed 377). Its next answer to a poll brings it back."""
        state.last_error = problem
        await self._offline(state)

    async def _offline(self, state: NodeState) -> None:
        """Not to be given work until a poll hears it again; said once, when it goes."""
        if state.online:
            state.online = False
            await self.store.record("node-offline", state.last_error, node_id=state.id)
            self._changed()

    async def poll_all(self, timeout: aiohttp.ClientTimeout | None = None) -> None:
        await asyncio.gather(*(self.poll_one(s, timeout) for s in list(self.nodes.values())))

    async def poll_forever(self) -> None:
        while True:
            if self.role.coordinating:
                await self.poll_all()
            await asyncio.sleep(self.poll_seconds)

    async def ensure(self, url: str, source: str = "handover", agent_url: str = "", box: str = "") -> NodeState:
        """A node by URL, added when unknown (handed-over tasks and mDNS bring nodes this box never saw);
        `agent_url` and `box` say which box shares it, when known. A box's node announced at a new
        address (DHCP arrived after link-local, or the box moved networks) is the same node: its row
        moves, so the tasks on it are not taken for lost."""
        state = (await self._moved(url, box) if box else None) or await self.add(url, source=source)
        if (agent_url and state.row.agent_url != agent_url) or (box and state.row.box != box):
            state.row.agent_url = agent_url or state.row.agent_url
            state.row.box = box or state.row.box
            await self.store.save(state.row)
        return state

    async def _moved(self, url: str, box: str) -> NodeState | None:
        base, _ = split_node_url(url)
        if self.find_url(base) is not None:
            return None
        new = urlsplit(base)
        for state in self.nodes.values():
            old = state.row.url
            if state.row.box == box and (urlsplit(old).port, urlsplit(old).path) == (new.port, new.path):
                state.row.url = base
                state.client = NodeClient(self.session, base, state.row.token or None)
                await self.store.save(state.row)
                await self.store.record("node-moved", f"Node {old} is now at {base} (its box's address changed)",
                                        node_id=state.id)
                self._changed()
                return state
        return None

    def near(self, box: str) -> frozenset[int]:
        """The nodes on `box`, which get its staged files without crossing the network; on this box
        itself, a node on loopback too (one given by hand as 127.0.0.1)."""
        return frozenset(s.id for s in self.nodes.values()
                         if (box and s.row.box == box) or (box == self.role.self_id and _on_loopback(s.row.url)))

    def views(self, busy: dict[int, int], same_job: dict[int, int] | None = None,
              hidden: dict[int, int] | None = None) -> list[NodeView]:
        """Snapshots for the scheduler; `busy` is the coordinator's own count of active tasks per node,
        `hidden` the tasks a node counts that placement may ignore (straggler copies, which give way)."""
        views = []
        for s in self.nodes.values():
            info = s.info or s.row.last_info
            link = s.link if s.row.upstream else None  # parsed once: views are built on every dispatch pass
            views.append(NodeView(
                id=s.id, online=s.online, locked=s.row.locked,
                slots=int(info.get("maxParallelTasks") or 1),
                busy=max(busy.get(s.id, 0), int(info.get("taskQueueCount") or 0) - (hidden or {}).get(s.id, 0)),
                max_images=info.get("maxImages"), engine=str(info.get("engine") or "odm"),
                cores=int(info.get("cpuCores") or 1), memory_mb=int(info.get("totalMemory") or 0) // (1024 * 1024),
                speeds=tuple((kind, e.ms_per_image) for kind, e in s.speeds().items()),
                same_job=(same_job or {}).get(s.id, 0),
                **(dict(upstream=True, link_mbps=link.up, home_mbps=link.down, rtt_ms=link.rtt) if link is not None else {})))
        return views

    def option_specs(self) -> list[OptionSpec]:
        """The options of the nodes: the union by name, online nodes first."""
        seen: dict[str, OptionSpec] = {}
        for state in sorted(self.nodes.values(), key=lambda s: (not s.online, s.id)):
            for data in state.row.last_options:
                spec = OptionSpec.from_json(data)
                seen.setdefault(spec.name, spec)
        return list(seen.values())
